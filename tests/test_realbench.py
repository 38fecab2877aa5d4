"""The real-footage spotting benchmark's scoring, folds and data plumbing (training.realbench, training.realdata,
training.replay), on hand-made tracks and windows; the chain itself is tested in tests/test_replay.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mer_analysis.spotting import SpottedWindow
from mer_core.events import TimePoint
from training.realbench import BenchOptions, Tally, bench_only, evaluate, person_folds, score_windows
from training.realdata import ORIGINAL, RenderSpec, Variant, VideoSet, people_of
from training.replay import FaceTrack
from training.spotter_data import label_steps, segments

FPS = 25.0


def _row(onset: int, apex: int, offset: int, kind: str = "micro") -> dict[str, Any]:
    return {"onset": onset, "apex": apex, "offset": offset, "kind": kind}


def _window(onset: int, apex: int, offset: int, kind: str = "micro") -> SpottedWindow:
    return SpottedWindow(TimePoint(onset, onset / FPS), TimePoint(apex, apex / FPS), TimePoint(offset, offset / FPS),
                         kind, 3.0, TimePoint(offset + 10, (offset + 10) / FPS))


def _track(minutes: float) -> FaceTrack:
    n = int(minutes * 60 * FPS)
    return FaceTrack("v", FPS, np.ones(n, bool), np.zeros((n, 4, 4), np.uint8), np.zeros((n, 478, 2), np.float32))


def test_rendered_windows_match_at_iou_half_with_frame_errors_and_iou() -> None:
    truth = [_row(20, 24, 30), _row(100, 104, 110), _row(150, 160, 190, kind="macro")]
    windows = [_window(21, 24, 30),  # matches the first (IoU 10/11), onset 1 frame late
               _window(100, 106, 140),  # overlaps the second at IoU 11/41 < 0.5: a false window and a miss
               _window(150, 160, 190, kind="macro")]  # macro windows are not scored
    row = score_windows(windows, truth).row()
    assert (row["tp"], row["fp"], row["fn"]) == (1, 1, 1)
    assert (row["onset_err"], row["apex_err"], row["offset_err"]) == (1.0, 0.0, 0.0)
    assert row["iou"] == pytest.approx(10 / 11, abs=1e-3) and row["f1"] == pytest.approx(0.5)


def test_person_folds_hold_out_people_never_files() -> None:
    people = ["p3", "p1", "p2", "p1", "p4", "p5"]
    assert person_folds(people) == [["p1"], ["p2"], ["p3"], ["p4"], ["p5"]]
    folds = person_folds(people, 2)
    assert folds == [["p1", "p3", "p5"], ["p2", "p4"]]
    assert person_folds(people, 9) == person_folds(people)


def test_people_come_from_people_csv_beside_the_videos(tmp_path: Path) -> None:
    (tmp_path / "people.csv").write_text("file,person,licence\na.mp4,p01,MIT\nb.mp4,p01,MIT\n", encoding="utf-8")
    videos = [tmp_path / "a.mp4", tmp_path / "b.mp4", tmp_path / "c.mp4"]
    assert people_of(videos) == {videos[0]: "p01", videos[1]: "p01", videos[2]: "c"}


def test_evaluate_pools_cells_per_person_and_false_events_per_minute() -> None:
    spec = RenderSpec("warp", "calm", (0.04, 0.04), 7)
    truth = [_row(100, 104, 110), _row(300, 304, 310)]
    a = VideoSet(Path("a.mp4"), "p1", {ORIGINAL: Variant(_track(1.0)), spec.tag: Variant(_track(1.0), truth, spec)})
    b = VideoSet(Path("b.mp4"), "p2", {ORIGINAL: Variant(_track(2.0)), spec.tag: Variant(_track(2.0), truth, spec)})
    script = {("a", ORIGINAL): [_window(500, 505, 510), _window(900, 904, 908)],  # 2 false events in 1 min
              ("a", spec.tag): [_window(100, 104, 110), _window(300, 304, 310)],
              ("b", ORIGINAL): [_window(40, 44, 48, kind="macro")],  # macro: not a false micro event
              ("b", spec.tag): [_window(100, 104, 110)]}

    def spot(video: VideoSet, variant: Variant) -> list[SpottedWindow]:
        tag = ORIGINAL if variant.spec is None else variant.spec.tag
        return script[(video.path.stem, tag)]

    result = evaluate({"a": a, "b": b}, spot)
    assert result["cells"]["warp calm@0.04"]["tp"] == 3 and result["cells"]["warp calm@0.04"]["fn"] == 1
    assert result["people"]["p1"]["warp calm@0.04"]["f1"] == 1.0
    assert result["people"]["p2"]["warp calm@0.04"]["recall"] == 0.5
    assert result["false_per_min"] == {"a": 2.0, "b": 0.0}
    assert result["false_per_min_all"] == pytest.approx(2 / 3, abs=0.01)
    assert result["false_per_min_worst"] == 2.0
    from mer_cli.realbench import markdown

    text = markdown({"rules": result, "videos": {"a": {"person": "p1", "minutes": 1.0},
                                                 "b": {"person": "p2", "minutes": 2.0}}})
    assert "| warp | calm | 0.04 | 0.86 |" in text  # F1 of 3 TP, 0 FP, 1 FN
    assert "| p1 | a | 1.00 (2/0) |" in text and text.rstrip().endswith("| p2 | b | 0.67 (1/1) | 0.00 |")


def test_bench_options_name_their_renderings_and_keep_training_ones_apart() -> None:
    options = BenchOptions(amplitudes=(0.03, 0.04), placements=("calm",), families=("warp", "mesh"))
    tags = [s.tag for s in options.bench_specs()]
    assert tags == ["warp/calm@0.03#7", "warp/calm@0.04#7", "mesh/calm@0.03#7", "mesh/calm@0.04#7"]
    train = options.train_specs()
    assert {s.family for s in train} == {"warp", "mesh"} and all(s.seed != 7 for s in train)
    assert train[0].onto().family == "warp" and train[-1].onto().family == "mesh"
    video = VideoSet(Path("a.mp4"), "p1", {ORIGINAL: Variant(_track(0.1)),
                                           **{s.tag: Variant(_track(0.1), [], s) for s in options.bench_specs() + train}})
    kept = bench_only({"a": video}, options.bench_specs())["a"]
    assert set(kept.variants) == {ORIGINAL, *tags}


def test_steps_inside_a_micro_expression_are_labelled() -> None:
    steps = np.arange(0, 60)  # 2 s at 30 steps a second
    labels = label_steps(steps, 30.0, 25.0, [_row(10, 12, 14), _row(30, 35, 45, kind="macro")])
    inside = steps[labels > 0] / 30.0
    assert inside.min() >= 9.5 / 25 and inside.max() < 14.5 / 25
    assert labels.sum() == pytest.approx(5 * 30 / 25, abs=1)
    assert segments(np.array([1, 2, 3, 7, 8, 10])) == [(0, 3), (3, 5), (5, 6)]


def test_face_tracks_round_trip(tmp_path: Path) -> None:
    track = _track(0.01)
    track.present[3] = False
    track.crops[1, 0, 0] = 9
    track.save(tmp_path / "t.npz")
    back = FaceTrack.load(tmp_path / "t.npz")
    assert (back.name, back.fps, back.frames) == (track.name, track.fps, track.frames)
    assert np.array_equal(back.present, track.present) and back.crops[1, 0, 0] == 9
    faces = list(back.faces())
    assert faces[3] is None and faces[1] is not None and faces[1].crop[0, 0] == 9
    assert Tally(tp=1, fp=1, fn=0).f1 == pytest.approx(2 / 3)


def test_cli_refuses_a_file_as_its_cache_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mer_cli.realbench import main

    video, work = tmp_path / "v.mp4", tmp_path / "cache"
    video.write_bytes(b"")
    work.write_text("not a folder")
    assert main([str(video), "--work", str(work)]) == 2
    assert capsys.readouterr().err == f"mer-bench real: --work {work} is a file; give a folder for the renders and motion cache\n"


def test_cli_refuses_an_unknown_render_family(capsys: pytest.CaptureFixture[str]) -> None:
    from mer_cli.realbench import main

    with pytest.raises(SystemExit) as stop:
        main(["--families", "warp,blender"])
    assert stop.value.code == 2
    assert "render families are warp, mesh" in capsys.readouterr().err

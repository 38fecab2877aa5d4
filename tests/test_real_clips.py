"""Recognition sets from the real-footage benchmark's renders (mer-bench real --clips), and the phase-flow
fusion's inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engines.card import NONE_LABEL
from mer_analysis.spotting import SpottedWindow
from mer_core.events import TimePoint
from training.datasets.synth_reader import read_synth
from training.realbench import _none_rows, clip_set_name, write_clip_sets
from training.realdata import RenderSpec, Variant, VideoSet
from training.replay import FaceTrack
from training.synth_onto import CLIP_CONTEXT_S, track_clips


def _track(n: int = 60, fps: float = 20.0, missing: tuple[int, ...] = ()) -> FaceTrack:
    rng = np.random.default_rng(0)
    present = np.ones(n, bool)
    present[list(missing)] = False
    crops = rng.integers(0, 255, (n, 32, 32), dtype=np.uint8)
    return FaceTrack("clip", fps, present, crops, np.zeros((n, 478, 2), np.float32))


def _row(onset: int, apex: int, offset: int, label: str = "positive") -> dict[str, object]:
    return {"kind": "micro", "onset": onset, "apex": apex, "offset": offset, "label": label, "aus": "12",
            "fps": "20"}


def test_track_clips_writes_the_live_crops_with_context_and_skips_windows_without_a_face(tmp_path: Path) -> None:
    track = _track(missing=(45,))
    truth = [_row(10, 13, 18), _row(40, 43, 48, "surprise"), {**_row(25, 27, 30), "kind": "macro"}]
    rows = track_clips(track, truth, tmp_path, subject="p07", name="vid_warp")
    ctx = int(round(CLIP_CONTEXT_S * track.fps))
    assert len(rows) == 1  # the macro is no clip; the second micro has a frame without a face
    row = rows[0]
    assert row["subject"] == "p07" and row["label"] == "positive"
    assert (row["onset"], row["apex"], row["offset"]) == (ctx, ctx + 3, ctx + 8)
    folder = tmp_path / str(row["clip"])
    frames = sorted(folder.glob("*.png"))
    assert len(frames) == row["n_frames"] == 8 + 2 * ctx + 1
    import cv2

    first = cv2.imread(str(frames[0]), cv2.IMREAD_GRAYSCALE)
    assert first is not None
    assert np.array_equal(first, track.crops[10 - ctx])  # the crops the chain analysed, unchanged


def test_write_clip_sets_makes_one_readable_set_per_cell_with_people_as_subjects(tmp_path: Path) -> None:
    test_spec = RenderSpec("mesh", "calm", (0.04, 0.04), 7)
    train_spec = RenderSpec("mesh", "anywhere", (0.015, 0.06), 12)
    data = {
        "a": VideoSet(Path("a.mp4"), "p01", {test_spec.tag: Variant(_track(), [_row(10, 13, 18)], test_spec),
                                               train_spec.tag: Variant(_track(), [_row(30, 33, 38)], train_spec)}),
        "b": VideoSet(Path("b.mp4"), "p02", {test_spec.tag: Variant(_track(), [_row(20, 22, 26, "negative")],
                                                                      test_spec)}),
    }
    counts = write_clip_sets(data, {"test": [test_spec], "train": [train_spec]}, tmp_path)
    assert clip_set_name(test_spec, split="test") == "test/mesh_calm_0.04"
    assert counts == {"test/mesh_calm_0.04": 2, "train/mesh": 1}
    index = read_synth(tmp_path / "test" / "mesh_calm_0.04", scheme="megc3")
    # clip names carry the amplitude: the cells of one rendering seed merge into one training set
    assert all("_0.04_s7_" in s.clip for s in index.samples)
    assert sorted(str(s.subject) for s in index.samples) == ["p01", "p02"]
    assert sorted(str(s.label) for s in index.samples) == ["negative", "positive"]


def _window(onset: int, apex: int, offset: int, kind: str = "micro") -> SpottedWindow:
    def tp(f: int) -> TimePoint:
        return TimePoint(f, f / 30)

    return SpottedWindow(onset=tp(onset), apex=tp(apex), offset=tp(offset), kind=kind, peak=3.0,
                         region="cheek_l", decided_at=tp(offset + 5))


def test_none_rows_label_micro_windows_none_and_keep_at_most_the_number_asked() -> None:
    windows = [_window(10 * k, 10 * k + 2, 10 * k + 6) for k in range(8)] + [_window(90, 95, 140, "macro")]
    rows = _none_rows(windows, 30.0)
    assert len(rows) == 8 and {r["label"] for r in rows} == {NONE_LABEL}
    kept = _none_rows(windows, 30.0, keep=3, seed=1)
    assert len(kept) == 3 and kept == _none_rows(windows, 30.0, keep=3, seed=1)
    assert {r["onset"] for r in kept} <= {r["onset"] for r in rows}


def test_the_report_marks_an_uncertain_label_as_the_dashboard_does() -> None:
    label = "positive"
    from mer_core.events import EventRecord
    from mer_offline.report import _card

    def event(confidence: float) -> EventRecord:
        return EventRecord(onset=TimePoint(10, 0.33), apex=TimePoint(13, 0.43), offset=TimePoint(18, 0.6),
                           duration_ms=266.7, kind="micro", intensity=3.0, label=label, confidence=confidence,
                           probs={label: confidence, "negative": 1 - confidence}, latency_ms=10.0)

    assert f"{label}? 0.42" in _card(1, event(0.42), None, (label, "negative"))
    assert f"{label} 0.91" in _card(1, event(0.91), None, (label, "negative"))

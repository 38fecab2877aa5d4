"""The real-footage spotting benchmark's scoring (training.realbench), on hand-made motion: matching, the
'masked' count, false events per minute and the leave-one-video-out choice of thresholds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.events import TimePoint
from realtime.motion import REGION_NAMES, MotionSample
from realtime.spotting import SpottedWindow, SpotterOptions
from training.realbench import GRID, VideoMotion, masked, run_benchmark, score_rendered, score_rows

FPS = 25.0
REGIONS = len(REGION_NAMES)


def _motion(n: int, bumps: dict[int, list[tuple[int, float]]] | None = None, name: str = "v",
            truth: list[dict[str, Any]] | None = None) -> VideoMotion:
    """``n`` frames; ``bumps[region]`` = (frame, size) displacements of that region (everything else still)."""
    disp = np.zeros((n, REGIONS, 2), np.float32)
    for region, points in (bumps or {}).items():
        for frame, size in points:
            disp[frame, region, 0] = size
    samples: list[MotionSample | None] = [
        MotionSample(k, k / FPS, k - 6 if k >= 6 else None, disp[k] if k >= 6 else None, 0.0, 0.3)
        for k in range(n)]
    return VideoMotion(name, FPS, n, samples, np.zeros((n, 8, 8), np.uint8), np.zeros((n, 478, 2), np.float32),
                       truth=list(truth or []))


def _row(onset: int, apex: int, offset: int, kind: str = "micro") -> dict[str, Any]:
    return {"onset": onset, "apex": apex, "offset": offset, "kind": kind}


def _window(onset: int, apex: int, offset: int, kind: str = "micro") -> SpottedWindow:
    return SpottedWindow(TimePoint(onset, onset / FPS), TimePoint(apex, apex / FPS), TimePoint(offset, offset / FPS),
                         kind, 3.0, TimePoint(offset + 10, (offset + 10) / FPS))


def test_rendered_windows_are_matched_at_iou_half_with_onset_and_apex_errors() -> None:
    motion = _motion(200, truth=[_row(20, 24, 30), _row(100, 104, 110), _row(150, 160, 190, kind="macro")])
    windows = [_window(21, 24, 30),  # matches the first (IoU 10/11), onset 1 frame late
               _window(100, 106, 140),  # overlaps the second, IoU 11/41 < 0.5: a false window and a miss
               _window(150, 160, 190, kind="macro")]  # macro windows are not scored
    row = score_rendered(motion, windows).row()
    assert (row["tp"], row["fp"], row["fn"]) == (1, 1, 1)
    assert row["onset_err_ms"] == pytest.approx(40.0) and row["apex_err_ms"] == 0.0
    assert row["f1"] == pytest.approx(0.5)


def test_masked_counts_the_micro_expressions_whose_region_moves_by_itself_as_much() -> None:
    lip, brow = REGION_NAMES.index("lip_corner_l"), REGION_NAMES.index("brow_inner_l")
    # the original: the lip corner moves by itself (0.02) just before the first event; the brow is still
    original = _motion(300, {lip: [(40, 0.02), (41, 0.02)]})
    rendered = _motion(300, {lip: [(40, 0.02), (41, 0.02), (52, 0.03), (56, 0.03)],  # the render adds 0.03
                             brow: [(202, 0.03), (206, 0.03)]},
                       truth=[_row(50, 53, 56), _row(200, 203, 206), _row(250, 260, 290, kind="macro")])
    assert masked(rendered, original) == 1  # 0.02 >= half of 0.03 on the lip; nothing on the brow
    assert masked(rendered, original, share=0.7) == 0
    assert masked(rendered, rendered) == 2  # against itself every region "moves by itself" fully


@dataclass
class _Scripted(VideoMotion):
    """A video whose spotter output is scripted per min_score: the benchmark's logic without the spotter."""

    script: dict[float, list[SpottedWindow]] | None = None

    def spot(self, settings: SpotterOptions) -> list[SpottedWindow]:
        return list((self.script or {}).get(settings.min_score, []))


def _scripted(name: str, minutes: float, truth: list[dict[str, Any]],
              script: dict[float, list[SpottedWindow]]) -> _Scripted:
    base = _motion(int(minutes * 60 * FPS), name=name, truth=truth)
    return _Scripted(base.name, base.fps, base.frames, base.samples, base.crops, base.landmarks, base.truth,
                     script=script)


def test_false_events_per_minute_come_from_the_original_and_lovo_picks_on_the_other_videos() -> None:
    truth = [_row(100, 104, 110), _row(300, 304, 310)]
    hits = [_window(100, 104, 110), _window(300, 304, 310)]
    strict: dict[float, list[SpottedWindow]] = {score: [] for score in (1.5, 2.0, 3.0, 4.0)}
    # video a: every setting finds both; min_score 1.5 makes 2 false events a minute on its original
    a: dict[str, VideoMotion] = {"original": _scripted("a", 1.0, [], {**strict, 1.5: [_window(500, 505, 510), _window(900, 904, 908)]}),
         "calm@0.04": _scripted("a", 1.0, truth, dict.fromkeys(strict, hits))}
    # video b: only the loose settings find anything
    b: dict[str, VideoMotion] = {"original": _scripted("b", 1.0, [], strict),
         "calm@0.04": _scripted("b", 1.0, truth, {**strict, 1.5: hits, 2.0: hits[:1]})}
    data: dict[str, dict[str, VideoMotion]] = {"a": a, "b": b}
    shipped = score_rows(data, dict.fromkeys(data, SpotterOptions(min_score=1.5)))
    assert shipped["false_per_min"]["a"] == pytest.approx(2.0) and shipped["false_per_min"]["b"] == 0.0
    assert shipped["false_per_min"]["all"] == pytest.approx(1.0)
    assert shipped["cells"]["calm@0.04"]["tp"] == 4
    result = run_benchmark(data, base=SpotterOptions(), lovo=True, max_fp=1.0)
    # held out a: chosen on b, where 1.5 finds both and costs nothing
    assert result["lovo"]["chosen"]["a"]["min_score"] == 1.5
    # held out b: chosen on a, where 1.5 costs 2 false events a minute: a stricter setting wins
    assert result["lovo"]["chosen"]["b"]["min_score"] > 1.5
    assert result["lovo"]["videos"]["b"]["calm@0.04"]["tp"] < 2
    assert all(pick in GRID for pick in result["lovo"]["chosen"].values())


def test_cached_motion_round_trips_and_shares_one_array_per_video(tmp_path: Path) -> None:
    from training.realbench import _load_motion, _save_motion

    lip = REGION_NAMES.index("lip_corner_l")
    motion = _motion(60, {lip: [(20, 0.02), (21, -0.01)]})
    motion.samples[30] = None  # a frame without a face
    _save_motion(motion, tmp_path / "m.npz")
    back = _load_motion(tmp_path / "m.npz")
    assert (back.name, back.fps, back.frames) == (motion.name, motion.fps, motion.frames)
    for a, b in zip(motion.samples, back.samples, strict=True):
        assert (a is None) == (b is None)
        if a is not None and b is not None:
            assert (a.index, a.since) == (b.index, b.since)
            assert (a.displacement is None) == (b.displacement is None)
            if a.displacement is not None and b.displacement is not None:
                assert np.array_equal(a.displacement, b.displacement)
    # every frame's displacement is a view of the one array read from the file, not a copy of it per frame
    views = [s.displacement for s in back.samples if s is not None and s.displacement is not None]
    assert all(v.base is not None and v.base is views[0].base for v in views)


def test_cli_refuses_a_file_as_its_cache_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cli.realbench import main

    video, work = tmp_path / "v.mp4", tmp_path / "cache"
    video.write_bytes(b"")
    work.write_text("not a folder")
    assert main([str(video), "--work", str(work)]) == 2
    assert capsys.readouterr().err == f"mer-bench real: --work {work} is a file; give a folder for the renders and motion cache\n"


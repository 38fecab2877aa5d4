"""realtime.face_workers: several landmarkers on consecutive frames give the one tracker's faces, in order."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from realtime.face import FaceFinder, FaceTracker, FaceTrackerOptions, FoundFaces, TrackedFace
from realtime.face_workers import FaceWorkers, FaceWorkersOptions, default_face_workers, track_frames

pytestmark = pytest.mark.usefixtures("no_thread_left_behind")


@pytest.fixture(scope="module")
def clip(shared_faces: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(shared_faces / "single_face.mp4"))
    frames: list[np.ndarray] = []
    while len(frames) < 40:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert len(frames) == 40
    return frames


def _same(a: TrackedFace | None, b: TrackedFace | None) -> bool:
    if a is None or b is None:
        return a is b
    return (np.array_equal(a.landmarks, b.landmarks) and np.array_equal(a.crop, b.crop)
            and np.array_equal(a.matrix, b.matrix) and a.bbox == b.bbox)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_workers_give_the_faces_of_one_tracker_in_frame_order(
    face_model_path: Path, clip: list[np.ndarray], workers: int
) -> None:
    options = FaceTrackerOptions(model_path=face_model_path)
    # frames with no face in between: the tracker's state (picking, loss) must follow frame order too
    frames = [*clip[:15], np.full_like(clip[0], 90), *clip[15:]]
    times = [i / 30.0 for i in range(len(frames))]
    with FaceTracker(options) as tracker:
        expected = [tracker.process(f, t) for f, t in zip(frames, times, strict=True)]
    stages: list[tuple[str, float]] = []
    buffer = np.empty_like(frames[0])  # one buffer for every frame, as the ring buffer's reader hands them
    with FaceTracker(options) as tracker, FaceWorkers[int](
        tracker, FaceWorkersOptions(workers=workers), record_stage=lambda s, ms: stages.append((s, ms))
    ) as pool:
        got: list[tuple[int, TrackedFace | None]] = []
        for i, (frame, t) in enumerate(zip(frames, times, strict=True)):
            np.copyto(buffer, frame)
            got += pool.put(buffer, t, i)
            buffer.fill(0)  # the caller's buffer is reused at once: the workers must hold their own copy
        got += pool.finish()
    assert [i for i, _ in got] == list(range(len(frames)))
    assert expected[15] is None and got[15][1] is None
    assert sum(e is not None for e in expected) == len(frames) - 1
    assert all(_same(e, g) for e, (_, g) in zip(expected, got, strict=True))
    assert len(stages) == len(frames) and all(s == "face" and ms > 0 for s, ms in stages)


@pytest.mark.parametrize(("settings", "workers"), [({}, 2), ({}, 1), ({"landmark_every": 2}, 2)])
def test_track_frames_gives_every_frame_its_face_in_order(
    face_model_path: Path, clip: list[np.ndarray], settings: dict[str, object], workers: int
) -> None:
    """The offline loop (real-footage benchmark, rendering onto video): with workers where the tracker allows it,
    one frame after the other where it does not; the same faces either way."""
    options = FaceTrackerOptions(model_path=face_model_path, **settings)  # type: ignore[arg-type]
    with FaceTracker(options) as tracker:
        expected = [tracker.process(f, k / 30.0) for k, f in enumerate(clip)]
    with FaceTracker(options) as tracker:
        got = list(track_frames(tracker, iter(clip), 30.0, workers=workers))
    assert len(got) == len(clip)
    assert all(_same(e, g) for e, g in zip(expected, got, strict=True))


@pytest.mark.parametrize("settings", [{"max_faces": 1}, {"follow_one_face": True}, {"landmark_every": 2},
                                      {"landmark_every": "auto"}])
def test_a_tracker_that_needs_frame_order_is_refused(face_model_path: Path, settings: dict[str, object]) -> None:
    """With one face asked for MediaPipe tracks and smooths from frame to frame; with landmark_every the
    tracker follows the head between frames: neither may be split over landmarkers."""
    with FaceTracker(FaceTrackerOptions(model_path=face_model_path, **settings)) as tracker:  # type: ignore[arg-type]
        assert not tracker.frames_independent
        with pytest.raises(ValueError, match="frames are independent"):
            FaceWorkers[int](tracker)
        with pytest.raises(RuntimeError, match="independent"):
            tracker.accept(np.zeros((8, 8, 3), np.uint8), 0.0, FoundFaces((), (), (8, 8)))


def test_a_worker_failure_is_raised_for_its_frame_and_closing_is_safe(
    face_model_path: Path, clip: list[np.ndarray]
) -> None:
    with FaceTracker(FaceTrackerOptions(model_path=face_model_path)) as tracker:
        pool = FaceWorkers[int](tracker, FaceWorkersOptions(workers=2))
        ready = pool.put(clip[0], 0.0, 0)
        ready += pool.put(clip[1], 1 / 30, 1)
        with pytest.raises(ValueError):  # not an image: the worker's error comes back to the caller
            ready += pool.put(np.zeros((4, 4, 7), np.uint8), 2 / 30, 2)
            ready += pool.finish()
        pool.close()
        pool.close()
        with pytest.raises(RuntimeError, match="closed"):
            pool.put(clip[3], 3 / 30, 3)
        assert [i for i, _ in ready] == [0, 1]
        assert tracker.process(clip[4], 4 / 30) is not None  # the tracker's own landmarker is still open


def test_finder_finds_every_face_and_closes_twice(face_model_path: Path, shared_faces: Path) -> None:
    image = cv2.imread(str(shared_faces / "multi_face.jpg"))
    assert image is not None
    with FaceFinder(FaceTrackerOptions(model_path=face_model_path), 3) as finder:
        found = finder.find_bgr(image, 0)
        assert 1 <= len(found.landmarks) <= 3 and found.size == (image.shape[1], image.shape[0])
        assert len(found.blendshapes) == len(found.landmarks)
        assert all(f.shape == (478, 2) for f in found.landmarks)
        finder.close()
        finder.close()
        with pytest.raises(RuntimeError, match="closed"):
            finder.find_bgr(image, 1)


def test_options_and_defaults() -> None:
    with pytest.raises(ValueError, match="workers"):
        FaceWorkersOptions(workers=0)
    assert default_face_workers(1) == 1 and default_face_workers(0) == 1
    assert default_face_workers(2) == 2 and default_face_workers(16) == 2
    assert default_face_workers() in (1, 2)  # this machine's cores


def test_mer_live_gives_the_same_events_with_one_and_two_workers(
    face_model_path: Path, shared_faces: Path, tmp_path: Path
) -> None:
    from mer_cli.live import main

    video = shared_faces / "single_face.mp4"
    results = []
    for workers in (1, 2):
        record = tmp_path / f"w{workers}.jsonl"
        code = main(["--video", str(video), "--fast", "--no-dashboard", "--zmq", "none", "--face-model",
                     str(face_model_path), "--face-workers", str(workers), "--record", str(record)])
        assert code == 0
        records = [json.loads(line) for line in record.read_text().splitlines()]
        summary = next(r for r in records if r["type"] == "summary")
        events = [{k: r[k] for k in ("onset", "apex", "offset", "kind", "label", "probs")}
                  for r in records if r["type"] == "event"]
        results.append((summary["frames"], summary["face_frames"], events))
    assert results[0] == results[1]


def test_mer_live_refuses_a_bad_worker_count(capsys: pytest.CaptureFixture[str]) -> None:
    from mer_cli.live import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--demo", "--face-workers", "0"])
    assert exit_info.value.code == 2
    assert "--face-workers must be 1..16" in capsys.readouterr().err


def test_landmark_every_auto_that_settles_on_every_frame_goes_on_with_workers(
    face_model_path: Path, clip: list[np.ndarray], caplog: pytest.LogCaptureFixture
) -> None:
    """``auto`` times the first frames one by one; once it settled on N = 1 its frames are independent and the
    pipeline's face thread hands the rest to the workers: every frame analysed, in order, as with one."""
    from realtime.pipeline import Pipeline, PipelineOptions
    from realtime.sources import ArraySource

    fps = 5.0  # a slow source: N = 1 on any machine
    with FaceTracker(FaceTrackerOptions(model_path=face_model_path, landmark_every="auto")) as tracker:
        assert not tracker.frames_independent
        for k, frame in enumerate(clip[:20]):
            tracker.process(frame, k / fps)
        assert tracker.landmark_every == 1 and tracker.frames_independent

    def run(workers: int) -> list[tuple[int, bool, float | None]]:
        seen: list[tuple[int, bool, float | None]] = []
        options = PipelineOptions(fast=True, face_workers=workers,
                                  on_frame=lambda r: seen.append((r.index, r.face, r.score)))
        with FaceTracker(FaceTrackerOptions(model_path=face_model_path, landmark_every="auto")) as tracker:
            Pipeline(ArraySource(clip, fps=fps, name="array:auto"), tracker, None, lambda r: None, options).run()
        return seen

    caplog.set_level("INFO", logger="realtime.face_workers")
    pooled = run(2)
    assert "2 MediaPipe landmarkers on consecutive frames" in caplog.text
    assert [r[0] for r in pooled] == list(range(len(clip)))
    assert pooled == run(1)

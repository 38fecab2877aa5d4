"""Reliability: the bad-input corpus (``tests/bad_inputs.py``), sources that fail or vanish mid-run,
a subscriber that never reads, and the security defaults. Every case ends with one clear line, never a
traceback, and — once anything was published — a JSONL record whose every line parses and whose last line
is the summary. ``mer-live`` runs through its ``main()`` in this process (``tests/in_process.py``: its environment,
its file descriptors), and as a process of its own where the process is the point."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pytest
from bad_inputs import make_bad_inputs
from fakes import tracked_face
from in_process import Ran, run_main
from ports import free_port

from mer_core.events import EventRecord, Record, StatusRecord, SummaryRecord, parse_record
from realtime.face import TrackedFace
from realtime.sources import ArraySource, FrameSource

if TYPE_CHECKING:
    from realtime.pipeline import Pipeline
    from realtime.publisher import Publisher

REPO = Path(__file__).resolve().parents[1]
FFMPEG_LINE = re.compile(r"^\[[\w,]+ @ 0x[0-9a-f]+\]", re.MULTILINE)  # e.g. "[mpeg4 @ 0x55...] ac-tex damaged"



# --- fixtures: one good clip, one random model, the corpus made from them (once per module) ------------


@pytest.fixture(scope="module")
def env(face_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    cache = tmp_path_factory.mktemp("cache")
    base = {k: v for k, v in os.environ.items() if k not in ("OPENCV_FFMPEG_LOGLEVEL", "XDG_CACHE_HOME")}
    return {**base, "MER_FACE_MODEL": str(face_model_path), "MER_CACHE_DIR": str(cache), "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def video(env: dict[str, str]) -> tuple[Path, Path]:
    """A 6 s synthetic clip (one macro-, one micro-expression) and its annotations.csv."""
    from training.demo import synthetic_video

    return synthetic_video(seconds=6.0, fps=30.0, seed=3, face_model=env["MER_FACE_MODEL"],
                           cache_dir=Path(env["MER_CACHE_DIR"]) / "videos")




@pytest.fixture(scope="module")
def corpus(video: tuple[Path, Path], model_dir: Path, face_model_path: Path,
           tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    made: dict[str, Path] = make_bad_inputs(
        tmp_path_factory.mktemp("corpus"), good_video=video[0], annotations=video[1], face_model=face_model_path,
        model=model_dir)
    return made


@pytest.fixture()
def quiet_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """In-process tests write their cache (ONNX exports, DIs) under tmp, never into the real user cache."""
    cache = tmp_path / "user-cache"
    monkeypatch.setenv("MER_CACHE_DIR", str(cache))
    return cache


def _mer_live(*args: str, env: dict[str, str]) -> Ran:
    """``mer-live ARGS`` in this process (:func:`in_process.run_main`), with ``env`` as its environment."""
    from mer_cli.live import main

    return run_main(main, args, env=env)


def _mer_live_process(*args: str, env: dict[str, str], cwd: Path, timeout: float = 120
                      ) -> subprocess.CompletedProcess[str]:
    """``mer-live ARGS`` as a process of its own, where the process is the point (what it writes where)."""
    return subprocess.run([sys.executable, "-m", "mer_cli.live", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)


def _complete_record(path: Path) -> list[Record]:
    """Every line parses as mer/1, seq counts 0, 1, 2 ..., the last record is the (only) summary."""
    records = [parse_record(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert records, f"{path} is empty"
    assert [r.seq for r in records] == list(range(len(records)))
    assert isinstance(records[-1], SummaryRecord)
    assert sum(isinstance(r, SummaryRecord) for r in records) == 1
    return records


def _no_traceback(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert not FFMPEG_LINE.search(stderr), stderr  # decoder chatter is not a message a user can act on


def _one_error_line(stderr: str, *needles: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("mer-live: error:")]
    assert len(lines) == 1, stderr
    for needle in needles:
        assert needle.lower() in lines[0].lower(), lines[0]
    return lines[0]


# --- the corpus through mer-live -------------------------------------------------------------------------

VIDEO_CASES = ["empty_video", "truncated_mp4", "truncated_avi", "corrupt_video", "noface_video",
               "face_leaves_video", "dark_video", "bright_video"]


@pytest.mark.parametrize("case", VIDEO_CASES)
def test_bad_videos_end_with_one_clear_line_and_a_complete_record(
    case: str, corpus: dict[str, Path], model_dir: Path, env: dict[str, str], tmp_path: Path
) -> None:
    record = tmp_path / "run.jsonl"
    proc = _mer_live("--video", str(corpus[case]), "--fast", "--no-dashboard", "--zmq", "none",
                     "--model", str(model_dir / "model.onnx"), "--record", str(record), env=env)
    _no_traceback(proc.stderr)
    if case in ("empty_video", "truncated_mp4"):  # refused before anything is published
        assert proc.returncode == 2, proc.stderr
        _one_error_line(proc.stderr, corpus[case].name, "empty" if case == "empty_video" else "cannot be read")
        assert not record.exists()
        return
    assert proc.returncode == 0, proc.stderr
    assert not [ln for ln in proc.stderr.splitlines() if ln.startswith("mer-live: error:")], proc.stderr
    records = _complete_record(record)
    summary = records[-1]
    assert isinstance(summary, SummaryRecord) and summary.frames > 0
    if case == "truncated_avi":  # cut in half: what was there is analysed, the user is told why it stopped
        assert summary.reason == "error" and summary.frames < 90
        assert "ended early" in proc.stderr and "mer-live: warning:" in proc.stderr
    else:
        assert summary.reason == "end"
    if case == "noface_video":
        assert summary.face_frames == 0 and summary.events == {"micro": 0, "macro": 0}
        assert not [r for r in records if isinstance(r, EventRecord)]
    if case in ("face_leaves_video", "dark_video", "bright_video"):  # the face comes and goes
        assert 0 < summary.face_frames < summary.frames
    for r in records:
        if isinstance(r, EventRecord):
            assert r.onset.frame <= r.apex.frame <= r.offset.frame and np.isfinite(r.intensity)


def test_a_model_with_nan_weights_publishes_events_unlabelled(
    corpus: dict[str, Path], video: tuple[Path, Path], env: dict[str, str], tmp_path: Path
) -> None:
    record = tmp_path / "run.jsonl"
    proc = _mer_live("--video", str(video[0]), "--fast", "--no-dashboard", "--zmq", "none",
                     "--model", str(corpus["nan_weights_onnx"]), "--record", str(record), env=env)
    assert proc.returncode == 0, proc.stderr
    _no_traceback(proc.stderr)
    assert "NaN" in proc.stderr  # said once per batch, in words
    records = _complete_record(record)
    events = [r for r in records if isinstance(r, EventRecord)]
    summary = records[-1]
    assert isinstance(summary, SummaryRecord)
    assert len(events) == sum(summary.events.values()) > 0  # no event lost to an unserialisable NaN
    micro = [e for e in events if e.kind == "micro"]
    assert micro and all(e.label is None and e.probs == {} for e in micro)


MODEL_CASES = {
    "truncated_checkpoint": "corrupt",
    "truncated_onnx": "not a valid ONNX file",
    "card_labels_onnx": "card and artefact do not match",
    "card_streams_onnx": "card and artefact do not match",
    "card_labels_checkpoint": "does not belong",
    "pickled_checkpoint": "pickled Python objects",
}


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_broken_models_and_mismatched_cards_are_refused_in_one_line(
    case: str, corpus: dict[str, Path], tmp_path: Path, quiet_cache: Path
) -> None:
    """In process: mer-live turns exactly these exception types into its one-line exit-2 error
    (tests/test_live.py checks that mapping end to end)."""
    from engines.backends import EngineError, load_engine
    from engines.card import CardError

    with pytest.raises((EngineError, CardError)) as info:
        load_engine(corpus[case], backend="auto", cache_dir=tmp_path / "engine-cache")
    message = str(info.value)
    assert "\n" not in message and MODEL_CASES[case].lower() in message.lower(), message
    if case == "pickled_checkpoint":
        assert "weights_only" not in message  # torch's advice to switch it off is not passed on
        assert not (corpus[case] / "CODE_RAN_IF_THIS_EXISTS").exists()


# --- security ------------------------------------------------------------------------------------------


def test_a_checkpoint_with_a_pickled_object_is_refused_and_its_code_never_runs(corpus: dict[str, Path]) -> None:
    from engines.card import CardError
    from engines.checkpoint import load_checkpoint, read_checkpoint

    folder = corpus["pickled_checkpoint"]
    for load in (load_checkpoint, read_checkpoint):
        with pytest.raises(CardError, match="pickled Python objects.*could run code"):
            load(folder / "model.pt")
    assert not (folder / "CODE_RAN_IF_THIS_EXISTS").exists()


def test_every_torch_load_in_the_project_uses_weights_only() -> None:
    calls = 0
    for package in ("mer_core", "engines", "mer_analysis", "realtime", "mer_offline", "training", "mer_cli"):
        for path in (REPO / package).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            for match in re.finditer(r"torch\.load\(", text):
                call = text[match.start() : text.find(")", match.end()) + 1]
                assert "weights_only=True" in call, f"{path}: {call}"
                calls += 1
            assert "pickle.load" not in text and "allow_pickle=True" not in text, path
    assert calls >= 1


def test_the_default_endpoint_is_loopback() -> None:
    from mer_cli.live import build_parser
    from realtime.publisher import DEFAULT_ENDPOINT, PublisherOptions, is_loopback

    assert build_parser().parse_args(["--demo"]).zmq == DEFAULT_ENDPOINT == PublisherOptions().endpoint
    host = re.fullmatch(r"tcp://([^:]+):\d+", DEFAULT_ENDPOINT)
    assert host is not None and host.group(1) == "127.0.0.1" and is_loopback(host.group(1))
    # beyond loopback needs CURVE: tests/test_publisher.py and tests/test_live.py check the refusal


def _tree(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def test_nothing_is_written_outside_the_record_and_the_user_cache(
    video: tuple[Path, Path], model_dir: Path, face_model_path: Path, tmp_path: Path
) -> None:
    """A checkpoint-only model makes mer-live export ONNX into the cache: that and the record are all it writes."""
    home, cwd, xdg, tmp, out, model = (tmp_path / n for n in ("home", "cwd", "xdg", "tmp", "out", "model"))
    for folder in (home, cwd, xdg, tmp, out, model):
        folder.mkdir()
    for name in ("model.pt", "model.card.json"):
        (model / name).write_bytes((model_dir / name).read_bytes())
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MER_", "XDG_", "OPENCV_"))}
    env = {**base, "HOME": str(home), "XDG_CACHE_HOME": str(xdg), "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1",
           "MER_FACE_MODEL": str(face_model_path), "PYTHONDONTWRITEBYTECODE": "1"}
    before = _tree(tmp_path)
    record = out / "run.jsonl"
    proc = _mer_live_process("--video", str(video[0]), "--fast", "--no-dashboard", "--record", str(record),
                             "--model", str(model / "model.pt"), "--zmq", f"tcp://127.0.0.1:{free_port()}", env=env,
                             cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    _complete_record(record)
    cache = xdg / "mer-live"
    new = _tree(tmp_path) - before
    outside = sorted(str(p.relative_to(tmp_path)) for p in new if p != record and cache not in (p, *p.parents))
    assert outside == [], outside
    assert any(p.suffix == ".onnx" for p in new if cache in p.parents)  # the export went to the user cache


# --- sources that fail, frames that change, a subscriber that never reads (in process) --------------------


class _CropTracker:
    """Stands in for FaceTracker where faces are not the point: the frame's centre is the aligned crop, and the
    face-mesh landmarks are a fixed scatter over it."""

    landmarks = np.random.default_rng(0).uniform(20, 108, (478, 2)).astype(np.float32)

    def process(self, frame_bgr: np.ndarray, t: float) -> TrackedFace:
        gray = frame_bgr[..., 0] if frame_bgr.ndim == 3 else frame_bgr
        h, w = gray.shape
        return tracked_face(np.ascontiguousarray(gray[(h - 128) // 2 : (h + 128) // 2, (w - 128) // 2 : (w + 128) // 2]),
                            self.landmarks)


def _noise_frames(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(40, 215, (16, 16), dtype=np.uint8), (160, 160), interpolation=cv2.INTER_CUBIC)
    return [cv2.cvtColor(np.roll(base, i % 7, axis=1), cv2.COLOR_GRAY2BGR) for i in range(n)]


class _FlakySource(FrameSource):
    """Delivers ``good`` frames, then fails: a file read raises (a driver error); a live camera stops and
    never comes back however often it is reconnected (unplugged)."""

    def __init__(self, frames: list[np.ndarray], good: int, *, live: bool) -> None:
        super().__init__()
        self.name = "camera:flaky" if live else "file:flaky.mp4"
        self.is_live = live
        self.fps = 30.0
        self.reconnect_calls = 0
        self._frames, self._good = frames, good

    def read(self) -> np.ndarray | None:
        if self.frames_read < self._good:
            self.frames_read += 1
            if self.is_live:
                time.sleep(0.002)  # a camera delivers at its own pace
            return self._frames[self.frames_read - 1]
        if not self.is_live:
            raise OSError("device or resource busy")
        self.error = "camera flaky stopped delivering frames"
        return None

    def reconnect(self) -> bool:
        self.reconnect_calls += 1
        return False


def _run_bounded(pipeline: Pipeline, timeout: float = 60.0) -> SummaryRecord:
    """pipeline.run() on a helper thread; fails (instead of hanging) if it does not end in ``timeout``."""
    result: list[SummaryRecord] = []
    thread = threading.Thread(target=lambda: result.append(pipeline.run()), name="test-pipeline")
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        pipeline.stop("stopped")
        thread.join(10)
        pytest.fail(f"the pipeline did not end within {timeout:g} s")
    assert result, "pipeline.run() raised"
    return result[0]


def _publisher(record: Path, endpoint: str | None = None, *, sndhwm: int = 1000) -> Publisher:
    from realtime.publisher import Publisher, PublisherOptions

    return Publisher(PublisherOptions(endpoint=endpoint, record_path=record, sndhwm=sndhwm)).start()


@pytest.mark.parametrize("live", [False, True], ids=["file-read-raises", "camera-unplugged"])
def test_a_source_that_fails_mid_stream_ends_with_a_summary(
    live: bool, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from realtime.pipeline import Pipeline, PipelineOptions

    source = _FlakySource(_noise_frames(40), 40, live=live)
    record = tmp_path / "run.jsonl"
    publisher = _publisher(record)
    try:
        pipeline = Pipeline(source, _CropTracker(), None, publisher.publish,
                            PipelineOptions(fast=not live, reconnect_s=0.3))
        summary = _run_bounded(pipeline)
    finally:
        publisher.close()
    assert summary.reason == "error" and summary.frames == 40
    assert source.error  # what mer-live prints as its warning line
    if live:
        assert source.reconnect_calls >= 2  # kept trying, with back-off, for reconnect_s, then gave up
        assert pipeline.capture.reconnects == 0
    else:
        assert pipeline.analyzer.frames == 40 and "device or resource busy" in source.error
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    records = _complete_record(record)
    assert records[-1] == summary.with_seq(records[-1].seq)


def test_a_subscriber_that_never_reads_does_not_stall_the_pipeline(tmp_path: Path) -> None:
    """A real Publisher and a SUB that connected, took one record and then never reads: its pipe is
    flooded full first, so every record of the run meets a full pipe. Every frame is still analysed, the run
    ends with its summary, and records that did not fit were dropped for that subscriber, not waited for."""
    import zmq

    from realtime.pipeline import Pipeline, PipelineOptions

    record = tmp_path / "run.jsonl"
    publisher = _publisher(record, "tcp://127.0.0.1:0", sndhwm=4)
    assert publisher.endpoint is not None
    sub: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.SUB)
    try:
        sub.setsockopt(zmq.RCVHWM, 4)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(publisher.endpoint)
        deadline = time.monotonic() + 10
        while not sub.poll(20) and time.monotonic() < deadline:  # connected once a record gets through ...
            publisher.publish(_status())
        assert sub.poll(0), "the subscriber never connected"  # ... and from now on nobody reads it
        big = _status(stage_ms={f"stage{i:04d}": {"p50": 1.0, "p95": 2.0} for i in range(2000)})  # ~70 kB
        for _ in range(400):  # ~28 MB: more than the HWMs and the kernel's socket buffers hold
            assert publisher.publish(big)
        deadline = time.monotonic() + 30
        while publisher.stats.queued and time.monotonic() < deadline:
            time.sleep(0.02)
        n = 600
        pipeline = Pipeline(_source(_noise_frames(n)), _CropTracker(), None, publisher.publish,
                            PipelineOptions(fast=True))
        summary = _run_bounded(pipeline)
        publisher.close()
        sent = publisher.stats.sent
        received = 0
        while received <= sent and sub.poll(300):  # what the subscriber could still read: what fitted
            sub.recv_multipart()
            received += 1
    finally:
        publisher.close()
        sub.close(linger=0)
    assert summary.reason == "end" and summary.frames == n and pipeline.analyzer.frames == n
    assert received < sent  # the rest was dropped at the subscriber's high-water mark
    _complete_record(record)


def _status(stage_ms: dict[str, dict[str, float]] | None = None) -> StatusRecord:
    return StatusRecord(frames=1, dropped=0, fps_in=30.0, fps_proc=30.0, face=False, face_frames=0,
                        stage_ms=stage_ms or {})


def _source(frames: list[np.ndarray], *, live: bool = False) -> ArraySource:
    return ArraySource(frames, fps=30.0, name="array:test", is_live=live)


def _clip_frames(video: Path, n: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(video))
    frames: list[np.ndarray] = []
    while len(frames) < n:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def test_frames_that_change_size_mid_stream(
    video: tuple[Path, Path], face_model_path: Path, tmp_path: Path
) -> None:
    from realtime.face import FaceTracker, FaceTrackerOptions
    from realtime.pipeline import Pipeline, PipelineOptions

    frames = _clip_frames(video[0], 90)
    sizes = [(640, 360), (320, 180), (960, 540)]
    resized = [cv2.resize(f, sizes[i // 30]) for i, f in enumerate(frames)]
    record = tmp_path / "run.jsonl"
    publisher = _publisher(record)
    faces: dict[tuple[int, ...], int] = {}
    try:
        with FaceTracker(FaceTrackerOptions(model_path=face_model_path)) as tracker:

            class Counting:
                def process(self, frame_bgr: np.ndarray, t: float) -> TrackedFace | None:
                    face = tracker.process(frame_bgr, t)
                    faces[frame_bgr.shape] = faces.get(frame_bgr.shape, 0) + (face is not None)
                    return face

            pipeline = Pipeline(_source(resized), Counting(), None, publisher.publish, PipelineOptions(fast=True))
            summary = _run_bounded(pipeline)
    finally:
        publisher.close()
    assert summary.reason == "end" and pipeline.analyzer.frames == 90 and pipeline.error is None
    assert {shape[:2][::-1]: n >= 25 for shape, n in faces.items()} == dict.fromkeys(sizes, True), faces
    _complete_record(record)


def test_a_still_face_gives_finite_intensities(corpus: dict[str, Path], face_model_path: Path) -> None:
    """The same frame over and over (a frozen camera, a paused stream): zero motion, never NaN."""
    from mer_analysis.chain import Analyzer
    from realtime.face import FaceTracker, FaceTrackerOptions

    still = cv2.imread(str(corpus["still_face"]))
    assert still is not None
    with FaceTracker(FaceTrackerOptions(model_path=face_model_path)) as tracker:
        analyzer = Analyzer(tracker)
        results = [analyzer.process(still, i, i / 30.0) for i in range(60)]
    assert all(r.face for r in results)
    values = [r.score for r in results]
    assert all(v is not None and np.isfinite(v) for v in values), values
    assert all(np.isfinite(s) for r in results for s in r.regions.values())
    assert max(v for v in values if v is not None) < 1.0 and not any(r.jobs for r in results)


# --- annotation files with bad rows ------------------------------------------------------------------


@pytest.fixture()
def train_main(quiet_cache: Path) -> Iterator[Callable[[list[str]], int]]:
    """mer_cli.train.main, with the root logger (which it configures, like a CLI) restored after."""
    from mer_cli.train import main

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield main
    root.handlers[:] = handlers
    root.setLevel(level)


def test_mer_train_skips_garbage_rows_and_counts_them(
    corpus: dict[str, Path], train_main: Callable[[list[str]], int], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from training.datasets import load_dataset

    index = load_dataset("synth", corpus["bad_annotations"], scheme="megc3")
    assert len(index.samples) == 6 and index.subjects == ("s01", "s02")
    assert index.skipped_counts() == {"non-numeric frame": 3, "onset after offset": 1, "bad fps": 3,
                                      "missing frames": 2, "missing subject/filename": 2, "missing emotion": 2,
                                      "duplicate clip": 1}
    assert sum(index.dropped.values()) == 2  # "happiness\0" and the Latin-1 "surpris?" are not emotions
    argv = ["--data", str(corpus["bad_annotations"]), "--dataset", "synth", "--epochs", "1", "--batch-size",
            "8", "--threads", "1", "--no-cache", "--out", str(tmp_path / "run")]
    assert train_main(argv) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    assert "6 samples from 2 subjects" in out and "'non-numeric frame': 3" in out and "pooled n=6" in out


@pytest.mark.parametrize(("case", "dataset", "needle"), [
    ("binary_annotations", "synth", "header lacks column"),
    ("corrupt_xlsx", "casme2", "cannot open annotation workbook"),
])
def test_unreadable_annotation_files_are_one_line_errors(
    case: str, dataset: str, needle: str, corpus: dict[str, Path], train_main: Callable[[list[str]], int],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from training.datasets import DatasetError, load_dataset

    with pytest.raises(DatasetError, match=needle):
        load_dataset(dataset, corpus[case], scheme="megc3")
    argv = ["--data", str(corpus[case]), "--dataset", dataset, "--epochs", "1", "--no-cache", "--alignment",
            "none", "--out", str(tmp_path / "run")]
    assert train_main(argv) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("mer-train: error:")]
    assert "Traceback" not in err and len(lines) == 1 and needle in lines[0], err


def test_sheet_cells_of_every_odd_type_are_skipped_with_counts(corpus: dict[str, Path]) -> None:
    from training.datasets import load_dataset

    index = load_dataset("casme2", corpus["xlsx_bad_cells"], scheme="megc3")
    assert [s.clip for s in index.samples] == ["sub01/EP01_01"]
    assert index.skipped_counts() == {"non-numeric frame": 7, "missing frames": 2, "missing subject/filename": 1}

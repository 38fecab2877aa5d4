"""End to end: ``mer-live`` on a generated video, ZMQ subscribers, Ctrl-C, and every user error."""

from __future__ import annotations

import csv
import functools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from fakes import fake_card
from in_process import Ran, run_main
from ports import free_port, subscribed

import mer_cli.live_run
from mer_cli.live import main as mer_live_main
from mer_core.events import EventRecord, Record, StatusRecord, SummaryRecord, parse_record
from mer_core.metrics import spotting_scores
from realtime.face import TrackedFace
from realtime.pipeline import PipelineOptions
from realtime.publisher import Publisher
from realtime.sources import ArraySource
from training.synth_writer import video_container

REPO = Path(__file__).resolve().parents[1]



@pytest.fixture(scope="module")
def env(face_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    cache = tmp_path_factory.mktemp("cache")
    return {**os.environ, "MER_FACE_MODEL": str(face_model_path), "MER_CACHE_DIR": str(cache),
            "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def video(env: dict[str, str]) -> tuple[Path, Path]:
    """A 20 s synthetic spotting video with annotated micro-expressions (made once per module)."""
    from training.demo import synthetic_video

    return synthetic_video(seconds=20.0, fps=30.0, seed=11, face_model=env["MER_FACE_MODEL"],
                           cache_dir=Path(env["MER_CACHE_DIR"]) / "videos")




def _mer_live(*args: str, env: dict[str, str] | None = None) -> Ran:
    """``mer-live ARGS`` in this process (:func:`in_process.run_main`), with ``env`` as its environment."""
    return run_main(mer_live_main, args, env=env)


def _records(path: Path) -> list[Record]:
    return [parse_record(line) for line in path.read_text().splitlines()]


def test_fast_run_matches_annotations_and_subscriber_gets_the_same_events(
    video: tuple[Path, Path], model_dir: Path, env: dict[str, str], tmp_path: Path
) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    record = tmp_path / "out.jsonl"
    with subscribed(endpoint, timeout_s=120) as received:
        proc = _mer_live("--video", str(video[0]), "--fast", "--no-dashboard", "--record", str(record),
                         "--model", str(model_dir), "--zmq", endpoint, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr

    records = _records(record)
    assert [r.seq for r in records] == list(range(len(records)))
    assert isinstance(records[-1], SummaryRecord) and records[-1].reason == "end"
    events = [r for r in records if isinstance(r, EventRecord)]
    with video[1].open() as fh:
        truth = [(int(r["onset"]), int(r["offset"])) for r in csv.DictReader(fh) if r["kind"] == "micro"]
    pred = [(e.onset.frame, e.offset.frame) for e in events if e.kind == "micro"]
    scores = spotting_scores(pred, truth)
    assert scores.f1 >= 0.8, (scores, pred, truth)
    for e in events:
        assert e.onset.frame <= e.apex.frame <= e.offset.frame
        assert 0 < e.latency_ms <= e.delay_ms  # both from capture times that came with the frames
        if e.kind == "micro":
            assert e.label in ("negative", "positive", "surprise") and abs(sum(e.probs.values()) - 1) < 1e-3
    got = [r for r in received if isinstance(r, EventRecord)]
    assert [r.to_json() for r in got] == [e.to_json() for e in events]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_run_leaves_a_complete_recording_with_summary(
    signum: int, video: tuple[Path, Path], model_dir: Path, env: dict[str, str], tmp_path: Path
) -> None:
    record = tmp_path / "out.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mer_cli.live", "--video", str(video[0]), "--no-dashboard", "--record",
         str(record), "--model", str(model_dir), "--zmq", "none", "--status-period", "0.05"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        # a shell without job control starts background jobs with SIGINT ignored, and Python then keeps it
        # ignored: give mer-live the disposition a terminal would, whatever launched the tests
        preexec_fn=_default_sigint,
    )
    try:
        deadline = time.monotonic() + 60  # the handshake: two status records, so the run is under way
        while time.monotonic() < deadline and proc.poll() is None:
            if record.exists() and record.read_text().count('"type":"status"') >= 2:
                break
            time.sleep(0.02)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    records = _records(record)  # every line parses
    assert isinstance(records[-1], SummaryRecord) and records[-1].reason == "interrupted"
    assert records[-1].frames > 0


class _FakeEngine:
    """Stands in for a loaded engine (mer-live's in-process runs below): labels every window "positive"."""

    name = "fake"
    reason = "test stand-in"

    def __init__(self) -> None:
        self.card = fake_card(("negative", "positive", "surprise"), "fake-megc3")

    def predict(self, batch: np.ndarray) -> np.ndarray:
        out = np.zeros((len(batch), 3), np.float32)
        out[:, 1] = 1.0
        return out

    def close(self) -> None:
        pass


class _FakeTracker:
    """Stands in for the face tracker: no face in any frame. With ``stall_at`` its call on that frame asks for
    a stop (SIGTERM) and then blocks until ``release`` is set, like a MediaPipe call that outlives stop()'s
    wait; ``close()`` notes whether a call was still running."""

    def __init__(self, stall_at: int | None = None) -> None:
        self.stall_at = stall_at
        self.calls = 0
        self.busy = False
        self.closed = False
        self.closed_while_busy = False
        self.release = threading.Event()

    def process(self, frame_bgr: np.ndarray, t: float) -> TrackedFace | None:
        self.busy = True
        try:
            self.calls += 1
            if self.calls == self.stall_at:
                signal.raise_signal(signal.SIGTERM)  # handled on the main thread, which runs the pipeline
                assert self.release.wait(timeout=60.0), "the test never released the tracker"
            return None
        finally:
            self.busy = False

    def close(self) -> None:
        self.closed_while_busy |= self.busy
        self.closed = True


def _mer_live_in_process(monkeypatch: pytest.MonkeyPatch, tracker: _FakeTracker, record: Path) -> int:
    """``mer-live --video clip.mp4 --no-dashboard --zmq none --record RECORD`` in this process, on a long
    array source played at its frame rate, with the engine and the face tracker faked."""
    frames = [np.zeros((32, 32, 3), np.uint8)] * 3000  # 100 s at 30 fps: ended by a signal, not by the source
    monkeypatch.setattr(mer_cli.live_run, "open_source", lambda spec: ArraySource(frames, fps=30.0, name="array:clip"))
    monkeypatch.setattr(mer_cli.live_run, "load_engine", lambda model, backend: _FakeEngine())
    monkeypatch.setattr(mer_cli.live_run, "FaceTracker", lambda options: tracker)
    monkeypatch.setattr(mer_cli.live_run, "PipelineOptions", functools.partial(PipelineOptions, join_timeout_s=0.2))
    for name in ("OPENCV_FFMPEG_LOGLEVEL", "OPENCV_LOG_LEVEL"):  # main() sets them for OpenCV
        monkeypatch.setenv(name, os.environ.get(name, "8"))
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    code = mer_live_main(["--video", "clip.mp4", "--no-dashboard", "--zmq", "none", "--record", str(record)])
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers  # put back
    return code


@pytest.mark.usefixtures("no_thread_left_behind")
def test_a_second_sigterm_while_stopping_changes_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """SIGTERM as the first status record goes out, and again as the summary does, from inside
    Pipeline.stop(): the stop is not cut short, the summary is recorded, and the exit code is 130."""
    signalled: set[str] = set()
    publish = Publisher.publish

    def publish_and_signal(self: Publisher, record: Record) -> bool:
        if isinstance(record, StatusRecord | SummaryRecord) and record.type not in signalled:
            signalled.add(record.type)
            signal.raise_signal(signal.SIGTERM)  # its handler runs here, on the main thread
        return publish(self, record)

    monkeypatch.setattr(Publisher, "publish", publish_and_signal)
    record = tmp_path / "out.jsonl"
    assert _mer_live_in_process(monkeypatch, _FakeTracker(), record) == 130
    assert signalled == {"status", "summary"}
    records = _records(record)
    summaries = [r for r in records if isinstance(r, SummaryRecord)]
    assert len(summaries) == 1 and records[-1] is summaries[0] and summaries[0].reason == "interrupted"
    assert isinstance(records[0], StatusRecord)  # the first signal did not cut that record short either
    assert [r.seq for r in records] == list(range(len(records)))


def test_the_face_tracker_is_not_closed_under_a_call_that_outlived_the_stop(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGTERM while the face thread is inside a tracker call that outlives stop()'s wait: the summary is
    written, and the tracker is left open (logged) rather than closed under the running call."""
    before = set(threading.enumerate())
    tracker = _FakeTracker(stall_at=5)
    record = tmp_path / "out.jsonl"
    try:
        with caplog.at_level(logging.WARNING):
            assert _mer_live_in_process(monkeypatch, tracker, record) == 130
        assert tracker.busy and not tracker.closed and not tracker.closed_while_busy
        assert "face tracker is still in use" in caplog.text
        summary = _records(record)[-1]
        assert isinstance(summary, SummaryRecord) and summary.reason == "interrupted"
    finally:
        tracker.release.set()
        for thread in set(threading.enumerate()) - before:  # the pipeline's threads end once it returns
            thread.join(timeout=10.0)
    assert not tracker.closed_while_busy
    assert not [t.name for t in set(threading.enumerate()) - before if t.is_alive()]


def test_the_end_line_counts_the_windows_published_unlabelled(capsys: pytest.CaptureFixture[str]) -> None:
    summary = SummaryRecord(source="array:clip", frames=90, dropped=0, face_frames=90, overflow=3, failed=2)
    mer_cli.live_run._print_summary(summary, None)
    line = capsys.readouterr().err
    assert "3 window(s) published unlabelled: the classifier fell behind" in line
    assert "2 window(s) published unlabelled: the model failed on them" in line
    mer_cli.live_run._print_summary(SummaryRecord(source="array:clip", frames=90, dropped=0, face_frames=90), None)
    assert "unlabelled" not in capsys.readouterr().err


def test_the_end_line_counts_the_candidates_the_spotter_dropped(capsys: pytest.CaptureFixture[str]) -> None:
    summary = SummaryRecord(source="array:clip", frames=90, dropped=0, face_frames=90,
                            rejected={"too_small": 4, "context": 2, "blink": 0})
    mer_cli.live_run._print_summary(summary, None)
    assert "6 spotter candidate(s) dropped (4 too_small, 2 context)" in capsys.readouterr().err
    mer_cli.live_run._print_summary(SummaryRecord(source="array:clip", frames=90, dropped=0, face_frames=90,
                                         rejected={"context": 0}), None)
    assert "dropped (" not in capsys.readouterr().err


def _one_line_error(proc: Ran, *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("mer-live: error:")]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle.lower() in lines[0].lower(), lines[0]


def test_missing_unreadable_and_empty_videos(env: dict[str, str], tmp_path: Path) -> None:
    _one_line_error(_mer_live("--video", str(tmp_path / "nope.mp4"), env=env), "nope.mp4")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    _one_line_error(_mer_live("--video", str(empty), env=env), "empty.mp4")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 100)
    _one_line_error(_mer_live("--video", str(text), env=env), "notes.mp4")


def test_missing_camera_says_how_to_pick_another(env: dict[str, str]) -> None:
    _one_line_error(_mer_live("--camera", "9", env=env), "camera")


def test_port_in_use_suggests_another(video: tuple[Path, Path], model_dir: Path, env: dict[str, str]) -> None:
    import zmq

    port = free_port()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    sock.bind(f"tcp://127.0.0.1:{port}")
    try:
        proc = _mer_live("--video", str(video[0]), "--model", str(model_dir), "--zmq", f"tcp://127.0.0.1:{port}",
                         "--no-dashboard", env=env)
    finally:
        sock.close(0)
        ctx.term()
    _one_line_error(proc, "already in use", "--zmq")


def test_non_loopback_needs_curve_or_insecure(video: tuple[Path, Path], model_dir: Path, env: dict[str, str]) -> None:
    proc = _mer_live("--video", str(video[0]), "--model", str(model_dir), "--zmq", f"tcp://0.0.0.0:{free_port()}",
                     "--no-dashboard", env=env)
    _one_line_error(proc, "--zmq-curve")


def test_an_exposed_endpoint_is_refused_before_anything_is_loaded(tmp_path: Path) -> None:
    """The refusal comes first: here the video, the model and the face model are all missing too."""
    env = {**os.environ, "MER_CACHE_DIR": str(tmp_path / "cache"), "MER_FACE_MODEL": str(tmp_path / "no.task")}
    proc = _mer_live("--video", str(tmp_path / "missing.mp4"), "--model", str(tmp_path / "no-model"),
                     "--zmq", f"tcp://0.0.0.0:{free_port()}", "--no-dashboard", env=env)
    _one_line_error(proc, "--zmq-curve", "--insecure")
    assert "missing.mp4" not in proc.stderr


def test_the_demo_runs_without_torch(face_model_path: Path, tmp_path: Path) -> None:
    """Live use needs no torch: the demo clip is generated and played with torch made unimportable."""
    no_torch = "import sys; sys.modules['torch'] = None; from mer_cli.live import main; sys.exit(main())"
    env = {**os.environ, "MER_FACE_MODEL": str(face_model_path), "MER_CACHE_DIR": str(tmp_path / "cache")}
    record = tmp_path / "demo.jsonl"
    proc = subprocess.run([sys.executable, "-c", no_torch, "--demo", "--fast", "--duration", "3", "--no-dashboard",
                           "--zmq", "none", "--record", str(record)], env=env, capture_output=True, text=True,
                          timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    records = _records(record)
    assert isinstance(records[-1], SummaryRecord) and records[-1].frames > 0


def test_face_model_missing_offline_says_where_to_put_it(
    video: tuple[Path, Path], model_dir: Path, env: dict[str, str], tmp_path: Path
) -> None:
    offline = {**env, "MER_FACE_MODEL": str(tmp_path / "missing.task"), "MER_CACHE_DIR": str(tmp_path / "c")}
    proc = _mer_live("--video", str(video[0]), "--model", str(model_dir), "--zmq", "none", env=offline)
    _one_line_error(proc, "MER_FACE_MODEL")


def test_corrupt_model_and_wrong_engine(video: tuple[Path, Path], env: dict[str, str], tmp_path: Path,
                                        model_dir: Path) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x01garbage" * 50)
    _one_line_error(_mer_live("--video", str(video[0]), "--model", str(bad), "--zmq", "none", env=env), "broken.onnx")
    proc = _mer_live("--video", str(video[0]), "--model", str(model_dir), "--engine", "tensorrt", "--zmq", "none",
                     env=env)
    _one_line_error(proc, "tensorrt")


def _reencode(video: Path, out: Path, fourcc: str, frames: int) -> Path:
    """The first ``frames`` frames of ``video`` written again with ``fourcc``."""
    cap = cv2.VideoCapture(str(video))
    ok, frame = cap.read()
    assert ok
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter.fourcc(*fourcc), 30.0, (frame.shape[1], frame.shape[0]))
    for _ in range(frames):
        writer.write(frame)
        ok, frame = cap.read()
        assert ok
    writer.release()
    cap.release()
    return out


def _cut_in_half(path: Path, out: Path) -> Path:
    data = path.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    return out


def test_a_truncated_video_is_processed_as_far_as_it_goes(
    video: tuple[Path, Path], model_dir: Path, env: dict[str, str], tmp_path: Path
) -> None:
    """MJPG in AVI (what webcams record) reads frame by frame: half a file is half a run, exit 0, a warning."""
    cut = _cut_in_half(_reencode(video[0], tmp_path / "whole.avi", "MJPG", 120), tmp_path / "cut.avi")
    record = tmp_path / "cut.jsonl"
    proc = _mer_live("--video", str(cut), "--fast", "--no-dashboard", "--model", str(model_dir), "--zmq", "none",
                     "--record", str(record), env=env)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    warning = [ln for ln in proc.stderr.splitlines() if ln.startswith("mer-live: warning:")]
    assert len(warning) == 1 and "ended early at frame" in warning[0] and "of 120" in warning[0], proc.stderr
    records = _records(record)
    summary = records[-1]
    assert isinstance(summary, SummaryRecord) and summary.reason == "error"
    assert 0 < summary.frames < 120 and f"ended early at frame {summary.frames} of 120" in warning[0]
    assert [r.seq for r in records] == list(range(len(records)))


def test_a_video_cut_before_its_index_is_a_one_line_error(
    video: tuple[Path, Path], model_dir: Path, env: dict[str, str], tmp_path: Path
) -> None:
    """An MP4 keeps its index at the end: cut in half it does not open at all, so nothing is recorded."""
    if video_container("mp4v")[1] != ".mp4":
        pytest.skip("this OpenCV cannot write and read back MP4")
    cut = _cut_in_half(_reencode(video[0], tmp_path / "whole.mp4", "mp4v", 120), tmp_path / "cut.mp4")
    record = tmp_path / "cut.jsonl"
    proc = _mer_live("--video", str(cut), "--fast", "--no-dashboard", "--model", str(model_dir), "--zmq", "none",
                     "--record", str(record), env=env)
    _one_line_error(proc, "cut.mp4")
    assert not record.exists()


def test_help_documents_exit_codes_and_options() -> None:
    proc = _mer_live("--help")
    assert proc.returncode == 0
    for needle in ("--camera", "--video", "--demo", "--fast", "--engine", "--model", "--zmq", "--record",
                   "--no-dashboard", "exit codes", "130"):
        assert needle in proc.stdout


def test_no_source_is_a_usage_error() -> None:
    proc = _mer_live()
    assert proc.returncode == 2 and "pick a source" in proc.stderr


def test_keys_are_created_once_and_never_overwritten(tmp_path: Path) -> None:
    first = _mer_live("keys", str(tmp_path / "keys"))
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "keys" / "server.key").is_file() and (tmp_path / "keys" / "server.key_secret").is_file()
    again = _mer_live("keys", str(tmp_path / "keys"))
    _one_line_error(again, "already holds")

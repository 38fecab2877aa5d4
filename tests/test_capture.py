"""Sources and the capture thread: indices, timestamps, drops, stop without hangs, reconnects, errors."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from realtime.capture import CaptureOptions, CaptureThread
from realtime.ringbuffer import Policy, RingBuffer, RingBufferOptions
from realtime.sources import ArraySource, FrameSource, SourceError, open_source

pytestmark = pytest.mark.usefixtures("no_thread_left_behind")




def frames(n: int, shape: tuple[int, int] = (8, 8)) -> list[np.ndarray]:
    return [np.full((*shape, 3), i % 256, np.uint8) for i in range(n)]


def ring(capacity: int, policy: Policy) -> RingBuffer:
    return RingBuffer(RingBufferOptions(capacity=capacity, policy=policy))


class StepClock:
    """Each call advances by ``step``: a camera grabbing at a perfectly steady rate."""

    def __init__(self, start: float = 1000.0, step: float = 0.04) -> None:
        self.t, self.step = start - step, step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


# --- capture -----------------------------------------------------------------------------------------


def test_block_mode_delivers_every_frame_with_index_and_time() -> None:
    rb = ring(4, Policy.BLOCK)
    reader = rb.reader()
    capture = CaptureThread(ArraySource(frames(50), fps=25.0, name="file:a"), rb, CaptureOptions(pace=False))
    with capture:
        got = []
        while (packet := reader.read(timeout=5.0)) is not None:
            got.append((packet.index, packet.t, int(packet.frame[0, 0, 0]), packet.missed, packet.captured_at))
    assert [g[0] for g in got] == list(range(50))
    assert [g[1] for g in got] == pytest.approx([i / 25.0 for i in range(50)])
    assert [g[2] for g in got] == list(range(50))
    assert all(g[3] == 0 for g in got)
    assert capture.end_reason == "end"
    assert capture.frames_read == 50
    assert rb.closed and capture.source.closed
    assert all(g[4] is not None for g in got)  # every frame carries its capture time


def test_paced_overwrite_with_a_slow_reader_counts_drops() -> None:
    rb = ring(4, Policy.OVERWRITE)
    reader = rb.reader()
    capture = CaptureThread(ArraySource(frames(60), fps=300.0), rb, CaptureOptions(pace=True))
    capture.start()
    first = reader.read(timeout=5.0)
    assert first is not None and first.index == 0
    assert capture.wait(timeout=10.0)  # the reader stalls until capture has finished: the ring overflowed
    rest = []
    while (packet := reader.read(timeout=1.0)) is not None:
        rest.append(packet.index)
    capture.stop()
    assert rest == [56, 57, 58, 59]  # only the last `capacity` frames are still held
    assert reader.missed == 60 - 1 - 4
    assert capture.end_reason == "end" and capture.frames_read == 60


def test_paced_file_times_follow_the_clock() -> None:
    rb = ring(64, Policy.OVERWRITE)
    reader = rb.reader()
    capture = CaptureThread(ArraySource(frames(5), fps=100.0), rb, CaptureOptions(pace=True))
    with capture:
        assert capture.wait(timeout=5.0)
    indices: list[int] = []
    grabs: list[float] = []
    while (packet := reader.read(timeout=1.0)) is not None:
        indices.append(packet.index)
        assert packet.captured_at is not None
        grabs.append(packet.captured_at)
    assert indices == [0, 1, 2, 3, 4]
    assert grabs == sorted(grabs)
    assert grabs[4] - grabs[0] >= 0.04 - 1e-9  # paced: 4 frames at 100 fps


def test_live_source_is_stamped_by_the_clock_relative_to_the_first_frame() -> None:
    clock = StepClock(start=1000.0, step=0.04)
    rb = ring(16, Policy.BLOCK)
    reader = rb.reader()
    source = ArraySource(frames(10), fps=25.0, name="camera:test", is_live=True)
    with CaptureThread(source, rb, CaptureOptions(clock=clock)) as capture:
        packets = []
        grabbed: list[float | None] = []
        while (packet := reader.read(timeout=5.0)) is not None:
            packets.append((packet.index, packet.t))
            grabbed.append(packet.captured_at)
    assert [p[0] for p in packets] == list(range(10))
    assert packets[0][1] == 0.0
    ts = [p[1] for p in packets]
    assert all(b > a for a, b in itertools.pairwise(ts))
    first = grabbed[0]
    assert first == 1000.0  # the injected clock at the first grab
    for (_, t), at in zip(packets, grabbed, strict=True):
        assert at == pytest.approx(first + t)
    assert capture.end_reason == "end"


def test_stop_never_hangs_when_the_writer_is_blocked_on_a_full_ring() -> None:
    def endless() -> Iterator[np.ndarray]:
        frame = np.zeros((4, 4, 3), np.uint8)
        while True:
            yield frame

    rb = ring(2, Policy.BLOCK)
    reader = rb.reader()  # registered, never reads: the writer blocks once 2 frames are held
    capture = CaptureThread(ArraySource(endless()), rb, CaptureOptions(pace=False, write_slice_s=0.02))
    capture.start()
    assert reader.read(timeout=5.0) is not None  # capture is running
    assert capture.stop(timeout=5.0) is True
    assert not capture.is_alive
    assert capture.end_reason == "stopped"
    assert rb.closed and capture.source.closed
    capture.stop()  # twice is fine


def test_stop_before_start_releases_the_source() -> None:
    source = ArraySource(frames(3))
    capture = CaptureThread(source, ring(2, Policy.BLOCK))
    assert capture.stop() is True
    assert source.closed and capture.end_reason == "stopped"


class FlakyCamera(FrameSource):
    """A live source that fails after ``ok_frames`` frames, comes back once, then fails for good."""

    is_live = True
    name = "camera:flaky"

    def __init__(self, ok_frames: int) -> None:
        super().__init__()
        self.ok_frames = ok_frames
        self.reconnect_calls = 0
        self._in_burst = 0
        self._lost = False

    def read(self) -> np.ndarray | None:
        if self._lost or self._closed:
            self.error = "camera:flaky stopped delivering frames"
            return None
        self._in_burst += 1
        if self._in_burst > self.ok_frames:
            self._lost = True
            return self.read()
        return np.zeros((4, 4, 3), np.uint8)

    def reconnect(self) -> bool:
        self.reconnect_calls += 1
        if self.reconnect_calls == 2:  # the second attempt succeeds, the first time only
            self._lost, self._in_burst, self.error = False, 0, None
            return True
        return False


def test_live_source_reconnects_with_back_off_then_ends_with_the_error() -> None:
    rb = ring(64, Policy.BLOCK)
    reader = rb.reader()
    source = FlakyCamera(ok_frames=5)
    options = CaptureOptions(reconnect_s=0.3, reconnect_first_delay_s=0.01, reconnect_max_delay_s=0.05)
    with CaptureThread(source, rb, options) as capture:
        indices = []
        while (packet := reader.read(timeout=5.0)) is not None:
            indices.append(packet.index)
    assert indices == list(range(10))  # index keeps counting across the reconnect
    assert capture.reconnects == 1
    assert source.reconnect_calls > 2  # kept trying (with back-off) until reconnect_s ran out
    assert capture.end_reason == "error: camera:flaky stopped delivering frames"


def test_a_source_that_raises_ends_the_capture_with_an_error() -> None:
    def broken() -> Iterator[np.ndarray]:
        yield np.zeros((4, 4, 3), np.uint8)
        raise RuntimeError("decoder exploded")

    rb = ring(4, Policy.BLOCK)
    reader = rb.reader()
    with CaptureThread(ArraySource(broken()), rb) as capture:
        while reader.read(timeout=5.0) is not None:
            pass
    assert capture.end_reason == "error: decoder exploded"


# --- sources -----------------------------------------------------------------------------------------


def write_clip(path: Path, n: int = 20, fps: float = 25.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (32, 24))
    assert writer.isOpened()
    for i in range(n):
        writer.write(np.full((24, 32, 3), (i * 10) % 256, np.uint8))
    writer.release()
    return path


def test_video_file_source(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.avi")
    with open_source(clip) as source:
        assert source.name == "file:clip.avi"
        assert source.fps == pytest.approx(25.0)
        assert not source.is_live
        assert source.frame_count == 20
        n = 0
        while (frame := source.read()) is not None:
            assert frame.shape == (24, 32, 3)
            n += 1
        assert n == 20 and source.error is None
    source.close()  # idempotent
    assert source.read() is None


def test_truncated_file_ends_early_and_says_why(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.avi", n=40)
    data = clip.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    with open_source(cut) as source:
        n = 0
        while source.read() is not None:
            n += 1
    assert 0 < n < 40
    assert source.error is not None and "ended early" in source.error


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.mp4", "not found"),
        (lambda d: d, "is a directory"),
        (lambda d: (d / "empty.mp4").write_bytes(b"") and None or d / "empty.mp4", "empty"),
        (
            lambda d: (d / "notes.mp4").write_text("hello, not a video") and None or d / "notes.mp4",
            "not a video",
        ),
    ],
)
def test_file_errors_are_one_line_messages(tmp_path: Path, make: Callable[[Path], Path], message: str) -> None:
    with pytest.raises(SourceError, match=message) as info:
        open_source(make(tmp_path))
    assert "\n" not in str(info.value)


def test_camera_errors_say_how_to_pick_another() -> None:
    with pytest.raises(SourceError, match=r"ls /dev/video\*.*--camera"):
        open_source("/dev/video-does-not-exist")
    with pytest.raises(SourceError, match="unsupported URL scheme"):
        open_source("ftp://example/video")


def test_array_source() -> None:
    with ArraySource(frames(3), fps=50.0, name="synthetic") as source:
        assert source.frame_count == 3 and source.fps == 50.0 and not source.is_live
        read = [source.read() for _ in range(3)]
        assert [int(f[0, 0, 0]) for f in read if f is not None] == [0, 1, 2]
        assert source.read() is None and source.error is None
    with pytest.raises(ValueError):
        ArraySource([], fps=0.0)

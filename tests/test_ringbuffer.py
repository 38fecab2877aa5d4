"""Ring buffer: drop accounting, blocking, shutdown — with real threads."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from realtime.ringbuffer import FramePacket, Policy, RingBuffer, RingBufferOptions


def _frame(i: int, shape: tuple[int, ...] = (4, 5)) -> np.ndarray:
    return np.full(shape, i % 251, dtype=np.uint8)



def _index(packet: FramePacket | None) -> int:
    assert packet is not None
    return packet.index

def test_overwrite_counts_what_a_slow_reader_missed() -> None:
    ring = RingBuffer(RingBufferOptions(capacity=4, policy=Policy.OVERWRITE))
    reader = ring.reader()
    for i in range(10):
        assert ring.write(_frame(i), i, i / 30)
    packet = reader.read(timeout=0)
    assert packet is not None
    assert packet.index == 6 and packet.missed == 6 and reader.missed == 6
    assert packet.frame[0, 0] == 6 and packet.t == pytest.approx(6 / 30)
    assert [_index(reader.read(timeout=0)) for _ in range(3)] == [7, 8, 9]
    assert reader.read(timeout=0) is None
    assert reader.missed + reader.read_count == ring.written


def test_reader_buffer_is_its_own_copy() -> None:
    ring = RingBuffer(RingBufferOptions(capacity=2))
    reader = ring.reader()
    ring.write(_frame(1), 0, 0.0)
    packet = reader.read(timeout=0)
    assert packet is not None
    ring.write(_frame(2), 1, 0.1)
    ring.write(_frame(3), 2, 0.2)  # slot of frame 1 overwritten
    assert packet.frame[0, 0] == 1


def test_block_policy_delivers_every_frame_under_threads() -> None:
    ring = RingBuffer(RingBufferOptions(capacity=3, policy=Policy.BLOCK))
    reader = ring.reader()
    seen: list[int] = []

    def consume() -> None:
        while (packet := reader.read(timeout=2.0)) is not None:
            assert packet.missed == 0 and packet.frame[0, 0] == packet.index % 251
            seen.append(packet.index)
            if packet.index % 50 == 0:
                time.sleep(0.002)  # a slow consumer now and then

    consumer = threading.Thread(target=consume)
    consumer.start()
    for i in range(500):
        assert ring.write(_frame(i), i, i / 30.0)
    ring.close()
    consumer.join(timeout=5)
    assert not consumer.is_alive()
    assert seen == list(range(500)) and reader.missed == 0


def test_overwrite_under_threads_accounts_for_every_frame() -> None:
    ring = RingBuffer(RingBufferOptions(capacity=4, policy=Policy.OVERWRITE))
    reader = ring.reader()
    seen: list[int] = []
    missed = 0

    def consume() -> None:
        nonlocal missed
        while (packet := reader.read(timeout=2.0)) is not None:
            missed += packet.missed
            seen.append(packet.index)
            time.sleep(0.0005)

    consumer = threading.Thread(target=consume)
    consumer.start()
    for i in range(2000):
        ring.write(_frame(i), i, i / 30.0)
    ring.close()
    consumer.join(timeout=5)
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    assert len(seen) + missed == 2000 == len(seen) + reader.missed
    assert seen[-1] == 1999  # drained after close


def _until_waiting(*conditions: threading.Condition, timeout: float = 5.0) -> None:
    """Handshake: return once a thread waits on each condition (their waiter lists, CPython's)."""
    deadline = time.monotonic() + timeout
    while not all(getattr(c, "_waiters", None) for c in conditions):
        assert time.monotonic() < deadline, "the threads never blocked"
        time.sleep(0.001)


def test_close_wakes_a_blocked_writer_and_waiting_readers() -> None:
    ring = RingBuffer(RingBufferOptions(capacity=2, policy=Policy.BLOCK))
    reader = ring.reader()
    ring.write(_frame(0), 0, 0.0)
    ring.write(_frame(1), 1, 0.1)
    results: dict[str, object] = {}

    writer = threading.Thread(target=lambda: results.setdefault("write", ring.write(_frame(2), 2, 0.2)))
    other = ring.reader()  # starts empty: blocks on read
    waiter = threading.Thread(target=lambda: results.setdefault("read", other.read()))
    writer.start()
    waiter.start()
    _until_waiting(ring._writable, ring._readable)  # both threads blocked inside the ring
    assert writer.is_alive() and waiter.is_alive()
    ring.close()
    writer.join(timeout=2)
    waiter.join(timeout=2)
    assert not writer.is_alive() and not waiter.is_alive()
    assert results == {"write": False, "read": None}
    # The first reader still drains what was held, then sees the end.
    assert [_index(reader.read(timeout=0)) for _ in range(2)] == [0, 1]
    assert reader.read(timeout=0) is None


def test_block_writer_times_out_and_detached_reader_releases_it() -> None:
    ring = RingBuffer(RingBufferOptions(capacity=1, policy=Policy.BLOCK))
    reader = ring.reader()
    assert ring.write(_frame(0), 0, 0.0)
    assert ring.write(_frame(1), 1, 0.1, timeout=0.01) is False
    reader.close()
    assert ring.write(_frame(1), 1, 0.1, timeout=0.01) is True


def test_frame_size_change_reallocates_slots() -> None:
    ring = RingBuffer(RingBufferOptions(capacity=3))
    reader = ring.reader()
    ring.write(_frame(1, (4, 4)), 0, 0.0)
    ring.write(_frame(2, (8, 6, 3)), 1, 0.1)
    packet = reader.read(timeout=0)
    assert packet is not None and packet.index == 0 and packet.frame.shape == (4, 4) and packet.frame[0, 0] == 1
    packet = reader.read(timeout=0)
    assert packet is not None and packet.index == 1 and packet.frame.shape == (8, 6, 3) and packet.frame[0, 0, 0] == 2


@pytest.mark.parametrize("policy", list(Policy))
def test_a_frame_size_change_leaves_the_unread_frames_intact(policy: Policy) -> None:
    """A stream that changes resolution while frames wait to be read: every frame comes back as written,
    with its own index and time (the old frames are not turned into empty buffers of the new size)."""
    ring = RingBuffer(RingBufferOptions(capacity=6, policy=policy))
    reader = ring.reader()
    shapes = [(4, 4)] * 3 + [(8, 6, 3)] * 2 + [(4, 4)]  # back to the first size: slot 0 is written again
    written = [np.random.default_rng(i).integers(0, 256, shape, dtype=np.uint8) for i, shape in enumerate(shapes)]
    for i, frame in enumerate(written[:5]):
        assert ring.write(frame, 100 + i, i / 30.0)
    first = reader.read(timeout=0)
    assert first is not None and first.index == 100 and np.array_equal(first.frame, written[0])
    assert ring.write(written[5], 105, 5 / 30.0)
    for i in range(1, 6):
        packet = reader.read(timeout=0)  # its frame is the reader's buffer, valid until the next read
        assert packet is not None
        assert (packet.index, packet.t, packet.missed) == (100 + i, i / 30.0, 0)
        assert packet.frame.shape == written[i].shape and np.array_equal(packet.frame, written[i]), i
    assert reader.read(timeout=0) is None


def test_options_validate() -> None:
    with pytest.raises(ValueError):
        RingBufferOptions(capacity=0)

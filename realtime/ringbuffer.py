"""A bounded ring of preallocated frame slots between one writer (capture) and its readers (analysis).

Two policies, as DESIGN.md asks:
- ``OVERWRITE`` (live camera): the writer never waits; a reader that falls behind skips to the oldest
  frame still held and counts what it missed, so latency stays bounded and drops are visible.
- ``BLOCK`` (file read as fast as possible): the writer waits until the slowest reader has consumed the
  slot it needs, so every frame is analysed.

Copies in and out happen under the lock, so a reader never sees a half-written frame. A slot gets a new
buffer only when a frame of another size or type is written into it, so a source that changes resolution
leaves the frames not yet read as they were; each reader owns one output buffer it reuses, so the per-frame
path allocates nothing once running. ``close()`` wakes every waiter: the writer gets ``False``, readers
drain what is left and then get ``None``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

__all__ = ["FramePacket", "Policy", "RingBuffer", "RingBufferOptions", "RingReader"]


class Policy(StrEnum):
    OVERWRITE = "overwrite"
    BLOCK = "block"


@dataclass(frozen=True)
class RingBufferOptions:
    capacity: int = 32  # slots; ~1 s of a 30 fps camera
    policy: Policy = Policy.OVERWRITE

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {self.capacity}")


@dataclass(frozen=True, slots=True)
class FramePacket:
    """One frame handed to a reader. ``frame`` is the reader's own buffer: valid until its next read."""

    index: int  # frame index from the start of the source
    t: float  # seconds on the source clock
    frame: np.ndarray
    missed: int  # frames this reader lost to overwriting just before this one
    captured_at: float | None = None  # the capture clock (monotonic) at grab; latency is measured against it


class RingBuffer:
    """Fixed slots, one writer, any number of registered readers that each know what they missed."""

    def __init__(self, options: RingBufferOptions | None = None) -> None:
        self.options = options or RingBufferOptions()
        cap = self.options.capacity
        self._slots: list[np.ndarray | None] = [None] * cap
        self._index = np.zeros(cap, dtype=np.int64)
        self._t = np.zeros(cap, dtype=np.float64)
        self._captured_at = np.full(cap, np.nan, dtype=np.float64)
        self._written = 0  # sequence number of the next write
        self._readers: list[RingReader] = []
        self._closed = False
        self._lock = threading.Lock()
        self._readable = threading.Condition(self._lock)
        self._writable = threading.Condition(self._lock)

    # --- writer side -------------------------------------------------------------------------------
    def write(self, frame: np.ndarray, index: int, t: float, timeout: float | None = None, *,
              captured_at: float | None = None) -> bool:
        """Store one frame with its index, source time and capture clock value. Returns False when the buffer
        is closed (or, in BLOCK mode, on timeout)."""
        cap = self.options.capacity
        with self._lock:
            if self.options.policy is Policy.BLOCK:
                deadline = None if timeout is None else time.monotonic() + timeout
                while not self._closed and self._readers and self._written - self._slowest() >= cap:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._writable.wait(remaining)
            if self._closed:
                return False
            slot = self._written % cap
            buf = self._slots[slot]
            if buf is None or buf.shape != frame.shape or buf.dtype != frame.dtype:
                # First lap, or the source changed size: this slot alone gets the new shape. The others keep
                # their frames (still unread, perhaps) until they are written in turn.
                buf = self._slots[slot] = np.empty_like(frame)
            np.copyto(buf, frame)
            self._index[slot] = index
            self._t[slot] = t
            self._captured_at[slot] = np.nan if captured_at is None else captured_at
            self._written += 1
            self._readable.notify_all()
        return True

    def _slowest(self) -> int:
        return min(r._next for r in self._readers)

    # --- readers ---------------------------------------------------------------------------------
    def reader(self) -> RingReader:
        """A new reader that starts with the next frame written."""
        with self._lock:
            reader = RingReader(self, self._written)
            self._readers.append(reader)
            return reader

    def _unregister(self, reader: RingReader) -> None:
        with self._lock:
            if reader in self._readers:
                self._readers.remove(reader)
                self._writable.notify_all()

    def _read(self, reader: RingReader, timeout: float | None) -> FramePacket | None:
        cap = self.options.capacity
        with self._lock:
            deadline = None if timeout is None else time.monotonic() + timeout
            while reader._next >= self._written:
                if self._closed or reader._closed:
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._readable.wait(remaining)
            oldest = max(0, self._written - cap)
            missed = 0
            if reader._next < oldest:  # overwritten while we were busy (OVERWRITE policy only)
                missed = oldest - reader._next
                reader._next = oldest
                reader.missed += missed
            slot = reader._next % cap
            src = self._slots[slot]
            assert src is not None
            out = reader._buffer
            if out is None or out.shape != src.shape or out.dtype != src.dtype:
                out = reader._buffer = np.empty_like(src)
            np.copyto(out, src)
            grabbed = float(self._captured_at[slot])
            packet = FramePacket(index=int(self._index[slot]), t=float(self._t[slot]), frame=out, missed=missed,
                                 captured_at=None if np.isnan(grabbed) else grabbed)
            reader._next += 1
            reader.read_count += 1
            self._writable.notify_all()
            return packet

    # --- lifecycle -------------------------------------------------------------------------------
    @property
    def written(self) -> int:
        return self._written

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop: the writer's next write returns False; readers drain what is held, then get None."""
        with self._lock:
            self._closed = True
            self._readable.notify_all()
            self._writable.notify_all()

    def __enter__(self) -> RingBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RingReader:
    """A cursor into a :class:`RingBuffer`; counts the frames it missed."""

    def __init__(self, ring: RingBuffer, start: int) -> None:
        self._ring = ring
        self._next = start
        self._buffer: np.ndarray | None = None
        self._closed = False
        self.missed = 0
        self.read_count = 0

    def read(self, timeout: float | None = None) -> FramePacket | None:
        """Next frame, waiting up to ``timeout`` s; None on timeout, or once closed and drained."""
        return self._ring._read(self, timeout)

    @property
    def pending(self) -> int:
        """Frames written but not yet read (capped at the buffer's capacity)."""
        return min(self._ring.written - self._next, self._ring.options.capacity)

    def close(self) -> None:
        """Detach: a BLOCK writer stops waiting for this reader."""
        if not self._closed:
            self._closed = True
            self._ring._unregister(self)
            with self._ring._lock:
                self._ring._readable.notify_all()

    def __enter__(self) -> RingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""The capture thread: the one thread that reads a source, stamps each frame and writes it to the ring.

It owns the source from the moment it is handed over until it releases it, whatever happens. Every frame
gets ``(index, t)``: the index counts frames read (0-based); ``t`` is seconds on the source clock — for a
live source the injected monotonic clock at grab, relative to the first frame; for a file its position
(index / fps). The absolute clock value at grab travels with the frame through the ring
(:attr:`FramePacket.captured_at`), so latency downstream is measured against the same clock.

Never blocks forever: ring writes wait in short slices and check the stop event (a ``finally`` that joins a
writer stuck on a full buffer is how vidgear hangs on exit). At the end — source exhausted, failed, or
stopped — the ring is closed so readers drain what is held and finish, and ``end_reason`` says why.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from realtime.ringbuffer import RingBuffer
from realtime.sources import FrameSource

__all__ = ["CaptureOptions", "CaptureThread"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaptureOptions:
    pace: bool = True  # play files at their own fps, like a camera (False = as fast as the ring allows)
    reconnect_s: float = 5.0  # a live source that stops is reopened with back-off for at most this long
    reconnect_first_delay_s: float = 0.05  # back-off starts here and doubles ...
    reconnect_max_delay_s: float = 1.0  # ... up to this
    write_slice_s: float = 0.1  # a blocked ring write re-checks the stop event this often
    join_timeout_s: float = 2.0  # how long stop() waits for the thread
    clock: Callable[[], float] = field(default=time.monotonic)

    def __post_init__(self) -> None:
        if self.reconnect_s < 0 or self.write_slice_s <= 0:
            raise ValueError("reconnect_s must be >= 0 and write_slice_s > 0")


class CaptureThread:
    """Reads ``source`` into ``ring`` on its own (non-daemon) thread; ``stop()`` = set event + join.

    The caller picks the ring's policy: ``OVERWRITE`` for live sources and paced files (analysis that falls
    behind loses frames, counted by its reader), ``BLOCK`` with ``pace=False`` to analyse every frame.
    Counters (``frames_read``, ``reconnects``, ``first_grab``, ``last_grab``) are written by the capture
    thread only and safe to read from others.
    """

    def __init__(self, source: FrameSource, ring: RingBuffer, options: CaptureOptions | None = None) -> None:
        self.source = source
        self.ring = ring
        self.options = options or CaptureOptions()
        self._clock = self.options.clock
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"capture[{source.name}]", daemon=False)
        self._started = False
        self.frames_read = 0
        self.reconnects = 0
        self.first_grab: float | None = None  # clock() at the first frame
        self.last_grab: float | None = None  # clock() at the latest frame
        self.end_reason: str | None = None  # "end" | "stopped" | "error: ..." once finished

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> CaptureThread:
        if not self._started:
            self._started = True
            self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> bool:
        """Ask the thread to finish and wait for it; True when it has. Safe to call twice."""
        self._stop.set()
        if not self._started:
            self._finish("stopped")
            return True
        self._thread.join(self.options.join_timeout_s if timeout is None else timeout)
        if self._thread.is_alive():
            log.warning("%s: capture thread did not stop in time (source read blocked?)", self.source.name)
            return False
        return True

    def close(self) -> None:
        self.stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the source to end by itself; True when the thread has finished."""
        return self._done.wait(timeout)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def __enter__(self) -> CaptureThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        reason = "stopped"
        try:
            reason = self._loop()
        except Exception as exc:  # a bug or a driver error must still end the run cleanly
            # one line (the traceback at debug level): the run still ends with its summary
            log.error("%s: capture failed: %s", self.source.name, exc, exc_info=log.isEnabledFor(logging.DEBUG))
            if self.source.error is None:  # a read that raised failed like any other: say why, where users look
                self.source.error = f"{self.source.name} failed: {type(exc).__name__}: {exc}"
            reason = f"error: {exc}"
        finally:
            self._finish(reason)

    def _finish(self, reason: str) -> None:
        self.ring.close()
        try:
            self.source.close()
        except Exception:
            log.exception("%s: closing the source failed", self.source.name)
        if self.end_reason is None:
            self.end_reason = reason
        self._done.set()

    def _loop(self) -> str:
        source, opts, clock = self.source, self.options, self._clock
        live = source.is_live
        fps = source.fps
        start: float | None = None
        index = 0
        while not self._stop.is_set():
            frame = source.read()
            if frame is None:
                if self._stop.is_set():
                    break
                if live and source.error is not None and self._reconnect():
                    continue
                return "end" if source.error is None else f"error: {source.error}"
            now = clock()  # the grab time
            if start is None:
                start = now
            if live:
                t = now - start
            else:
                t = index / fps
                if opts.pace and now < start + t:  # release the frame when a camera would have delivered it
                    if not self._wait_until(start + t):
                        break
                    now = clock()
            self._remember(now)
            if not self._write(frame, index, t, now):
                break
            self.frames_read = index + 1
            index += 1
        return "stopped"

    def _remember(self, now: float) -> None:
        if self.first_grab is None:
            self.first_grab = now
        self.last_grab = now

    def _wait_until(self, target: float) -> bool:
        """Pace a file: wait until clock() >= target; False when stopped meanwhile."""
        while True:
            remaining = target - self._clock()
            if remaining <= 0:
                return True
            if self._stop.wait(min(remaining, 0.05)):
                return False

    def _write(self, frame: np.ndarray, index: int, t: float, captured_at: float) -> bool:
        """Write, in slices, until written; False when stopped or the ring was closed by someone else."""
        while not self._stop.is_set():
            if self.ring.write(frame, index, t, timeout=self.options.write_slice_s, captured_at=captured_at):
                return True
            if self.ring.closed:
                return False
        return False

    def _reconnect(self) -> bool:
        """A live source stopped: reopen it with exponential back-off for at most ``reconnect_s``."""
        opts = self.options
        if opts.reconnect_s <= 0:
            return False
        log.warning(
            "%s: %s; reconnecting for up to %.1f s", self.source.name, self.source.error, opts.reconnect_s
        )
        deadline = self._clock() + opts.reconnect_s
        delay = opts.reconnect_first_delay_s
        while not self._stop.is_set():
            if self.source.reconnect():
                self.reconnects += 1
                return True
            remaining = deadline - self._clock()
            if remaining <= 0:
                break
            if self._stop.wait(min(delay, remaining)):
                break
            delay = min(delay * 2.0, opts.reconnect_max_delay_s)
        return False

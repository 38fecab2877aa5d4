"""Hiding what native libraries (MediaPipe's glog, TFLite) print straight to file descriptor 2.

MediaPipe writes lines such as ``W0000 ... face_landmarker_graph.cc:181] ...`` and ``INFO: Created TensorFlow
Lite XNNPACK delegate for CPU.`` to fd 2 when a landmarker starts and runs; mediapipe 1.2 offers no switch
for them. The commands (never library code) hide them unless asked to be verbose.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any, TextIO

__all__ = ["StderrHandler", "native_stderr_silenced"]


@contextlib.contextmanager
def native_stderr_silenced(enabled: bool = True, *, keep_python: bool = False) -> Iterator[None]:
    """Point fd 2 at /dev/null for the duration, so native libraries' lines vanish.

    Without ``keep_python`` Python's own stderr is silenced too: use it only around start-up, on the main
    thread, before other threads run. With ``keep_python``, ``sys.stderr`` writes to a copy of the real
    stderr meanwhile, so Python's messages (logging through :class:`StderrHandler`, Rich consoles on
    stderr, warnings) still reach the terminal while a long job runs.
    """
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    python_stderr: TextIO | None = None
    previous = sys.stderr
    try:
        if keep_python:
            python_stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding=getattr(previous, "encoding", None),
                                      errors="backslashreplace")
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            if python_stderr is not None:
                sys.stderr = python_stderr
            try:
                yield
            finally:
                if python_stderr is not None:
                    sys.stderr = previous
                    python_stderr.flush()
                os.dup2(saved, 2)
    finally:
        if python_stderr is not None:
            python_stderr.close()
        os.close(saved)


class StderrHandler(logging.StreamHandler[TextIO]):
    """A logging handler writing to whatever ``sys.stderr`` is when a record is emitted (so it follows
    :func:`native_stderr_silenced` with ``keep_python``), like logging's last-resort handler."""

    def __init__(self, level: int = logging.NOTSET) -> None:
        logging.Handler.__init__(self, level)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.setStream: the stream is always sys.stderr
        pass

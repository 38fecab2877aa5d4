"""Hiding what native libraries (MediaPipe's glog, TFLite) print straight to file descriptor 2.

MediaPipe writes lines such as ``W0000 ... face_landmarker_graph.cc:181] ...``, ``WARNING: Logging before
InitGoogle() is written to STDERR`` and ``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.`` to fd 2 when
a landmarker starts and runs, from its own threads, long after the call that created it returned; mediapipe
1.2 offers no switch for them (``GLOG_minloglevel``, ``TF_CPP_MIN_LOG_LEVEL`` and ``ABSL_MIN_LOG_LEVEL`` have
no effect: its absl logging prints everything before ``InitGoogle``). OpenCV prints ``[ WARN:0@0.2] ...`` while
it probes camera back-ends; ``OPENCV_LOG_LEVEL`` is read only when cv2 is imported, too late for a command.
The commands (never library code) hide them unless asked to be verbose: :func:`native_logs_hidden` for a whole
run, :func:`native_stderr_silenced` around one step.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any, TextIO

__all__ = ["StderrHandler", "native_logs_hidden", "native_stderr_silenced"]


@contextlib.contextmanager
def native_stderr_silenced(enabled: bool = True, *, keep_python: bool = False) -> Iterator[None]:
    """Point fd 2 at /dev/null for the duration, so native libraries' lines vanish.

    Without ``keep_python`` Python's own stderr is silenced too: use it only around start-up, on the main
    thread, before other threads run. With ``keep_python``, ``sys.stderr`` writes to a copy of the real
    stderr meanwhile, so Python's messages (logging through :class:`StderrHandler`, Rich consoles on
    stderr, warnings) still reach the terminal while a long job runs. A ``sys.stderr`` that does not write
    to fd 2 (an outer call's copy, a test's capture) is left as it is: it is not silenced.
    """
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    python_stderr: TextIO | None = None
    previous = sys.stderr
    try:
        if keep_python and _writes_to_fd2(previous):
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


def _writes_to_fd2(stream: Any) -> bool:
    try:
        return bool(stream.fileno() == 2)
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation: no descriptor at all
        return False


@contextlib.contextmanager
def native_logs_hidden(enabled: bool = True) -> Iterator[None]:
    """For a command's whole run: OpenCV's logging off and fd 2 at /dev/null, Python's stderr kept.

    Python's messages still show (configure logging with :class:`StderrHandler`; Rich consoles on stderr and
    ``print(file=sys.stderr)`` follow ``sys.stderr``); the lines native libraries write from any thread, at
    any time, do not. Everything is put back on the way out (an in-process caller, e.g. a test, sees no
    change). ``enabled=False`` (``--log-level debug``) changes nothing.
    """
    if not enabled:
        yield
        return
    with _opencv_silent(), native_stderr_silenced(True, keep_python=True):
        yield


@contextlib.contextmanager
def _opencv_silent() -> Iterator[None]:
    """OpenCV's own log level at "silent" for the duration (its camera probing and FFmpeg wrapper warnings)."""
    try:
        from cv2.utils import logging as cv_logging

        previous = cv_logging.getLogLevel()
        cv_logging.setLogLevel(cv_logging.LOG_LEVEL_SILENT)
    except (ImportError, AttributeError):  # an OpenCV without it: fd 2 is silenced anyway
        yield
        return
    try:
        yield
    finally:
        cv_logging.setLogLevel(previous)


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

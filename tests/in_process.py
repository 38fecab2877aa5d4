"""A command's ``main()`` run in this process, seen as a subprocess would see it: the environment it is given,
and what reaches file descriptors 1 and 2, native libraries' lines included.

Starting ``python -m mer_cli.live`` costs a second of imports per run; the tests that are about the command's
behaviour (exit codes, one-line errors, what it records) run it here instead. The ones about the process itself
(signals, what it writes to the disk, native log lines, running without torch) still start one.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Ran:
    """What :func:`run_main` saw, named as in :class:`subprocess.CompletedProcess`."""

    returncode: int
    stdout: str
    stderr: str


def run_main(main: Callable[[list[str]], int], args: Sequence[str | Path], *,
             env: Mapping[str, str] | None = None) -> Ran:
    """``main(args)`` with ``os.environ`` replaced by ``env`` (default: unchanged) and descriptors 1 and 2 captured;
    ``sys.stdout``/``sys.stderr`` write to them as in a fresh process (so the command's own hiding of native
    lines, which points fd 2 elsewhere, works as it does there). Environment, root logging and both streams are
    put back afterwards. ``SystemExit`` (argparse's exits) becomes the return code."""
    saved_env = dict(os.environ)
    root = logging.getLogger()
    saved_logging = root.handlers[:], root.level
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        saved_fds = os.dup(1), os.dup(2)
        saved_streams = sys.stdout, sys.stderr
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", write_through=True)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", write_through=True)
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        try:
            try:
                code = main([str(a) for a in args])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            os.environ.clear()
            os.environ.update(saved_env)
            root.handlers[:], level = saved_logging
            root.setLevel(level)
            sys.stdout.flush()
            sys.stderr.flush()
            sys.stdout, sys.stderr = saved_streams
            for fd, saved in zip((1, 2), saved_fds, strict=True):
                os.dup2(saved, fd)
                os.close(saved)
        out.seek(0)
        err.seek(0)
        return Ran(code, out.read().decode("utf-8", errors="replace"), err.read().decode("utf-8", errors="replace"))

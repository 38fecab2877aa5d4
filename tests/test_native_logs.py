"""What native libraries print on their own (MediaPipe's absl log, OpenCV's camera probing) stays off a real
``mer-live`` run's stderr unless ``--log-level debug``: in dashboard mode those lines tore the display. Seen at
file descriptor 2 of a child process, the only place they show."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NATIVE = re.compile(r"^(W0000 |I0000 |E0000 |WARNING: Logging before InitGoogle|INFO: Created TensorFlow|\[ ?(WARN|ERROR|INFO):)",
                    re.MULTILINE)


def _mer_live(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mer_cli.live", "--no-dashboard", "--zmq", "none", *args],
                          capture_output=True, text=True, timeout=180, cwd=REPO)


def test_a_real_run_shows_only_its_own_lines(face_model_path: Path, shared_faces: Path) -> None:
    video = ["--video", str(shared_faces / "single_face.mp4"), "--fast", "--face-model", str(face_model_path)]
    proc = _mer_live(*video)
    assert proc.returncode == 0, proc.stderr
    assert not NATIVE.findall(proc.stderr), proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.strip()] == [proc.stderr.strip()]  # the end line
    assert proc.stderr.startswith("mer-live: end: ")
    # the lines are there to hide (MediaPipe 1.2); they come as the landmarkers start, so a second will do
    verbose = _mer_live(*video, "--log-level", "debug", "--duration", "1")
    assert verbose.returncode == 0 and "W0000" in verbose.stderr, verbose.stderr


def test_a_missing_camera_is_one_line() -> None:
    """OpenCV's back-end probing (V4L2, FFmpeg, obsensor: six lines) before the one line that says what to do."""
    if Path("/dev/video63").exists():
        pytest.skip("this machine has a camera 63")
    proc = _mer_live("--camera", "63")
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mer-live: error: camera 63 could not be opened"), proc.stderr


def test_python_messages_show_inside_nested_silencing() -> None:
    """A step silenced inside a silenced run (mer-live's demo clip, its progress line) kept Python's messages
    only for the outer one: the inner copy of "the real stderr" was a copy of /dev/null."""
    code = """if True:
        import os, sys
        from realtime.native_stderr import native_logs_hidden, native_stderr_silenced
        with native_logs_hidden():
            print("outer", file=sys.stderr)
            with native_stderr_silenced(keep_python=True):
                print("inner", file=sys.stderr)
                os.write(2, b"W0000 native line\\n")
            print("outer again", file=sys.stderr)
        print("after", file=sys.stderr)
    """
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0 and proc.stderr == "outer\ninner\nouter again\nafter\n", proc.stderr

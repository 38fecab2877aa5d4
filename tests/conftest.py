"""Shared fixtures: where the face model and the shared faces are, skipping with a reason when absent; every
test's user cache in a temporary folder."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def _face_model() -> Path | None:
    env = os.environ.get("MER_FACE_MODEL", "").strip()
    if env and Path(env).is_file():
        return Path(os.path.abspath(env))  # absolute: tests run commands from other folders
    candidate = SHARED / "models" / "face_landmarker.task"
    return candidate if candidate.is_file() else None


# Read before the fixture below moves the user cache: the model a user keeps there is still found.
_REAL_FACE_MODEL = _face_model()
if _REAL_FACE_MODEL is None:
    from mer_core.paths import user_cache_dir

    _cached = user_cache_dir() / "face_landmarker.task"
    _REAL_FACE_MODEL = _cached if _cached.is_file() else None


@pytest.fixture(scope="session", autouse=True)
def _user_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The user cache of every test, and of every command a test starts, is a temporary folder.

    ``MER_CACHE_DIR`` and ``XDG_CACHE_HOME`` (which ``~/.cache`` defaults from) point into the session's
    temporary folder, whatever the user set, so no test reads a user's cached files nor writes into them; a
    test that needs another cache sets its own. ``MER_FACE_MODEL`` names the real face model, found before.
    """
    root = tmp_path_factory.mktemp("user")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MER_CACHE_DIR", str(root / "mer-cache"))
        mp.setenv("XDG_CACHE_HOME", str(root / "xdg-cache"))
        if _REAL_FACE_MODEL is not None:
            mp.setenv("MER_FACE_MODEL", str(_REAL_FACE_MODEL))
        yield root


@pytest.fixture(scope="session")
def face_model_path() -> Path:
    path = _face_model()
    if path is None:
        pytest.skip("face model not found: set MER_FACE_MODEL or put face_landmarker.task in ../shared/models")
    return path


@pytest.fixture(scope="session")
def shared_faces() -> Path:
    faces = SHARED / "faces"
    if not (faces / "single_face.jpg").is_file():
        pytest.skip("../shared/faces not found beside the repository")
    return faces


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised dual-phase model: model.pt, model.card.json, model.onnx (plumbing, not accuracy).
    Made once per session (an ONNX export costs a second or two); tests read it and never write into it."""
    from engines.checkpoint import save_checkpoint
    from engines.onnx_io import export_onnx
    from engines.registry import build_model

    root = tmp_path_factory.mktemp("model")
    model = build_model("dual-phase", labels=("negative", "positive", "surprise"))
    save_checkpoint(model, root / "model.pt")
    export_onnx(model, root / "model.onnx")
    return root


@pytest.fixture
def no_thread_left_behind() -> Iterator[None]:
    """The test stops every thread it starts (use with ``pytestmark = pytest.mark.usefixtures(...)``)."""
    before = set(threading.enumerate())
    yield
    left = [t.name for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not left, f"threads still running: {left}"

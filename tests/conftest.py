"""Shared fixtures: where the face model and the shared faces are, skipping with a reason when absent."""

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


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised dual-phase model: model.pt, model.card.json, model.onnx (plumbing, not accuracy)."""
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

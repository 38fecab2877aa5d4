"""Shared fixtures: where the face model and the shared faces are, skipping with a reason when absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def _face_model() -> Path | None:
    env = os.environ.get("MER_FACE_MODEL")
    if env and Path(env).is_file():
        return Path(env)
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

"""Inference backends behind one :class:`Engine` contract: torch, ONNX Runtime, TensorRT.

Importing this package imports neither torch nor TensorRT; each backend imports its runtime when chosen.
"""

from __future__ import annotations

from engines.backends.artefacts import DEFAULT_MODEL_DIR, Artefacts, resolve_artefacts
from engines.backends.base import (
    BACKEND_NAMES,
    BackendUnavailableError,
    Engine,
    EngineError,
    EngineOptions,
    InputShapeError,
    ModelFileError,
    ModelNotFoundError,
    PlanMismatchError,
    TorchMissingError,
    cache_root,
    default_threads,
)
from engines.backends.loader import load_engine
from engines.backends.plan_meta import PlanMeta, check_plan, meta_path, plan_problems
from engines.backends.select import Environment, choose_backend, probe_environment

__all__ = [
    "BACKEND_NAMES",
    "DEFAULT_MODEL_DIR",
    "Artefacts",
    "BackendUnavailableError",
    "Engine",
    "EngineError",
    "EngineOptions",
    "Environment",
    "InputShapeError",
    "ModelFileError",
    "ModelNotFoundError",
    "PlanMeta",
    "PlanMismatchError",
    "TorchMissingError",
    "cache_root",
    "check_plan",
    "choose_backend",
    "default_threads",
    "load_engine",
    "meta_path",
    "plan_problems",
    "probe_environment",
    "resolve_artefacts",
]

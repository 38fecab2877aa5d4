"""The one inference contract every backend implements: DI stacks in, class probabilities out.

An :class:`Engine` is built from a model card and one artefact (checkpoint, ONNX file or TensorRT plan),
warms itself up on creation, checks every batch against ``card.input_shape`` and is closed once
(``close()`` is idempotent; engines are context managers).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import numpy as np

from engines.card import ModelCard
from engines.errors import EngineError
from engines.errors import ModelFileError as ModelFileError  # re-exported: long raised and caught from here
from mer_core.paths import user_cache_dir

log = logging.getLogger(__name__)

BACKEND_NAMES = ("torch", "onnxruntime", "tensorrt")


def import_onnxruntime() -> Any:
    """``onnxruntime``, imported with its telemetry off unless the user set ``ORT_DISABLE_TELEMETRY``.

    onnxruntime 1.31 writes a device id and an event database under ``$XDG_CACHE_HOME/Microsoft`` and
    ``$TMPDIR/.ses`` when it is imported: files outside the paths a user gave and the mer-live cache. The
    variable is read at import, so every import in engines/ goes through here.
    """
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime

    return onnxruntime


class BackendUnavailableError(EngineError):
    """The requested backend (or device) is not usable on this machine."""


class TorchMissingError(BackendUnavailableError):
    """Something needs torch (training, export, the torch backend, a .pt model) and it is not installed."""


# torch is an optional extra: live use runs on ONNX Runtime without it.
# mer-live installs from its clone, not a package index; torch first, pinned (docs/usage.md names the CPU index)
TRAIN_EXTRA = 'pip install torch==2.13.0 && pip install -e ".[train]" in the mer-live clone'


def torch_installed() -> bool:
    """Whether ``import torch`` can work, found without importing it."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def require_torch(what: str) -> None:
    """Raise :class:`TorchMissingError` naming the extra to install when torch is missing; ``what`` needs it."""
    if not torch_installed():
        raise TorchMissingError(f"{what} needs torch, which is not installed: {TRAIN_EXTRA}")


class ModelNotFoundError(EngineError, FileNotFoundError):
    """No model artefact at the given place (or no bundled default model)."""


class PlanMismatchError(EngineError):
    """A TensorRT plan was built for another TensorRT version, GPU, ONNX file or model card."""


class InputShapeError(EngineError, ValueError):
    """A batch does not have the shape the model card promises."""


def default_threads() -> int:
    """Intra-op CPU threads when none are given: half the cores, at least 1.

    Inference shares the machine with capture, face tracking and the dashboard; on a 2-core laptop one
    inference thread leaves a core for the per-frame pipeline.
    """
    return max(1, min(4, (os.cpu_count() or 2) // 2))


@dataclass(frozen=True)
class EngineOptions:
    """How :func:`engines.backends.load_engine` builds an engine."""

    backend: str = "auto"  # "auto" | "torch" | "onnxruntime" | "tensorrt"
    device: str | None = None  # "cpu", "cuda", "cuda:N"; None = the backend's best device here
    max_batch: int = 8  # largest batch one backend call runs; bigger inputs are split
    threads: int | None = None  # intra-op CPU threads (onnxruntime, torch); None = default_threads()
    cache_dir: Path | None = None  # exported ONNX / built plans; None = cache_root()
    build_plan: bool = True  # tensorrt without a plan: build one from the ONNX into the cache
    warmup: bool = True

    def __post_init__(self) -> None:
        if self.backend != "auto" and self.backend not in BACKEND_NAMES:
            raise EngineError(f"unknown backend {self.backend!r}; choose auto, {', '.join(BACKEND_NAMES)}")
        if self.max_batch < 1:
            raise EngineError(f"max_batch must be >= 1, got {self.max_batch}")
        if self.threads is not None and self.threads < 1:
            raise EngineError(f"threads must be >= 1, got {self.threads}")

    @property
    def intra_op_threads(self) -> int:
        return self.threads if self.threads is not None else default_threads()


def cache_root() -> Path:
    """Where exported ONNX files and built plans are kept: the user cache (see mer_core.paths)."""
    return user_cache_dir()


def parse_device(device: str | None) -> tuple[str, int]:
    """``"cuda:1"`` → ("cuda", 1); ``"cpu"`` → ("cpu", 0); None → ("auto", 0)."""
    if device is None or device == "auto":
        return "auto", 0
    kind, _, index = str(device).partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()):
        raise EngineError(f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'")
    return kind, int(index or 0)


class Predictor(Protocol):
    """The part of an :class:`Engine` its users call (the live classifier, ``mer-bench``): the join between
    ``realtime`` and ``engines``, so a test can hand in any object that has these."""

    @property
    def name(self) -> str: ...

    @property
    def card(self) -> ModelCard: ...

    def predict(self, inputs: np.ndarray) -> np.ndarray: ...


class Engine(ABC):
    """Runs one model: ``predict((B, S, C, H, W) float32) -> (B, n_classes) float32`` probabilities.

    Subclasses implement ``_run`` (one batch of at most ``max_batch``) and ``_release``. An engine is
    used by one thread at a time (the classifier thread owns it); it holds no locks.
    """

    name: str = "engine"

    def __init__(self, card: ModelCard, *, device: str, max_batch: int, reason: str = "",
                 artefact: Path | None = None) -> None:
        self.card = card
        self.device = device
        self.max_batch = int(max_batch)
        self.reason = reason or f"{self.name}: requested"
        self.artefact = artefact
        self._closed = False

    # -- public API ---------------------------------------------------------------------------------
    @property
    def labels(self) -> tuple[str, ...]:
        return self.card.labels

    @property
    def closed(self) -> bool:
        return self._closed

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """Class probabilities for a batch of DI stacks in the card's stream order."""
        if self._closed:
            raise EngineError(f"{self.name} engine for '{self.card.name}' is closed")
        batch = self.check_inputs(inputs)
        if batch.shape[0] == 0:
            return np.zeros((0, len(self.card.labels)), dtype=np.float32)
        if batch.shape[0] <= self.max_batch:
            return self._run(batch)
        parts = [self._run(batch[i : i + self.max_batch]) for i in range(0, batch.shape[0], self.max_batch)]
        return np.concatenate(parts, axis=0)

    def check_inputs(self, inputs: np.ndarray) -> np.ndarray:
        """The batch as C-contiguous float32, or :class:`InputShapeError` saying what was expected."""
        arr = np.asarray(inputs)
        expected = self.card.input_shape
        if arr.ndim != 5 or tuple(arr.shape[1:]) != expected:
            s, c, h, w = expected
            raise InputShapeError(
                f"model '{self.card.name}' expects a batch of shape (B, {s}, {c}, {h}, {w}) = (batch, streams "
                f"{list(self.card.streams)}, channels, size, size); got {tuple(arr.shape)}. Build inputs "
                f"with mer_core.dynamic_image.build_streams(..., streams=card.streams, size=card.input_size)"
            )
        if not np.issubdtype(arr.dtype, np.floating):
            raise InputShapeError(f"inputs must be floating point DIs, got dtype {arr.dtype}")
        return np.ascontiguousarray(arr, dtype=np.float32)

    def warm_up(self) -> None:
        """One zero batch through the backend so the first real call does not pay for lazy set-up."""
        self._run(np.zeros((1, *self.card.input_shape), dtype=np.float32))

    def close(self) -> None:
        """Release the backend's resources; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self._release()
        except Exception:  # noqa: BLE001 - closing must not raise during shutdown
            log.warning("error while closing %s engine", self.name, exc_info=True)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:  # last resort; close() is the contract
        try:
            if not self._closed:
                self.close()
        except Exception:  # noqa: BLE001
            pass

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<{type(self).__name__} {self.card.name!r} on {self.device} ({state})>"

    # -- backend hooks ------------------------------------------------------------------------------
    @abstractmethod
    def _run(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities for one checked float32 batch of at most ``max_batch`` samples."""

    @abstractmethod
    def _release(self) -> None:
        """Free sessions, contexts and buffers."""


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32 (used where a graph returns logits)."""
    z = logits.astype(np.float32) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)

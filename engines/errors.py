"""The engines layer's two base errors, below everything that raises them (backends, ONNX files, spotting
models), so that no module has to import the backends package for them. ``engines.backends`` re-exports them."""

from __future__ import annotations

__all__ = ["EngineError", "ModelFileError"]


class EngineError(RuntimeError):
    """An inference engine cannot be created or used; the message says what to do."""


class ModelFileError(EngineError):
    """A model file exists but is unreadable, corrupt or of the wrong kind for the backend."""

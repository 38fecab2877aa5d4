"""mer-live engines: model architectures and registry, model cards, inference backends, ONNX/TensorRT export.

Above :mod:`mer_core` only: nothing here knows about cameras, ZMQ or training (``mer-export`` is :mod:`mer_cli.export`).
"""

from __future__ import annotations

__all__: list[str] = []

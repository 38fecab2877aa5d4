"""mer-live engines: model architectures and registry, model cards, inference backends, export."""

from __future__ import annotations

__all__: list[str] = []

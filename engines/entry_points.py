"""Where model entry points register (``@register_model``): below both :mod:`engines.models`, which registers
the built-in ones, and :mod:`engines.registry`, which builds models by name, so neither imports the other back."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from engines.network import MERModel

__all__ = ["REGISTRY", "EntryPoint", "register_model"]

EntryPoint = Callable[..., MERModel]
F = TypeVar("F", bound=EntryPoint)

REGISTRY: dict[str, EntryPoint] = {}


def register_model(fn: F) -> F:
    """Register ``fn`` under its name with ``_`` -> ``-``; a second model of the same name is an error."""
    name = fn.__name__.replace("_", "-")
    if name in REGISTRY:
        raise ValueError(f"model {name!r} is already registered (by {REGISTRY[name].__module__})")
    REGISTRY[name] = fn
    return fn

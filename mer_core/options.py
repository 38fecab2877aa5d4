"""Changing a frozen options dataclass by name, where a misspelt or retired name is an error, not a no-op."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ["OptionsError", "replace_options"]

T = TypeVar("T", bound="DataclassInstance")


class OptionsError(ValueError):
    """A setting name the options class does not have; the message names it and lists the known ones."""


def replace_options(options: T, **changes: Any) -> T:
    """``dataclasses.replace(options, **changes)``, refusing in one line a key ``options`` has no field for
    (``replace`` would raise a TypeError about ``__init__``; filtering with ``hasattr`` would drop it)."""
    known = [f.name for f in fields(options) if f.init]
    for key in changes:
        if key not in known:
            raise OptionsError(f"{type(options).__name__} has no setting {key!r}; known: {', '.join(known)}")
    return replace(options, **changes)

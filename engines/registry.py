"""Model registry (timm-style): ``@register_model`` entry points, one ``build_model``, ``list_models``.

Entry points live in :mod:`engines.models`; each is a short function ``name(*, labels, **settings)`` that
calls :func:`engines.network.create_model`. The registered name is the function name with ``_`` -> ``-``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

import engines.models  # noqa: F401  (registers the built-in entry points)
from engines.card import CardError, ModelCard
from engines.entry_points import REGISTRY
from engines.entry_points import register_model as register_model
from engines.network import MERModel, ModelError

__all__ = ["build_from_card", "build_model", "default_card", "list_models", "register_model"]

def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(REGISTRY)


def build_model(name: str, *, labels: Sequence[str], **settings: Any) -> MERModel:
    """Build the registered model ``name`` for ``labels``; ``settings`` as in
    :class:`engines.network.ModelOptions`. Unknown name -> KeyError; bad settings -> ModelError."""
    registry = REGISTRY
    try:
        entry = registry[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(sorted(registry))}") from None
    return entry(labels=labels, **settings)


def default_card(name: str, *, labels: Sequence[str], **settings: Any) -> ModelCard:
    """The card a freshly built ``build_model(name, labels=..., **settings)`` carries, without allocating
    weights (the model is built on the meta device)."""
    with torch.device("meta"):
        return build_model(name, labels=labels, **settings).card


def card_build_kwargs(card: ModelCard) -> dict[str, Any]:
    """The ``build_model`` keyword arguments that rebuild the network ``card`` describes."""
    return {
        "labels": card.labels,
        "backbone": card.backbone,
        "input_size": card.input_size,
        "channels": card.channels,
        "crop_size": card.crop_size,
        **card.settings,
    }


def build_from_card(card: ModelCard) -> MERModel:
    """A freshly initialised model for ``card`` (which it then carries, evaluation figures and all).

    CardError when the card names an unknown architecture, carries settings the architecture does not
    accept, or disagrees with what that architecture builds (e.g. other streams).
    """
    try:
        model = build_model(card.architecture, **card_build_kwargs(card))
    except KeyError as exc:
        raise CardError(f"model card '{card.name}': {exc.args[0]}") from None
    except (ModelError, TypeError) as exc:
        raise CardError(f"model card '{card.name}' cannot be built: {exc}") from None
    built = model.card
    if built.sha256() != card.with_temperature(built.temperature).sha256():  # a fitted temperature is no mismatch
        diffs = [
            k
            for k in (
                "streams",
                "labels",
                "backbone",
                "input_size",
                "channels",
                "crop_size",
                "normalization",
                "settings",
            )
            if getattr(built, k) != getattr(card, k)
        ]
        detail = "; ".join(
            f"{k} is {getattr(card, k)!r}, the architecture builds {getattr(built, k)!r}" for k in diffs
        )
        raise CardError(
            f"model card '{card.name}' does not match architecture {card.architecture!r}: {detail or 'fields differ'}"
        )
    model.card = card
    return model

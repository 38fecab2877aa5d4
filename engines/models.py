"""The registered MER models: short entry points over :func:`engines.network.create_model`.

Streams are ``realtime.dynamic_image.STREAMS`` names, in model input order. Settings: see
:class:`engines.network.ModelSettings` (``backbone="fast" | "resnet18"``, ``dropout``, ``width``, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engines.network import MERModel, create_model
from engines.registry import register_model

PHASE_STREAMS = ("onset_apex", "apex_offset")
AFN_STREAMS = ("trdi", "midi")


@register_model
def single(*, labels: Sequence[str], **settings: Any) -> MERModel:
    """One-DI baseline (the reference): the onset→offset TRDI through one CNN."""
    return create_model("single", labels=labels, streams=("trdi",), fusion="concat", **settings)


@register_model
def dual_phase(*, labels: Sequence[str], **settings: Any) -> MERModel:
    """DIANet-style: one CNN per phase DI, cross-attention fusion of their spatial features."""
    return create_model(
        "dual-phase", labels=labels, streams=PHASE_STREAMS, fusion="cross-attention", **settings
    )


@register_model
def dual_phase_concat(*, labels: Sequence[str], **settings: Any) -> MERModel:
    """Ablation of ``dual-phase``: same streams, pooled features concatenated."""
    return create_model(
        "dual-phase-concat", labels=labels, streams=PHASE_STREAMS, fusion="concat", **settings
    )


@register_model
def afn(*, labels: Sequence[str], **settings: Any) -> MERModel:
    """AFN-style: TRDI and MIDI streams joined by an input-dependent adaptive gate."""
    return create_model("afn", labels=labels, streams=AFN_STREAMS, fusion="adaptive", **settings)


@register_model
def afn_concat(*, labels: Sequence[str], **settings: Any) -> MERModel:
    """Ablation of ``afn``: TRDI and MIDI pooled features concatenated."""
    return create_model("afn-concat", labels=labels, streams=AFN_STREAMS, fusion="concat", **settings)

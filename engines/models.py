"""The registered MER models: short entry points over :func:`engines.network.create_model`.

Streams are ``mer_core.dynamic_image.STREAMS`` names, in model input order. Settings: see
:class:`engines.network.ModelOptions` (``backbone="fast" | "resnet18"``, ``dropout``, ``width``, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engines.entry_points import register_model
from engines.network import MERModel, create_model
from mer_core.dynamic_image import APEX_FLOW_STREAMS, FLOW_STREAMS

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


@register_model
def flow(*, labels: Sequence[str], **settings: Any) -> MERModel:
    """Optical flow onset→apex (its two components, one CNN each, concatenated): how far and which way the
    skin moved, the same for an Action Unit on any face, where a DI depends on the face's texture."""
    return create_model("flow", labels=labels, streams=FLOW_STREAMS, fusion="concat", **settings)


@register_model
def apex_flow(*, labels: Sequence[str], **settings: Any) -> MERModel:
    """``flow`` with the apex seen from both ends: the mean of the flows onset→apex and offset→apex. A
    movement that rises and returns (a micro-expression) is in both; one that goes on through the window (a
    lasting brow raise, a talking jaw) points opposite ways and largely cancels."""
    return create_model("apex-flow", labels=labels, streams=APEX_FLOW_STREAMS, fusion="concat", **settings)


@register_model
def phase_flow(*, labels: Sequence[str], **settings: Any) -> MERModel:
    """The phase DIs and the apex flow fused: ``dual-phase``'s onset→apex and apex→offset DIs joined by
    cross-attention, ``apex-flow``'s two components concatenated, and an adaptive gate weighing the two per
    input (:class:`engines.fusion.PhaseFlowFusion`)."""
    return create_model("phase-flow", labels=labels, streams=PHASE_STREAMS + APEX_FLOW_STREAMS,
                        fusion="phase-flow", **settings)

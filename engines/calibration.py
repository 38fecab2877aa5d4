"""Temperature scaling: a model's softmax temperature, changed on a model or on saved files without retraining.

A model's probabilities are ``softmax(logits / T)`` with ``T = card.temperature`` (> 0; 1 = as trained).
``T > 1`` softens an overconfident model's answers without changing which label wins. The temperature lives
in the model card, so it travels with every checkpoint, ONNX file (whose graph divides by it before its
softmax) and TensorRT plan built from that ONNX. ``mer-train`` fits it on training subjects held out of
training (``training.calibration``); :func:`recalibrate_checkpoint` sets another one on a saved model.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from engines.card import CardError, ModelCard
from engines.onnx_io import META_PRECISION, export_onnx, metadata, read_onnx

__all__ = ["recalibrate_checkpoint", "set_temperature"]

log = logging.getLogger(__name__)


def set_temperature(model: Any, temperature: float) -> ModelCard:
    """Give ``model`` (built by ``engines.registry``, ``.card`` attached) the softmax temperature
    ``temperature``; returns its new card. Its eval-mode outputs change at once; its weights do not."""
    card = getattr(model, "card", None)
    if not isinstance(card, ModelCard):
        raise CardError("set_temperature needs a model with a model card attached (.card)")
    model.card = card.with_temperature(temperature)
    return model.card


def recalibrate_checkpoint(path: str | Path, temperature: float, *, out: str | Path | None = None) -> list[Path]:
    """Set the temperature of the checkpoint at ``path`` (and its card) to ``temperature``, without retraining.

    Writes ``out`` (default: ``path`` itself) and its ``.card.json``, keeping the checkpoint's extra values.
    An ONNX file beside ``path`` with the same stem is exported again (same precision), since its graph holds
    the temperature; TensorRT plans built from the old ONNX no longer match the card and are rebuilt (the
    backend says so). Returns the files written.
    """
    # torch (the optional 'train' extra)
    from engines.checkpoint import card_path, load_checkpoint, read_checkpoint, save_checkpoint

    path = Path(path)
    target = Path(out) if out is not None else path
    extra = read_checkpoint(path).get("extra") or {}
    model = load_checkpoint(path)
    before = model.card.temperature
    set_temperature(model, temperature)
    written = [save_checkpoint(model, target, extra=dict(extra)), card_path(target)]
    onnx_file = path.with_suffix(".onnx")
    if onnx_file.is_file():

        fp16 = metadata(read_onnx(onnx_file)).get(META_PRECISION) == "fp16"
        written.append(export_onnx(model, target.with_suffix(".onnx"), fp16=fp16))
    log.info("temperature of %s: %g -> %g (wrote %s)", path.name, before, model.card.temperature,
             ", ".join(p.name for p in written))
    return written

"""Checkpoints: weights plus plain metadata in ``NAME.pt``, the model card beside it in ``NAME.card.json``.

The ``.pt`` file holds only tensors and plain Python values, so it loads with ``torch.load(weights_only=True)``
(no pickled code runs). Loading rebuilds the network from the card through the registry and refuses a
file whose weights do not fit that card.
"""

from __future__ import annotations

import logging
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from engines.card import CardError, ModelCard
from engines.network import MERModel
from engines.registry import build_from_card

__all__ = ["CHECKPOINT_FORMAT", "card_path", "load_checkpoint", "read_checkpoint", "save_checkpoint"]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "mer-checkpoint/1"
_PLAIN = (str, int, float, bool, type(None))


def card_path(path: str | Path) -> Path:
    """Where the card of checkpoint ``path`` lives: same folder, same stem, ``.card.json``."""
    path = Path(path)
    return path.with_name(path.stem + ".card.json")


def _check_plain(value: Any, where: str) -> None:
    if isinstance(value, (*_PLAIN, torch.Tensor)):
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str | int):
                raise TypeError(f"checkpoint extra {where}: key {key!r} must be a string or int")
            _check_plain(item, f"{where}[{key!r}]")
        return
    raise TypeError(
        f"checkpoint extra {where} is a {type(value).__name__}; only str/int/float/bool/None, tensors, lists "
        "and dicts can go into a checkpoint that loads with weights_only=True"
    )


def save_checkpoint(model: MERModel, path: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s weights and card to ``path`` (and ``card_path(path)``); returns ``path``.

    ``extra``: plain values (epoch, metrics, optimizer state, ...) kept in the file; see :func:`read_checkpoint`.
    Both files are written to a temporary name first, so a crash never leaves a half-written checkpoint.
    """
    path = Path(path)
    card = getattr(model, "card", None)
    if not isinstance(card, ModelCard):
        raise TypeError(
            f"save_checkpoint needs a model built by engines.registry.build_model, got {type(model)!r}"
        )
    extra = dict(extra or {})
    _check_plain(extra, "extra")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "card": card.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    card_file = card_path(path)
    tmp_pt = path.with_name(path.name + ".tmp")
    tmp_card = card_file.with_name(card_file.name + ".tmp")
    try:
        torch.save(payload, tmp_pt)
        card.save(tmp_card)
        os.replace(tmp_pt, path)
        os.replace(tmp_card, card_file)
    finally:
        for tmp in (tmp_pt, tmp_card):
            tmp.unlink(missing_ok=True)
    log.info("saved checkpoint %s (card %s)", path, card_file)
    return path


def read_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The raw payload of a checkpoint (``format``, ``card`` dict, ``state_dict``, ``extra``), loaded with
    ``weights_only=True``. CardError when the file is missing, corrupt or not a mer-live checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CardError(f"checkpoint {path} not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        if isinstance(exc, pickle.UnpicklingError) and "weights only load failed" in str(exc).lower():
            # torch's text advises weights_only=False, i.e. running the file's code: never pass that on
            found = [ln.strip() for ln in str(exc).splitlines() if "GLOBAL" in ln or "global" in ln]
            raise CardError(
                f"checkpoint {path} holds pickled Python objects, which are refused because loading them could "
                f"run code ({found[0] if found else 'not plain tensors and values'}); re-save the model with "
                "engines.checkpoint.save_checkpoint"
            ) from None
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CardError(
            f"checkpoint {path} is corrupt or not a mer-live checkpoint ({first_line}); "
            "re-export it with engines.checkpoint.save_checkpoint"
        ) from None
    if (
        not isinstance(payload, dict)
        or payload.get("format") != CHECKPOINT_FORMAT
        or "state_dict" not in payload
    ):
        seen = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CardError(
            f"checkpoint {path} is not a {CHECKPOINT_FORMAT} file (found {seen!r}); "
            "save models with engines.checkpoint.save_checkpoint"
        )
    return payload


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> MERModel:
    """The model saved at ``path``, rebuilt from its card JSON, weights loaded, in eval mode.

    CardError (with what to do) when either file is missing or corrupt, the card JSON disagrees with the
    card stored in the checkpoint, or the weights do not fit the architecture the card describes.
    """
    path = Path(path)
    card_file = card_path(path)
    if not card_file.is_file():
        raise CardError(f"model card {card_file} not found; it must sit beside checkpoint {path.name}")
    card = ModelCard.load(card_file)
    payload = read_checkpoint(path, map_location=map_location)
    try:
        stored = ModelCard.from_dict(payload.get("card") or {})
    except CardError as exc:
        raise CardError(f"checkpoint {path}: the card stored inside is unusable ({exc})") from None
    if stored.sha256() != card.sha256() and stored.with_temperature(card.temperature).sha256() == card.sha256():
        raise CardError(
            f"model card {card_file.name} gives temperature {card.temperature:g} but checkpoint {path.name} was "
            f"saved with {stored.temperature:g}; change it with engines.calibration.recalibrate_checkpoint, which "
            "rewrites both files"
        )
    if stored.sha256() != card.sha256():
        raise CardError(
            f"model card {card_file.name} does not belong to checkpoint {path.name} (its architecture, labels, "
            f"streams or settings differ from those the weights were saved with: {stored.architecture}, "
            f"{list(stored.labels)}, {list(stored.streams)}); restore the matching card or re-save the model"
        )
    model = build_from_card(card)
    state = payload["state_dict"]
    if not isinstance(state, dict):
        raise CardError(f"checkpoint {path}: state_dict is a {type(state).__name__}, not a dict of tensors")
    _check_state(model, state, path)
    model.load_state_dict(state, strict=True)
    model.to(map_location)
    model.eval()
    return model


def _check_state(model: MERModel, state: dict[str, Any], path: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        k
        for k in set(expected) & set(state)
        if not isinstance(state[k], torch.Tensor) or tuple(state[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if keys:
                more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
                parts.append(f"{label}: {', '.join(keys[:3])}{more}")
        raise CardError(
            f"checkpoint {path.name} does not fit the {model.card.architecture!r} / {model.card.backbone!r} "
            f"network its card describes ({'; '.join(parts)}); the card or the weights are from another model"
        )

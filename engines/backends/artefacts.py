"""Finding a model's artefacts and its card from what the user gave: a file, a directory, or nothing.

``model`` may be a ``.pt`` checkpoint, an ``.onnx`` file, a TensorRT ``.plan``, or a directory holding
``model.pt`` / ``model.onnx`` / ``model.plan`` / ``model.card.json``; ``None`` means the bundled default in
``engines/default/``. The card is the one beside the artefact (``<stem>.card.json``, else
``model.card.json``), or the one inside an ONNX file's metadata, or a plan's metadata file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engines import onnx_io
from engines.backends.base import ModelFileError, ModelNotFoundError, require_torch
from engines.backends.plan_meta import PlanMeta
from engines.backends.select import CHECKPOINT, ONNX, PLAN
from engines.card import CardError, ModelCard

if TYPE_CHECKING:  # the annotation only: engines.network imports torch, the optional 'train' extra
    from engines.network import MERModel

log = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "default"
SUFFIXES = {".pt": CHECKPOINT, ".pth": CHECKPOINT, ".onnx": ONNX, ".plan": PLAN, ".engine": PLAN}


@dataclass(frozen=True)
class Artefacts:
    """One model's files on disk and its card."""

    card: ModelCard
    source: Path  # what was given (file or directory)
    checkpoint: Path | None = None
    onnx: Path | None = None
    plan: Path | None = None

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(k for k, p in ((CHECKPOINT, self.checkpoint), (ONNX, self.onnx), (PLAN, self.plan)) if p)

    def describe(self) -> str:
        return ", ".join(p.name for p in (self.checkpoint, self.onnx, self.plan) if p) or "nothing"


def card_beside(path: Path) -> Path | None:
    """``<stem>.card.json`` beside ``path``, else ``model.card.json`` in its folder."""
    for candidate in (path.with_name(path.stem + ".card.json"), path.with_name("model.card.json")):
        if candidate.is_file():
            return candidate
    return None


def load_card(path: Path) -> ModelCard:
    """``ModelCard.load`` with the file named in the error."""
    try:
        return ModelCard.load(path)
    except CardError as exc:
        raise CardError(f"{path.name}: {exc}") from None


def resolve_artefacts(model: str | Path | None = None, *, default_dir: Path | None = None) -> Artefacts:
    """The artefacts and card for ``model`` (see module docstring); errors name the file and the fix."""
    if model is None:
        root = default_dir or DEFAULT_MODEL_DIR
        if not any((root / f"model{s}").is_file() for s in (".pt", ".onnx", ".plan")):
            raise ModelNotFoundError(
                f"no bundled model is present (expected model.pt / model.onnx in {root}); train one with "
                "mer-train, or pass a model path (a .pt, .onnx, .plan file or a model directory)"
            )
        return _from_directory(root)
    path = Path(model).expanduser()
    if path.is_dir():
        return _from_directory(path)
    if not path.exists():
        raise ModelNotFoundError(f"model not found: {path}")
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        what = f"'{path.suffix}'" if path.suffix else "no file extension"
        raise ModelFileError(f"{path} is not a model file (unknown model file type: {what}); --model takes a .pt "
                             "checkpoint, an .onnx file, a TensorRT .plan / .engine, or a folder holding model.pt, "
                             "model.onnx and/or model.plan with model.card.json")
    files = {kind: path}
    return Artefacts(card=_card_for(files, card_beside(path)), source=path, **_fields(files))


def _from_directory(root: Path) -> Artefacts:
    files = {k: root / f"model{s}" for s, k in ((".pt", CHECKPOINT), (".onnx", ONNX), (".plan", PLAN))}
    files = {k: p for k, p in files.items() if p.is_file()}
    if not files:
        raise ModelNotFoundError(f"no model in {root}: expected model.pt, model.onnx or model.plan")
    card_file = root / "model.card.json"
    return Artefacts(card=_card_for(files, card_file if card_file.is_file() else None), source=root,
                     **_fields(files))


def _fields(files: dict[str, Path]) -> dict[str, Path]:
    return {{CHECKPOINT: "checkpoint", ONNX: "onnx", PLAN: "plan"}[k]: p for k, p in files.items()}


def _card_for(files: dict[str, Path], card_file: Path | None) -> ModelCard:
    """The card, checked against every artefact that can be checked cheaply (ONNX graph, plan metadata)."""

    beside = load_card(card_file) if card_file is not None else None
    card = beside
    if ONNX in files:
        card = onnx_io.onnx_card(files[ONNX], beside)  # refuses a card/graph mismatch
    if PLAN in files and card is None:
        meta = PlanMeta.load(files[PLAN])
        if not meta.card:
            raise CardError(f"{files[PLAN].name} has no model card beside it and none in its metadata")
        card = ModelCard.from_dict(meta.card)
    if card is None and CHECKPOINT in files:
        card = _checkpoint_card(files[CHECKPOINT])
    if card is None:  # pragma: no cover - every branch above sets it or raises
        raise CardError("no model card found")
    return card


def _checkpoint_card(path: Path) -> ModelCard:
    """The card stored with a checkpoint (loads it with torch: only when no card JSON is beside it)."""
    log.info("no card JSON beside %s; reading the card from the checkpoint", path.name)
    model = load_checkpoint_checked(path)
    return model.card


def load_checkpoint_checked(path: Path, card: ModelCard | None = None) -> MERModel:
    """``engines.checkpoint.load_checkpoint`` with corrupt files and card mismatches as clear errors."""
    require_torch(f"reading the checkpoint {path.name}")
    from engines.checkpoint import load_checkpoint  # torch (the optional 'train' extra)

    try:
        model = load_checkpoint(path)
    except (CardError, FileNotFoundError):
        raise
    except Exception as exc:  # noqa: BLE001 - pickle/zip errors of a damaged file
        raise ModelFileError(f"{path.name} is not a readable mer-live checkpoint ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if card is not None and model.card.sha256() != card.sha256():
        raise CardError(f"the model card beside {path.name} does not match the card stored in the checkpoint: "
                        "card and artefact do not match")
    return model

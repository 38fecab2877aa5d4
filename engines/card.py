"""The model card: what a model expects and what it was trained on, travelling with every artefact.

Every backend reads the card, so an ONNX file or a TensorRT plan can never be fed the wrong images:
stream order, crop size, channels and normalisation all come from here.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

CARD_SCHEMA = "mer-card/1"
NORMALIZATION = "per-image-standardize"  # mer_core.dynamic_image.normalize_di


NONE_LABEL = "none"  # a label that means "not a micro-expression": a model with it can veto a false window


class CardError(ValueError):
    """A model card is missing, unreadable, or does not match its artefact."""


@dataclass(frozen=True)
class ModelCard:
    """Typed description of a trained model (JSON on disk beside the checkpoint)."""

    name: str
    architecture: str  # registry name: "dual-phase", "afn", "single", ...
    labels: tuple[str, ...]
    streams: tuple[str, ...]  # mer_core.dynamic_image.STREAMS names, in model input order
    version: str = "0.1.0"
    backbone: str = "fast"
    crop_size: int = 128  # aligned face crop side (pixels) the DIs are computed on
    input_size: int = 64  # DI side fed to the network (pixels)
    channels: int = 1  # 1 = grayscale crops, 3 = BGR
    normalization: str = NORMALIZATION
    fps: float = 30.0  # frame rate the training DIs were formed at
    settings: dict[str, Any] = field(default_factory=dict)  # extra build_model(**settings)
    trained_on: str = ""
    evaluation: dict[str, Any] = field(default_factory=dict)
    # Softmax temperature: every backend returns softmax(logits / temperature). Fitted on held-out training
    # subjects by mer-train (engines.calibration); 1.0 = as trained (and for cards written before the field).
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if not self.labels:
            raise CardError(f"model card '{self.name}': labels is empty")
        if not self.streams:
            raise CardError(f"model card '{self.name}': streams is empty")
        if self.channels not in (1, 3):
            raise CardError(f"model card '{self.name}': channels must be 1 or 3, got {self.channels}")
        object.__setattr__(self, "labels", tuple(self.labels))
        object.__setattr__(self, "streams", tuple(self.streams))
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t <= 0:
            raise CardError(f"model card '{self.name}': temperature must be a positive number, got {t!r}")
        object.__setattr__(self, "temperature", float(t))

    def with_temperature(self, temperature: float) -> ModelCard:
        """This card with another softmax temperature (checked like every card field)."""
        return replace(self, temperature=temperature)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """Shape of one sample: (streams, channels, input_size, input_size)."""
        return (len(self.streams), self.channels, self.input_size, self.input_size)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["labels"] = list(self.labels)
        data["streams"] = list(self.streams)
        return {"schema": CARD_SCHEMA, **data}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def sha256(self) -> str:
        """Hash of what decides the model's inputs and outputs (not its evaluation figures).

        The temperature changes the outputs, so it is part of the hash, but only when it is not 1: cards
        and artefacts made before the field existed keep their hash."""
        data = self.to_dict()
        identity = {k: data[k] for k in ("architecture", "labels", "streams", "backbone", "crop_size",
                                          "input_size", "channels", "normalization", "settings")}
        if self.temperature != 1.0:
            identity["temperature"] = self.temperature
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        if data.get("schema", CARD_SCHEMA) != CARD_SCHEMA:
            raise CardError(f"model card schema {data.get('schema')!r} is not {CARD_SCHEMA!r}")
        known = {f.name for f in fields(cls)}
        missing = [k for k in ("name", "architecture", "labels", "streams") if k not in data]
        if missing:
            raise CardError(f"model card lacks {missing}")
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:
            raise CardError(f"model card is malformed: {exc}") from None

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise CardError(f"model card is not valid JSON: {exc}") from None

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> ModelCard:
        path = Path(path)
        try:
            return cls.from_json(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise CardError(f"cannot read model card {path}: {exc.strerror}") from None

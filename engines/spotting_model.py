"""The learned spotter's model: an ONNX graph over per-region feature windows, with its card inside.

The graph takes ``features`` (B, R, C, T) float32 — R face regions, C feature channels
(:data:`mer_analysis.spot_features.FEATURES`), T grid steps — and returns ``logits`` (B, R, T - context -
lookahead): for each step that has ``context`` steps before it and ``lookahead`` after it, each region's
log-odds that the step lies inside a micro-expression. The card (:class:`SpottingCard`, JSON in the graph's
metadata under ``mer_spot_card`` and beside it as ``<name>.card.json``) says which features, at which grid
rate, how the region logits are pooled and decoded into windows, and what the model was trained and judged on.

The default spotting model ships as ``engines/default/spotter.onnx``. ONNX Runtime runs it on one thread;
a window costs a fraction of a millisecond, once per grid step.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from engines.backends.base import ModelFileError, import_onnxruntime
from engines.card import CardError

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_SPOTTING_MODEL",
    "SPOT_CARD_SCHEMA",
    "SpottingCard",
    "SpottingModel",
    "default_spotting_model",
    "load_spotting_model",
    "pool_regions",
]

SPOT_CARD_SCHEMA = "mer-spot-card/1"
META_SPOT_CARD = "mer_spot_card"
INPUT = "features"
OUTPUT = "logits"
DEFAULT_SPOTTING_MODEL = Path(__file__).resolve().parent / "default" / "spotter.onnx"


@dataclass(frozen=True)
class SpottingCard:
    """What a spotting model reads and how its output becomes windows. Times in seconds."""

    name: str
    features: tuple[str, ...]  # channel names, in input order
    feature_version: int
    regions: tuple[str, ...]  # region names, in input order
    rate_hz: float = 30.0  # grid steps a second
    context: int = 24  # grid steps the model sees before the step it judges ...
    lookahead: int = 12  # ... and after it (the spotter's look-ahead: lookahead / rate_hz seconds)
    motion_lag_s: float = 0.25  # the motion meter's lag the features were measured over
    level_s: float = 10.0  # the feature levels' memory
    pooling_sharpness: float = 4.0  # region logits → one: (1/s)·logsumexp(s·z) - (1/s)·log R
    peak: float = 0.5  # a run of steps is a window when its probability reaches this ...
    edge: float = 0.35  # ... and runs from where it rises above this to where it falls below it
    min_duration_s: float = 0.1
    max_duration_s: float = 0.6  # longer runs are not micro-expressions
    version: str = "1"
    trained_on: str = ""
    evaluation: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)  # the network's build settings

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "regions", tuple(self.regions))
        if not self.features or not self.regions:
            raise CardError(f"spotting card '{self.name}': features and regions must not be empty")
        if self.context < 0 or self.lookahead < 0:
            raise CardError(f"spotting card '{self.name}': context and lookahead must be >= 0")
        if not 0.0 < self.edge <= self.peak < 1.0:
            raise CardError(f"spotting card '{self.name}': need 0 < edge <= peak < 1, got {self.edge}, {self.peak}")
        for name in ("rate_hz", "motion_lag_s", "level_s", "pooling_sharpness", "max_duration_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise CardError(f"spotting card '{self.name}': {name} must be a positive number, got {value!r}")

    @property
    def window(self) -> int:
        """Grid steps in one model input for one output step."""
        return self.context + self.lookahead + 1

    @property
    def delay_s(self) -> float:
        return self.lookahead / self.rate_hz

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["schema"] = SPOT_CARD_SCHEMA
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpottingCard:
        schema = data.get("schema", SPOT_CARD_SCHEMA)
        if schema != SPOT_CARD_SCHEMA:
            raise CardError(f"unknown spotting card schema {schema!r} (this mer-live reads {SPOT_CARD_SCHEMA})")
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:
            raise CardError(f"spotting card is incomplete: {exc}") from None

    def with_decoding(self, **changes: Any) -> SpottingCard:
        return replace(self, **changes)


def pool_regions(logits: np.ndarray, sharpness: float) -> np.ndarray:
    """Region logits (..., R, T) → one logit per step (..., T): a soft maximum over regions (a micro-expression
    moves one region or a few; which ones is not labelled). The same formula as the training loss."""
    z = np.asarray(logits, dtype=np.float64) * sharpness
    top = z.max(axis=-2, keepdims=True)
    lse = top[..., 0, :] + np.log(np.exp(z - top).sum(axis=-2))
    return ((lse - math.log(logits.shape[-2])) / sharpness).astype(np.float32)


class SpottingModel:
    """An ONNX Runtime session over a spotting graph; ``logits(features)`` for (B, R, C, T) inputs."""

    def __init__(self, path: str | Path, *, threads: int = 1) -> None:
        ort = import_onnxruntime()
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelFileError(f"spotting model not found: {self.path}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(self.path), sess_options=opts,
                                                 providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - InvalidProtobuf, Fail, ...
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelFileError(f"onnxruntime cannot load {self.path.name}: {text[:300]}") from None
        meta = self._session.get_modelmeta().custom_metadata_map
        if META_SPOT_CARD not in meta:
            raise CardError(f"{self.path.name} is not a mer-live spotting model (no {META_SPOT_CARD} metadata); "
                            "train one with mer-train spot")
        try:
            self.card = SpottingCard.from_dict(json.loads(meta[META_SPOT_CARD]))
        except ValueError as exc:
            raise CardError(f"{self.path.name}: unreadable spotting card: {exc}") from None
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or inputs[0].name != INPUT:
            raise CardError(f"{self.path.name}: expected one input named {INPUT!r}")
        self.name = self.card.name

    def logits(self, features: np.ndarray) -> np.ndarray:
        """(B, R, C, T) float32 → region logits (B, R, T - context - lookahead)."""
        out = self._session.run(None, {INPUT: np.ascontiguousarray(features, dtype=np.float32)})[0]
        return np.asarray(out)

    def close(self) -> None:
        """Nothing to release beyond the session, which Python frees; present so every component closes alike."""

    def __enter__(self) -> SpottingModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_spotting_model(path: str | Path | None = None) -> SpottingModel:
    """The spotting model at ``path`` (a .onnx file, or a folder holding ``spotter.onnx``); the default one
    when None. Raises :class:`ModelFileError` / :class:`CardError` with a line the user can act on."""
    target = DEFAULT_SPOTTING_MODEL if path is None else Path(path).expanduser()
    if target.is_dir():
        target = target / "spotter.onnx"
    if target.suffix.lower() != ".onnx" and target.exists():
        raise ModelFileError(f"a spotting model is an .onnx file written by mer-train spot; got {target.name}")
    return SpottingModel(target)


def default_spotting_model() -> SpottingModel | None:
    """The bundled spotting model, or None when it is missing (the rule spotter is then used)."""
    if not DEFAULT_SPOTTING_MODEL.is_file():
        return None
    try:
        return SpottingModel(DEFAULT_SPOTTING_MODEL)
    except (ModelFileError, CardError) as exc:
        log.warning("bundled spotting model unusable (%s); using the rule spotter", exc)
        return None


def write_card_metadata(onnx_path: str | Path, card: SpottingCard) -> None:
    """Store ``card`` in the ONNX file's metadata (and beside it as ``.card.json``)."""
    import onnx

    path = Path(onnx_path)
    model = onnx.load(str(path))
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = META_SPOT_CARD, json.dumps(card.to_dict(), sort_keys=True)
    onnx.save(model, str(path))
    path.with_suffix(".card.json").write_text(card.to_json() + "\n", encoding="utf-8")

"""The learned spotter: a small temporal model over per-region motion features, decoded into windows.

:class:`mer_analysis.spot_features.SpotFeatures` puts each frame's motion on a fixed grid (30 steps a second).
Once ``context + 1 + lookahead`` steps are held, every new step lets the model (:class:`engines.spotting_model.
SpottingModel`) judge the step ``lookahead`` behind it: each region's log-odds that it lies inside a
micro-expression, pooled over regions into one probability. A run of steps whose probability rises above the
card's ``edge``, reaches its ``peak`` and falls below ``edge`` again is a window, from its first step to its
last (an annotated micro-expression runs from the first frame that moves to the last), with the apex at its
most probable step; runs shorter than ``min_duration_s`` or longer than ``max_duration_s`` are dropped. The
decision comes ``lookahead`` steps plus one after the offset: that delay is reported, not hidden.

:class:`FeatureRecorder` is the same front end without a model: it keeps every grid row, so training reads
features through the very chain that runs live (:mod:`training.spotter_data`).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from engines.spotting_model import SpottingCard, pool_regions
from mer_analysis.motion import REGION_NAMES, MotionSample
from mer_analysis.spot_features import (
    FEATURE_VERSION,
    FEATURES,
    SCALE,
    GridRow,
    SpotFeatureOptions,
    SpotFeatures,
)
from mer_analysis.spotting import SpottedWindow
from mer_core.events import TimePoint

log = logging.getLogger(__name__)

__all__ = ["FeatureRecorder", "LearnedSpotter", "LearnedSpotterOptions", "RunDecoder", "SpotModel", "decode_rows"]


class SpotModel(Protocol):
    """What the learned spotter needs of a model (:class:`engines.spotting_model.SpottingModel`, fakes)."""

    card: SpottingCard

    def logits(self, features: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class LearnedSpotterOptions:
    """Decoding settings; None keeps the model card's value. Times in seconds, probabilities 0..1."""

    peak: float | None = None
    edge: float | None = None
    min_duration_s: float | None = None
    max_duration_s: float | None = None
    micro_max_s: float = 0.5  # windows up to this long are micro-expressions (longer runs are dropped)

    def __post_init__(self) -> None:
        for name in ("peak", "edge"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value < 1.0:
                raise ValueError(f"{name} must be within (0, 1), got {value}")
        for name in ("min_duration_s", "max_duration_s"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if self.micro_max_s <= 0:
            raise ValueError(f"micro_max_s must be > 0, got {self.micro_max_s}")

    def apply(self, card: SpottingCard) -> SpottingCard:
        changes = {k: getattr(self, k) for k in ("peak", "edge", "min_duration_s", "max_duration_s")
                   if getattr(self, k) is not None}
        if "peak" in changes and "edge" not in changes:
            changes["edge"] = min(card.edge, changes["peak"])
        return replace(card, **changes) if changes else card


@dataclass(slots=True)
class _Step:
    step: int
    frame: int
    t: float
    p: float
    region: int
    size: float  # the region's displacement at this step, IOD units


def _check_card(card: SpottingCard) -> None:
    if tuple(card.features) != FEATURES or card.feature_version != FEATURE_VERSION:
        raise ValueError(f"spotting model '{card.name}' reads features v{card.feature_version} {card.features}; "
                         f"this mer-live computes v{FEATURE_VERSION} {FEATURES}: retrain it with mer-train spot")
    if tuple(card.regions) != REGION_NAMES:
        raise ValueError(f"spotting model '{card.name}' was trained on other face regions; retrain it")


class LearnedSpotter:
    """Streaming: ``update(sample, index=, t=)`` per frame (None = no face), ``flush()`` at the end; the same
    interface and window type as the rule :class:`mer_analysis.spotting.Spotter`."""

    def __init__(self, model: SpotModel, options: LearnedSpotterOptions | None = None) -> None:
        _check_card(model.card)
        self.options = options or LearnedSpotterOptions()
        self.model = model
        self.card = card = self.options.apply(model.card)
        self.features = SpotFeatures(SpotFeatureOptions(rate_hz=card.rate_hz, level_s=card.level_s))
        self._window = np.zeros((1, len(REGION_NAMES), len(FEATURES), card.window), np.float32)
        self._rows: deque[GridRow] = deque(maxlen=card.window)
        self._decoder = RunDecoder(card, self.options.micro_max_s)
        self._score = 0.0
        self._state = "no-face"

    # --- public state (as Spotter's) ---------------------------------------------------------------------

    @property
    def state(self) -> str:
        return self._state

    @property
    def ready(self) -> bool:
        return len(self._rows) == self._rows.maxlen

    @property
    def score(self) -> float:
        """The probability of the latest judged step (what ``peak`` gates)."""
        return self._score

    @property
    def threshold(self) -> float | None:
        return self.card.peak

    def reset(self) -> None:
        self.features.reset()
        self._rows.clear()
        self._score = 0.0
        self._state = "no-face"

    def close(self) -> None:
        """Nothing to release; the model belongs to the caller."""

    def __enter__(self) -> LearnedSpotter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- per frame ----------------------------------------------------------------------------------------

    def update(self, sample: MotionSample | None, *, index: int, t: float) -> list[SpottedWindow]:
        if not math.isfinite(t):
            raise ValueError(f"frame time must be a finite number of seconds, got {t!r}")
        now = TimePoint(int(index), float(t))
        if sample is None:
            lost = self._close_run(now)
            self.reset()
            return lost
        out: list[SpottedWindow] = []
        for row in self.features.update(sample):
            if self._rows and row.step != self._rows[-1].step + 1:
                out += self._close_run(now)
                self._rows.clear()
            self._rows.append(row)
            if self.ready:
                out += self._judge(now)
        self._state = "warming-up" if not self.ready else ("moving" if self._score >= self.card.edge else "idle")
        return out

    def flush(self) -> list[SpottedWindow]:
        """End of stream: a run still open is closed where the data ended (judged like any other)."""
        last = self._rows[-1] if self._rows else None
        out = self._close_run(TimePoint(last.frame, last.frame_t)) if last is not None else []
        self.reset()
        self._state = "idle" if last is not None else "no-face"
        return out

    # --- internals ----------------------------------------------------------------------------------------

    def _judge(self, now: TimePoint) -> list[SpottedWindow]:
        card = self.card
        window = self._window
        for k, row in enumerate(self._rows):
            window[0, :, :, k] = row.values
        logits = self.model.logits(window)[0, :, -1]  # (R,)
        step = judged_step(self._rows[card.context], logits, card)
        self._score = step.p
        return self._decoder.push(step, now)

    def _close_run(self, now: TimePoint) -> list[SpottedWindow]:
        return self._decoder.close(now)


def judged_step(row: GridRow, logits: np.ndarray, card: SpottingCard) -> _Step:
    """A grid step as the decoder takes it, from its row and the model's region logits (R,) for it."""
    pooled = float(pool_regions(logits[:, None], card.pooling_sharpness)[0])
    p = 1.0 / (1.0 + math.exp(-pooled))
    region = int(np.argmax(logits))
    size = float(np.hypot(row.values[region, 0], row.values[region, 1])) * SCALE
    return _Step(row.step, row.frame, row.frame_t, p, region, size)


class RunDecoder:
    """Probabilities of consecutive grid steps → windows: a run above ``edge`` that reaches ``peak``, not too
    short or long, is a window from its first step to its last, apex at its most probable step."""

    def __init__(self, card: SpottingCard, micro_max_s: float) -> None:
        self.card = card
        self.micro_max_s = micro_max_s
        self._run: list[_Step] = []
        self._floor = -1  # windows start after the last emitted offset

    def push(self, step: _Step, now: TimePoint) -> list[SpottedWindow]:
        if self._run and step.step != self._run[-1].step + 1:
            out = self.close(now)
        else:
            out = []
        if step.p >= self.card.edge:
            self._run.append(step)
            return out
        return out + self.close(now)

    def close(self, now: TimePoint) -> list[SpottedWindow]:
        run, self._run = self._run, []
        if not run:
            return []
        card = self.card
        best = max(run, key=lambda s: s.p)
        first, last = run[0], run[-1]
        duration = (last.step - first.step + 1) / card.rate_hz
        if best.p < card.peak:
            return []
        if duration < card.min_duration_s or duration > card.max_duration_s:
            log.debug("learned spotter: run %d-%d dropped (%.2f s)", first.frame, last.frame, duration)
            return []
        if first.frame <= self._floor or last.frame <= first.frame:
            return []
        self._floor = last.frame
        kind = "micro" if last.t - first.t <= self.micro_max_s + 1e-9 else "macro"
        return [SpottedWindow(
            onset=TimePoint(first.frame, first.t), apex=TimePoint(best.frame, best.t),
            offset=TimePoint(last.frame, last.t), kind=kind, peak=best.p, decided_at=now,
            region=REGION_NAMES[best.region], displacement=best.size,
        )]


def decode_rows(rows: list[GridRow], logits: np.ndarray, card: SpottingCard, *, micro_max_s: float = 0.5
                ) -> list[SpottedWindow]:
    """Windows of a whole recording at once: ``rows`` its grid rows in order, ``logits`` (R, len(rows)) the
    model's region logits for them (NaN where a step had too little context). The same decoder as live; a
    step without logits (a gap, or the warm-up after one) closes the run, as live."""
    decoder = RunDecoder(card, micro_max_s)
    out: list[SpottedWindow] = []
    for k, row in enumerate(rows):
        now = TimePoint(row.frame, row.frame_t)
        if np.isnan(logits[0, k]):
            out += decoder.close(now)
            continue
        out += decoder.push(judged_step(row, logits[:, k], card), now)
    if rows:
        out += decoder.close(TimePoint(rows[-1].frame, rows[-1].frame_t))
    return out


class FeatureRecorder:
    """The learned spotter's front end alone: keeps every grid row, and every frame's motion sample (what
    training reads); spots nothing."""

    def __init__(self, options: SpotFeatureOptions | None = None) -> None:
        self.features = SpotFeatures(options)
        self.rows: list[GridRow] = []
        self.samples: list[MotionSample | None] = []
        self.score = 0.0
        self.state = "idle"
        self.threshold: float | None = None
        self.ready = True

    def update(self, sample: MotionSample | None, *, index: int, t: float) -> list[SpottedWindow]:
        self.samples.append(sample)
        self.rows += self.features.update(sample)
        return []

    def flush(self) -> list[SpottedWindow]:
        return []

    def reset(self) -> None:
        self.features.reset()

    def close(self) -> None:
        """Nothing to release."""

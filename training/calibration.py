"""Fitting a model's softmax temperature (temperature scaling, Guo et al. 2017) on held-out training subjects.

One number ``T`` divides the logits before the softmax: the label that wins never changes, only how sure the
model says it is. ``T`` is fitted by minimising the negative log-likelihood (NLL) of a calibration set's
logits — clips of *training* subjects that the model was not trained on, never the fold's test subjects —
by a golden-section search over ``log T`` in ``[1, 20]``. The mean NLL is convex in ``1/T``, so it has one
minimum there and the search finds it. Pure numpy; the model side is :mod:`engines.calibration`.

Calibration may only soften (``T >= 1``): the held-out training subjects are still closer to the training data
than what the model meets live (a new face, a new camera, real footage after synthetic training), and a model
that looks underconfident on them — a still-photo subject it classifies almost perfectly — must not be made
surer of everything else. (Measured: a fold fitted T = 0.05 on such a subject and its confidence on wrong
answers on held-out real footage went from 0.67 to 0.97.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mer_core.metrics import expected_calibration_error, wrong_confidence

__all__ = [
    "OUT_OF_FOLD_BOUNDS",
    "TEMPERATURE_BOUNDS",
    "TemperatureFit",
    "calibration_figures",
    "fit_temperature",
    "mean_nll",
    "softmax",
    "split_calibration",
]

TEMPERATURE_BOUNDS = (1.0, 20.0)
# Out of fold, the calibration set is what T is for: predictions on people the model never saw, by models of
# the same recipe. There T may sharpen as well as soften (a label-smoothed model is too unsure of itself).
OUT_OF_FOLD_BOUNDS = (0.05, 20.0)
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise ``softmax(logits / temperature)`` in float64."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def mean_nll(logits: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true classes ``y`` under ``softmax(logits / temperature)``."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    y = np.asarray(y, dtype=np.int64)
    if z.shape[0] == 0:
        return 0.0
    top = z.max(axis=1)
    log_norm = top + np.log(np.exp(z - top[:, None]).sum(axis=1))
    return float(np.mean(log_norm - z[np.arange(len(y)), y]))


@dataclass(frozen=True)
class TemperatureFit:
    """A fitted temperature and the calibration set's figures before (T = 1) and after (T)."""

    temperature: float
    n: int  # calibration clips
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def fit_temperature(logits: np.ndarray, y: np.ndarray, *,
                    bounds: tuple[float, float] = TEMPERATURE_BOUNDS, tol: float = 1e-5) -> TemperatureFit:
    """The temperature in ``bounds`` that minimises the mean NLL of ``logits`` (N, K) for true classes ``y``.

    Golden-section search over ``log T`` down to ``tol``; the result is rounded to 4 decimals, and both ends
    of the interval are candidates too (a calibration set the model gets all right pushes ``T`` to the low end).
    """
    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if logits.ndim != 2 or len(logits) != len(y) or len(y) == 0:
        raise ValueError(f"fit_temperature needs logits (N, K) and N labels, N > 0; got {logits.shape} and {y.shape}")
    lo, hi = (math.log(b) for b in bounds)
    if not lo < hi:
        raise ValueError(f"temperature bounds must be 0 < low < high, got {bounds}")

    def loss(u: float) -> float:
        return mean_nll(logits, y, math.exp(u))

    a, b = lo, hi
    c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    fc, fd = loss(c), loss(d)
    while b - a > tol:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - _GOLDEN * (b - a)
            fc = loss(c)
        else:
            a, c, fc = c, d, fd
            d = a + _GOLDEN * (b - a)
            fd = loss(d)
    candidates = [round(math.exp(u), 4) for u in ((a + b) / 2, lo, hi)]
    temperature = min(candidates, key=lambda t: (mean_nll(logits, y, t), abs(math.log(t))))
    return TemperatureFit(
        temperature=temperature,
        n=len(y),
        nll_before=mean_nll(logits, y),
        nll_after=mean_nll(logits, y, temperature),
        ece_before=expected_calibration_error(softmax(logits), y),
        ece_after=expected_calibration_error(softmax(logits, temperature), y),
    )


def calibration_figures(probs_before: np.ndarray, probs_after: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """ECE, NLL, mean confidence and mean confidence on wrong answers, before and after calibration."""
    out: dict[str, float] = {}
    for when, probs in (("before", probs_before), ("after", probs_after)):
        p = np.asarray(probs, dtype=np.float64)
        yy = np.asarray(y, dtype=np.int64)
        picked = p[np.arange(len(yy)), yy] if len(yy) else np.zeros(0)
        out[f"ece_{when}"] = expected_calibration_error(p, yy)
        out[f"nll_{when}"] = float(-np.mean(np.log(np.clip(picked, 1e-12, 1.0)))) if len(yy) else 0.0
        out[f"mean_confidence_{when}"] = float(p.max(axis=1).mean()) if len(yy) else 0.0
        out[f"wrong_confidence_{when}"] = wrong_confidence(p, yy)
    return {k: round(v, 6) for k, v in out.items()}


def split_calibration(train_subjects: Sequence[str], n: int, seed: int, *, keep: int = 1) -> tuple[list[str], list[str]]:
    """``(calibration subjects, the rest)``: ``n`` whole subjects drawn (by ``seed``) from a fold's training
    subjects, leaving at least ``keep`` of them to train on (fewer calibration subjects, maybe none, when
    there are not enough). Only training subjects go in; the fold's test subjects are never among them."""
    subjects = sorted(set(train_subjects))
    take = max(0, min(n, len(subjects) - keep))
    if take == 0:
        return [], subjects
    rng = np.random.default_rng(seed + 104_729)
    chosen = {subjects[i] for i in rng.permutation(len(subjects))[:take]}
    return sorted(chosen), [s for s in subjects if s not in chosen]

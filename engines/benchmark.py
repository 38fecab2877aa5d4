"""Timing of ``engine.predict``: one implementation for ``mer-bench`` and ``mer-bench engines``."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from engines.backends.base import Predictor


@dataclass(frozen=True)
class PredictTiming:
    batch: int
    p50_ms: float
    p95_ms: float
    samples_per_s: float


def time_predict(engine: Predictor, batch: np.ndarray, *, iters: int = 200, warmup: int = 10) -> PredictTiming:
    """Wall time of whole ``engine.predict`` calls (input check, copies, run, softmax) on ``batch``."""
    predict = engine.predict
    for _ in range(warmup):
        predict(batch)
    samples = np.empty(iters)
    for i in range(iters):
        start = time.perf_counter()
        predict(batch)
        samples[i] = time.perf_counter() - start
    ms = samples * 1e3
    return PredictTiming(
        batch=len(batch),
        p50_ms=float(np.percentile(ms, 50)),
        p95_ms=float(np.percentile(ms, 95)),
        samples_per_s=float(len(batch) / np.median(samples)),
    )

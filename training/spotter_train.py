"""Training the learned spotter: :class:`engines.spot_network.SpotNet` on grid features, decoding thresholds
chosen on people held out of training, export to ONNX with its card.

Each sequence (:class:`training.spotter_data.SpotSequence`) is cut into chunks of consecutive grid steps;
the loss is the binary cross-entropy of the pooled region logits (a soft maximum over regions, the formula of
:func:`engines.spotting_model.pool_regions`) against the step labels, positives weighted up. Every chunk is
also shown mirrored (image-left and image-right regions swapped, horizontal movements negated), so a side
is no cue. The decoding thresholds (``peak``, ``edge``) are then chosen on validation people's recordings:
the best mean micro F1 (IoU >= 0.5) over their renderings, with false micro events per minute on their
un-injected videos held at or below ``max_false_per_min``.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from engines.spotting_model import SpottingCard, pool_regions, write_card_metadata
from mer_analysis.learned_spotting import decode_rows
from mer_analysis.motion import REGION_NAMES
from mer_analysis.spot_features import FEATURE_VERSION, FEATURES
from mer_analysis.spotting import SpottedWindow
from mer_core.metrics import Interval, match_windows
from training.spotter_data import SpotSequence, segments

__all__ = ["SpotTrainOptions", "choose_decoding", "export_spotter", "predict_logits", "train_spotter",
           "windows_of"]

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class SpotTrainOptions:
    width: int = 24
    dropout: float = 0.1
    region_bias: bool = True
    log_inputs: bool = True
    region_loss: bool = True  # train each region on whether it moved (where known), not only the pooled output
    context: int = 29  # grid steps before the judged one; the rest of the receptive field is look-ahead
    steps: int = 3000  # optimisation steps
    lr: float = 2e-3
    weight_decay: float = 1e-3
    batch: int = 32
    chunk: int = 48  # judged steps per chunk
    pos_weight: float = 4.0
    mirror: bool = True
    seed: int = 0
    threads: int = 2
    max_false_per_min: float = 1.0
    originals_weight: float = 1.0  # how often an un-injected video's chunks are drawn, relative to a rendering's


def _mirror_index() -> np.ndarray:
    names = list(REGION_NAMES)
    out = []
    for n in names:
        if n.endswith("_l"):
            out.append(names.index(n[:-2] + "_r"))
        elif n.endswith("_r"):
            out.append(names.index(n[:-2] + "_l"))
        else:
            out.append(names.index(n))
    return np.array(out)


_MIRROR = _mirror_index()
_HORIZONTAL = [FEATURES.index("dx"), FEATURES.index("mesh_dx")]


def mirror(values: np.ndarray) -> np.ndarray:
    """(..., R, C) features of the mirrored face: regions swapped left/right, horizontal movements negated."""
    out = values[..., _MIRROR, :].copy()
    out[..., _HORIZONTAL] *= -1.0
    return out


class _Starts:
    """Every valid chunk start over all sequences, drawn uniformly (an un-injected video's starts count
    ``originals_weight`` times as much as a rendering's)."""

    def __init__(self, seqs: Sequence[SpotSequence], length: int, originals_weight: float) -> None:
        pieces, weights = [], []
        for i, seq in enumerate(seqs):
            for a, b in segments(seq.steps):
                if b - a >= length:
                    pieces.append((i, a, b - length + 1))
                    weights.append((b - length + 1 - a) * (1.0 if seq.rendered else originals_weight))
        if not pieces:
            raise ValueError("no training sequence is long enough for one chunk")
        self.pieces = pieces
        w = np.asarray(weights, np.float64)
        self.p = w / w.sum()

    def draw(self, rng: np.random.Generator, n: int) -> list[tuple[int, int]]:
        picks = rng.choice(len(self.pieces), size=n, p=self.p)
        out = []
        for k in picks:
            i, a, b = self.pieces[int(k)]
            out.append((i, int(rng.integers(a, b))))
        return out


def _pool_torch(logits: Any, sharpness: float) -> Any:
    import torch

    return (torch.logsumexp(logits * sharpness, dim=1) - math.log(logits.shape[1])) / sharpness


def _loss(logits: Any, y: np.ndarray, w: np.ndarray, yr: np.ndarray, sharpness: float, pos_weight: Any) -> Any:
    """Per-region BCE where the moved regions are known (renderings), the pooled BCE on the steps where
    they are not (annotated datasets): (B, R, T) logits against (B, T) labels and weights and (B, R, T)
    region targets (NaN: unknown)."""
    import torch

    bce = torch.nn.functional.binary_cross_entropy_with_logits
    known = np.isfinite(yr)
    region_w = known * w[:, None, :]
    total = logits.new_zeros(())
    if region_w.sum() > 0:
        total = total + bce(logits, torch.from_numpy(np.nan_to_num(yr)), weight=torch.from_numpy(region_w),
                            pos_weight=pos_weight, reduction="sum") / float(region_w.sum())
    pooled_w = (~known.any(axis=1)) * w
    if pooled_w.sum() > 0:
        total = total + bce(_pool_torch(logits, sharpness), torch.from_numpy(y), weight=torch.from_numpy(pooled_w),
                            pos_weight=pos_weight, reduction="sum") / float(pooled_w.sum())
    return total


def train_spotter(train: Sequence[SpotSequence], options: SpotTrainOptions | None = None, *,
                  sharpness: float = 4.0, progress: Progress | None = None) -> Any:
    """A trained :class:`SpotNet` (eval mode) on ``train``."""
    import torch

    from engines.spot_network import SpotNet

    opts = options or SpotTrainOptions()
    torch.manual_seed(opts.seed)
    torch.set_num_threads(opts.threads)
    rng = np.random.default_rng(opts.seed)
    net = SpotNet(len(FEATURES), len(REGION_NAMES), width=opts.width, dropout=opts.dropout,
                  region_bias=opts.region_bias, log_inputs=opts.log_inputs)
    field = net.receptive_field
    if opts.context >= field:
        raise ValueError(f"context {opts.context} must be below the receptive field {field}")
    optimiser = torch.optim.AdamW(net.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    length = field - 1 + opts.chunk
    starts = _Starts(train, length, opts.originals_weight)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=opts.lr, total_steps=opts.steps,
                                                   pct_start=0.15)
    pos_weight = torch.tensor(opts.pos_weight)
    if progress:
        progress("train spotter", 0, opts.steps)
    net.train()
    x = np.zeros((opts.batch, len(REGION_NAMES), len(FEATURES), length), np.float32)
    y = np.zeros((opts.batch, opts.chunk), np.float32)
    w = np.ones((opts.batch, opts.chunk), np.float32)
    yr = np.full((opts.batch, len(REGION_NAMES), opts.chunk), np.nan, np.float32)
    for _ in range(opts.steps):
        for j, (i, s) in enumerate(starts.draw(rng, opts.batch)):
            seq = train[i]
            values = seq.values[s:s + length]
            flipped = opts.mirror and rng.random() < 0.5
            if flipped:
                values = mirror(values)
            judged = slice(s + opts.context, s + opts.context + opts.chunk)
            x[j] = values.transpose(1, 2, 0)
            y[j] = seq.labels[judged]
            w[j] = 1.0 if seq.weights is None else seq.weights[judged]
            if opts.region_loss and seq.region_targets is not None:
                targets = seq.region_targets[judged]
                yr[j] = (targets[:, _MIRROR] if flipped else targets).T
            else:
                yr[j] = np.nan
        logits = net(torch.from_numpy(x))
        loss = _loss(logits, y, w, yr, sharpness, pos_weight)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if progress:
            progress("train spotter", 1, opts.steps)
    net.eval()
    return net


def predict_logits(net: Any, seq: SpotSequence, context: int) -> np.ndarray:
    """(R, T) region logits of every step of ``seq`` (NaN where a step lacks context or look-ahead), each
    segment of consecutive steps in one pass (valid convolutions: the same numbers as step by step)."""
    import torch

    field = net.receptive_field
    out = np.full((len(REGION_NAMES), len(seq.steps)), np.nan, np.float32)
    with torch.no_grad():
        for a, b in segments(seq.steps):
            if b - a < field:
                continue
            x = torch.from_numpy(np.ascontiguousarray(seq.values[a:b].transpose(1, 2, 0)))[None]
            out[:, a + context: a + context + (b - a - field + 1)] = net(x)[0].numpy()
    return out


def card_for(net: Any, options: SpotTrainOptions, *, name: str, sharpness: float = 4.0,
             rate_hz: float = 30.0) -> SpottingCard:
    field = net.receptive_field
    return SpottingCard(name=name, features=FEATURES, feature_version=FEATURE_VERSION, regions=REGION_NAMES,
                        rate_hz=rate_hz, context=options.context, lookahead=field - 1 - options.context,
                        pooling_sharpness=sharpness, settings={**net.settings, "train": asdict(options)})


def windows_of(seq: SpotSequence, logits: np.ndarray, card: SpottingCard) -> list[SpottedWindow]:
    return decode_rows(seq.rows(), logits, card)


def match_counts(windows: Sequence[SpottedWindow], truth: Sequence[dict[str, Any]]) -> tuple[int, int, int]:
    """(tp, fp, fn) of micro windows against the micro rows of ``truth`` at IoU >= 0.5."""
    pred = [Interval(w.onset.frame, w.offset.frame) for w in windows if w.kind == "micro"]
    true = [Interval(int(r["onset"]), int(r["offset"])) for r in truth if r.get("kind", "micro") == "micro"]
    tp = len(match_windows(pred, true))
    return tp, len(pred) - tp, len(true) - tp


@dataclass
class SequenceTally:
    """Windows against truth over many sequences: micro TP/FP/FN on the rendered ones, false micro events on the
    un-injected ones."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    false: int = 0
    minutes: float = 0.0

    def add(self, seq: SpotSequence, windows: Sequence[SpottedWindow]) -> None:
        if seq.rendered:
            a, b, c = match_counts(windows, seq.truth)
            self.tp, self.fp, self.fn = self.tp + a, self.fp + b, self.fn + c
        else:
            self.false += sum(w.kind == "micro" for w in windows)
            self.minutes += seq.minutes

    @property
    def f1(self) -> float:
        return 2 * self.tp / max(2 * self.tp + self.fp + self.fn, 1)

    @property
    def false_per_min(self) -> float | None:
        return self.false / self.minutes if self.minutes else None


def _objective(seqs: Sequence[SpotSequence], logits: Sequence[np.ndarray], card: SpottingCard,
               max_false: float) -> tuple[float, float, float]:
    tally = SequenceTally()
    for seq, lg in zip(seqs, logits, strict=True):
        tally.add(seq, windows_of(seq, lg, card))
    rate = tally.false_per_min or 0.0
    return tally.f1 - max(0.0, rate - max_false), tally.f1, rate


def choose_decoding(seqs: Sequence[SpotSequence], logits: Sequence[np.ndarray], card: SpottingCard, *,
                    max_false_per_min: float = 1.0) -> tuple[SpottingCard, dict[str, float]]:
    """``card`` with the (peak, edge) that do best on ``seqs`` (validation people), and the figures there."""
    best: tuple[float, SpottingCard, float, float] | None = None
    for peak in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9):
        for edge in (0.15, 0.25, 0.35, 0.5):
            if edge > peak:
                continue
            candidate = replace(card, peak=peak, edge=edge)
            score, f1, rate = _objective(seqs, logits, candidate, max_false_per_min)
            if best is None or score > best[0] + 1e-9:
                best = (score, candidate, f1, rate)
    assert best is not None
    return best[1], {"f1": round(best[2], 3), "false_per_min": round(best[3], 2)}


def pooled_probability(logits: np.ndarray, card: SpottingCard) -> np.ndarray:
    p = pool_regions(np.nan_to_num(logits, nan=-30.0), card.pooling_sharpness)
    return 1.0 / (1.0 + np.exp(-p))


def export_spotter(net: Any, card: SpottingCard, path: str | Path) -> Path:
    """Write ``net`` as an ONNX graph (``features`` (B, R, C, T) → ``logits``) with ``card`` in its metadata,
    and check ONNX Runtime gives the same logits as torch."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    field = net.receptive_field
    x = torch.randn(1, len(REGION_NAMES), len(FEATURES), field + 7)
    with torch.no_grad():
        expected = net(x).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy (TorchScript) exporter's deprecation notice
        torch.onnx.export(net, (x,), str(path), input_names=["features"], output_names=["logits"],
                          dynamic_axes={"features": {0: "batch", 3: "steps"}, "logits": {0: "batch", 2: "steps"}},
                          opset_version=17, dynamo=False)
    write_card_metadata(path, card)
    from engines.spotting_model import SpottingModel

    got = SpottingModel(path).logits(x.numpy())
    if not np.allclose(got, expected, atol=1e-4):
        raise RuntimeError(f"exported spotting model differs from torch (max {np.abs(got - expected).max():.2e})")
    return path

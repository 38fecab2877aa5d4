"""Evaluation metrics: MEGC spotting (IoU-matched windows) and pooled recognition (accuracy, UF1, UAR).

Spotting (MEGC protocol): a predicted window matches a true one when their frame-inclusive IoU is at least
0.5; matching is one-to-one, greedy by IoU. Micro and macro are matched and scored apart; the overall figure
pools their counts (TP, FP, FN), as MEGC does. Windows of different videos never match, so many videos can
be scored in one call.

Recognition: per-class F1 and recall come from the pooled predictions (all LOSO folds together). UF1 is the
mean per-class F1 over the classes that occur in the true labels *or* the predictions (a class only ever
predicted scores F1 = 0 and counts; a class in neither is left out). UAR is the mean per-class recall over
the classes that occur in the true labels (recall is undefined without a true sample).

Calibration: the expected calibration error (ECE; Naeini et al. 2015, Guo et al. 2017) over 15 equal-width
confidence bins, and the mean confidence on wrong answers. Pure numpy.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "KINDS",
    "Interval",
    "RecognitionScores",
    "SpottingScores",
    "expected_calibration_error",
    "frame_iou",
    "match_windows",
    "recognition_scores",
    "spotting_report",
    "spotting_scores",
    "to_interval",
    "wrong_confidence",
]

KINDS = ("micro", "macro")


@dataclass(frozen=True)
class Interval:
    """A window of frames ``onset..offset`` (both inclusive) of one video, optionally with its kind."""

    onset: int
    offset: int
    kind: str | None = None
    video: Hashable = ""

    def __post_init__(self) -> None:
        if self.offset < self.onset:
            raise ValueError(f"window offset {self.offset} is before its onset {self.onset}")

    @property
    def length(self) -> int:
        return self.offset - self.onset + 1


def _frame(value: Any) -> int:
    return int(getattr(value, "frame", value))


def to_interval(item: Any, *, video: Hashable = "") -> Interval:
    """An :class:`Interval` from ``(onset, offset)``, ``(onset, offset, kind)``, an Interval, or any object with
    ``onset``/``offset`` (frame numbers or :class:`mer_core.events.TimePoint`) and optionally ``kind``/``video``.
    """
    if isinstance(item, Interval):
        return item
    if isinstance(item, tuple | list):
        if len(item) == 2:
            return Interval(_frame(item[0]), _frame(item[1]), None, video)
        if len(item) == 3:
            return Interval(_frame(item[0]), _frame(item[1]), item[2], video)
        raise ValueError(f"a window is (onset, offset) or (onset, offset, kind), got {item!r}")
    if hasattr(item, "onset") and hasattr(item, "offset"):
        return Interval(_frame(item.onset), _frame(item.offset), getattr(item, "kind", None),
                        getattr(item, "video", video))
    raise TypeError(f"cannot read a window from {type(item).__name__}: {item!r}")


def _intervals(items: Iterable[Any]) -> list[Interval]:
    return [to_interval(item) for item in items]


def frame_iou(a: Any, b: Any) -> float:
    """Frame-inclusive IoU: |A ∩ B| / |A ∪ B| counting frames; 0 for windows of different videos."""
    a, b = to_interval(a), to_interval(b)
    if a.video != b.video:
        return 0.0
    inter = min(a.offset, b.offset) - max(a.onset, b.onset) + 1
    if inter <= 0:
        return 0.0
    return inter / (a.length + b.length - inter)


def match_windows(pred: Iterable[Any], true: Iterable[Any], iou: float = 0.5) -> list[tuple[int, int, float]]:
    """One-to-one matches ``(pred index, true index, IoU)`` with IoU >= ``iou``, greedy by IoU (ties: by index).

    Kinds are not looked at here: filter first (as :func:`spotting_scores` does) to match micro and macro apart.
    """
    p, t = _intervals(pred), _intervals(true)
    candidates = []
    for i, a in enumerate(p):
        for j, b in enumerate(t):
            value = frame_iou(a, b)
            if value >= iou and value > 0.0:
                candidates.append((-value, i, j))
    candidates.sort()
    used_p: set[int] = set()
    used_t: set[int] = set()
    matches = []
    for neg, i, j in candidates:
        if i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
            matches.append((i, j, -neg))
    return sorted(matches)


@dataclass(frozen=True)
class SpottingScores:
    """Counts and figures of one spotting evaluation; empty inputs give zeros, never NaN."""

    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float

    @classmethod
    def from_counts(cls, tp: int, fp: int, fn: int) -> SpottingScores:
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        return cls(tp, fp, fn, precision, recall, f1)

    def __add__(self, other: SpottingScores) -> SpottingScores:
        """Pooled counts (e.g. micro + macro, or several videos scored apart)."""
        return SpottingScores.from_counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)


def spotting_scores(pred: Iterable[Any], true: Iterable[Any], *, iou: float = 0.5,
                    kind: str | None = None) -> SpottingScores:
    """TP/FP/FN, precision, recall, F1 of predicted windows against true ones.

    ``kind`` (``"micro"``/``"macro"``) keeps only windows of that kind on both sides; ``None`` scores every
    window together, whatever its kind.
    """
    p, t = _intervals(pred), _intervals(true)
    if kind is not None:
        p = [w for w in p if w.kind == kind]
        t = [w for w in t if w.kind == kind]
    tp = len(match_windows(p, t, iou))
    return SpottingScores.from_counts(tp, len(p) - tp, len(t) - tp)


def spotting_report(pred: Iterable[Any], true: Iterable[Any], *, iou: float = 0.5) -> dict[str, SpottingScores]:
    """MEGC-style: ``micro`` and ``macro`` scored apart, ``overall`` = their pooled counts."""
    p, t = _intervals(pred), _intervals(true)
    for w in (*p, *t):
        if w.kind not in KINDS:
            raise ValueError(f"every window needs a kind in {KINDS} for a micro/macro report, got {w.kind!r}")
    micro = spotting_scores(p, t, iou=iou, kind="micro")
    macro = spotting_scores(p, t, iou=iou, kind="macro")
    return {"micro": micro, "macro": macro, "overall": micro + macro}


@dataclass(frozen=True)
class RecognitionScores:
    """Pooled recognition figures. ``confusion[i, j]`` counts true ``labels[i]`` predicted as ``labels[j]``."""

    accuracy: float
    uf1: float
    uar: float
    confusion: np.ndarray
    per_class_f1: dict[Hashable, float]
    per_class_recall: dict[Hashable, float]
    labels: tuple[Hashable, ...] = ()


def recognition_scores(y_true: Sequence[Hashable], y_pred: Sequence[Hashable],
                       labels: Sequence[Hashable] | None = None) -> RecognitionScores:
    """Accuracy, UF1, UAR, confusion matrix and per-class F1/recall from pooled predictions.

    ``labels`` fixes the class order (default: sorted union of both sides); a label outside it is an error.
    A class without true samples reports recall 0.0 but is left out of UAR; a class in neither side reports
    0.0 for both and is left out of UF1 and UAR.
    """
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} labels but y_pred has {len(y_pred)}")
    if labels is None:
        labels = sorted(set(y_true) | set(y_pred), key=str)
    labels = tuple(labels)
    if len(set(labels)) != len(labels):
        raise ValueError(f"duplicate labels in {labels}")
    index = {label: i for i, label in enumerate(labels)}
    k = len(labels)
    confusion = np.zeros((k, k), dtype=np.int64)
    for a, b in zip(y_true, y_pred, strict=True):
        if a not in index or b not in index:
            missing = a if a not in index else b
            raise ValueError(f"label {missing!r} is not among the labels {list(labels)}")
        confusion[index[a], index[b]] += 1
    tp = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1).astype(np.float64)
    predicted = confusion.sum(axis=0).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(support + predicted > 0, 2 * tp / (support + predicted), 0.0)
    in_f1 = (support + predicted) > 0
    in_recall = support > 0
    total = int(confusion.sum())
    return RecognitionScores(
        accuracy=float(tp.sum() / total) if total else 0.0,
        uf1=float(f1[in_f1].mean()) if in_f1.any() else 0.0,
        uar=float(recall[in_recall].mean()) if in_recall.any() else 0.0,
        confusion=confusion,
        per_class_f1={label: float(f1[i]) for i, label in enumerate(labels)},
        per_class_recall={label: float(recall[i]) for i, label in enumerate(labels)},
        labels=labels,
    )


def _confidence(probs: Any, y_true: Any) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y_true, dtype=np.int64).reshape(-1)
    if p.ndim != 2 or p.shape[0] != y.shape[0]:
        raise ValueError(f"probabilities must be (N, classes) for N true class indices; got {p.shape} and {y.shape}")
    if p.shape[0] == 0:
        return np.zeros(0), np.zeros(0, dtype=bool)
    return p.max(axis=1), p.argmax(axis=1) == y


def expected_calibration_error(probs: Any, y_true: Any, *, n_bins: int = 15) -> float:
    """ECE = Σ_b |B_b| / N · |accuracy(B_b) − mean confidence(B_b)|.

    ``probs`` (N, K) class probabilities, ``y_true`` (N,) true class indices. A sample's confidence is its
    top probability and it is right when its top class is the true one; bin ``b`` holds the confidences in
    ``(b / n_bins, (b + 1) / n_bins]`` (the first also 0). 0 for no samples.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    confidence, correct = _confidence(probs, y_true)
    if confidence.size == 0:
        return 0.0
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    total = 0.0
    for b in np.unique(bins):
        members = bins == b
        total += members.sum() * abs(float(correct[members].mean()) - float(confidence[members].mean()))
    return float(total / confidence.size)


def wrong_confidence(probs: Any, y_true: Any) -> float:
    """Mean top probability over the wrong answers (0 when there are none): how sure a model is of its mistakes."""
    confidence, correct = _confidence(probs, y_true)
    wrong = ~correct
    return float(confidence[wrong].mean()) if wrong.any() else 0.0

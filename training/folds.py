"""Cross-validation folds: leave-one-subject-out or subject-grouped k-fold, and picking a subset to run."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

from training.train_types import PROTOCOLS, Fold, TrainError


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def make_folds(subjects: Sequence[str], *, protocol: str, k: int = 5, seed: int = 0,
               counts: dict[str, int] | None = None) -> list[Fold]:
    """LOSO: one fold per subject (sorted). k-fold: ``k`` subject-disjoint folds, subjects shuffled by
    ``seed`` and dealt greedily to the fold with the fewest samples (``counts``) so folds are balanced."""
    unique = sorted(set(subjects))
    if protocol == "loso":
        if len(unique) < 2:
            raise TrainError(f"leave-one-subject-out needs at least 2 subjects, the dataset has {len(unique)}")
        n = len(unique)
        return [Fold(i + 1, n, f"fold{i + 1:02d}-{_safe(s)}", (s,)) for i, s in enumerate(unique)]
    if protocol != "kfold":
        raise TrainError(f"unknown protocol {protocol!r}; choose one of {PROTOCOLS}")
    if k > len(unique):
        raise TrainError(f"{k}-fold needs at least {k} subjects, the dataset has {len(unique)}; lower --k")
    rng = np.random.default_rng(seed)
    order = [unique[i] for i in rng.permutation(len(unique))]
    sizes = counts or Counter(subjects)
    order.sort(key=lambda s: -sizes.get(s, 0))  # stable: ties keep the shuffled order
    groups: list[list[str]] = [[] for _ in range(k)]
    load = [0] * k
    for subject in order:
        target = min(range(k), key=lambda i: (load[i], len(groups[i]), i))
        groups[target].append(subject)
        load[target] += sizes.get(subject, 0)
    return [Fold(i + 1, k, f"fold{i + 1:02d}", tuple(sorted(g))) for i, g in enumerate(groups)]


def select_folds(folds: Sequence[Fold], spec: str | Sequence[str] | None) -> list[Fold]:
    """The folds named by ``spec`` ("1,3,5", "2-4", fold names or test subjects); all when empty."""
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        return list(folds)
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if str(s).strip()]
    chosen: dict[int, Fold] = {}
    for item in items:
        match = re.fullmatch(r"(\d+)\s*-\s*(\d+)", item)
        numbers = list(range(int(match.group(1)), int(match.group(2)) + 1)) if match else (
            [int(item)] if item.isdigit() else [])
        hits = [f for f in folds if f.number in numbers] if numbers else [
            f for f in folds if item in (f.name, *f.test_subjects)]
        if not hits or (numbers and len(hits) != len(numbers)):
            raise TrainError(f"--folds: {item!r} is not a fold here (folds 1..{len(folds)}, or a fold name/subject)")
        for f in hits:
            chosen[f.number] = f
    return [chosen[n] for n in sorted(chosen)]

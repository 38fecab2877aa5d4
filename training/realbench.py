"""The real-footage spotting benchmark (``mer-bench real``): micro-expressions rendered onto real video of many
people, spotted by the live analysis chain, scored by the MEGC protocol, people held out.

Data (:mod:`training.realdata`): every video of ``../shared/real`` un-injected, and rendered by each render
family (``warp``: the Action-Unit RBF warps; ``mesh``: face-mesh deformations with shading and camera noise)
at fixed amplitudes (0.02-0.06 IOD), placed where the face is calm or anywhere (talking included); for the
learned spotter also training renderings (other seeds, amplitudes drawn from 0.015-0.06).

Spotting runs through :func:`training.replay.replay`, the :class:`mer_analysis.chain.Analyzer` that
``mer-live`` drives, over the videos' tracked faces. The rule spotter is scored as shipped. The learned
spotter is trained per fold of people (:func:`person_folds`: leave-one-person-out, or person-grouped folds)
on the other people's renderings and un-injected videos, its thresholds chosen on a quarter of those training
people, and scored on the held-out people's videos only; ``cross`` trains on one render family and scores
on the other. Micro windows match rendered ones at IoU >= 0.5; every micro window on an un-injected video is
a false event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mer_analysis.chain import AnalyzerOptions
from mer_analysis.spotting import SpottedWindow, SpotterOptions
from mer_core.metrics import Interval, SpottingScores, frame_iou, match_windows
from training.realdata import ORIGINAL, RenderSpec, Variant, VideoSet
from training.replay import replay
from training.synth_onto import PERMISSIVE_SPOTTER, track_clips
from training.synth_writer import RECOGNITION_COLUMNS, write_csv

__all__ = ["AMPLITUDES", "FAMILIES", "PLACEMENTS", "BenchOptions", "Tally", "clip_set_name", "evaluate",
           "person_folds", "score_windows", "write_clip_sets"]

log = logging.getLogger(__name__)

AMPLITUDES = (0.02, 0.03, 0.04, 0.06)
PLACEMENTS = ("calm", "anywhere")
FAMILIES = ("warp", "mesh")
Progress = Callable[[str, int, int], None]
Spot = Callable[[VideoSet, Variant], list[SpottedWindow]]


@dataclass(frozen=True)
class BenchOptions:
    """What the benchmark renders. Rates per minute of visible face; amplitudes in IOD."""

    amplitudes: tuple[float, ...] = AMPLITUDES
    placements: tuple[str, ...] = PLACEMENTS
    families: tuple[str, ...] = FAMILIES
    micro_per_minute: float = 10.0
    macro_per_minute: float = 1.0
    seed: int = 7
    # the learned spotter's training renderings (of the training people only, in each fold)
    train_seeds: tuple[int, ...] = (11, 12, 13)
    train_amplitude: tuple[float, float] = (0.015, 0.06)
    train_per_minute: float = 12.0
    train_macro_per_minute: float = 1.5

    def bench_specs(self) -> list[RenderSpec]:
        return [RenderSpec(f, p, (a, a), self.seed, self.micro_per_minute, self.macro_per_minute)
                for f in self.families for p in self.placements for a in self.amplitudes]

    def train_specs(self) -> list[RenderSpec]:
        """Per family: the first seed placed calm, the others anywhere."""
        return [RenderSpec(f, "calm" if k == 0 else "anywhere", self.train_amplitude, seed, self.train_per_minute,
                           self.train_macro_per_minute, calm_quantile=0.5)
                for f in self.families for k, seed in enumerate(self.train_seeds)]


def cell(spec: RenderSpec) -> str:
    """A benchmark cell's name: ``family placement@amplitude``."""
    return f"{spec.family} {spec.placement}@{spec.amplitude[0]:g}"


@dataclass
class Tally:
    """Counts of one cell (pooled over videos); errors in frames, signed (predicted - true)."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    onset_err: list[int] = field(default_factory=list)
    apex_err: list[int] = field(default_factory=list)
    offset_err: list[int] = field(default_factory=list)
    iou: list[float] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.onset_err += other.onset_err
        self.apex_err += other.apex_err
        self.offset_err += other.offset_err
        self.iou += other.iou

    @property
    def f1(self) -> float:
        return SpottingScores.from_counts(self.tp, self.fp, self.fn).f1

    def row(self) -> dict[str, Any]:
        s = SpottingScores.from_counts(self.tp, self.fp, self.fn)

        def median_abs(values: list[int]) -> float | None:
            return round(float(np.median(np.abs(values))), 1) if values else None

        return {"f1": round(s.f1, 3), "precision": round(s.precision, 3), "recall": round(s.recall, 3),
                "tp": s.tp, "fp": s.fp, "fn": s.fn, "onset_err": median_abs(self.onset_err),
                "apex_err": median_abs(self.apex_err), "offset_err": median_abs(self.offset_err),
                "iou": round(float(np.median(self.iou)), 3) if self.iou else None}


def score_windows(windows: Sequence[SpottedWindow], truth: Sequence[dict[str, Any]]) -> Tally:
    """Micro windows against the rendered micro-expressions (IoU >= 0.5), with frame errors and IoUs."""
    pred = [w for w in windows if w.kind == "micro"]
    true = [r for r in truth if r.get("kind", "micro") == "micro"]
    p = [Interval(w.onset.frame, w.offset.frame) for w in pred]
    t = [Interval(int(r["onset"]), int(r["offset"])) for r in true]
    matches = match_windows(p, t)
    tally = Tally(tp=len(matches), fp=len(p) - len(matches), fn=len(t) - len(matches))
    for i, j, _ in matches:
        tally.onset_err.append(pred[i].onset.frame - int(true[j]["onset"]))
        tally.apex_err.append(pred[i].apex.frame - int(true[j]["apex"]))
        tally.offset_err.append(pred[i].offset.frame - int(true[j]["offset"]))
        tally.iou.append(frame_iou(p[i], t[j]))
    return tally


def person_folds(people: Sequence[str], folds: int = 0) -> list[list[str]]:
    """Held-out groups: one person each (``folds`` 0), or ``folds`` groups dealt round-robin in sorted order."""
    names = sorted(set(people))
    if folds <= 0 or folds >= len(names):
        return [[n] for n in names]
    return [names[k::folds] for k in range(folds)]


def evaluate(data: dict[str, VideoSet], spot: Spot, *, tags: Sequence[str] | None = None,
             progress: Progress | None = None) -> dict[str, Any]:
    """Score ``spot`` over every video: per cell (pooled, and per person), false micro events per minute on
    every un-injected video (and pooled, and the worst)."""
    pooled: dict[str, Tally] = {}
    people: dict[str, dict[str, Tally]] = {}
    false: dict[str, float] = {}
    minutes = events = 0.0
    total = sum(len(v.variants) for v in data.values())
    if progress:
        progress("spot", 0, total)
    for stem, video in data.items():
        for tag, variant in video.variants.items():
            if tags is not None and tag != ORIGINAL and tag not in tags:
                continue
            windows = spot(video, variant)
            if progress:
                progress("spot", 1, total)
            if variant.spec is None:
                n = sum(w.kind == "micro" for w in windows)
                false[stem] = round(n / variant.track.minutes, 2) if variant.track.minutes else 0.0
                minutes += variant.track.minutes
                events += n
                continue
            name = cell(variant.spec)
            tally = score_windows(windows, variant.truth)
            pooled.setdefault(name, Tally()).add(tally)
            people.setdefault(video.person, {}).setdefault(name, Tally()).add(tally)
    order = {name: k for k, name in enumerate(sorted(pooled, key=_cell_order))}
    return {
        "cells": {name: pooled[name].row() for name in order},
        "people": {person: {name: t.row() for name, t in sorted(cells.items(), key=lambda kv: _cell_order(kv[0]))}
                   for person, cells in sorted(people.items())},
        "false_per_min": dict(sorted(false.items())),
        "false_per_min_all": round(events / minutes, 2) if minutes else None,
        "false_per_min_worst": max(false.values()) if false else None,
        "minutes": round(minutes, 2),
    }


def _cell_order(name: str) -> tuple[int, int, float]:
    family, _, rest = name.partition(" ")
    placement, _, amplitude = rest.partition("@")
    return (FAMILIES.index(family) if family in FAMILIES else 9,
            PLACEMENTS.index(placement) if placement in PLACEMENTS else 9, float(amplitude or 0))


def rule_spot(options: AnalyzerOptions | None = None) -> Spot:
    """The rule spotter, through the chain."""
    opts = options or AnalyzerOptions(spotting="rules")

    def spot(video: VideoSet, variant: Variant) -> list[SpottedWindow]:
        return replay(variant.track, opts).windows

    return spot


def bench_only(data: dict[str, VideoSet], specs: Sequence[RenderSpec]) -> dict[str, VideoSet]:
    """The benchmark's variants (and originals) of ``data``, without the training renderings."""
    tags = {s.tag for s in specs} | {ORIGINAL}
    return {stem: VideoSet(v.path, v.person, {t: var for t, var in v.variants.items() if t in tags})
            for stem, v in data.items()}


def people_table(result: dict[str, Any], cells: Sequence[str]) -> list[dict[str, Any]]:
    """Per person: F1 in ``cells`` and false events per minute, for the README's table."""
    rows = []
    for person, by_cell in result["people"].items():
        rows.append({"person": person, **{c: by_cell.get(c, {}).get("f1") for c in cells}})
    return rows


def save_json(path: Path, data: Any) -> None:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def clip_set_name(spec: RenderSpec, *, split: str) -> str:
    """Where a rendering's recognition clips go: ``test/<family>_<placement>_<amplitude>`` for a benchmark
    cell (one set per cell, so each is scored on its own), ``train/<family>`` for a training rendering."""
    if split == "test":
        return f"test/{spec.family}_{spec.placement}_{spec.amplitude_text}"
    return f"train/{spec.family}"


def _none_rows(windows: Sequence[SpottedWindow], fps: float, *, keep: int | None = None,
               seed: int = 0) -> list[dict[str, object]]:
    """Rows labelled ``none`` for micro windows of an un-injected video (``keep``: at most that many, drawn at
    random), in the rendered truth's format, for :func:`training.synth_onto.track_clips`."""
    from engines.card import NONE_LABEL

    micro = [w for w in windows if w.kind == "micro"]
    if keep is not None and len(micro) > keep:
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), len(micro)]))
        micro = [micro[i] for i in sorted(rng.choice(len(micro), size=keep, replace=False).tolist())]
    return [{"kind": "micro", "onset": w.onset.frame, "apex": w.apex.frame, "offset": w.offset.frame,
             "label": NONE_LABEL, "aus": "", "fps": f"{fps:g}"} for w in micro]


def write_clip_sets(data: dict[str, VideoSet], specs: dict[str, Sequence[RenderSpec]], out: Path, *,
                    none_per_minute: float = 20.0, progress: Progress | None = None) -> dict[str, int]:
    """The true windows of every rendering as recognition sets (``mer-synth``'s layout, one subject per
    person, the crops the live chain analyses: :func:`training.synth_onto.track_clips`), for ``mer-train``
    and ``mer-bench recognition`` judged leaving people out. ``specs``: split name ("test", "train") → the
    renderings in it. From each un-injected video (where ``data`` holds it), two sets labelled ``none`` (class
    scheme ``megc3n``), for a veto: ``train/none``, up to ``none_per_minute`` windows a minute that a
    permissive spotter finds there (talking, blinks, head turns, expressions), and ``test/false``, the micro
    windows the shipped rule spotter finds there (its false events). Returns the clips written per set."""
    rows: dict[str, list[dict[str, object]]] = {}
    todo = [(split, spec) for split, group in specs.items() for spec in group]
    originals = [(stem, v) for stem, v in data.items() if ORIGINAL in v.variants]
    total = len(todo) * len(data) + 2 * len(originals)
    if progress:
        progress("clips", 0, total)
    for split, spec in todo:
        name = clip_set_name(spec, split=split)
        root = out / name / "recognition"
        for stem, videos in data.items():
            variant = videos.variants.get(spec.tag)
            if variant is not None:
                rows.setdefault(name, []).extend(track_clips(
                    variant.track, variant.truth, root, subject=videos.person,
                    name=f"{stem}_{spec.family}_{spec.placement}_{spec.amplitude_text}_s{spec.seed}"))
            if progress:
                progress("clips", 1, total)
    permissive = AnalyzerOptions(spotting="rules", spotter=SpotterOptions(**PERMISSIVE_SPOTTER))
    for name, options, per_minute in (("train/none", permissive, none_per_minute),
                                      ("test/false", AnalyzerOptions(spotting="rules"), None)):
        for stem, videos in originals:
            track = videos.original.track
            keep = None if per_minute is None else int(round(per_minute * track.minutes))
            found = _none_rows(replay(track, options).windows, track.fps, keep=keep)
            rows.setdefault(name, []).extend(track_clips(track, found, out / name / "recognition",
                                                         subject=videos.person, name=f"{stem}_none"))
            if progress:
                progress("clips", 1, total)
    for name, written in rows.items():
        folder = out / name / "recognition"
        folder.mkdir(parents=True, exist_ok=True)
        write_csv(folder / "annotations.csv", RECOGNITION_COLUMNS, written)
    return {name: len(written) for name, written in sorted(rows.items())}

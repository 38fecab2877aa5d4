"""The learned spotter trained per fold of people: what ``mer-bench real`` scores and ``mer-train spot`` ships.

For a fold, the people it holds out are never seen: the model learns from the other people's renderings
and un-injected videos, and its decoding thresholds are chosen on a quarter of those people (every fourth in
sorted order), whom the network did not learn from. The shipped model is the same recipe with no one held
out.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engines.spotting_model import SpottingModel
from mer_analysis.chain import AnalyzerOptions
from mer_analysis.spotting import SpottedWindow
from training.realdata import ORIGINAL, Variant, VideoSet
from training.replay import replay
from training.spotter_data import (
    SpotSequence,
    expression_motion,
    features_of,
    ignore_unseen,
    set_region_targets,
    visibility,
)
from training.spotter_train import (
    SpotTrainOptions,
    card_for,
    choose_decoding,
    export_spotter,
    predict_logits,
    train_spotter,
    windows_of,
)

__all__ = ["FoldModel", "fit_spotter", "learned_spot", "sequences", "train_fold", "validation_people"]

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]


def sequences(data: dict[str, VideoSet], people: Sequence[str], *, families: Sequence[str] | None = None,
              cache: Path, progress: Progress | None = None, ignore_unseen_expressions: bool = False
              ) -> list[SpotSequence]:
    """The feature sequences of ``people``'s videos: originals, and renderings of ``families`` (all: None).
    ``ignore_unseen_expressions``: training weights that ignore the rendered expressions the features cannot
    see (:func:`training.spotter_data.visibility`)."""
    out = []
    wanted = [(stem, tag, v) for stem, video in data.items() if video.person in people
              for tag, v in video.variants.items()
              if v.spec is None or families is None or v.spec.family in families]
    if progress:
        progress("features", 0, len(wanted))
    originals: dict[str, SpotSequence] = {}
    for stem, tag, variant in wanted:
        seq = features_of(variant.track, person=data[stem].person, tag=tag, truth=variant.truth,
                          family=variant.spec.family if variant.spec else "", cache=cache)
        if tag == ORIGINAL:
            originals[stem] = seq
        out.append(seq)
        if progress:
            progress("features", 1, len(wanted))
    if ignore_unseen_expressions:
        for (stem, _, _), seq in zip(wanted, out, strict=True):
            if not seq.rendered:  # nothing rendered: every region's target is 0 at every step
                set_region_targets(seq, [])
            elif stem in originals:
                moved = expression_motion(seq, originals[stem])
                ignore_unseen(seq, visibility(seq, originals[stem], moved=moved))
                set_region_targets(seq, moved)
    return out


def validation_people(people: Sequence[str]) -> list[str]:
    """Every fourth of the sorted training people: the decoding thresholds are chosen on them."""
    names = sorted(set(people))
    return names[1::4] if len(names) >= 4 else names[:1]


@dataclass(frozen=True)
class FoldModel:
    path: Path
    held_out: tuple[str, ...]
    validation: dict[str, Any]


def fit_spotter(seqs: Sequence[SpotSequence], options: SpotTrainOptions, *, name: str = "mer-spot",
                validate: bool = True, progress: Progress | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """Train on ``seqs`` but the validation people's, choose the decoding thresholds on theirs: (net, card,
    figures on the validation people)."""
    people = sorted({s.person for s in seqs})
    val = validation_people(people) if validate and len(people) > 1 else []
    fit = [s for s in seqs if s.person not in val]
    net = train_spotter(fit, options, progress=progress)
    card = card_for(net, options, name=name)
    figures: dict[str, Any] = {}
    if val:
        held = [s for s in seqs if s.person in val]
        logits = [predict_logits(net, s, options.context) for s in held]
        card, figures = choose_decoding(held, logits, card, max_false_per_min=options.max_false_per_min)
    card = _with_evaluation(card, {"validation": {**figures, "people": val},
                                   "trained_people": sorted({s.person for s in fit})})
    return net, card, figures


def train_fold(data: dict[str, VideoSet], held_out: Sequence[str], options: SpotTrainOptions, *, work: Path,
               families: Sequence[str] | None = None, name: str = "mer-spot", progress: Progress | None = None,
               validate: bool = True) -> FoldModel:
    """Train on everyone but ``held_out`` (renderings of ``families``), choose thresholds on the validation
    people, export to ONNX under ``work/models`` (cached by the settings and people)."""
    people = sorted({v.person for v in data.values()} - set(held_out))
    key = hashlib.sha256(json.dumps([people, sorted(held_out), families, asdict(options), name,
                                     sorted(data)], default=str).encode()).hexdigest()[:16]
    path = work / "models" / f"spot-{key}.onnx"
    if path.is_file():
        model = SpottingModel(path)
        return FoldModel(path, tuple(held_out), dict(model.card.evaluation.get("validation", {})))
    seqs = sequences(data, people, families=families, cache=work / "features", progress=progress)
    net, card, figures = fit_spotter(seqs, options, name=name, validate=validate, progress=progress)
    card = _with_evaluation(card, {"held_out": sorted(held_out), "families": list(families or [])})
    export_spotter(net, card, path)
    return FoldModel(path, tuple(held_out), figures)


def _with_evaluation(card: Any, evaluation: dict[str, Any]) -> Any:
    from dataclasses import replace

    return replace(card, evaluation={**card.evaluation, **evaluation})


def learned_spot(models: dict[str, Path], *, families: Sequence[str] | None = None) -> Callable[
        [VideoSet, Variant], list[SpottedWindow]]:
    """A benchmark spot function: each video spotted by the model of the fold that held its person out,
    through the live chain (:func:`training.replay.replay`). Renderings of other families give no windows
    (they are not scored: see ``tags`` in :func:`training.realbench.evaluate`)."""
    loaded: dict[Path, SpottingModel] = {}
    options = AnalyzerOptions(spotting="learned")

    def spot(video: VideoSet, variant: Variant) -> list[SpottedWindow]:
        path = models[video.person]
        if path not in loaded:
            loaded[path] = SpottingModel(path)
        return replay(variant.track, options, spot_model=loaded[path]).windows

    return spot


def fast_spot(models: dict[str, Any], options: SpotTrainOptions, cards: dict[str, Any], *, cache: Path
              ) -> Callable[[VideoSet, Variant], list[SpottedWindow]]:
    """As :func:`learned_spot` but from cached features and torch networks (for quick experiments); the
    figures the README gives come from :func:`learned_spot`."""

    def spot(video: VideoSet, variant: Variant) -> list[SpottedWindow]:
        seq = features_of(variant.track, person=video.person, tag=ORIGINAL if variant.spec is None else
                          variant.spec.tag, truth=variant.truth, cache=cache)
        net = models[video.person]
        logits = predict_logits(net, seq, options.context)
        return windows_of(seq, logits, cards[video.person])

    return spot


def summary(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else 0.0

"""Where ``mer-train spot`` gets its sequences: annotated long videos, real footage to render onto, and videos
that hold no micro-expression at all.

- **Annotated long videos** (:func:`training.datasets.spotting.read_spotting_dataset`: CAS(ME)² and SAMM long
  videos, the project's own csv, a ``mer-synth onto`` folder): each video is tracked as ``mer-live`` tracks
  it and its annotated micro-expressions are the positives; everything else in it is a negative.
- **Real footage to render onto** (:mod:`training.realdata`): micro-expressions are rendered by every render
  family at the benchmark's amplitudes and the training amplitudes; the un-injected videos are negatives.
- **Negatives**: videos with no micro-expression (talking, interviews, a lab's own baseline recordings).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from realtime.face import FaceTrackerOptions
from training.datasets.spotting import LongVideo, read_spotting_dataset
from training.realbench import BenchOptions
from training.realdata import prepare
from training.replay import cached_track
from training.spotter_data import SpotSequence, features_of
from training.spotter_folds import sequences

__all__ = ["annotated_sequences", "negative_sequences", "rendered_sequences"]

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]


def _truth(video: LongVideo) -> list[dict[str, Any]]:
    return [{"onset": i.onset, "apex": i.apex, "offset": i.offset, "kind": i.kind, "label": i.label}
            for i in video.intervals]


def annotated_sequences(roots: Sequence[Path], *, tracker: FaceTrackerOptions, work: Path, kind: str = "auto",
                        progress: Progress | None = None) -> tuple[list[SpotSequence], list[str]]:
    """Sequences of every usable video of the datasets at ``roots``, and one line per dataset on what was read
    (videos, intervals, rows skipped)."""
    out: list[SpotSequence] = []
    notes: list[str] = []
    for root in roots:
        dataset = read_spotting_dataset(root, kind)
        skipped = dataset.skipped_counts()
        micro = sum(i.kind == "micro" for v in dataset.videos for i in v.intervals)
        notes.append(f"{root}: {dataset.name}, {len(dataset.videos)} videos of {len(dataset.subjects)} people, "
                     f"{micro} micro-expressions" + (f"; skipped {sum(skipped.values())} rows "
                                                      f"({', '.join(f'{k} {n}' for k, n in skipped.items())})"
                                                      if skipped else ""))
        for video in dataset.videos:
            track = cached_track(video.path, tracker, work, name=video.video, fps=video.fps, progress=progress)
            out.append(features_of(track, person=f"{dataset.name}:{video.subject}", tag=f"annotated:{video.video}",
                                   truth=_truth(video), cache=work / "features"))
    return out, notes


def rendered_sequences(videos: Sequence[Path], settings: BenchOptions, *, tracker: FaceTrackerOptions, work: Path,
                       progress: Progress | None = None) -> list[SpotSequence]:
    """Renderings of ``videos`` (the benchmark's and the training ones, every family) and the originals."""
    data = prepare(videos, settings.bench_specs() + settings.train_specs(), work, tracker=tracker,
                   progress=progress)
    people = sorted({v.person for v in data.values()})
    return sequences(data, people, cache=work / "features", progress=progress)


def negative_sequences(videos: Sequence[Path], *, tracker: FaceTrackerOptions, work: Path,
                       progress: Progress | None = None) -> list[SpotSequence]:
    """Videos without micro-expressions: every step a negative (each video its own person)."""
    out = []
    for path in videos:
        track = cached_track(path, tracker, work, name=path.stem, progress=progress)
        out.append(features_of(track, person=f"negatives:{path.stem}", tag="original", cache=work / "features"))
    return out

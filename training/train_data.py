"""A dataset's DIs in memory, ready for training: which streams a model (and its pretraining) needs, built
once through the DI cache."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from engines.card import ModelCard
from engines.registry import default_card
from mer_core.dynamic_image import VECTOR_STREAMS
from training.augment import (
    PHASE_STREAMS,
    phase_augmentation_applies,
)
from training.cache import DIBatch, DICache, DIOptions
from training.datasets.base import DatasetIndex
from training.datasets.frames import FrameOptions
from training.train_types import NullProgress, TrainError, TrainOptions


@dataclass
class PreparedData:
    """A dataset's DIs in memory, ready for training."""

    index: DatasetIndex
    batch: DIBatch
    labels: tuple[str, ...]
    y: np.ndarray  # (N,) class indices into labels
    subjects: np.ndarray  # (N,) subject ids
    card: ModelCard  # the model's card before training (streams, sizes, channels)
    di_settings: DIOptions
    fps: float  # frame rate the DIs were formed at

    @property
    def x(self) -> np.ndarray:
        return self.batch.x


PRETRAIN_MODEL = "single"  # what stream pretraining trains: one backbone on TRDI + the phase DIs


def vector_streams(streams: Sequence[str]) -> tuple[int, int] | None:
    """Indices of the flow streams (horizontal, vertical) among ``streams``, turned with the image when
    augmenting; None when the model reads no flow."""
    for u, v in VECTOR_STREAMS:
        if u in streams and v in streams:
            return streams.index(u), streams.index(v)
    return None


def model_streams_needed(card: ModelCard, augment_phases: bool, *, pretrain: bool = False) -> tuple[str, ...]:
    """The model's streams plus, when phase augmentation applies, the two phase DIs, plus, when its
    streams are pretrained, what the pretraining model and its phase augmentation read."""
    extra: list[str] = []
    if augment_phases and phase_augmentation_applies(card.streams):
        extra += PHASE_STREAMS
    if pretrain:
        extra += [*default_card(PRETRAIN_MODEL, labels=card.labels).streams, *PHASE_STREAMS]
    streams = list(card.streams)
    streams += [p for p in dict.fromkeys(extra) if p not in streams]
    return tuple(streams)


def prepare_data(
    index: DatasetIndex,
    settings: TrainOptions,
    *,
    frames: FrameOptions | None = None,
    cache: DICache | None = None,
    progress: NullProgress | None = None,
) -> PreparedData:
    """DIs for every sample of ``index`` (labelled by its class scheme), in the model card's format."""
    progress = progress or NullProgress()
    if not index.labels:
        raise TrainError("the dataset was read without a class scheme; pass scheme= to the reader")
    if not index.samples:
        raise TrainError(f"{index.name}: no usable samples in {index.root} (see the skipped/dropped counts)")
    try:
        card = default_card(settings.model, labels=index.labels, backbone=settings.backbone)
    except KeyError as exc:
        raise TrainError(str(exc.args[0])) from None
    except ValueError as exc:
        raise TrainError(f"model {settings.model!r}: {exc}") from None
    if settings.pretrain_epochs and len(card.streams) == 1:
        raise TrainError(f"--pretrain-epochs starts the backbones of a multi-stream model; {settings.model!r} "
                         "has one stream (its phase augmentation already gives it those views)")
    base = frames or FrameOptions()
    frame_options = replace(base, crop_size=card.crop_size, channels=card.channels)
    di_settings = DIOptions(streams=model_streams_needed(card, settings.augment_phases,
                                                          pretrain=settings.pretrain_epochs > 0),
                             input_size=card.input_size, frames=frame_options)
    progress.stage(f"building DIs ({', '.join(di_settings.streams)}) for {len(index.samples)} samples")
    batch = (cache or DICache(None)).build(index.samples, di_settings, progress=progress.dis)
    if not batch.samples:
        raise TrainError(f"{index.name}: no sample's frames could be turned into DIs (see the log)")
    label_of = {label: i for i, label in enumerate(index.labels)}
    y = np.asarray([label_of[s.label] for s in batch.samples if s.label is not None], dtype=np.int64)
    if len(y) != len(batch.samples):
        raise TrainError("some samples have no class label")
    subjects = np.asarray([s.subject for s in batch.samples])
    rates = Counter(min(s.fps, frame_options.target_fps) if frame_options.target_fps else s.fps
                    for s in batch.samples)
    fps = float(rates.most_common(1)[0][0])
    return PreparedData(index=index, batch=batch, labels=tuple(index.labels), y=y, subjects=subjects,
                        card=card, di_settings=di_settings, fps=fps)

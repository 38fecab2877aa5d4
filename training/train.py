"""Training and cross-validation (LOSO or subject-grouped k-fold) on cached DIs, resumable and splittable.

Flow: read a dataset → build every sample's DIs once (:mod:`training.cache`) → for each fold, train a fresh
model for a fixed number of epochs on the other subjects (optionally early-stopped on a validation split
*of the training subjects*; the held-out subject is never looked at for model selection) → write the
fold's predictions to ``RUN_DIR/folds/<fold>.json`` (the fold's completion marker) → pool all folds'
predictions into one report (:mod:`training.report`). Folds can be run in subsets (``folds=``) on several
machines and pooled later with :func:`training.report.merge_runs`. Each fold's model is kept as
``RUN_DIR/fold_models/<fold>.pt`` (+ card). ``final=True`` then trains one model on
every subject and saves ``RUN_DIR/final/model.pt`` with its card — the artefact that gets shipped.

Calibration (``calibration_subjects``, default 1): each fold holds that many whole *training* subjects out of
training, fits the model's softmax temperature on their clips (:mod:`training.calibration`), and evaluates
the held-out fold with it; the fold JSON records the temperature, the calibration subjects and the expected
calibration error before and after. The final model, trained on every subject, takes the median of the
folds' temperatures.

A multi-stream model can have its streams pretrained (``pretrain_epochs``): within each fold, one backbone
is first trained as the single-stream model with phase augmentation on the same training subjects, and
every stream of the fused model starts from it (:meth:`_Trainer.pretrain`).

Each fold uses seed ``seed + fold number``, so a fold gives the same result whether it runs alone or with
the others. A per-epoch state file (``folds/<fold>.state.pt``, weights_only-safe) lets an interrupted fold
resume where it stopped.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from core.dynamic_image import FLOW_STREAMS
from engines.calibration import set_temperature
from engines.card import ModelCard
from engines.checkpoint import save_checkpoint
from engines.registry import build_model, default_card
from training.augment import (
    PHASE_STREAMS,
    SpatialAugment,
    expand_with_phases,
    phase_augmentation_applies,
    select_streams,
)
from training.cache import DIBatch, DICache, DIOptions
from training.calibration import calibration_figures, fit_temperature, softmax, split_calibration
from training.datasets.base import DatasetIndex
from training.datasets.frames import FrameOptions
from training.report import read_fold_results, scores_dict, write_report

__all__ = [
    "Fold",
    "NullProgress",
    "PreparedData",
    "RunOutcome",
    "TrainError",
    "TrainOptions",
    "WeightAverage",
    "final_temperature",
    "make_folds",
    "prepare_data",
    "run_training",
    "select_folds",
    "train_final",
    "train_fold",
]

log = logging.getLogger(__name__)

FOLD_SCHEMA = "mer-fold/1"
PROTOCOLS = ("loso", "kfold")


class TrainError(RuntimeError):
    """Training cannot go on as asked (bad options, a run folder from other settings, no data)."""


@dataclass(frozen=True)
class TrainOptions:
    """Everything that decides a training run's results (device and threads only decide its speed)."""

    model: str = "dual-phase"
    backbone: str = "fast"
    scheme: str = "megc3"
    protocol: str = "loso"  # "loso" | "kfold" (subject-disjoint folds)
    k: int = 5
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    augment_phases: bool = True  # phase DIs as extra samples for single-stream models
    spatial_augment: bool = True
    class_balanced: bool = True  # inverse-frequency weighted cross-entropy
    val_fraction: float = 0.0  # > 0: early-stop on this fraction of the training subjects
    patience: int = 10  # epochs without validation UF1 improvement before stopping
    average_epochs: int = 0  # > 0: the final weights are the mean of the last N epochs' (SWA), not the last
    pretrain_epochs: int = 0  # > 0 (multi-stream models): first train one backbone as `single` with phase
    #                           augmentation for N epochs, and start every stream's backbone from it
    calibration_subjects: int = 1  # training subjects each fold holds out to fit the softmax temperature; 0 = off
    label_smoothing: float = 0.0  # cross-entropy against targets smoothed by this much (0 = off)
    device: str = "cpu"
    threads: int | None = None  # torch.set_num_threads; None = os.cpu_count()
    model_settings: tuple[tuple[str, Any], ...] = ()  # extra build_model settings, e.g. (("dropout", 0.3),)

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise TrainError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        for name in ("epochs", "batch_size", "k", "patience"):
            if getattr(self, name) < 1:
                raise TrainError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.protocol == "kfold" and self.k < 2:
            raise TrainError(f"k-fold needs k >= 2, got {self.k}")
        if not self.lr > 0:
            raise TrainError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.val_fraction < 1:
            raise TrainError(f"val-fraction must be in [0, 1), got {self.val_fraction}")
        if not 0 <= self.average_epochs <= self.epochs:
            raise TrainError(f"average-epochs must be within 0..epochs ({self.epochs}), got {self.average_epochs}")
        if self.pretrain_epochs < 0:
            raise TrainError(f"pretrain-epochs must be 0 (off) or more, got {self.pretrain_epochs}")
        if isinstance(self.calibration_subjects, bool) or not isinstance(self.calibration_subjects, int) \
                or self.calibration_subjects < 0:
            raise TrainError(f"calibration-subjects must be 0 (off) or more, got {self.calibration_subjects!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise TrainError(f"label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.average_epochs and self.val_fraction:
            raise TrainError("--average-epochs and --val-fraction are two ways to pick the final weights; use one")

    def identity(self) -> dict[str, Any]:
        """The settings a resumed or merged run must share."""
        data = asdict(self)
        for speed_only in ("device", "threads"):
            data.pop(speed_only)
        for added in ("model_settings", "average_epochs", "pretrain_epochs", "calibration_subjects", "label_smoothing"):
            if not data[added]:
                data.pop(added)  # runs from before the option existed keep their identity
        if self.protocol == "loso":
            data.pop("k")
        return data


@dataclass(frozen=True)
class Fold:
    """One cross-validation fold: 1-based ``number`` of ``total``, a file-safe ``name``, its test subjects."""

    number: int
    total: int
    name: str
    test_subjects: tuple[str, ...]


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


@dataclass
class RunOutcome:
    """What :func:`run_training` produced."""

    run_dir: Path
    folds_run: list[str] = field(default_factory=list)
    folds_skipped: list[str] = field(default_factory=list)
    report: dict[str, Any] | None = None
    report_paths: tuple[Path, ...] = ()
    final_model: Path | None = None


class NullProgress:
    """Progress hooks called by the trainer; the CLI subclasses this with a Rich or plain-text view."""

    def stage(self, text: str) -> None:
        """A coarse step started (reading, building DIs, writing the report)."""

    def dis(self, done: int, total: int) -> None:
        """DIs of ``done`` of ``total`` samples are ready."""

    def folds(self, to_run: int, total: int) -> None:
        """``to_run`` of the ``total`` folds are to be run (or found done) now."""

    def fold_start(self, fold: Fold, epochs: int, train_samples: int, start_epoch: int) -> None:
        """Training of ``fold`` starts (or resumes at ``start_epoch``)."""

    def epoch_end(self, fold: Fold, epoch: int, epochs: int, stats: dict[str, float]) -> None:
        """Epoch ``epoch`` (1-based) of ``fold`` finished with ``stats`` (loss, train_acc, lr, val_uf1...)."""

    def fold_end(self, fold: Fold, result: dict[str, Any], *, skipped: bool = False) -> None:
        """``fold`` is done (``skipped``: it was already done in this run folder)."""


# --- folds --------------------------------------------------------------------------------------------


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


# --- data ---------------------------------------------------------------------------------------------


PRETRAIN_MODEL = "single"  # what stream pretraining trains: one backbone on TRDI + the phase DIs


def _vector_streams(streams: Sequence[str]) -> tuple[int, int] | None:
    """Indices of the flow streams (horizontal, vertical) among ``streams``, turned with the image when
    augmenting; None when the model reads no flow."""
    if all(name in streams for name in FLOW_STREAMS):
        return streams.index(FLOW_STREAMS[0]), streams.index(FLOW_STREAMS[1])
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


# --- one model ----------------------------------------------------------------------------------------


def _class_weights(y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights N / (K · n_k), 0 for classes absent from training."""
    counts = torch.bincount(y, minlength=n_classes).float()
    present = counts > 0
    weights = torch.zeros(n_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


def _predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            out.append(torch.softmax(model(x[start : start + batch_size]), dim=1))
    return torch.cat(out) if out else torch.zeros(0)


def _logits(model: Any, x: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Eval-mode outputs of a model whose temperature is still 1: its raw logits, (N, K) float64."""
    if model.card.temperature != 1.0:
        raise TrainError("raw logits are read before the temperature is set")
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            out.append(model(x[start : start + batch_size]).float().cpu())
    n_classes = len(model.card.labels)
    return torch.cat(out).double().numpy() if out else np.zeros((0, n_classes))


def _scores(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    return scores_dict(y_true, y_pred, labels)


def _atomic_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class WeightAverage:
    """Running mean of a model's weights over epochs (stochastic weight averaging, Izmailov et al. 2018).

    The tail of a cosine schedule visits several nearby minima; their mean generalises better, and
    varies less from seed to seed, than whichever one the last epoch happened to end in. BatchNorm
    statistics of the averaged weights are recomputed on the training data (they do not average).
    """

    def __init__(self, state: dict[str, torch.Tensor] | None = None, count: int = 0) -> None:
        self.state = state
        self.count = count

    def add(self, model: torch.nn.Module) -> None:
        current = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if self.state is None:
            self.state = current
        else:
            for key, value in current.items():
                if value.is_floating_point():
                    self.state[key] += (value - self.state[key]) / (self.count + 1)
        self.count += 1

    def apply(self, model: torch.nn.Module, x: torch.Tensor, *, batch_size: int) -> None:
        """Load the averaged weights into ``model`` and recompute its BatchNorm statistics on ``x``."""
        assert self.state is not None
        model.load_state_dict(self.state)
        norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        if not norms:
            return
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative mean over all batches
        was_training = model.training
        model.train()
        with torch.no_grad():
            for start in range(0, x.shape[0], batch_size):
                model(x[start : start + batch_size])
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)

    def payload(self) -> dict[str, Any]:
        return {"state": self.state, "count": self.count}

    @classmethod
    def from_payload(cls, payload: dict[str, Any] | None) -> WeightAverage:
        if not payload:
            return cls()
        return cls(payload.get("state"), int(payload.get("count", 0)))


class _Trainer:
    """Trains one model on given samples; checkpoints its state each epoch for resuming."""

    def __init__(self, data: PreparedData, settings: TrainOptions, *, seed: int, state_path: Path | None) -> None:
        self.data = data
        self.settings = settings
        self.seed = seed
        self.state_path = state_path
        self.device = torch.device(settings.device)

    def build(self) -> Any:
        torch.manual_seed(self.seed)
        model = build_model(self.settings.model, labels=self.data.labels, backbone=self.settings.backbone,
                            **dict(self.settings.model_settings))
        return model.to(self.device)

    def fit(self, train_idx: np.ndarray, val_idx: np.ndarray, fold: Fold, progress: NullProgress) -> tuple[Any, dict[str, Any]]:
        s, data = self.settings, self.data
        x_all = torch.from_numpy(data.x)
        y_all = torch.from_numpy(data.y)
        xt, yt = expand_with_phases(x_all[train_idx], y_all[train_idx], data.batch.streams, data.card.streams,
                                    enabled=s.augment_phases)
        xt, yt = xt.to(self.device), yt.to(self.device)
        xv = select_streams(x_all[val_idx], data.batch.streams, data.card.streams).to(self.device)
        yv = data.y[val_idx]
        model = self.build()
        pretrain_info = None
        if s.pretrain_epochs:
            pretrained, pretrain_info = self.pretrain(train_idx, val_idx, fold, progress)
            for encoder in model.encoders:
                encoder.load_state_dict(pretrained.encoders[0].state_dict())
        weights = _class_weights(yt.cpu(), len(data.labels)) if s.class_balanced else None
        optimizer = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=s.epochs, eta_min=s.lr * 0.01)
        generator = torch.Generator().manual_seed(self.seed)
        augment = SpatialAugment(vector_streams=_vector_streams(data.card.streams)) if s.spatial_augment else None
        start = 0
        history: list[dict[str, float]] = []
        best: dict[str, Any] = {"score": -1.0, "epoch": 0, "state": None}
        average = WeightAverage()
        saved = self._load_state()
        if saved is not None:
            start, history, best = self._restore(saved, model, optimizer, scheduler, generator)
            average = WeightAverage.from_payload(saved.get("average"))
        loss_weights = weights.to(self.device) if weights is not None else None
        progress.fold_start(fold, s.epochs, int(xt.shape[0]), start)
        n = int(xt.shape[0])
        for epoch in range(start, s.epochs):
            if best["state"] is not None and epoch - best["epoch"] >= s.patience:
                log.info("%s: early stop at epoch %d (best validation UF1 %.3f at epoch %d)",
                         fold.name, epoch, best["score"], best["epoch"])
                break
            model.train()
            perm = torch.randperm(n, generator=generator)
            n_batches = max(1, -(-n // s.batch_size))
            total_loss, correct = 0.0, 0
            for idx in torch.tensor_split(perm, n_batches):
                xb, yb = xt[idx.to(self.device)], yt[idx.to(self.device)]
                if augment is not None:
                    xb = augment(xb, generator)
                logits = model(xb)
                loss = F.cross_entropy(logits, yb, weight=loss_weights, label_smoothing=s.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total_loss += float(loss.detach()) * len(idx)
                correct += int((logits.argmax(1) == yb).sum())
            scheduler.step()
            stats = {"epoch": epoch + 1, "loss": total_loss / max(n, 1), "train_acc": correct / max(n, 1),
                     "lr": float(optimizer.param_groups[0]["lr"])}
            if len(val_idx):
                pred = _predict(model, xv).argmax(1).cpu().numpy()
                val = _scores([data.labels[i] for i in yv], [data.labels[i] for i in pred], data.labels)
                stats["val_uf1"], stats["val_acc"] = val["uf1"], val["accuracy"]
                if val["uf1"] > best["score"]:
                    best = {"score": val["uf1"], "epoch": epoch + 1,
                            "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
            if epoch >= s.epochs - s.average_epochs:
                average.add(model)
            history.append(stats)
            self._save(model, optimizer, scheduler, generator, epoch + 1, history, best, average)
            progress.epoch_end(fold, epoch + 1, s.epochs, stats)
        if best["state"] is not None:
            model.load_state_dict(best["state"])
        elif average.count:
            average.apply(model, xt, batch_size=max(s.batch_size, 128))
        info = {"epochs_run": len(history), "train_samples": n, "history": history,
                "selected_epoch": best["epoch"] if best["state"] is not None else len(history),
                "averaged_epochs": average.count if best["state"] is None else 0,
                "class_weights": weights.tolist() if weights is not None else None}
        if pretrain_info is not None:
            info["pretrain"] = pretrain_info
        return model, info

    def pretrain(self, train_idx: np.ndarray, val_idx: np.ndarray, fold: Fold,
                 progress: NullProgress) -> tuple[Any, dict[str, Any]]:
        """Stream pretraining: one backbone trained as the single-stream model with phase augmentation,
        on the same training subjects and schedule rules (never the held-out ones).

        A fused model gives each backbone one view of each clip; as ``single`` the backbone sees the
        clip's TRDI and both phase DIs, three views with independent noise, which is what makes phase
        augmentation the strongest idea in the ablation. Starting every stream from it gives the fusion
        those features. Resumable like any fit, from its own state file next to the fold's.
        """
        s = self.settings
        settings = replace(s, model=PRETRAIN_MODEL, epochs=s.pretrain_epochs, augment_phases=True,
                           average_epochs=min(s.average_epochs, s.pretrain_epochs), pretrain_epochs=0)
        data = replace(self.data, card=default_card(PRETRAIN_MODEL, labels=self.data.labels, backbone=s.backbone))
        trainer = _Trainer(data, settings, seed=self.seed, state_path=self.pretrain_state_path)
        model, info = trainer.fit(train_idx, val_idx, replace(fold, name=f"{fold.name}-pretrain"), progress)
        return model, {k: info[k] for k in ("epochs_run", "train_samples", "selected_epoch", "averaged_epochs")}

    @property
    def pretrain_state_path(self) -> Path | None:
        return self.state_path.with_name(f"pretrain-{self.state_path.name}") if self.state_path else None

    def clear_state(self) -> None:
        """Remove the per-epoch state files once the model is saved."""
        for path in (self.state_path, self.pretrain_state_path):
            if path is not None:
                path.unlink(missing_ok=True)

    def _save(self, model: Any, optimizer: Any, scheduler: Any, generator: torch.Generator, epoch: int,
              history: list[dict[str, float]], best: dict[str, Any], average: WeightAverage) -> None:
        if self.state_path is None:
            return
        payload = {
            "epoch": epoch,
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": history,
            "best_score": float(best["score"]),
            "best_epoch": int(best["epoch"]),
            "best_state": best["state"],
            "average": average.payload(),
            "identity": _identity_hash(self.settings, self.data),
        }
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, self.state_path)

    def _load_state(self) -> dict[str, Any] | None:
        """The per-epoch state of an interrupted run of this fold, or None (none, torn, or foreign)."""
        if self.state_path is None or not self.state_path.is_file():
            return None
        try:
            payload = torch.load(self.state_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torn file: torch raises several types
            log.warning("cannot resume from %s (%s); starting this fold again", self.state_path, exc)
            return None
        if not isinstance(payload, dict) or payload.get("identity") != _identity_hash(self.settings, self.data):
            log.warning("%s was written by other settings or data; starting this fold again", self.state_path)
            return None
        return payload

    def _restore(self, payload: dict[str, Any], model: Any, optimizer: Any, scheduler: Any,
                 generator: torch.Generator) -> tuple[int, list[dict[str, float]], dict[str, Any]]:
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        generator.set_state(payload["generator"])
        torch.set_rng_state(payload["torch_rng"])
        best = {"score": payload["best_score"], "epoch": payload["best_epoch"], "state": payload["best_state"]}
        log.info("resuming %s at epoch %d", self.state_path.name if self.state_path else "?", payload["epoch"])
        return int(payload["epoch"]), list(payload["history"]), best


def _identity_hash(settings: TrainOptions, data: PreparedData) -> str:
    ident = {"settings": settings.identity(), "samples": [s.key for s in data.batch.samples],
             "streams": list(data.batch.streams)}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def _split_validation(train_subjects: Sequence[str], fraction: float, seed: int) -> tuple[set[str], set[str]]:
    subjects = sorted(set(train_subjects))
    if fraction <= 0 or len(subjects) < 2:
        return set(subjects), set()
    rng = np.random.default_rng(seed + 7919)
    n_val = min(len(subjects) - 1, max(1, int(round(fraction * len(subjects)))))
    val = {subjects[i] for i in rng.permutation(len(subjects))[:n_val]}
    return set(subjects) - val, val


def _fold_split(train_subjects: Sequence[str], settings: TrainOptions,
                seed: int) -> tuple[list[str], set[str], set[str]]:
    """``(calibration, fit, validation)`` subjects of a fold, all from its training subjects, disjoint.

    Calibration subjects are taken first, leaving at least one subject to train on (two when a validation
    split is asked for, so it still gets one); the validation split is made of the rest."""
    keep = 2 if settings.val_fraction > 0 else 1
    calibration, rest = split_calibration(train_subjects, settings.calibration_subjects, seed, keep=keep)
    fit, val = _split_validation(rest, settings.val_fraction, seed)
    return calibration, fit, val


def _calibrate(model: Any, data: PreparedData, settings: TrainOptions, subjects: Sequence[str],
               val_subjects: set[str], device: torch.device) -> dict[str, Any]:
    """Fit ``model``'s temperature on the clips of ``subjects`` (training subjects it was not trained on),
    set it, and say what was done; T stays 1 when calibration is off or no subject could be held out."""
    if not settings.calibration_subjects:
        return {"fitted": False, "temperature": 1.0, "subjects": [], "note": "calibration off"}
    source = "training subjects held out of training"
    chosen = sorted(subjects)
    if not chosen and val_subjects:
        chosen, source = sorted(val_subjects), "validation subjects (too few training subjects to hold out more)"
    if not chosen:
        return {"fitted": False, "temperature": 1.0, "subjects": [],
                "note": "not calibrated: too few training subjects to hold one out (T = 1)"}
    idx = np.flatnonzero(np.isin(data.subjects, chosen))
    x = select_streams(torch.from_numpy(data.x[idx]), data.batch.streams, data.card.streams).to(device)
    fit = fit_temperature(_logits(model, x), data.y[idx])
    set_temperature(model, fit.temperature)
    return {"fitted": True, "temperature": fit.temperature, "subjects": chosen, "source": source,
            "calibration_set": fit.to_dict()}


def final_temperature(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The final model's temperature: the median of the folds' fitted temperatures (1 when none was fitted).

    The final model is trained on every subject, so none is left to fit it on; the folds' models follow the
    same recipe on nearly the same data, and the median ignores one fold's odd calibration subject."""
    fitted = {str(r.get("fold")): float(r["calibration"]["temperature"]) for r in results
              if isinstance(r.get("calibration"), dict) and r["calibration"].get("fitted")}
    if not fitted:
        return {"temperature": 1.0, "folds": 0, "source": "no fold was calibrated: T = 1"}
    return {"temperature": round(float(np.median(list(fitted.values()))), 4), "folds": len(fitted),
            "source": f"median of {len(fitted)} folds' fitted temperatures", "fold_temperatures": fitted}


def _trained_on(data: PreparedData, subjects: Sequence[str]) -> str:
    idx = data.index
    return (f"{idx.name} ({idx.root}), class scheme {idx.scheme}, {len(subjects)} subjects, "
            f"DIs at {data.fps:g} fps, alignment {data.di_settings.frames.alignment}")


def _with_card(model: Any, data: PreparedData, settings: TrainOptions, *, trained_on: str,
               evaluation: dict[str, Any]) -> Any:
    name = f"{settings.model}-{data.index.name}-{data.index.scheme}"
    model.card = replace(model.card, name=name, fps=data.fps, trained_on=trained_on, evaluation=evaluation)
    return model


def train_fold(data: PreparedData, fold: Fold, settings: TrainOptions, run_dir: Path,
               *, progress: NullProgress | None = None, save_model: bool = True) -> dict[str, Any]:
    """Train on every subject but ``fold.test_subjects``, predict them, write ``folds/<name>.json``."""
    progress = progress or NullProgress()
    t0 = time.monotonic()
    folds_dir = run_dir / "folds"
    test_mask = np.isin(data.subjects, fold.test_subjects)
    train_subjects = sorted(set(data.subjects[~test_mask].tolist()))
    if not test_mask.any():
        raise TrainError(f"{fold.name}: no samples of {fold.test_subjects}")
    seed = settings.seed + fold.number
    cal_subjects, fit_subjects, val_subjects = _fold_split(train_subjects, settings, seed)
    train_idx = np.flatnonzero(np.isin(data.subjects, sorted(fit_subjects)))
    val_idx = np.flatnonzero(np.isin(data.subjects, sorted(val_subjects)))
    test_idx = np.flatnonzero(test_mask)
    state_path = folds_dir / f"{fold.name}.state.pt"
    trainer = _Trainer(data, settings, seed=seed, state_path=state_path)
    model, info = trainer.fit(train_idx, val_idx, fold, progress)
    x_test = select_streams(torch.from_numpy(data.x[test_idx]), data.batch.streams, data.card.streams)
    logits = _logits(model, x_test.to(trainer.device))
    calibration = _calibrate(model, data, settings, cal_subjects, val_subjects, trainer.device)
    probs = softmax(logits, calibration["temperature"])  # what the saved model (T inside) answers
    pred = probs.argmax(1)
    calibration["test"] = calibration_figures(softmax(logits), probs, data.y[test_idx])
    y_true = [data.labels[i] for i in data.y[test_idx]]
    y_pred = [data.labels[i] for i in pred]
    scores = _scores(y_true, y_pred, data.labels)
    samples = [data.batch.samples[i] for i in test_idx]
    result = {
        "schema": FOLD_SCHEMA,
        "fold": fold.name,
        "number": fold.number,
        "of": fold.total,
        "protocol": settings.protocol,
        "test_subjects": list(fold.test_subjects),
        "train_subjects": sorted(fit_subjects),
        "val_subjects": sorted(val_subjects),
        "calibration_subjects": list(calibration["subjects"]),
        "dataset": data.index.name,
        "scheme": data.index.scheme,
        "model": settings.model,
        "labels": list(data.labels),
        "settings_id": hashlib.sha256(json.dumps(settings.identity(), sort_keys=True).encode()).hexdigest()[:16],
        "settings": settings.identity(),
        "predictions": [  # probs: calibrated (the saved model's answer); logits: before the temperature
            {"clip": s.clip, "subject": s.subject, "true": t, "pred": p, "probs": [round(float(v), 6) for v in pr],
             "logits": [round(float(v), 6) for v in lg]}
            for s, t, p, pr, lg in zip(samples, y_true, y_pred, probs, logits, strict=True)
        ],
        "scores": scores,
        "calibration": calibration,
        "seconds": round(time.monotonic() - t0, 3),
        **info,
    }
    if save_model:
        evaluation = {"protocol": settings.protocol, "fold": fold.name, "test_subjects": list(fold.test_subjects),
                      **{k: scores[k] for k in ("accuracy", "uf1", "uar")}, "n": len(y_true),
                      "calibration": {"temperature": calibration["temperature"],
                                      "subjects": list(calibration["subjects"]),
                                      **{k: calibration["test"][k] for k in ("ece_before", "ece_after")}}}
        _with_card(model, data, settings, trained_on=_trained_on(data, train_subjects), evaluation=evaluation)
        save_checkpoint(model.cpu(), run_dir / "fold_models" / f"{fold.name}.pt",
                        extra={"fold": fold.name, "epochs_run": info["epochs_run"]})
        result["checkpoint"] = f"fold_models/{fold.name}.pt"
    _atomic_json(folds_dir / f"{fold.name}.json", result)  # the completion marker: written last
    trainer.clear_state()
    progress.fold_end(fold, result)
    return result


def train_final(data: PreparedData, settings: TrainOptions, run_dir: Path, *, evaluation: dict[str, Any],
                temperature: dict[str, Any] | None = None, progress: NullProgress | None = None) -> Path:
    """Train one model on every subject (same schedule; with a validation fraction, early-stopped on a
    split of them) and save ``RUN_DIR/final/model.pt`` + card carrying the cross-validation figures.

    ``temperature``: :func:`final_temperature` of the folds (its ``temperature`` goes into the card; T = 1
    without it)."""
    progress = progress or NullProgress()
    subjects = sorted(set(data.subjects.tolist()))
    fold = Fold(0, 0, "final", ())
    seed = settings.seed
    fit_subjects, val_subjects = _split_validation(subjects, settings.val_fraction, seed)
    train_idx = np.flatnonzero(np.isin(data.subjects, sorted(fit_subjects)))
    val_idx = np.flatnonzero(np.isin(data.subjects, sorted(val_subjects)))
    final_dir = run_dir / "final"
    trainer = _Trainer(data, settings, seed=seed, state_path=final_dir / "state.pt")
    model, info = trainer.fit(train_idx, val_idx, fold, progress)
    temperature = dict(temperature or final_temperature(()))
    set_temperature(model, float(temperature["temperature"]))
    evaluation = copy.deepcopy(evaluation)
    if isinstance(evaluation.get("calibration"), dict):
        evaluation["calibration"]["final_temperature"] = temperature
    _with_card(model, data, settings, trained_on=_trained_on(data, subjects), evaluation=evaluation)
    path = save_checkpoint(model.cpu(), final_dir / "model.pt", extra={"epochs_run": info["epochs_run"]})
    _atomic_json(final_dir / "training.json", {"subjects": subjects, "val_subjects": sorted(val_subjects),
                                                "settings": settings.identity(), "calibration": temperature,
                                                **info})
    trainer.clear_state()
    progress.fold_end(fold, {"fold": "final", "epochs_run": info["epochs_run"]})
    return path


# --- a whole run --------------------------------------------------------------------------------------


def _check_run_dir(run_dir: Path, identity: dict[str, Any], *, resume: bool) -> None:
    settings_file = run_dir / "settings.json"
    identity = json.loads(json.dumps(identity, default=str))  # as stored: tuples become lists
    has_results = any((run_dir / "folds").glob("*.json")) or (run_dir / "final" / "model.pt").is_file()
    if settings_file.is_file():
        try:
            stored = json.loads(settings_file.read_text(encoding="utf-8")).get("identity", {})
        except (OSError, json.JSONDecodeError):
            stored = None
        if stored is not None and stored != identity and (has_results or resume):
            diffs = sorted(k for k in set(stored) | set(identity) if stored.get(k) != identity.get(k))
            raise TrainError(f"{run_dir} holds a run with other settings ({', '.join(diffs)}); "
                             "use another --out or the same settings")
    if has_results and not resume:
        raise TrainError(f"{run_dir} already holds results; pass --resume to continue that run or choose another --out")


def run_training(
    index: DatasetIndex,
    settings: TrainOptions,
    run_dir: str | Path,
    *,
    frames: FrameOptions | None = None,
    cache: DICache | None = None,
    folds: str | Sequence[str] | None = None,
    resume: bool = False,
    final: bool = False,
    progress: NullProgress | None = None,
) -> RunOutcome:
    """Cross-validate ``settings.model`` on ``index`` into ``run_dir`` (see the module docstring)."""
    progress = progress or NullProgress()
    run_dir = Path(run_dir)
    torch.set_num_threads(max(1, settings.threads or os.cpu_count() or 1))
    if settings.device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError("--device cuda asked for, but this torch has no CUDA device; use --device cpu")
    _check_run_dir(run_dir, settings.identity(), resume=resume)
    data = prepare_data(index, settings, frames=frames, cache=cache, progress=progress)
    counts = Counter(data.subjects.tolist())
    all_folds = make_folds(list(counts), protocol=settings.protocol, k=settings.k, seed=settings.seed, counts=counts)
    chosen = select_folds(all_folds, folds)
    run_dir.mkdir(parents=True, exist_ok=True)
    dataset_summary = index.summary()
    dataset_summary["di_failed"] = [{"clip": s.clip, "reason": r} for s, r in data.batch.failed]
    dataset_summary["di_fps"] = data.fps
    dataset_summary["streams"] = list(data.batch.streams)
    _atomic_json(run_dir / "settings.json", {
        "identity": settings.identity(),
        "settings": asdict(settings),
        "frames": asdict(data.di_settings.frames),
        "card": data.card.to_dict(),
        "folds": [{"number": f.number, "name": f.name, "test_subjects": list(f.test_subjects)} for f in all_folds],
    })
    _atomic_json(run_dir / "dataset.json", dataset_summary)
    outcome = RunOutcome(run_dir=run_dir)
    progress.folds(len(chosen), len(all_folds))
    for fold in chosen:
        done = run_dir / "folds" / f"{fold.name}.json"
        if resume and done.is_file():
            try:
                result = json.loads(done.read_text(encoding="utf-8"))
                if result.get("schema") == FOLD_SCHEMA:
                    outcome.folds_skipped.append(fold.name)
                    progress.fold_end(fold, result, skipped=True)
                    continue
            except (OSError, json.JSONDecodeError):
                log.warning("%s is unreadable; training that fold again", done)
        train_fold(data, fold, settings, run_dir, progress=progress)
        outcome.folds_run.append(fold.name)
    progress.stage("writing the report")
    results = read_fold_results([run_dir])
    report, paths = write_report(run_dir, results, dataset=dataset_summary, total_folds=len(all_folds))
    outcome.report, outcome.report_paths = report, paths
    if final:
        final_path = run_dir / "final" / "model.pt"
        if resume and final_path.is_file():
            outcome.final_model = final_path
        else:
            progress.stage("training the final model on all subjects")
            outcome.final_model = train_final(data, settings, run_dir, evaluation=report.get("evaluation", {}),
                                              temperature=final_temperature(results), progress=progress)
    return outcome

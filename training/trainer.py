"""Training one model on one fold's subjects: the epoch loop with augmentation, class weights, early stopping
or weight averaging, stream pretraining and a resumable per-epoch state."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from engines.registry import build_model, default_card
from training.augment import (
    SpatialAugment,
    expand_with_phases,
    select_streams,
)
from training.report import scores_dict
from training.train_data import PRETRAIN_MODEL, PreparedData, vector_streams
from training.train_types import Fold, NullProgress, TrainError, TrainOptions

log = logging.getLogger(__name__)


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


def raw_logits(model: Any, x: torch.Tensor, batch_size: int = 256) -> np.ndarray:
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


def label_scores(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    return scores_dict(y_true, y_pred, labels)


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


class Trainer:
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
            for encoders in model.member_encoders():
                for encoder in encoders:
                    encoder.load_state_dict(pretrained.encoders[0].state_dict())
        weights = _class_weights(yt.cpu(), len(data.labels)) if s.class_balanced else None
        optimizer = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=s.epochs, eta_min=s.lr * 0.01)
        generator = torch.Generator().manual_seed(self.seed)
        augment = SpatialAugment(vector_streams=vector_streams(data.card.streams)) if s.spatial_augment else None
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
                scored, targets = logits, yb
                if logits.dim() == 3:  # an ensemble: every member learns on its own (B, members, K)
                    scored, targets = logits.flatten(0, 1), yb.repeat_interleave(logits.shape[1])
                    logits = logits.mean(dim=1)
                loss = F.cross_entropy(scored, targets, weight=loss_weights, label_smoothing=s.label_smoothing)
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
                val = label_scores([data.labels[i] for i in yv], [data.labels[i] for i in pred], data.labels)
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
        trainer = Trainer(data, settings, seed=self.seed, state_path=self.pretrain_state_path)
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

"""The vocabulary the training modules share: the options that decide a run (:class:`TrainOptions`), its folds,
the progress hooks a caller gets, and the error for a run that cannot go on."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

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
    calibration_data: str = ""  # folders of a dataset never trained on that the temperature is fitted on
    #                             (replaces calibration_subjects); "" = none
    out_of_fold_calibration: bool = False  # fit each fold's temperature on the other folds' held-out predictions
    #                                        (and the final model's on all of them) instead; needs every fold
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
        if self.out_of_fold_calibration and self.calibration_subjects:
            raise TrainError("out-of-fold calibration replaces --calibration-subjects; use one")
        if self.average_epochs and self.val_fraction:
            raise TrainError("--average-epochs and --val-fraction are two ways to pick the final weights; use one")

    def identity(self) -> dict[str, Any]:
        """The settings a resumed or merged run must share."""
        data = asdict(self)
        for speed_only in ("device", "threads"):
            data.pop(speed_only)
        for added in ("model_settings", "average_epochs", "pretrain_epochs", "calibration_subjects", "label_smoothing",
                      "calibration_data", "out_of_fold_calibration"):
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

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
folds' temperatures. With ``calibration`` data (a dataset never trained on, e.g. more renders onto the training
videos) no training subject is held out: each fold fits its temperature on the calibration clips of subjects
outside its test fold, and the final model on all of them. Held-out still-photo subjects, which the model
nearly always gets right, cannot teach it to doubt itself on real footage; real-footage calibration clips can.

A multi-stream model can have its streams pretrained (``pretrain_epochs``): within each fold, one backbone
is first trained as the single-stream model with phase augmentation on the same training subjects, and
every stream of the fused model starts from it (:meth:`training.trainer.Trainer.pretrain`).

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
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engines.calibration import set_temperature
from engines.checkpoint import save_checkpoint
from training.augment import (
    select_streams,
)
from training.cache import DICache
from training.calibration import (
    OUT_OF_FOLD_BOUNDS,
    calibration_figures,
    fit_temperature,
    softmax,
    split_calibration,
)
from training.datasets.base import DatasetIndex
from training.datasets.frames import FrameOptions
from training.folds import make_folds, select_folds
from training.report import read_fold_results, write_report
from training.train_data import PreparedData, prepare_data
from training.train_types import Fold, NullProgress, TrainError, TrainOptions
from training.trainer import Trainer, label_scores, raw_logits

__all__ = ["RunOutcome", "calibrate_out_of_fold", "final_temperature", "run_training", "train_final", "train_fold"]

log = logging.getLogger(__name__)

FOLD_SCHEMA = "mer-fold/1"


@dataclass
class RunOutcome:
    """What :func:`run_training` produced."""

    run_dir: Path
    folds_run: list[str] = field(default_factory=list)
    folds_skipped: list[str] = field(default_factory=list)
    report: dict[str, Any] | None = None
    report_paths: tuple[Path, ...] = ()
    final_model: Path | None = None


# --- one fold, the final model -------------------------------------------------------------------------


def _atomic_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _split_validation(train_subjects: Sequence[str], fraction: float, seed: int) -> tuple[set[str], set[str]]:
    subjects = sorted(set(train_subjects))
    if fraction <= 0 or len(subjects) < 2:
        return set(subjects), set()
    rng = np.random.default_rng(seed + 7919)
    n_val = min(len(subjects) - 1, max(1, int(round(fraction * len(subjects)))))
    val = {subjects[i] for i in rng.permutation(len(subjects))[:n_val]}
    return set(subjects) - val, val


def _fold_split(train_subjects: Sequence[str], settings: TrainOptions, seed: int, *,
                hold_out: int | None = None) -> tuple[list[str], set[str], set[str]]:
    """``(calibration, fit, validation)`` subjects of a fold, all from its training subjects, disjoint.

    ``hold_out`` (default ``settings.calibration_subjects``; 0 when the temperature is fitted on calibration
    data instead) calibration subjects are taken first, leaving at least one subject to train on (two when a
    validation split is asked for, so it still gets one); the validation split is made of the rest."""
    keep = 2 if settings.val_fraction > 0 else 1
    count = settings.calibration_subjects if hold_out is None else hold_out
    calibration, rest = split_calibration(train_subjects, count, seed, keep=keep)
    fit, val = _split_validation(rest, settings.val_fraction, seed)
    return calibration, fit, val


def _calibrate(model: Any, data: PreparedData, settings: TrainOptions, subjects: Sequence[str],
               val_subjects: set[str], device: torch.device, *, calibration: PreparedData | None = None,
               test_subjects: Sequence[str] = ()) -> dict[str, Any]:
    """Fit ``model``'s temperature on the clips of ``subjects`` (training subjects it was not trained on) or,
    with ``calibration`` data, on its clips of every subject but ``test_subjects``; set it, and say what was
    done. T stays 1 when calibration is off or there is nothing to fit it on."""
    if calibration is not None:
        source, src = f"calibration data {calibration.index.name}, never trained on", calibration
        idx = np.flatnonzero(~np.isin(calibration.subjects, list(test_subjects)))
        chosen = sorted(set(calibration.subjects[idx].tolist()))
        if not len(idx):
            return {"fitted": False, "temperature": 1.0, "subjects": [],
                    "note": "not calibrated: every calibration clip belongs to a test subject (T = 1)"}
    else:
        if not settings.calibration_subjects:
            return {"fitted": False, "temperature": 1.0, "subjects": [], "note": "calibration off"}
        source, src = "training subjects held out of training", data
        chosen = sorted(subjects)
        if not chosen and val_subjects:
            chosen, source = sorted(val_subjects), "validation subjects (too few training subjects to hold out more)"
        if not chosen:
            return {"fitted": False, "temperature": 1.0, "subjects": [],
                    "note": "not calibrated: too few training subjects to hold one out (T = 1)"}
        idx = np.flatnonzero(np.isin(data.subjects, chosen))
    x = select_streams(torch.from_numpy(src.x[idx]), src.batch.streams, src.card.streams).to(device)
    fit = fit_temperature(raw_logits(model, x), src.y[idx])
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


def calibrate_out_of_fold(run_dir: Path, results: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]],
                                                                                      dict[str, Any]]:
    """Temperatures from held-out predictions: each fold's T is fitted on the logits that the *other* folds'
    models gave for their test subjects (people none of them trained on; never this fold's test subjects; with
    calibration data, for those subjects' calibration clips, e.g. real footage when training mixes in stills), and
    set in the fold's JSON (calibrated probabilities, figures) and checkpoint; the final model's T on every
    fold's. T may sharpen as well as soften here (:data:`training.calibration.OUT_OF_FOLD_BOUNDS`). Returns the
    updated fold results and the final temperature (as :func:`final_temperature`)."""
    from engines.calibration import recalibrate_checkpoint

    # with calibration data, each fold's predictions for its test subjects' calibration clips; else for its test set
    key = "held_out_calibration" if all("held_out_calibration" in r for r in results) else "predictions"

    def arrays(rs: Sequence[dict[str, Any]], key: str = key) -> tuple[np.ndarray, np.ndarray]:
        labels = list(rs[0]["labels"])
        preds = [p for r in rs for p in r[key]]
        logits = np.array([p["logits"] for p in preds], dtype=np.float64).reshape(-1, len(labels))
        return logits, np.array([labels.index(p["true"]) for p in preds], dtype=np.int64)

    updated = []
    for i, result in enumerate(results):
        others = [r for j, r in enumerate(results) if j != i]
        fit = fit_temperature(*arrays(others), bounds=OUT_OF_FOLD_BOUNDS)
        logits, y = arrays([result], "predictions")
        probs = softmax(logits, fit.temperature)
        result = copy.deepcopy(result)
        for pred, pr in zip(result["predictions"], probs, strict=True):
            pred["probs"] = [round(float(v), 6) for v in pr]
        result["calibration"] = {
            "fitted": True, "temperature": fit.temperature,
            "subjects": sorted({s for r in others for s in r["test_subjects"]}),
            "source": "the other folds' predictions for their test subjects (out of fold"
                      + (", their calibration clips)" if key == "held_out_calibration" else ")"),
            "calibration_set": fit.to_dict(), "test": calibration_figures(softmax(logits), probs, y)}
        if result.get("checkpoint"):
            recalibrate_checkpoint(run_dir / result["checkpoint"], fit.temperature)
        _atomic_json(run_dir / "folds" / f"{result['fold']}.json", result)
        updated.append(result)
    fit = fit_temperature(*arrays(results), bounds=OUT_OF_FOLD_BOUNDS)
    final = {"temperature": fit.temperature, "folds": len(results),
             "source": f"fitted on all {len(results)} folds' predictions for their test subjects (out of fold)",
             "calibration_set": fit.to_dict()}
    return updated, final


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
               *, progress: NullProgress | None = None, save_model: bool = True,
               calibration: PreparedData | None = None) -> dict[str, Any]:
    """Train on every subject but ``fold.test_subjects``, predict them, write ``folds/<name>.json``.
    ``calibration``: clips never trained on that the temperature is fitted on (those of the test subjects
    left out); without it, training subjects are held out for that (``settings.calibration_subjects``)."""
    progress = progress or NullProgress()
    t0 = time.monotonic()
    folds_dir = run_dir / "folds"
    test_mask = np.isin(data.subjects, fold.test_subjects)
    train_subjects = sorted(set(data.subjects[~test_mask].tolist()))
    if not test_mask.any():
        raise TrainError(f"{fold.name}: no samples of {fold.test_subjects}")
    seed = settings.seed + fold.number
    cal_subjects, fit_subjects, val_subjects = _fold_split(
        train_subjects, settings, seed, hold_out=0 if calibration is not None else None)
    train_idx = np.flatnonzero(np.isin(data.subjects, sorted(fit_subjects)))
    val_idx = np.flatnonzero(np.isin(data.subjects, sorted(val_subjects)))
    test_idx = np.flatnonzero(test_mask)
    state_path = folds_dir / f"{fold.name}.state.pt"
    trainer = Trainer(data, settings, seed=seed, state_path=state_path)
    model, info = trainer.fit(train_idx, val_idx, fold, progress)
    x_test = select_streams(torch.from_numpy(data.x[test_idx]), data.batch.streams, data.card.streams)
    logits = raw_logits(model, x_test.to(trainer.device))
    held_out_calibration = None
    if settings.out_of_fold_calibration and calibration is not None:
        # the calibration clips of this fold's test subjects, whom the model never saw: the other folds'
        # temperatures are fitted on them (calibrate_out_of_fold)
        idx = np.flatnonzero(np.isin(calibration.subjects, fold.test_subjects))
        x_cal = select_streams(torch.from_numpy(calibration.x[idx]), calibration.batch.streams, data.card.streams)
        cal_logits = raw_logits(model, x_cal.to(trainer.device)) if len(idx) else np.zeros((0, len(data.labels)))
        held_out_calibration = [
            {"clip": calibration.batch.samples[i].clip, "subject": calibration.batch.samples[i].subject,
             "true": calibration.labels[calibration.y[i]], "logits": [round(float(v), 6) for v in lg]}
            for i, lg in zip(idx, cal_logits, strict=True)]
        calibration = None  # nothing is fitted inside the fold
    fitted = _calibrate(model, data, settings, cal_subjects, val_subjects, trainer.device, calibration=calibration,
                        test_subjects=fold.test_subjects)
    probs = softmax(logits, fitted["temperature"])  # what the saved model (T inside) answers
    pred = probs.argmax(1)
    fitted["test"] = calibration_figures(softmax(logits), probs, data.y[test_idx])
    y_true = [data.labels[i] for i in data.y[test_idx]]
    y_pred = [data.labels[i] for i in pred]
    scores = label_scores(y_true, y_pred, data.labels)
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
        "calibration_subjects": list(fitted["subjects"]),
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
        "calibration": fitted,
        **({"held_out_calibration": held_out_calibration} if held_out_calibration is not None else {}),
        "seconds": round(time.monotonic() - t0, 3),
        **info,
    }
    if save_model:
        evaluation = {"protocol": settings.protocol, "fold": fold.name, "test_subjects": list(fold.test_subjects),
                      **{k: scores[k] for k in ("accuracy", "uf1", "uar")}, "n": len(y_true),
                      "calibration": {"temperature": fitted["temperature"],
                                      "subjects": list(fitted["subjects"]),
                                      **{k: fitted["test"][k] for k in ("ece_before", "ece_after")}}}
        _with_card(model, data, settings, trained_on=_trained_on(data, train_subjects), evaluation=evaluation)
        save_checkpoint(model.cpu(), run_dir / "fold_models" / f"{fold.name}.pt",
                        extra={"fold": fold.name, "epochs_run": info["epochs_run"]})
        result["checkpoint"] = f"fold_models/{fold.name}.pt"
    _atomic_json(folds_dir / f"{fold.name}.json", result)  # the completion marker: written last
    trainer.clear_state()
    progress.fold_end(fold, result)
    return result


def train_final(data: PreparedData, settings: TrainOptions, run_dir: Path, *, evaluation: dict[str, Any],
                temperature: dict[str, Any] | None = None, progress: NullProgress | None = None,
                calibration: PreparedData | None = None) -> Path:
    """Train one model on every subject (same schedule; with a validation fraction, early-stopped on a
    split of them) and save ``RUN_DIR/final/model.pt`` + card carrying the cross-validation figures.

    ``temperature``: :func:`final_temperature` of the folds (its ``temperature`` goes into the card; T = 1
    without it); with ``calibration`` data the temperature is fitted on all of it instead."""
    progress = progress or NullProgress()
    subjects = sorted(set(data.subjects.tolist()))
    fold = Fold(0, 0, "final", ())
    seed = settings.seed
    fit_subjects, val_subjects = _split_validation(subjects, settings.val_fraction, seed)
    train_idx = np.flatnonzero(np.isin(data.subjects, sorted(fit_subjects)))
    val_idx = np.flatnonzero(np.isin(data.subjects, sorted(val_subjects)))
    final_dir = run_dir / "final"
    trainer = Trainer(data, settings, seed=seed, state_path=final_dir / "state.pt")
    model, info = trainer.fit(train_idx, val_idx, fold, progress)
    if calibration is not None and not settings.out_of_fold_calibration:  # every calibration clip: no test subject
        fit = _calibrate(model, data, settings, (), set(), trainer.device, calibration=calibration)
        temperature = {k: fit[k] for k in ("temperature", "source", "calibration_set")} | {"folds": 0}
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
    calibration: DatasetIndex | None = None,
) -> RunOutcome:
    """Cross-validate ``settings.model`` on ``index`` into ``run_dir`` (see the module docstring);
    ``calibration``: a dataset never trained on, to fit the temperature on."""
    progress = progress or NullProgress()
    run_dir = Path(run_dir)
    torch.set_num_threads(max(1, settings.threads or os.cpu_count() or 1))
    if settings.device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError("--device cuda asked for, but this torch has no CUDA device; use --device cpu")
    _check_run_dir(run_dir, settings.identity(), resume=resume)
    data = prepare_data(index, settings, frames=frames, cache=cache, progress=progress)
    cal_data = None
    if calibration is not None:
        cal_data = prepare_data(calibration, settings, frames=frames, cache=cache, progress=progress)
        if cal_data.labels != data.labels:
            raise TrainError(f"the calibration data's classes {list(cal_data.labels)} differ from the training "
                             f"data's {list(data.labels)}; read both with the same --scheme")
    counts = Counter(data.subjects.tolist())
    all_folds = make_folds(list(counts), protocol=settings.protocol, k=settings.k, seed=settings.seed, counts=counts)
    chosen = select_folds(all_folds, folds)
    run_dir.mkdir(parents=True, exist_ok=True)
    dataset_summary = index.summary()
    dataset_summary["di_failed"] = [{"clip": s.clip, "reason": r} for s, r in data.batch.failed]
    dataset_summary["di_fps"] = data.fps
    dataset_summary["streams"] = list(data.batch.streams)
    if calibration is not None:
        dataset_summary["calibration_data"] = calibration.summary()
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
        train_fold(data, fold, settings, run_dir, progress=progress, calibration=cal_data)
        outcome.folds_run.append(fold.name)
    progress.stage("writing the report")
    results = read_fold_results([run_dir])
    temperature = final_temperature(results)
    if settings.out_of_fold_calibration:
        if len(results) < len(all_folds) or len(results) < 2:
            log.warning("out-of-fold calibration needs every fold's predictions (%d of %d here): not calibrated; "
                        "run the remaining folds into this run folder with --resume", len(results), len(all_folds))
        else:  # from the logits before any temperature: running it again gives the same temperatures
            progress.stage("calibrating out of fold")
            results, temperature = calibrate_out_of_fold(run_dir, results)
    report, paths = write_report(run_dir, results, dataset=dataset_summary, total_folds=len(all_folds))
    outcome.report, outcome.report_paths = report, paths
    if final:
        final_path = run_dir / "final" / "model.pt"
        if resume and final_path.is_file():
            outcome.final_model = final_path
        else:
            progress.stage("training the final model on all subjects")
            outcome.final_model = train_final(data, settings, run_dir, evaluation=report.get("evaluation", {}),
                                              temperature=temperature, progress=progress,
                                              calibration=cal_data)
    return outcome

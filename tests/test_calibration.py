"""Temperature scaling: the temperature in the card and every backend, fitting it on held-out training subjects
only, the ECE, the reports, the final model's temperature, and uncertain labels on the dashboard and the line."""

from __future__ import annotations

import importlib.util
import io
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from rich.table import Table
from rich.text import Text

from engines.card import CardError, ModelCard
from mer_core.events import EventRecord, TimePoint
from mer_core.metrics import expected_calibration_error, wrong_confidence
from realtime.dashboard import DashboardSnapshot, PlainLog, _events_table, render_text
from realtime.recordtext import UNCERTAIN_BELOW, format_record, label_text
from training.calibration import (
    calibration_figures,
    fit_temperature,
    mean_nll,
    softmax,
    split_calibration,
)

HAS_TORCH = importlib.util.find_spec("torch") is not None
if HAS_TORCH:  # the numpy, card and display tests run without it
    import torch
if TYPE_CHECKING:
    from engines.network import MERModel
    from training.train_types import TrainOptions

needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed (pip install -e '.[train]')")

LABELS = ("negative", "positive", "surprise")


# --- ECE and the fit (pure numpy) ----------------------------------------------------------------------


def _probs_with_confidence(confidence: list[float], correct: list[bool]) -> tuple[np.ndarray, np.ndarray]:
    """Two-class probabilities whose top class is 0 with the given confidences; y = 0 when correct."""
    p = np.asarray([[c, 1 - c] for c in confidence])
    y = np.asarray([0 if ok else 1 for ok in correct])
    return p, y


def test_ece_on_hand_computed_examples() -> None:
    # every sample in its own bin: the mean of |correct - confidence|
    p, y = _probs_with_confidence([0.95, 0.62, 0.71, 0.83], [True, False, True, True])
    assert expected_calibration_error(p, y) == pytest.approx((0.05 + 0.62 + 0.29 + 0.17) / 4)
    # two samples in one bin (0.8, 0.8667]: accuracy 0.5 against mean confidence 0.83
    p, y = _probs_with_confidence([0.81, 0.85], [True, False])
    assert expected_calibration_error(p, y) == pytest.approx(0.33)
    # ... and one of 0.95 beside them, weighted by bin size: (2 * 0.33 + 0.05) / 3
    p, y = _probs_with_confidence([0.81, 0.85, 0.95], [True, False, True])
    assert expected_calibration_error(p, y) == pytest.approx((2 * 0.33 + 0.05) / 3)
    # perfectly calibrated: 3 of 4 right at confidence 0.75
    p, y = _probs_with_confidence([0.75] * 4, [True, True, True, False])
    assert expected_calibration_error(p, y) == pytest.approx(0.0)
    # bins are (lower, upper]: with 2 bins 0.5 falls in the first, 1.0 in the last
    p, y = _probs_with_confidence([0.5, 0.5, 1.0], [True, False, True])
    assert expected_calibration_error(p, y, n_bins=2) == pytest.approx(0.0)
    assert expected_calibration_error(np.zeros((0, 3)), np.zeros(0)) == 0.0
    with pytest.raises(ValueError):
        expected_calibration_error(p, y[:2])


def test_ece_uses_fifteen_bins_by_default() -> None:
    # 0.55 and 0.58 share the bin (0.5333, 0.6] of 15 but not the bin (0.5, 0.55] / (0.55, 0.6] of 20
    p, y = _probs_with_confidence([0.55, 0.58], [True, False])
    assert expected_calibration_error(p, y) == pytest.approx(abs(0.5 - 0.565))
    assert expected_calibration_error(p, y, n_bins=20) == pytest.approx((0.45 + 0.58) / 2)


def test_wrong_confidence_is_the_mean_top_probability_of_the_mistakes() -> None:
    p, y = _probs_with_confidence([0.9, 0.7, 0.6], [True, False, False])
    assert wrong_confidence(p, y) == pytest.approx(0.65)
    p, y = _probs_with_confidence([0.9], [True])
    assert wrong_confidence(p, y) == 0.0


def _overconfident(n: int = 600, seed: int = 0, scale: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z) (so z is calibrated), logits = scale * z: sure of many wrong answers."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.0, (n, 3))
    p = softmax(z)
    y = np.asarray([rng.choice(3, p=row) for row in p])
    return scale * z, y


def test_fitted_temperature_of_overconfident_logits_is_above_one_and_lowers_nll_and_ece() -> None:
    logits, y = _overconfident()
    fit = fit_temperature(logits, y)
    assert fit.temperature > 1.0
    assert abs(math.log(fit.temperature / 6.0)) < 0.25  # recovers the scale the logits were blown up by
    assert fit.nll_after < fit.nll_before and fit.ece_after < fit.ece_before
    assert fit.nll_after == pytest.approx(mean_nll(logits, y, fit.temperature))
    # the minimum: a little either side is worse
    for factor in (0.8, 1.25):
        assert mean_nll(logits, y, fit.temperature * factor) > fit.nll_after
    # and the argmax never moves
    assert (softmax(logits, fit.temperature).argmax(1) == logits.argmax(1)).all()


def test_calibration_only_softens() -> None:
    """Underconfident logits, or a calibration set the model gets all right, would want T < 1: the fit stops
    at 1 (the model must not be made surer of faces it has not seen)."""
    logits, y = _overconfident(scale=0.25)
    assert fit_temperature(logits, y).temperature == pytest.approx(1.0)
    assert fit_temperature(logits, y, bounds=(0.05, 20.0)).temperature < 1.0  # what an unbounded fit would do
    all_right = np.asarray([[5.0, 0.0, 0.0]] * 10)
    assert fit_temperature(all_right, np.zeros(10, dtype=int)).temperature == pytest.approx(1.0)
    with pytest.raises(ValueError):
        fit_temperature(np.zeros((0, 3)), np.zeros(0))


def test_calibration_figures_before_and_after() -> None:
    logits, y = _overconfident(n=300)
    figures = calibration_figures(softmax(logits), softmax(logits, 6.0), y)
    assert figures["ece_after"] < figures["ece_before"]
    assert figures["wrong_confidence_after"] < figures["wrong_confidence_before"]
    assert figures["nll_before"] == pytest.approx(mean_nll(logits, y), abs=1e-5)


# --- calibration subjects come from the training subjects only ---------------------------------------


@needs_torch  # training.train imports torch
@pytest.mark.parametrize("protocol", ["loso", "kfold"])
@pytest.mark.parametrize("val_fraction", [0.0, 0.3])
def test_calibration_subjects_are_training_subjects_never_test_subjects(protocol: str, val_fraction: float) -> None:
    from training.folds import make_folds
    from training.train import _fold_split
    from training.train_types import TrainOptions

    subjects = [f"s{i:02d}" for i in range(7)]
    settings = TrainOptions(protocol=protocol, k=3, val_fraction=val_fraction, calibration_subjects=2)
    for fold in make_folds(subjects, protocol=protocol, k=3):
        train = sorted(set(subjects) - set(fold.test_subjects))
        cal, fit, val = _fold_split(train, settings, seed=fold.number)
        assert len(cal) == 2 and set(cal) <= set(train)
        assert not set(cal) & set(fold.test_subjects)
        assert not set(cal) & (fit | val) and not fit & val
        assert set(cal) | fit | val == set(train)
        assert fit  # always something to train on


def test_split_calibration_leaves_subjects_to_train_on() -> None:
    assert split_calibration(["a", "b"], 1, 0) in ((["a"], ["b"]), (["b"], ["a"]))
    assert split_calibration(["a", "b"], 5, 0, keep=1)[1]  # never takes them all
    assert split_calibration(["a", "b"], 1, 0, keep=2) == ([], ["a", "b"])
    assert split_calibration(["a", "b", "c"], 0, 0) == ([], ["a", "b", "c"])
    assert split_calibration(["c", "a", "b"], 1, 3) == split_calibration(["a", "b", "c"], 1, 3)  # seeded, order-free


# --- the model: the temperature in the card, torch and ONNX alike ---------------------------------------


def test_a_card_without_temperature_loads_as_one_and_keeps_its_hash(tmp_path: Path) -> None:
    from engines.backends.artefacts import DEFAULT_MODEL_DIR

    shipped = json.loads((DEFAULT_MODEL_DIR / "model.card.json").read_text())
    assert shipped.get("temperature", 1.0) == 1.0  # the bundled model's (every fold's fitted T was 1)
    data = {k: v for k, v in shipped.items() if k != "temperature"}  # a card written before the field existed
    card = ModelCard.from_dict(data)
    assert card.temperature == 1.0
    assert card.to_dict()["temperature"] == 1.0
    # the hash is the same with and without T = 1, so an ONNX file exported before (hash stored in its
    # metadata) still loads
    assert card.sha256() == ModelCard.from_dict(shipped).sha256()
    from engines.onnx_io import onnx_card

    assert onnx_card(DEFAULT_MODEL_DIR / "model.onnx", card).temperature == 1.0
    assert card.with_temperature(2.0).sha256() != card.sha256()
    assert ModelCard.from_dict({**data, "temperature": 2}).temperature == 2.0
    for bad in (0, -1.0, float("nan"), float("inf"), "2", True, None):
        with pytest.raises(CardError, match="temperature"):
            ModelCard.from_dict({**data, "temperature": bad})


def _model(flip: bool) -> MERModel:
    from engines.registry import build_model

    torch.manual_seed(0)
    return build_model("dual-phase", labels=LABELS, flip_average=flip).eval()


@needs_torch
@pytest.mark.parametrize("flip", [False, True])
def test_temperature_divides_the_logits_in_eval_mode_only(flip: bool) -> None:
    from engines.calibration import set_temperature

    model = _model(flip)
    x = model.example_input(4)
    with torch.no_grad():
        raw = model(x)
        card = set_temperature(model, 2.5)
        assert card.temperature == model.temperature == 2.5 and model.card is card
        assert torch.allclose(model(x), raw / 2.5, atol=1e-6)
        model.train()
        torch.manual_seed(1)
        a = model(x)
        set_temperature(model, 1.0)
        torch.manual_seed(1)
        assert torch.allclose(model(x), a)  # training sees raw logits whatever T is
    with pytest.raises(CardError):
        set_temperature(model, 0.0)


@needs_torch
@pytest.mark.parametrize("flip", [False, True])
def test_torch_and_onnxruntime_probabilities_agree_with_a_temperature(flip: bool, tmp_path: Path) -> None:
    from engines.backends import load_engine
    from engines.calibration import set_temperature
    from engines.checkpoint import save_checkpoint
    from engines.onnx_io import card_from_onnx, export_onnx, read_onnx

    model = _model(flip)
    x = model.example_input(5)
    with torch.no_grad():
        raw = model(x)
    set_temperature(model, 3.0)
    expected = torch.softmax(raw / 3.0, dim=1).numpy()
    save_checkpoint(model, tmp_path / "model.pt")
    onnx_path = export_onnx(model, tmp_path / "model.onnx")
    card = card_from_onnx(read_onnx(onnx_path))
    assert card is not None and card.temperature == 3.0
    probs = {}
    for backend in ("torch", "onnxruntime"):
        with load_engine(tmp_path, backend, device="cpu", cache_dir=tmp_path / "cache") as engine:
            assert engine.card.temperature == 3.0
            probs[backend] = engine.predict(x.numpy())
    assert np.abs(probs["torch"] - expected).max() < 1e-5
    assert np.abs(probs["torch"] - probs["onnxruntime"]).max() < 1e-4
    assert not np.allclose(probs["torch"], torch.softmax(raw, dim=1).numpy(), atol=1e-3)  # T made a difference


@needs_torch
def test_recalibrating_a_saved_model_rewrites_checkpoint_card_and_onnx(tmp_path: Path) -> None:
    from engines.backends import load_engine
    from engines.calibration import recalibrate_checkpoint
    from engines.checkpoint import card_path, load_checkpoint, read_checkpoint, save_checkpoint
    from engines.onnx_io import export_onnx

    model = _model(False)
    x = model.example_input(3)
    with torch.no_grad():
        raw = model(x)
    path = save_checkpoint(model, tmp_path / "model.pt", extra={"epochs_run": 7})
    export_onnx(model, tmp_path / "model.onnx")
    written = recalibrate_checkpoint(path, 1.7)
    assert {p.name for p in written} == {"model.pt", "model.card.json", "model.onnx"}
    assert read_checkpoint(path)["extra"] == {"epochs_run": 7}
    assert ModelCard.load(card_path(path)).temperature == 1.7
    again = load_checkpoint(path)
    with torch.no_grad():
        assert torch.allclose(again(x), raw / 1.7, atol=1e-5)  # same weights, new temperature
    with load_engine(tmp_path, "onnxruntime", device="cpu", cache_dir=tmp_path / "cache") as engine:
        assert np.abs(engine.predict(x.numpy()) - torch.softmax(raw / 1.7, dim=1).numpy()).max() < 1e-4
    # a card edited by hand to another temperature than the checkpoint's is refused, in words
    card = ModelCard.load(card_path(path))
    card.with_temperature(4.0).save(card_path(path))
    with pytest.raises(CardError, match="temperature 4"):
        load_checkpoint(path)


# --- mer-train: fitted on training subjects only, recorded, reported -----------------------------------


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_train import _make_synth

    return _make_synth(tmp_path_factory.mktemp("synth-cal"))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dicache-cal")


def _tiny(**kw: Any) -> TrainOptions:
    from training.train_types import TrainOptions

    base: dict[str, Any] = dict(model="single", epochs=2, batch_size=8, lr=3e-3, seed=0, threads=1)
    base.update(kw)
    return TrainOptions(**base)


@needs_torch
def test_the_fitted_temperature_does_not_depend_on_the_test_subject(synth_root: Path, cache_dir: Path,
                                                                    tmp_path: Path) -> None:
    from training.cache import DICache
    from training.datasets import load_dataset
    from training.folds import make_folds
    from training.train import train_fold
    from training.train_data import prepare_data

    torch.set_num_threads(1)
    index = load_dataset("synth", synth_root, scheme="megc3")
    settings = _tiny()
    data = prepare_data(index, settings, cache=DICache(cache_dir))
    fold = make_folds(list(data.subjects), protocol="loso")[0]
    first = train_fold(data, fold, settings, tmp_path / "a", save_model=False)
    cal = first["calibration"]
    assert cal["fitted"] and cal["subjects"] == first["calibration_subjects"]
    assert not set(cal["subjects"]) & set(fold.test_subjects)
    assert not set(cal["subjects"]) & set(first["train_subjects"])
    assert cal["calibration_set"]["n"] == 6 * len(cal["subjects"])
    # the test subject's clips replaced by noise: its predictions change, the temperature does not
    x = data.x.copy()
    test = np.isin(data.subjects, fold.test_subjects)
    x[test] = np.random.default_rng(1).normal(size=x[test].shape).astype(x.dtype)
    changed = replace(data, batch=replace(data.batch, x=x))
    second = train_fold(changed, fold, settings, tmp_path / "b", save_model=False)
    assert second["calibration"]["temperature"] == cal["temperature"]
    assert second["calibration"]["calibration_set"] == cal["calibration_set"]
    assert [p["logits"] for p in second["predictions"]] != [p["logits"] for p in first["predictions"]]


@needs_torch
def test_training_records_calibration_and_the_final_model_takes_the_median(
        synth_root: Path, cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from engines.checkpoint import load_checkpoint
    from mer_cli.train import main

    run = tmp_path / "run"
    argv = ["--data", str(synth_root), "--dataset", "synth", "--model", "single", "--epochs", "2",
            "--batch-size", "8", "--threads", "1", "--cache", str(cache_dir), "--out", str(run)]
    assert main(argv) == 0
    assert "calibration: median temperature" in capsys.readouterr().out
    temperatures = []
    for path in sorted((run / "folds").glob("*.json")):
        fold = json.loads(path.read_text())
        cal = fold["calibration"]
        assert cal["fitted"] and len(cal["subjects"]) == 1
        assert not set(cal["subjects"]) & set(fold["test_subjects"])
        assert set(cal["subjects"]).isdisjoint(fold["train_subjects"])
        assert {"ece_before", "ece_after", "wrong_confidence_before", "wrong_confidence_after"} <= set(cal["test"])
        temperatures.append(cal["temperature"])
        # the saved fold model carries T and answers exactly the recorded (calibrated) probabilities
        model = load_checkpoint(run / fold["checkpoint"])
        assert model.card.temperature == cal["temperature"]
        logits = np.asarray([p["logits"] for p in fold["predictions"]])
        probs = np.asarray([p["probs"] for p in fold["predictions"]])
        assert np.abs(softmax(logits, cal["temperature"]) - probs).max() < 1e-5
        assert model.card.evaluation["calibration"]["temperature"] == cal["temperature"]
    report = json.loads((run / "report.json").read_text())
    pooled = report["calibration"]
    assert pooled["folds_calibrated"] == 3 and pooled["n"] == 18 and pooled["bins"] == 15
    assert pooled["temperature_median"] == pytest.approx(float(np.median(temperatures)))
    assert {"ece_before", "ece_after", "wrong_confidence_before", "wrong_confidence_after"} <= set(pooled)
    assert all("ece_after" in f["calibration"] for f in report["folds"])
    assert report["evaluation"]["calibration"]["ece_after"] == pooled["ece_after"]
    md = (run / "report.md").read_text()
    assert "## Calibration" in md and "mean confidence on wrong answers" in md
    # --final later, on the same run (resumed: every fold skipped): T = the median of the folds' T
    assert main([*argv, "--resume", "--final"]) == 0
    assert capsys.readouterr().out.count("already done") == 3
    card = ModelCard.load(run / "final" / "model.card.json")
    assert card.temperature == pytest.approx(float(np.median(temperatures)), abs=1e-4)
    assert card.evaluation["calibration"]["final_temperature"]["folds"] == 3
    training = json.loads((run / "final" / "training.json").read_text())
    assert training["calibration"]["temperature"] == card.temperature
    assert load_checkpoint(run / "final" / "model.pt").temperature == card.temperature


@needs_torch
def test_no_calibration_trains_on_every_training_subject_with_temperature_one(
        synth_root: Path, cache_dir: Path, tmp_path: Path) -> None:
    from engines.checkpoint import load_checkpoint
    from mer_cli.train import main

    run = tmp_path / "off"
    argv = ["--data", str(synth_root), "--dataset", "synth", "--model", "single", "--epochs", "1",
            "--batch-size", "8", "--threads", "1", "--cache", str(cache_dir), "--out", str(run), "--folds", "1",
            "--no-calibration", "--final"]
    assert main(argv) == 0
    fold = json.loads((run / "folds" / "fold01-s01.json").read_text())
    assert fold["calibration"]["fitted"] is False and fold["calibration_subjects"] == []
    assert fold["train_subjects"] == ["s02", "s03"]
    assert fold["calibration"]["test"]["ece_before"] == fold["calibration"]["test"]["ece_after"]
    settings = json.loads((run / "settings.json").read_text())
    assert "calibration_subjects" not in settings["identity"]  # runs from before calibration keep their identity
    assert load_checkpoint(run / "final" / "model.pt").temperature == 1.0
    report = json.loads((run / "report.json").read_text())
    assert report["calibration"]["folds_calibrated"] == 0 and report["calibration"]["temperature_median"] is None


@needs_torch
def test_validation_subjects_calibrate_when_no_other_subject_can_be_spared(
        synth_root: Path, cache_dir: Path, tmp_path: Path) -> None:
    from training.cache import DICache
    from training.datasets import load_dataset
    from training.train import run_training

    index = load_dataset("synth", synth_root, scheme="megc3")
    settings = _tiny(epochs=1, protocol="kfold", k=3, val_fraction=0.5)
    run_training(index, settings, tmp_path / "v", cache=DICache(cache_dir), folds="1")
    fold = json.loads(next((tmp_path / "v" / "folds").glob("*.json")).read_text())
    assert len(fold["train_subjects"]) == len(fold["val_subjects"]) == 1
    assert fold["calibration_subjects"] == fold["val_subjects"]
    assert fold["calibration"]["source"].startswith("validation subjects")


def test_old_fold_results_without_calibration_still_report(tmp_path: Path) -> None:
    from training.report import pooled_report, render_markdown

    preds = [{"clip": "c", "subject": "s", "true": "positive", "pred": "positive", "probs": [0.1, 0.8, 0.1]}]
    result = {"schema": "mer-fold/1", "fold": "fold01-s", "number": 1, "of": 1, "labels": list(LABELS),
              "test_subjects": ["s"], "predictions": preds,
              "scores": {"accuracy": 1.0, "uf1": 1.0, "uar": 1.0}}
    report = pooled_report([result])
    assert report["calibration"]["ece_before"] == report["calibration"]["ece_after"] == pytest.approx(0.2)
    assert report["folds"][0]["calibration"]["fitted"] is False
    assert "1 (not fitted)" in render_markdown(report)


# --- uncertain labels on the dashboard and the plain line ----------------------------------------------


def _event(label: str | None, confidence: float | None, onset: int = 10) -> EventRecord:
    rest = (1 - (confidence or 0.0)) / 2
    probs = {} if label is None else {label: confidence or 0.0, "other": rest, "third": rest}
    return EventRecord(onset=TimePoint(onset, onset / 30), apex=TimePoint(onset + 3, (onset + 3) / 30),
                       offset=TimePoint(onset + 8, (onset + 8) / 30), duration_ms=266.7, kind="micro",
                       intensity=0.4, label=label, confidence=confidence, probs=probs, latency_ms=12.0)


def test_the_plain_line_marks_uncertain_labels() -> None:
    assert UNCERTAIN_BELOW == 0.5
    sure = format_record(_event("positive", 0.91))
    unsure = format_record(_event("positive", 0.42))
    assert "positive " in sure and "positive?" not in sure
    assert "positive?" in unsure and "0.42" in unsure
    assert "positive?" in format_record(_event("positive", 0.7), uncertain_below=0.8)
    assert "?" not in format_record(_event(None, None))
    assert label_text("surprise", 0.5) == "surprise"  # at the threshold: not uncertain
    assert label_text(None, 0.1) == "-"


def test_the_dashboard_marks_and_dims_uncertain_labels() -> None:
    events = [_event("negative", 0.93, onset=10), _event("positive", 0.38, onset=60)]
    text = render_text(DashboardSnapshot(events=events), width=110)
    assert "positive?" in text and "negative?" not in text
    assert "last event · positive?" in text
    table = _events_table(events)
    assert isinstance(table, Table)
    label_cells = table.columns[3]._cells
    assert [str(c) for c in label_cells] == ["positive?", "negative"]  # newest first
    assert all(isinstance(c, Text) for c in label_cells)
    assert [c.style for c in label_cells if isinstance(c, Text)] == ["dim", ""]
    strict = render_text(DashboardSnapshot(events=events, uncertain_below=0.95), width=110)
    assert "negative?" in strict and "positive?" in strict


def test_the_plain_log_uses_the_snapshot_threshold() -> None:
    out = io.StringIO()
    snap = DashboardSnapshot(events=[_event("positive", 0.55)], uncertain_below=0.6)
    plain = PlainLog(lambda: snap, file=out, status_every_s=0)
    assert plain.poll() == 1
    assert "positive?" in out.getvalue()


@needs_torch
def test_calibration_data_fits_the_temperature_outside_the_test_fold_and_is_never_trained_on(
        synth_root: Path, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory,
        capsys: pytest.CaptureFixture[str]) -> None:
    from test_train import _make_synth

    from engines.checkpoint import load_checkpoint
    from mer_cli.train import main

    extra = _make_synth(tmp_path_factory.mktemp("synth-cal-extra"), clips_per_class=1)  # 3 subjects x 3 clips
    run = tmp_path_factory.mktemp("caldata") / "run"
    argv = ["--data", str(synth_root), "--dataset", "synth", "--model", "single", "--epochs", "1",
            "--batch-size", "8", "--threads", "1", "--cache", str(cache_dir), "--out", str(run), "--folds", "1",
            "--calibration-data", str(extra), "--final"]
    assert main(argv) == 0
    capsys.readouterr()
    fold = json.loads((run / "folds" / "fold01-s01.json").read_text())
    cal = fold["calibration"]
    # no training subject is held out; the calibration clips are those of the other subjects only
    assert fold["train_subjects"] == ["s02", "s03"] and cal["fitted"]
    assert cal["subjects"] == ["s02", "s03"] and cal["calibration_set"]["n"] == 6
    assert cal["source"].startswith("calibration data")
    settings = json.loads((run / "settings.json").read_text())
    assert settings["identity"]["calibration_data"] == str(extra)
    assert json.loads((run / "dataset.json").read_text())["calibration_data"]["samples"] == 9
    # the final model's temperature is fitted on every calibration clip, not the folds' median
    training = json.loads((run / "final" / "training.json").read_text())
    assert training["calibration"]["calibration_set"]["n"] == 9
    assert "never trained on" in training["calibration"]["source"]
    assert load_checkpoint(run / "final" / "model.pt").temperature == training["calibration"]["temperature"]


@needs_torch
def test_out_of_fold_calibration_fits_each_fold_on_the_other_folds_and_the_final_model_on_all(
        synth_root: Path, cache_dir: Path, tmp_path: Path) -> None:
    from engines.checkpoint import load_checkpoint
    from mer_cli.train import main
    from training.calibration import OUT_OF_FOLD_BOUNDS, fit_temperature

    run = tmp_path / "oof"
    argv = ["--data", str(synth_root), "--dataset", "synth", "--model", "single", "--epochs", "1",
            "--batch-size", "8", "--threads", "1", "--cache", str(cache_dir), "--out", str(run),
            "--calibrate-out-of-fold", "--final"]
    assert main(argv) == 0
    folds = [json.loads(p.read_text()) for p in sorted((run / "folds").glob("*.json"))]
    assert len(folds) == 3

    def arrays(fs: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        labels = fs[0]["labels"]
        preds = [p for f in fs for p in f["predictions"]]
        return (np.asarray([p["logits"] for p in preds]), np.asarray([labels.index(p["true"]) for p in preds]))

    for i, fold in enumerate(folds):
        cal = fold["calibration"]
        others = [f for j, f in enumerate(folds) if j != i]
        assert cal["fitted"] and "out of fold" in cal["source"]
        subjects = {f_["test_subjects"][0] for f_ in folds}
        assert fold["train_subjects"] == sorted(subjects - set(fold["test_subjects"]))  # nobody held out of training
        assert fold["calibration_subjects"] == [] and not set(cal["subjects"]) & set(fold["test_subjects"])
        assert cal["temperature"] == fit_temperature(*arrays(others), bounds=OUT_OF_FOLD_BOUNDS).temperature
        model = load_checkpoint(run / fold["checkpoint"])
        assert model.card.temperature == cal["temperature"]
        logits = np.asarray([p["logits"] for p in fold["predictions"]])
        probs = np.asarray([p["probs"] for p in fold["predictions"]])
        assert np.abs(softmax(logits, cal["temperature"]) - probs).max() < 1e-5
    final = ModelCard.load(run / "final" / "model.card.json")
    assert final.temperature == fit_temperature(*arrays(folds), bounds=OUT_OF_FOLD_BOUNDS).temperature
    # with calibration data: each fold predicts its test subjects' calibration clips, and the others fit on them
    run2 = tmp_path / "oof-data"
    assert main([*argv[:-1], "--out", str(run2), "--calibration-data", str(synth_root)]) == 0
    folds2 = [json.loads(p.read_text()) for p in sorted((run2 / "folds").glob("*.json"))]
    for i, fold in enumerate(folds2):
        held = fold["held_out_calibration"]
        assert held and {h["subject"] for h in held} == set(fold["test_subjects"])
        others = [f for j, f in enumerate(folds2) if j != i]
        labels = fold["labels"]
        logits = np.asarray([h["logits"] for f in others for h in f["held_out_calibration"]])
        y = np.asarray([labels.index(h["true"]) for f in others for h in f["held_out_calibration"]])
        assert fold["calibration"]["temperature"] == fit_temperature(logits, y, bounds=OUT_OF_FOLD_BOUNDS).temperature
        assert "calibration clips" in fold["calibration"]["source"]

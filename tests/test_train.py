"""mer-train on a tiny synthetic set built here in the mer-synth layout (random textures, a blob moving
one way per class): LOSO runs, checkpoints and cards, reports, merge, resume, phase augmentation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import pytest

from engines.card import ModelCard
from engines.checkpoint import load_checkpoint
from mer_cli.train import main
from mer_core.metrics import recognition_scores
from training.cache import DICache
from training.datasets import load_dataset
from training.folds import make_folds, select_folds
from training.report import merge_runs
from training.train import run_training
from training.train_types import Fold, NullProgress, TrainError, TrainOptions

if TYPE_CHECKING:  # torch is imported by the tests that need it
    import torch

SUBJECTS = ("s01", "s02", "s03")
CLASSES = {"happiness": (1, 0), "surprise": (0, -1), "disgust": (-1, 1)}  # blob direction (dx, dy)
N_FRAMES = 7


def _make_synth(root: Path, clips_per_class: int = 2) -> Path:
    rec = root / "recognition"
    lines = ["subject,clip,onset,apex,offset,label,aus,fps,n_frames"]
    rng = np.random.default_rng(0)
    for subject in SUBJECTS:
        for label, (dx, dy) in CLASSES.items():
            for k in range(clips_per_class):
                clip = f"{subject}/{subject}_{label}_{k}"
                folder = rec / clip
                folder.mkdir(parents=True)
                base = cv2.resize(rng.integers(40, 200, (6, 6), dtype=np.uint8), (32, 32),
                                  interpolation=cv2.INTER_CUBIC)
                for i in range(N_FRAMES):
                    img = base.copy()
                    step = min(i, N_FRAMES - 1 - i) * 2  # out and back: apex in the middle
                    cv2.circle(img, (16 + dx * step, 16 + dy * step), 4, 255, -1)
                    cv2.imwrite(str(folder / f"{i:06d}.png"), cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
                apex = "" if k == 1 else str(N_FRAMES // 2)  # some missing apexes
                lines.append(f"{subject},{clip},0,{apex},{N_FRAMES - 1},{label},4+L7,30,{N_FRAMES}")
    rec.mkdir(parents=True, exist_ok=True)
    (rec / "annotations.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_synth(tmp_path_factory.mktemp("synth"))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dicache")


def _tiny(**kw: Any) -> TrainOptions:
    base: dict[str, Any] = dict(model="dual-phase", epochs=2, batch_size=8, lr=3e-3, seed=0, threads=1)
    base.update(kw)
    return TrainOptions(**base)


def test_synth_reader_accepts_root_or_recognition(synth_root: Path) -> None:
    a = load_dataset("synth", synth_root, scheme="megc3")
    b = load_dataset("synth", synth_root / "recognition", scheme="megc3")
    assert len(a.samples) == len(b.samples) == 18
    assert a.subjects == SUBJECTS
    assert {s.label for s in a.samples} == {"positive", "surprise", "negative"}
    assert all(s.aligned and s.frame_numbers == tuple(range(N_FRAMES)) for s in a.samples)
    assert a.notes["apex missing (estimated from motion)"] == 9


def test_folds() -> None:
    subjects = ["a", "b", "c", "d", "e"]
    loso = make_folds(subjects, protocol="loso")
    assert [f.test_subjects for f in loso] == [("a",), ("b",), ("c",), ("d",), ("e",)]
    kfold = make_folds(subjects, protocol="kfold", k=2, seed=1)
    assert sorted(s for f in kfold for s in f.test_subjects) == subjects
    assert [f.number for f in select_folds(loso, "1,3-4")] == [1, 3, 4]
    assert [f.number for f in select_folds(loso, "e")] == [5]
    with pytest.raises(TrainError):
        select_folds(loso, "9")
    with pytest.raises(TrainError):
        make_folds(subjects, protocol="kfold", k=6)


def test_cli_loso_final_resume(synth_root: Path, cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    argv = ["--data", str(synth_root), "--dataset", "synth", "--model", "dual-phase", "--scheme", "megc3",
            "--protocol", "loso", "--epochs", "2", "--batch-size", "8", "--seed", "0", "--threads", "1",
            "--out", str(run), "--cache", str(cache_dir), "--final"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "pooled n=18" in out
    folds = sorted(p.name for p in (run / "folds").glob("*.json"))
    assert folds == ["fold01-s01.json", "fold02-s02.json", "fold03-s03.json"]
    fold = json.loads((run / "folds" / "fold01-s01.json").read_text())
    assert fold["test_subjects"] == ["s01"] and len(fold["predictions"]) == 6 and fold["epochs_run"] == 2
    report = json.loads((run / "report.json").read_text())
    assert report["folds_done"] == report["folds_total"] == 3 and report["pooled"]["n"] == 18
    assert np.asarray(report["pooled"]["confusion"]).sum() == 18
    predictions = [p for f in sorted((run / "folds").glob("*.json")) for p in json.loads(f.read_text())["predictions"]]
    pooled = recognition_scores([p["true"] for p in predictions], [p["pred"] for p in predictions],
                                labels=("negative", "positive", "surprise"))
    assert report["pooled"]["uf1"] == pytest.approx(pooled.uf1, abs=1e-6)  # the report pools the folds' answers
    assert report["pooled"]["accuracy"] == pytest.approx(pooled.accuracy, abs=1e-6)
    md = (run / "report.md").read_text()
    assert "Confusion matrix" in md and "fold02-s02" in md
    # the shipped model: loadable, weights_only-safe, card filled
    model = load_checkpoint(run / "final" / "model.pt")
    card = ModelCard.load(run / "final" / "model.card.json")
    assert card.labels == ("negative", "positive", "surprise") and card.streams == ("onset_apex", "apex_offset")
    assert card.trained_on.startswith("synth") and card.evaluation["uf1"] == report["pooled"]["uf1"]
    assert card.fps == 30.0
    import torch

    assert model(torch.zeros(2, *card.input_shape)).shape == (2, 3)
    assert load_checkpoint(run / "fold_models" / "fold02-s02.pt").card.evaluation["test_subjects"] == ["s02"]
    # again without --resume: refused; with --resume: every fold skipped
    assert main(argv) == 2
    assert "--resume" in capsys.readouterr().err
    assert main([*argv, "--resume"]) == 0
    assert capsys.readouterr().out.count("already done") == 3
    # other settings in the same folder: refused
    assert main([*argv[:-1], "--resume", "--lr", "0.5"]) == 2
    assert "other settings" in capsys.readouterr().err


def test_training_learns_the_classes(tmp_path: Path) -> None:
    """On a set a model can learn (the blob's direction is the class, textures differ per clip), leave-one-
    subject-out UF1 ends far above chance (1/3): training, evaluation and the report are connected."""
    root = _make_synth(tmp_path / "data", clips_per_class=4)
    index = load_dataset("synth", root, scheme="megc3")
    settings = _tiny(model="single", epochs=6, calibration_subjects=0)  # 2 training subjects per fold: keep both
    result = run_training(index, settings, tmp_path / "run", cache=DICache(tmp_path / "cache"))
    assert result.report is not None
    pooled = result.report["pooled"]
    assert pooled["n"] == 36
    assert pooled["uf1"] >= 0.8 and pooled["accuracy"] >= 0.8, pooled


def test_folds_split_over_runs_merge_to_the_full_result(synth_root: Path, cache_dir: Path, tmp_path: Path) -> None:
    index = load_dataset("synth", synth_root, scheme="megc3")
    settings = _tiny(epochs=1)
    cache = DICache(cache_dir)
    full = run_training(index, settings, tmp_path / "full", cache=cache)
    part_a = run_training(index, settings, tmp_path / "a", cache=cache, folds="1")
    part_b = run_training(index, settings, tmp_path / "b", cache=cache, folds="2,3")
    assert part_a.report is not None and part_a.report["folds_done"] == 1
    assert part_b.folds_run == ["fold02-s02", "fold03-s03"]
    assert part_a.report["evaluation"]["complete"] is False
    merged, paths = merge_runs([tmp_path / "a", tmp_path / "b"], tmp_path / "merged")
    assert merged["folds_done"] == 3 and all(p.is_file() for p in paths)
    assert full.report is not None
    assert merged["pooled"]["confusion"] == full.report["pooled"]["confusion"]
    assert main(["merge", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "m2")]) == 0


class _Interrupt(NullProgress):
    def __init__(self) -> None:
        self.starts: list[tuple[str, int]] = []

    def fold_start(self, fold: Fold, epochs: int, train_samples: int, start_epoch: int) -> None:
        self.starts.append((fold.name, start_epoch))

    def epoch_end(self, fold: Fold, epoch: int, epochs: int, stats: dict[str, float]) -> None:
        if fold.number == 2 and epoch == 1 and len(self.starts) == 2:
            raise KeyboardInterrupt


def test_interrupted_fold_resumes_at_its_epoch(synth_root: Path, cache_dir: Path, tmp_path: Path) -> None:
    index = load_dataset("synth", synth_root, scheme="megc3")
    settings = _tiny(epochs=2)
    progress = _Interrupt()
    with pytest.raises(KeyboardInterrupt):
        run_training(index, settings, tmp_path / "r", cache=DICache(cache_dir), progress=progress)
    assert (tmp_path / "r" / "folds" / "fold02-s02.state.pt").is_file()
    outcome = run_training(index, settings, tmp_path / "r", cache=DICache(cache_dir), resume=True, progress=progress)
    assert outcome.folds_skipped == ["fold01-s01"] and outcome.folds_run == ["fold02-s02", "fold03-s03"]
    assert ("fold02-s02", 1) in progress.starts
    assert not (tmp_path / "r" / "folds" / "fold02-s02.state.pt").exists()


def test_single_stream_phase_augmentation_and_validation(synth_root: Path, cache_dir: Path, tmp_path: Path) -> None:
    index = load_dataset("synth", synth_root, scheme="megc3")
    settings = _tiny(model="single", epochs=1, protocol="kfold", k=3, val_fraction=0.5)
    outcome = run_training(index, settings, tmp_path / "s", cache=DICache(cache_dir), folds="1")
    fold = json.loads(next((tmp_path / "s" / "folds").glob("*.json")).read_text())
    n_fit = 6 * len(fold["train_subjects"])
    assert len(fold["val_subjects"]) == 1 and fold["train_samples"] == 3 * n_fit  # TRDI + two phase DIs
    assert "val_uf1" in fold["history"][0]
    assert outcome.report is not None
    no_aug = run_training(index, _tiny(model="single", epochs=1, protocol="kfold", k=3, augment_phases=False),
                          tmp_path / "s2", cache=DICache(cache_dir), folds="1")
    fold2 = json.loads(next((tmp_path / "s2" / "folds").glob("*.json")).read_text())
    assert fold2["train_samples"] == 6 * len(fold2["train_subjects"])
    assert no_aug.report is not None


def test_weight_average_is_the_mean_and_recomputes_batchnorm() -> None:
    import torch

    from training.trainer import WeightAverage

    conv, norm = torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2)
    net = torch.nn.Sequential(conv, norm)
    average = WeightAverage()
    for value in (1.0, 2.0, 6.0):
        with torch.no_grad():
            conv.weight.fill_(value)
        average.add(net)
    assert average.count == 3 and average.state is not None
    assert torch.allclose(average.state["0.weight"], torch.full_like(conv.weight, 3.0))
    x = torch.randn(40, 1, 4, 4) * 2 + 5
    average.apply(net, x, batch_size=20)  # equal batches: the cumulative mean is the data mean
    with torch.no_grad():
        y = conv(x)
    assert norm.running_mean is not None
    assert torch.allclose(norm.running_mean, y.mean(dim=(0, 2, 3)), atol=1e-4)  # statistics of the mean weights
    assert norm.momentum == 0.1  # restored after recomputing
    again = WeightAverage.from_payload(average.payload())
    assert again.state is not None
    assert again.count == 3 and torch.equal(again.state["0.weight"], average.state["0.weight"])


def test_average_epochs_runs_and_bad_values_are_one_line(synth_root: Path, cache_dir: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--data", str(synth_root), "--dataset", "synth", "--model", "single", "--epochs", "2", "--batch-size",
            "8", "--threads", "1", "--cache", str(cache_dir), "--folds", "1"]
    assert main([*base, "--average-epochs", "2", "--out", str(tmp_path / "a")]) == 0
    fold = json.loads((tmp_path / "a" / "folds" / "fold01-s01.json").read_text())
    assert fold["averaged_epochs"] == 2
    assert load_checkpoint(tmp_path / "a" / "fold_models" / "fold01-s01.pt") is not None
    capsys.readouterr()
    assert main([*base, "--average-epochs", "3", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "average-epochs" in err and len(err.strip().splitlines()) == 1
    assert main([*base, "--average-epochs", "1", "--val-fraction", "0.5", "--out", str(tmp_path / "c")]) == 2
    assert "one" in capsys.readouterr().err


class _Starts(NullProgress):
    def __init__(self, interrupt_at: str | None = None) -> None:
        self.starts: list[tuple[str, int, int]] = []
        self.interrupt_at = interrupt_at

    def fold_start(self, fold: Fold, epochs: int, train_samples: int, start_epoch: int) -> None:
        self.starts.append((fold.name, train_samples, start_epoch))

    def epoch_end(self, fold: Fold, epoch: int, epochs: int, stats: dict[str, float]) -> None:
        if fold.name == self.interrupt_at:
            self.interrupt_at = None
            raise KeyboardInterrupt


def _conv_weights(encoder: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in encoder.parameters()]


def test_stream_pretraining_starts_every_stream_from_one_phase_augmented_backbone(
        synth_root: Path, cache_dir: Path, tmp_path: Path) -> None:
    import torch

    index = load_dataset("synth", synth_root, scheme="megc3")
    # with a tiny learning rate the backbones barely move after pretraining: both streams must still be equal
    settings = _tiny(epochs=1, pretrain_epochs=2, lr=1e-7)
    progress = _Starts()
    run_training(index, settings, tmp_path / "p", cache=DICache(cache_dir), folds="1", progress=progress)
    fold = json.loads((tmp_path / "p" / "folds" / "fold01-s01.json").read_text())
    n_fit = 6 * len(fold["train_subjects"])
    assert fold["pretrain"]["epochs_run"] == 2 and fold["pretrain"]["train_samples"] == 3 * n_fit  # TRDI + phases
    assert fold["train_samples"] == n_fit and fold["settings"]["pretrain_epochs"] == 2
    assert [s[0] for s in progress.starts] == ["fold01-s01-pretrain", "fold01-s01"]
    assert not list((tmp_path / "p" / "folds").glob("*.state.pt"))  # both state files cleared
    model = load_checkpoint(tmp_path / "p" / "fold_models" / "fold01-s01.pt")
    a, b = (_conv_weights(e) for e in model.encoders)
    assert all(torch.allclose(x, y, atol=1e-4) for x, y in zip(a, b, strict=True))
    plain = run_training(index, _tiny(epochs=1), tmp_path / "q", cache=DICache(cache_dir), folds="1")
    assert plain.folds_run == ["fold01-s01"]
    model = load_checkpoint(tmp_path / "q" / "fold_models" / "fold01-s01.pt")
    a, b = (_conv_weights(e) for e in model.encoders)
    assert not all(torch.allclose(x, y, atol=1e-4) for x, y in zip(a, b, strict=True))  # independent inits


def test_stream_pretraining_resumes_without_training_again(synth_root: Path, cache_dir: Path,
                                                           tmp_path: Path) -> None:
    index = load_dataset("synth", synth_root, scheme="megc3")
    settings = _tiny(epochs=2, pretrain_epochs=2)
    progress = _Starts(interrupt_at="fold01-s01")  # during the fused model's first epoch
    with pytest.raises(KeyboardInterrupt):
        run_training(index, settings, tmp_path / "r", cache=DICache(cache_dir), folds="1", progress=progress)
    assert (tmp_path / "r" / "folds" / "pretrain-fold01-s01.state.pt").is_file()
    progress = _Starts()
    outcome = run_training(index, settings, tmp_path / "r", cache=DICache(cache_dir), folds="1", resume=True,
                           progress=progress)
    assert outcome.folds_run == ["fold01-s01"]
    pretrain_start = progress.starts[0]
    assert pretrain_start[0] == "fold01-s01-pretrain" and pretrain_start[2] == 2  # nothing left to train


def test_pretraining_options_are_checked_in_one_line(synth_root: Path, cache_dir: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--data", str(synth_root), "--dataset", "synth", "--epochs", "1", "--batch-size", "8",
            "--threads", "1", "--cache", str(cache_dir), "--folds", "1"]
    assert main([*base, "--model", "single", "--pretrain-epochs", "1", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "multi-stream" in err and len(err.strip().splitlines()) == 1
    assert main([*base, "--pretrain-epochs", "-1", "--out", str(tmp_path / "b")]) == 2
    assert "pretrain-epochs" in capsys.readouterr().err
    assert main([*base, "--model", "single", "--out", str(tmp_path / "c")]) == 0  # no pretraining by default
    settings = json.loads((tmp_path / "c" / "settings.json").read_text())
    assert "pretrain_epochs" not in settings["identity"]


def test_progress_on_a_terminal_logs_without_source_locations(
    synth_root: Path, cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    import mer_cli.train

    monkeypatch.setattr(mer_cli.train, "_interactive", lambda: True)  # the Rich progress view
    argv = ["--data", str(synth_root), "--dataset", "synth", "--model", "single", "--epochs", "1",
            "--batch-size", "8", "--threads", "1", "--cache", str(cache_dir), "--folds", "1",
            "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "synth: 18 samples" in out and "fold01-s01 done" in out  # the stage and fold lines
    assert ".py:" not in out  # Rich's default "train_cli.py:123" location column is off


def test_an_ensemble_trains_every_member_and_pretraining_starts_them_all(
        synth_root: Path, cache_dir: Path, tmp_path: Path) -> None:
    import torch

    index = load_dataset("synth", synth_root, scheme="megc3")
    settings = _tiny(epochs=1, pretrain_epochs=1, lr=1e-7, model_settings=(("members", 2),))
    run_training(index, settings, tmp_path / "e", cache=DICache(cache_dir), folds="1")
    model = load_checkpoint(tmp_path / "e" / "fold_models" / "fold01-s01.pt")
    assert model.members == 2
    # every stream of every member started from the one pretrained backbone (a tiny rate barely moves them)
    weights = [_conv_weights(e) for encoders in model.member_encoders() for e in encoders]
    assert len(weights) == 4
    assert all(torch.allclose(x, y, atol=1e-4) for w in weights[1:] for x, y in zip(weights[0], w, strict=True))
    # without pretraining the members start apart and both learn: the fold's answer is their mean
    run_training(index, _tiny(epochs=2, model_settings=(("members", 2),)), tmp_path / "f", cache=DICache(cache_dir),
                 folds="1")
    fold = json.loads((tmp_path / "f" / "folds" / "fold01-s01.json").read_text())
    assert fold["settings"]["model_settings"] == [["members", 2]] and len(fold["predictions"]) == 6
    model = load_checkpoint(tmp_path / "f" / "fold_models" / "fold01-s01.pt")
    a, b = (_conv_weights(encoders[0]) for encoders in model.member_encoders())
    assert not all(torch.allclose(x, y, atol=1e-4) for x, y in zip(a, b, strict=True))

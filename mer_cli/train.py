"""``mer-train``: cross-validate a model on a dataset, write fold results, a report and (``--final``) the
model to ship; ``mer-train merge RUN_DIR...`` pools fold results from several runs into one report.

    mer-train --data ROOT --dataset casme2 --model dual-phase --scheme megc3 --protocol loso --out runs/a
    mer-train --data ROOT --dataset casme2 ... --folds 1-13 --out runs/a1   # machine 1
    mer-train --data ROOT --dataset casme2 ... --folds 14-26 --out runs/a2  # machine 2
    mer-train merge runs/a1 runs/a2 --out runs/a
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engines.backends.base import TorchMissingError, require_torch
from engines.card import CardError
from mer_cli.help import DefaultsHelpFormatter
from mer_cli.options import (
    add_log_arguments,
    configure_logging,
    positive_integer,
    positive_number,
    shows_native_logs,
)
from mer_core.dynamic_image import VECTOR_STREAMS
from realtime.face_model import face_model_from_env
from realtime.native_stderr import native_stderr_silenced
from training.cache import DICache, default_cache_dir
from training.datasets import load_dataset
from training.datasets.base import DatasetError, merge_indices
from training.datasets.classes import SchemeError
from training.datasets.frames import FrameError, FrameOptions
from training.report import ReportError, merge_runs
from training.train_types import Fold, NullProgress, TrainError, TrainOptions

__all__ = ["main"]

log = logging.getLogger("mer_cli.train")

DATASETS = ("synth", "casme2", "samm", "mmew")


def _train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mer-train",
        description="Train and cross-validate a micro-expression recognizer (LOSO or subject-disjoint k-fold). "
        "Cross-validation measures how well the recipe works; add --final to also get the model to use "
        "(RUN_DIR/final/model.pt, for mer-live --model and mer-export). "
        "Use 'mer-train merge RUN_DIR... [--out DIR]' to pool folds run separately.",
        formatter_class=DefaultsHelpFormatter,
    )
    data = p.add_argument_group("data")
    data.add_argument("--data", required=True, type=Path, metavar="DIR", action="append",
                      help="dataset folder (for synth: ROOT or ROOT/recognition); give it several times to train "
                           "on several folders of the same kind together, e.g. still-photo and real-video "
                           "renderings (mer-synth --out A, mer-synth onto --clips --out B); subjects of all "
                           "folders share the folds")
    data.add_argument("--dataset", required=True, choices=DATASETS,
                      help="which reader: synth (mer-synth output), casme2, samm or mmew")
    data.add_argument("--scheme", default="megc3", choices=("megc3", "megc3n", "casme5"),
                      help="class scheme: megc3 = negative/positive/surprise, casme5 = happiness/disgust/"
                      "repression/surprise/others; emotions outside it are dropped and counted")
    data.add_argument("--target-fps", type=positive_number, default=None, metavar="FPS",
                      help="resample faster clips to this rate, nearest frame by time (e.g. 30 to match a "
                      "webcam; default: keep each clip's rate)")
    data.add_argument("--alignment", default="auto", choices=("auto", "none", "onset", "each"),
                      help="face alignment of real datasets: onset = landmarks of the onset frame for the whole "
                      "clip; each = landmarks of every frame; none = resize only; auto = onset when a face model "
                      "is known, else none")
    data.add_argument("--face-model", default=None, metavar="FILE",
                      help="MediaPipe face_landmarker.task (default: $MER_FACE_MODEL)")
    data.add_argument("--cache", type=Path, default=None, metavar="DIR",
                      help="DI cache folder (default: di/ in the user cache, $MER_CACHE_DIR or ~/.cache/mer-live)")
    data.add_argument("--no-cache", action="store_true", help="do not read or write cached DIs")

    model = p.add_argument_group("model")
    model.add_argument("--model", default="dual-phase", metavar="NAME",
                       help="registered model: apex-flow (what the bundled model is), phase-flow, flow, single, dual-phase, "
                            "afn, dual-phase-concat, afn-concat")
    model.add_argument("--backbone", default="fast", metavar="NAME", help="CNN backbone: fast or resnet18")
    model.add_argument("--flip-average", action=argparse.BooleanOptionalAction, default=True,
                       help="the model averages its answer for the DIs and their mirror image (default on; "
                            "same as --model-setting flip_average=true)")
    model.add_argument("--model-setting", action="append", default=[], metavar="KEY=VALUE", dest="model_settings",
                       help="extra model setting, repeatable (e.g. dropout=0.3, shared_backbone=true, width=24); "
                       "see engines.network.ModelOptions")

    cv = p.add_argument_group("evaluation")
    cv.add_argument("--protocol", default="loso", choices=("loso", "kfold"),
                    help="loso = leave one subject out; kfold = --k subject-disjoint folds")
    cv.add_argument("--k", type=int, default=5, help="folds for --protocol kfold (subject-disjoint)")
    cv.add_argument("--folds", default=None, metavar="SPEC",
                    help="run only these folds: '1,3,5', '2-4', fold names or subjects (default: all)")
    cv.add_argument("--val-fraction", type=float, default=0.0, metavar="F",
                    help="early-stop on this fraction of the training subjects (default 0: fixed schedule, last epoch)")
    cv.add_argument("--patience", type=int, default=10, metavar="N",
                    help="epochs without validation improvement before stopping (with --val-fraction)")
    cv.add_argument("--average-epochs", type=int, default=None, metavar="N",
                    help="final weights = mean of the last N epochs' weights (SWA; BatchNorm recomputed); "
                         "0 = the last epoch's (default: a third of --epochs, or 0 with --val-fraction)")
    cv.add_argument("--calibration-subjects", type=int, default=1, metavar="N",
                    help="each fold holds N whole training subjects out of training and fits the model's softmax "
                         "temperature on their clips (never on the test subjects); the final model takes the "
                         "median of the folds' temperatures")
    cv.add_argument("--calibration-data", type=Path, metavar="DIR", action="append", default=[],
                    help="fit the temperature on this dataset instead (same --dataset reader; repeatable), "
                         "which is never trained on: each fold uses its clips of subjects outside the test fold, "
                         "the final model all of them; no training subject is then held out. Real-footage "
                         "renders (mer-synth onto --clips with another --seed) teach the model how unsure to be "
                         "on real faces; still-photo subjects it nearly always gets right do not")
    cv.add_argument("--calibrate-out-of-fold", action="store_true",
                    help="fit each fold's temperature on the other folds' predictions for their test subjects "
                         "(people none of those models trained on), and the final model's on all of them, "
                         "instead of holding training subjects out; the temperature may then sharpen as well as "
                         "soften. With --calibration-data, on those clips of the test subjects instead (real "
                         "footage, say, when stills are mixed into training). Needs every fold in one run folder")
    cv.add_argument("--no-calibration", action="store_true",
                    help="no temperature fitting: train on every training subject, temperature 1 "
                         "(same as --calibration-subjects 0)")
    cv.add_argument("--final", action="store_true",
                    help="after cross-validation, train on every subject and write the model to use: "
                    "RUN_DIR/final/model.pt + model.card.json, for mer-live --model and mer-export (without it "
                    "you get the evaluation and per-fold models only)")

    train = p.add_argument_group("training")
    train.add_argument("--epochs", type=int, default=40, metavar="N", help="training epochs per fold")
    train.add_argument("--batch-size", type=int, default=32, metavar="N", help="samples per training step")
    train.add_argument("--lr", type=float, default=1e-3, help="learning rate (AdamW)")
    train.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay")
    train.add_argument("--seed", type=int, default=0, help="random seed; same seed + settings = same folds and runs")
    train.add_argument("--label-smoothing", type=float, default=0.0, metavar="E",
                       help="train against targets smoothed by E (e.g. 0.1): a model less sure of itself where "
                            "it has not been, such as real footage after synthetic training")
    train.add_argument("--augment-phases", action=argparse.BooleanOptionalAction, default=True,
                       help="single-stream models: add each phase DI as an extra training sample (default on)")
    train.add_argument("--pretrain-epochs", type=int, default=None, metavar="N",
                       help="multi-stream models: first train one backbone as `single` with phase augmentation "
                            "for N epochs (same training subjects) and start every stream from it; 0 = off "
                            "(default: --epochs for multi-stream models, 0 for single-stream ones)")
    train.add_argument("--spatial-augment", action=argparse.BooleanOptionalAction, default=True,
                       help="random flip/rotation/scale/shift + gain jitter of the DIs (default on)")
    train.add_argument("--class-balance", action=argparse.BooleanOptionalAction, default=True,
                       help="inverse-frequency weighted cross-entropy (default on)")
    train.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    train.add_argument("--threads", type=positive_integer, default=None, metavar="N",
                       help="torch CPU threads (default: all cores)")

    run = p.add_argument_group("run")
    run.add_argument("--out", required=True, type=Path, metavar="RUN_DIR",
                     help="run folder: report.md / report.json, folds/, fold_models/, final/ with --final")
    run.add_argument("--resume", action="store_true", help="continue a run: done folds are skipped, a torn fold resumes")
    add_log_arguments(run, verbose_alias=True)
    return p


def _merge_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mer-train merge", description="Pool fold results of run folders into one report.",
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="run folders made with --folds")
    p.add_argument("--out", type=Path, default=None, help="where report.json/.md go (default: the first run folder)")
    add_log_arguments(p, verbose_alias=True)
    return p


def _interactive() -> bool:
    return sys.stdout.isatty() and os.environ.get("TERM") != "dumb"


def _configure_logging(level: str, console: Any = None) -> None:
    handler = None
    if console is not None:
        from rich.logging import RichHandler

        handler = RichHandler(console=console, show_path=False, show_time=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    configure_logging(level, handler=handler)


def _progress_classes() -> tuple[type, type]:
    class PlainProgress(NullProgress):
        """One line per stage, fold and epoch (stdout is not a terminal)."""

        def __init__(self) -> None:
            self._last_dis = -1

        def stage(self, text: str) -> None:
            print(f"mer-train: {text}", flush=True)

        def dis(self, done: int, total: int) -> None:
            step = max(1, total // 10)
            if done == total or done // step != self._last_dis:
                self._last_dis = done // step
                print(f"mer-train: DIs {done}/{total}", flush=True)

        def fold_start(self, fold: Fold, epochs: int, train_samples: int, start_epoch: int) -> None:
            what = (f"final model ({fold.name})" if fold.name.startswith("final")
                    else f"fold {fold.number}/{fold.total} {fold.name}")
            resumed = f", resuming at epoch {start_epoch + 1}" if start_epoch else ""
            print(f"mer-train: {what}: {train_samples} training samples, {epochs} epochs{resumed}", flush=True)

        def epoch_end(self, fold: Fold, epoch: int, epochs: int, stats: dict[str, float]) -> None:
            extra = f" val_uf1 {stats['val_uf1']:.3f}" if "val_uf1" in stats else ""
            print(f"mer-train:   {fold.name} epoch {epoch}/{epochs} loss {stats['loss']:.4f} "
                  f"train_acc {stats['train_acc']:.3f}{extra}", flush=True)

        def fold_end(self, fold: Fold, result: dict[str, Any], *, skipped: bool = False) -> None:
            if fold.name == "final":
                print("mer-train: final model trained", flush=True)
                return
            s = result.get("scores", {})
            state = "already done" if skipped else "done"
            print(f"mer-train: {fold.name} {state}: n={s.get('n')} acc {s.get('accuracy', 0):.3f} "
                  f"UF1 {s.get('uf1', 0):.3f} UAR {s.get('uar', 0):.3f}{_calibration_text(result)}", flush=True)

    class RichProgress(NullProgress):
        """Rich bars: DIs, folds, and the epochs of the current fold."""

        def __init__(self, progress: Any) -> None:
            self.progress = progress
            self.console = progress.console
            self._dis: Any = None
            self._folds: Any = None
            self._epochs: Any = None

        def stage(self, text: str) -> None:
            self.console.log(text)

        def dis(self, done: int, total: int) -> None:
            if self._dis is None:
                self._dis = self.progress.add_task("DIs", total=total)
            self.progress.update(self._dis, completed=done)

        def folds(self, to_run: int, total: int) -> None:
            self._folds = self.progress.add_task(f"folds ({to_run} of {total})", total=to_run)

        def fold_start(self, fold: Fold, epochs: int, train_samples: int, start_epoch: int) -> None:
            if self._epochs is not None:
                self.progress.remove_task(self._epochs)
            self._epochs = self.progress.add_task(f"{fold.name} epochs", total=epochs, completed=start_epoch)

        def epoch_end(self, fold: Fold, epoch: int, epochs: int, stats: dict[str, float]) -> None:
            extra = f" val UF1 {stats['val_uf1']:.3f}" if "val_uf1" in stats else ""
            self.progress.update(self._epochs, completed=epoch,
                                 description=f"{fold.name} loss {stats['loss']:.3f}{extra}")

        def fold_end(self, fold: Fold, result: dict[str, Any], *, skipped: bool = False) -> None:
            if fold.name != "final":
                s = result.get("scores", {})
                state = "already done" if skipped else "done"
                self.console.log(f"{fold.name} {state}: n={s.get('n')} acc {s.get('accuracy', 0):.3f} "
                                 f"UF1 {s.get('uf1', 0):.3f} UAR {s.get('uar', 0):.3f}{_calibration_text(result)}")
                if self._folds is not None:
                    self.progress.advance(self._folds)
            if self._epochs is not None:
                self.progress.remove_task(self._epochs)
                self._epochs = None

    return PlainProgress, RichProgress


def _calibration_text(result: dict[str, Any]) -> str:
    """`` T 1.84 ECE 0.210→0.061`` for a calibrated fold's result, else ``""``."""
    cal = result.get("calibration")
    if not isinstance(cal, dict) or not cal.get("fitted"):
        return ""
    test = cal.get("test") or {}
    ece = f" ECE {test['ece_before']:.3f}→{test['ece_after']:.3f}" if "ece_before" in test else ""
    return f" T {cal['temperature']:g}{ece}"


def _resolve_alignment(args: argparse.Namespace) -> tuple[str, str | None]:
    env = face_model_from_env()  # absolute, whatever folder it was set relative to
    face_model = args.face_model or (str(env) if env is not None else None)
    if args.alignment != "auto":
        return args.alignment, face_model
    if args.dataset == "synth":
        return "none", face_model  # already-aligned crops
    if face_model:
        return "onset", face_model
    log.warning("no face model given (--face-model or MER_FACE_MODEL): %s frames are only resized, not aligned "
                "to the live template (alignment 'none')", args.dataset)
    return "none", None


def _average_epochs(args: argparse.Namespace) -> int:
    if args.average_epochs is not None:
        return int(args.average_epochs)
    return 0 if args.val_fraction else args.epochs // 3


def _pretrain_epochs(args: argparse.Namespace) -> int:
    if args.pretrain_epochs is not None:
        return int(args.pretrain_epochs)
    from engines.registry import default_card  # pulls in torch (the optional 'train' extra)

    try:
        streams = default_card(args.model, labels=("a", "b")).streams
    except (KeyError, ValueError):
        return 0  # an unknown model is reported, in one line, where the data is prepared

    if set(streams) & {name for pair in VECTOR_STREAMS for name in pair}:
        return 0  # stream pretraining starts backbones from a TRDI model: nothing a flow stream can use
    return args.epochs if len(streams) > 1 else 0


def _model_settings(items: list[str], *, flip_average: bool = False) -> tuple[tuple[str, Any], ...]:
    """``KEY=VALUE`` pairs; values are JSON literals when they parse (0.3, true, 24), strings otherwise.
    ``flip_average`` is added unless a pair sets it (only when true, so older runs keep their identity)."""
    import json

    out: dict[str, Any] = {"flip_average": True} if flip_average else {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise TrainError(f"--model-setting expects KEY=VALUE, got {item!r}")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        out[key.strip()] = value  # the last word on a key wins
    return tuple(sorted(out.items()))


def _console(**kwargs: Any) -> Any:
    """The progress console: log lines without the source location Rich adds by default (file.py:123)."""
    from rich.console import Console

    return Console(log_path=False, **kwargs)


def _run_train(args: argparse.Namespace) -> int:
    from training.train import run_training  # pulls in torch (the optional 'train' extra)

    interactive = _interactive()
    console = None
    if interactive:
        console = _console()
    _configure_logging(args.log_level, console)
    calibration_dirs: list[Path] = [] if args.no_calibration else list(args.calibration_data)
    settings = TrainOptions(
        model=args.model, backbone=args.backbone, scheme=args.scheme, protocol=args.protocol, k=args.k,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, seed=args.seed,
        augment_phases=args.augment_phases, spatial_augment=args.spatial_augment, class_balanced=args.class_balance,
        val_fraction=args.val_fraction, patience=args.patience, average_epochs=_average_epochs(args),
        pretrain_epochs=_pretrain_epochs(args), label_smoothing=args.label_smoothing,
        calibration_subjects=0 if args.no_calibration or args.calibrate_out_of_fold else args.calibration_subjects,
        out_of_fold_calibration=args.calibrate_out_of_fold and not args.no_calibration,
        calibration_data=",".join(str(d) for d in calibration_dirs),
        device=args.device, threads=args.threads,
        model_settings=_model_settings(args.model_settings, flip_average=args.flip_average),
    )
    alignment, face_model = _resolve_alignment(args)
    frames = FrameOptions(alignment=alignment, target_fps=args.target_fps, face_model=face_model)
    cache = DICache(None if args.no_cache else (args.cache or default_cache_dir()))
    index = merge_indices([load_dataset(args.dataset, root, scheme=args.scheme) for root in args.data])
    calibration = merge_indices([load_dataset(args.dataset, root, scheme=args.scheme)
                                 for root in calibration_dirs]) if calibration_dirs else None
    summary = (f"{index.name}: {len(index.samples)} samples from {len(index.subjects)} subjects "
               f"(scheme {index.scheme}); skipped rows: {index.skipped_counts() or 'none'}; "
               f"dropped by the scheme: {dict(index.dropped) or 'none'}; alignment {alignment}")
    run_args: dict[str, Any] = dict(frames=frames, cache=cache, folds=args.folds, resume=args.resume,
                                    final=args.final, calibration=calibration)
    plain_cls, rich_cls = _progress_classes()
    # MediaPipe (face alignment of real datasets) prints its native log lines into the progress output:
    # hidden unless --log-level info or debug; our own messages still reach stderr.
    quiet = native_stderr_silenced(not shows_native_logs(args.log_level), keep_python=True)
    if interactive:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console) as bar:
            progress = rich_cls(bar)
            progress.stage(summary)
            with quiet:
                outcome = run_training(index, settings, args.out, progress=progress, **run_args)
    else:
        progress = plain_cls()
        progress.stage(summary)
        with quiet:
            outcome = run_training(index, settings, args.out, progress=progress, **run_args)
    report = outcome.report or {}
    pooled = report.get("pooled", {})
    print(f"mer-train: {report.get('folds_done')}/{report.get('folds_total')} folds; pooled n={pooled.get('n')} "
          f"accuracy {100 * pooled.get('accuracy', 0):.2f} % UF1 {pooled.get('uf1', 0):.4f} "
          f"UAR {pooled.get('uar', 0):.4f}")
    cal = report.get("calibration") or {}
    if cal.get("folds_calibrated"):
        print(f"mer-train: calibration: median temperature {cal['temperature_median']:g}; pooled ECE "
              f"{cal['ece_before']:.4f} → {cal['ece_after']:.4f}; mean confidence on wrong answers "
              f"{cal['wrong_confidence_before']:.3f} → {cal['wrong_confidence_after']:.3f}")
    for path in outcome.report_paths:
        print(f"mer-train: wrote {path}")
    if outcome.final_model:
        print(f"mer-train: final model {outcome.final_model}")
    return 0


def _run_merge(args: argparse.Namespace) -> int:
    _configure_logging(args.log_level)
    report, paths = merge_runs(args.run_dirs, args.out)
    pooled = report["pooled"]
    print(f"mer-train merge: {report['folds_done']}/{report['folds_total']} folds; pooled n={pooled['n']} "
          f"accuracy {100 * pooled['accuracy']:.2f} % UF1 {pooled['uf1']:.4f} UAR {pooled['uar']:.4f}")
    for path in paths:
        print(f"mer-train merge: wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; user errors become one line on stderr and a non-zero exit."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["spot"]:  # the learned spotter (mer_cli.train_spot)
        from mer_cli.train_spot import main as spot_main

        return spot_main(argv[1:])
    merging = bool(argv) and argv[0] == "merge"
    parser = _merge_parser() if merging else _train_parser()
    args = parser.parse_args(argv[1:] if merging else argv)
    prog = "mer-train merge" if merging else "mer-train"

    user_errors: tuple[type[Exception], ...] = (DatasetError, SchemeError, FrameError, ReportError, CardError)
    if not merging:  # merging pools results and needs no torch; training does
        try:
            require_torch("training")
        except TorchMissingError as exc:
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return 2
        user_errors += (TrainError,)
    try:
        return _run_merge(args) if merging else _run_train(args)
    except user_errors as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; run again with --resume to continue", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

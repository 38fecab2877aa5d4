"""``mer-train spot``: train the learned spotter for your own camera and people, and export it.

    mer-train spot --annotated CASME2_LONG_ROOT --out runs/spot        # CAS(ME)^2 / SAMM long videos, csv
    mer-train spot --render ../shared/real --out runs/spot            # real footage, expressions rendered on
    mer-train spot --annotated onto_out/ --negatives talk1.mp4 talk2.mp4 --out runs/spot
    mer-live --camera 0 --spotting-model runs/spot/spotter.onnx
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from engines.backends.base import TorchMissingError, require_torch
from engines.card import CardError
from mer_cli.help import DefaultsHelpFormatter
from mer_cli.options import add_log_arguments, configure_logging, non_negative_integer, positive_integer
from mer_cli.progress import StageBars
from realtime.face_model import FaceModelError, resolve_face_model
from realtime.native_stderr import native_stderr_silenced
from realtime.sources import SourceError
from training.datasets.base import DatasetError
from training.datasets.spotting import SPOT_KINDS
from training.synth_options import SynthError

__all__ = ["build_parser", "main"]

_VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mer-train spot",
        description=(
            "Train the learned micro-expression spotter and export it (SPOTTER.onnx with its card) for mer-live "
            "--spotting-model. Positives come from long videos annotated with onset/offset frames (CAS(ME)^2 and "
            "SAMM long videos, the csv that mer-synth onto writes) and from real footage that micro-expressions "
            "are rendered onto (--render); the people's own talking, blinks, head turns and expressions, and "
            "--negatives videos, are the negatives. A quarter of the people (by id) is held out to choose the "
            "decoding thresholds; --folds N also reports person-grouped cross-validation figures."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("--annotated", type=Path, nargs="+", default=[], metavar="ROOT",
                   help="datasets annotated for spotting: a CAS(ME)^2 or SAMM long-video root, a folder with "
                        "annotations.csv (video, subject, onset, apex, offset, kind; e.g. mer-synth onto output)")
    p.add_argument("--kind", choices=SPOT_KINDS, default="auto", help="reader for --annotated (auto: by the annotation file found)")
    p.add_argument("--render", type=Path, nargs="+", default=[], metavar="VIDEO|DIR",
                   help="real footage with faces (files, or folders of .mp4 with an optional people.csv) to render "
                        "micro-expressions onto, with every render family")
    p.add_argument("--negatives", type=Path, nargs="+", default=[], metavar="VIDEO",
                   help="videos with no micro-expression in them (every step a negative)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="writes DIR/spotter.onnx, its card, a report")
    p.add_argument("--steps", type=positive_integer, default=None, metavar="N", help="optimisation steps")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--folds", type=non_negative_integer, default=0, metavar="N",
                   help="also cross-validate with N person-grouped folds and report the figures (0: skip)")
    p.add_argument("--work", type=Path, default=None, metavar="DIR",
                   help="cache of tracked faces, renders and features (default: the user cache, spotting/)")
    p.add_argument("--face-model", type=Path, default=None, metavar="FILE",
                   help="face_landmarker.task (default: $MER_FACE_MODEL, then the user cache)")
    p.add_argument("--name", default="mer-spot-custom", help="the model's name in its card and in events")
    add_log_arguments(p)
    return p


def _videos(paths: Sequence[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(f for f in path.iterdir() if f.suffix.lower() in _VIDEO_SUFFIXES)
            if not found:
                raise SourceError(f"{path} holds no video file ({', '.join(_VIDEO_SUFFIXES)})")
            out += found
        elif path.is_file():
            out.append(path)
        else:
            raise SourceError(f"no such video file or folder: {path}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prog = "mer-train spot"
    if not (args.annotated or args.render):
        print(f"{prog}: error: nothing to learn from: give --annotated ROOT and/or --render VIDEO|DIR",
              file=sys.stderr)
        return 2
    if args.out.exists() and not args.out.is_dir():
        print(f"{prog}: error: --out {args.out} is a file; give a folder", file=sys.stderr)
        return 2
    try:
        require_torch(prog)
    except TorchMissingError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    configure_logging(args.log_level)
    try:
        return _run(args)
    except (DatasetError, SourceError, SynthError, FaceModelError, CardError, ValueError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; what was tracked is cached, run again to go on", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:

    from mer_core.paths import user_cache_dir
    from training.realbench import BenchOptions, person_folds
    from training.replay import live_tracker_options
    from training.spotter_folds import fit_spotter
    from training.spotter_sources import annotated_sequences, negative_sequences, rendered_sequences
    from training.spotter_train import SpotTrainOptions, export_spotter

    face_model = resolve_face_model(args.face_model)
    tracker = live_tracker_options(face_model)
    work = args.work or user_cache_dir() / "spotting"
    options = replace(SpotTrainOptions(seed=args.seed), **({"steps": args.steps} if args.steps else {}))
    report = StageBars()

    started = time.monotonic()
    seqs = []
    notes: list[str] = []
    with native_stderr_silenced(True, keep_python=True), report:
        if args.annotated:
            found, notes = annotated_sequences(args.annotated, tracker=tracker, work=work, kind=args.kind,
                                               progress=report)
            seqs += found
        if args.render:
            seqs += rendered_sequences(_videos(args.render), BenchOptions(), tracker=tracker, work=work,
                                       progress=report)
        if args.negatives:
            seqs += negative_sequences(_videos(args.negatives), tracker=tracker, work=work, progress=report)
        positives = sum(len([r for r in s.truth if r.get("kind", "micro") == "micro"]) for s in seqs)
        if positives == 0:
            raise ValueError("no annotated micro-expression in the data; nothing to learn")
        report_data: dict[str, Any] = {"sources": notes, "sequences": len(seqs), "micro_expressions": positives,
                                       "people": sorted({s.person for s in seqs})}
        if args.folds:
            report_data["cross_validation"] = _cross_validate(seqs, options, person_folds(report_data["people"],
                                                                                          args.folds), report)
        net, card, figures = fit_spotter(seqs, options, name=args.name, progress=report)
        args.out.mkdir(parents=True, exist_ok=True)
        path = export_spotter(net, card, args.out / "spotter.onnx")
    report_data["validation"] = figures
    report_data["wall_s"] = round(time.monotonic() - started, 1)
    (args.out / "report.json").write_text(json.dumps(report_data, indent=2) + "\n", encoding="utf-8")
    for line in notes:
        print(f"mer-train spot: {line}", file=sys.stderr)
    print(f"mer-train spot: wrote {path} ({positives} micro-expressions, {len(report_data['people'])} people); "
          f"on the validation people: F1 {figures.get('f1', '-')}, {figures.get('false_per_min', '-')} false "
          f"events a minute; use it with: mer-live --spotting-model {path}", file=sys.stderr)
    return 0


def _cross_validate(seqs: list[Any], options: Any, folds: list[list[str]], report: Any) -> dict[str, Any]:
    """Person-grouped folds: train on the others (thresholds on their validation quarter), score the held-out."""
    from training.spotter_folds import fit_spotter
    from training.spotter_train import SequenceTally, predict_logits, windows_of

    tally = SequenceTally()
    for k, held in enumerate(folds):
        report(f"cross-validation fold {k + 1}/{len(folds)}", 0, 0)
        train = [s for s in seqs if s.person not in held]
        net, card, _ = fit_spotter(train, options, progress=report)
        for seq in (s for s in seqs if s.person in held):
            tally.add(seq, windows_of(seq, predict_logits(net, seq, options.context), card))
    rate = tally.false_per_min
    return {"folds": folds, "f1": round(tally.f1, 3), "tp": tally.tp, "fp": tally.fp, "fn": tally.fn,
            "false_per_min": round(rate, 2) if rate is not None else None}

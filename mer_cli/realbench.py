"""``mer-bench real``: the real-footage spotting benchmark's command line (see :mod:`training.realbench`)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engines.backends.base import TorchMissingError, require_torch
from mer_analysis.chain import AnalyzerOptions
from mer_cli.options import (
    add_log_arguments,
    configure_logging,
    non_negative_integer,
    positive_integer,
    positive_number,
)
from mer_cli.progress import StageBars
from mer_core.paths import user_cache_dir
from realtime.face_model import FaceModelError, resolve_face_model
from realtime.native_stderr import native_stderr_silenced
from realtime.sources import SourceError
from training.realbench import (
    AMPLITUDES,
    FAMILIES,
    BenchOptions,
    bench_only,
    evaluate,
    person_folds,
    rule_spot,
    write_clip_sets,
)
from training.realdata import default_videos, prepare
from training.replay import live_tracker_options
from training.synth_options import MAX_AMPLITUDE, SynthError

__all__ = ["build_parser", "main"]

_REPO = Path(__file__).resolve().parents[1]


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(not 0 < v <= MAX_AMPLITUDE for v in values):
        raise argparse.ArgumentTypeError(f"amplitudes are fractions of the eye distance, above 0 and at most "
                                         f"{MAX_AMPLITUDE}, got {text!r}")
    return values


def _families(text: str) -> tuple[str, ...]:
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    bad = [v for v in values if v not in FAMILIES]
    if not values or bad:
        raise argparse.ArgumentTypeError(f"render families are {', '.join(FAMILIES)}; got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mer-bench real",
        description=(
            "Spotting on real footage of many people: micro-expressions are rendered onto real videos by each "
            "render family at fixed amplitudes (apex displacement as a fraction of the eye distance), placed "
            "where the face is calm or anywhere, and the live analysis chain spots them. Reported per family, "
            "placement and amplitude: MEGC figures (micro F1 at IoU >= 0.5, precision, recall), onset/apex/"
            "offset error in frames and the IoU of each hit; per person; and false micro events per minute on "
            "every un-injected video. The rule spotter is scored as shipped; the learned spotter is trained "
            "per fold of people on the others' footage and scored on the people it never saw (--cross: trained "
            "on one render family, scored on the other). Renders, tracked faces, features and fold models are "
            "cached under --work, so a second run only spots."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("videos", nargs="*", type=Path, metavar="VIDEO",
                   help="real videos with a face (default: ../shared/real/*.mp4 beside the repository; a "
                        "people.csv beside them says whose face each shows)")
    p.add_argument("--spotter", choices=("rules", "learned", "both"), default="both", help="which spotter to score")
    p.add_argument("--folds", type=non_negative_integer, default=5, metavar="N",
                   help="learned spotter: N person-grouped folds (0: leave-one-person-out)")
    p.add_argument("--cross", action="store_true",
                   help="learned spotter: also train on one render family and score on the other")
    p.add_argument("--families", type=_families, default=",".join(FAMILIES), metavar="F,G",
                   help="render families: warp (Action-Unit RBF warps), mesh (face-mesh deformation, shading, "
                        "camera noise)")
    p.add_argument("--amplitudes", type=_floats, default=",".join(f"{a:g}" for a in AMPLITUDES), metavar="A,B,...",
                   help="amplitudes to render, fractions of the inter-ocular distance")
    p.add_argument("--placement", choices=("calm", "anywhere", "both"), default="both",
                   help="where micro-expressions are placed: where the face is calm, anywhere it is visible "
                        "(talking and head turns included), or both")
    p.add_argument("--per-minute", type=positive_number, default=10.0, metavar="R", help="micro-expressions per minute")
    p.add_argument("--seed", type=int, default=7, help="seed of the rendered expressions")
    p.add_argument("--steps", type=positive_integer, default=None, metavar="N",
                   help="learned spotter: optimisation steps per fold (default: the shipped recipe's)")
    p.add_argument("--work", type=Path, metavar="DIR", default=None,
                   help="cache of renders, tracked faces, features and fold models (default: the user cache, "
                        "realbench/)")
    p.add_argument("--face-model", type=Path, metavar="FILE", default=None,
                   help="face_landmarker.task (default: $MER_FACE_MODEL, else ../shared/models, else the cache)")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    p.add_argument("--out", type=Path, metavar="FILE.json", default=None, help="also write the figures to this file")
    p.add_argument("--clips", type=Path, metavar="DIR", default=None,
                   help="instead of spotting, write the true windows of every rendering as recognition sets "
                        "(DIR/test/<family>_<placement>_<amplitude>: the benchmark's cells; DIR/train/<family>: "
                        "the training renderings, other seeds; one subject per person) for mer-train and "
                        "mer-bench recognition")
    p.add_argument("--markdown", type=Path, metavar="FILE.md", default=None,
                   help="also write the tables (per cell and per person) as Markdown, for the docs")
    add_log_arguments(p)
    return p


def _fail(message: str) -> int:
    print(f"mer-bench real: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)

    videos = list(args.videos) or default_videos(_REPO)
    if not videos:
        return _fail("no videos given and ../shared/real not found; pass VIDEO files")
    missing = [v for v in videos if not v.is_file()]
    if missing:
        return _fail(f"no such video file: {missing[0]}")
    work = args.work or user_cache_dir() / "realbench"
    if work.exists() and not work.is_dir():
        return _fail(f"--work {work} is a file; give a folder for the renders and motion cache")
    if args.clips is not None and args.clips.exists() and not args.clips.is_dir():
        return _fail(f"--clips {args.clips} is a file; give a folder for the recognition sets")
    if args.spotter != "rules" and args.clips is None:
        try:
            require_torch("mer-bench real --spotter learned")
        except TorchMissingError as exc:
            return _fail(str(exc))
    try:
        model = args.face_model or (_REPO.parent / "shared" / "models" / "face_landmarker.task")
        face_model = resolve_face_model(args.face_model if args.face_model or not model.is_file() else model)
    except FaceModelError as exc:
        return _fail(str(exc))
    placements = ("calm", "anywhere") if args.placement == "both" else (args.placement,)
    settings = BenchOptions(amplitudes=args.amplitudes, placements=placements, families=args.families,
                            micro_per_minute=args.per_minute, seed=args.seed)
    report = StageBars()

    start = time.monotonic()
    result: dict[str, Any] = {}
    learned = args.spotter != "rules" and args.clips is None
    if args.clips is not None:
        return _write_clips(videos, settings, work, face_model, args.clips, report)
    specs = settings.bench_specs() + (settings.train_specs() if learned else [])
    try:
        with native_stderr_silenced(True, keep_python=True), report:
            data = prepare(videos, specs, work, tracker=live_tracker_options(face_model), progress=report)
            bench = bench_only(data, settings.bench_specs())
            tags = [s.tag for s in settings.bench_specs()]
            if args.spotter in ("rules", "both"):
                result["rules"] = evaluate(bench, rule_spot(AnalyzerOptions(spotting="rules")), tags=tags,
                                           progress=report)
            if learned:
                result.update(_learned(data, bench, settings, args, work, report))
    except KeyboardInterrupt:
        print("mer-bench real: interrupted", file=sys.stderr)
        return 130
    except (SourceError, SynthError, FaceModelError, OSError) as exc:
        return _fail(str(exc))
    result["videos"] = {stem: {"person": v.person, "minutes": round(v.original.track.minutes, 2)}
                        for stem, v in data.items()}
    result["settings"] = {"amplitudes": list(settings.amplitudes), "placements": list(placements),
                          "families": list(settings.families), "micro_per_minute": settings.micro_per_minute,
                          "seed": settings.seed, "folds": args.folds}
    result["wall_s"] = round(time.monotonic() - start, 1)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(result), encoding="utf-8")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print(result)
    return 0


def _write_clips(videos: list[Path], settings: BenchOptions, work: Path, face_model: Path, out: Path,
                 report: StageBars) -> int:
    """``--clips``: every rendering's true windows as recognition sets."""
    try:
        with native_stderr_silenced(True, keep_python=True), report:
            data = prepare(videos, settings.bench_specs() + settings.train_specs(), work,
                           tracker=live_tracker_options(face_model), progress=report)
            counts = write_clip_sets(data, {"test": settings.bench_specs(), "train": settings.train_specs()}, out,
                                     progress=report)
    except KeyboardInterrupt:
        print("mer-bench real: interrupted", file=sys.stderr)
        return 130
    except (SourceError, SynthError, FaceModelError, OSError) as exc:
        return _fail(str(exc))
    for name, n in counts.items():
        print(f"{out / name}: {n} clips")
    people = sorted({v.person for v in data.values()})
    print(f"{sum(counts.values())} clips of {len(people)} people; train and judge leaving people out, e.g. "
          f"mer-train --data {out / 'train' / settings.families[0]} --dataset synth --protocol kfold --k 5 "
          f"--model apex-flow --out RUN, then mer-bench recognition {out / 'test'}/* --run RUN")
    return 0


def _learned(data: Any, bench: Any, settings: BenchOptions, args: argparse.Namespace, work: Path,
             report: Any) -> dict[str, Any]:
    """The learned spotter per fold of people (and, with --cross, per render family)."""
    from dataclasses import replace

    from training.spotter_folds import learned_spot, train_fold
    from training.spotter_train import SpotTrainOptions

    options = SpotTrainOptions() if args.steps is None else replace(SpotTrainOptions(), steps=args.steps)
    people = sorted({v.person for v in data.values()})
    folds = person_folds(people, args.folds)
    out: dict[str, Any] = {}
    runs: list[tuple[str, tuple[str, ...] | None, tuple[str, ...]]] = [("learned", None, settings.families)]
    if args.cross and len(settings.families) > 1:
        for fam in settings.families:
            others = tuple(f for f in settings.families if f != fam)
            runs.append((f"cross {fam}->{'+'.join(others)}", (fam,), others))
    for name, train_families, test_families in runs:
        models: dict[str, Path] = {}
        for k, held in enumerate(folds):
            report(f"{name}: fold {k + 1}/{len(folds)}", 0, 0)
            fold = train_fold(data, held, options, work=work, families=train_families, progress=report)
            models.update(dict.fromkeys(held, fold.path))
        tags = [s.tag for s in settings.bench_specs() if s.family in test_families]
        out[name] = evaluate(bench, learned_spot(models), tags=tags, progress=report)
        out[name]["folds"] = [list(f) for f in folds]
    return out


CELL_COLUMNS = ("family", "placement", "amplitude", "F1", "precision", "recall", "TP/FP/FN", "onset err",
                "apex err", "offset err", "IoU")


def _cell_row(cell_name: str, row: dict[str, Any]) -> list[str]:
    """One cell of the figures (``"warp calm@0.04"``) as the table's texts, in :data:`CELL_COLUMNS` order."""
    family, _, rest = cell_name.partition(" ")
    placement, _, amplitude = rest.partition("@")
    return [family, placement, amplitude, f"{row['f1']:.2f}", f"{row['precision']:.2f}", f"{row['recall']:.2f}",
            f"{row['tp']}/{row['fp']}/{row['fn']}", _num(row["onset_err"]), _num(row["apex_err"]),
            _num(row["offset_err"]), _num(row["iou"])]


def _print(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160)  # a pipe or a file gets whole columns
    for name, block in result.items():
        if not isinstance(block, dict) or "cells" not in block:
            continue
        t = Table(title=f"real-footage spotting: {name} (micro, IoU >= 0.5; errors in frames, median |error|)")
        for col in CELL_COLUMNS:
            t.add_column(col, justify="left" if col in ("family", "placement") else "right")
        for cell_name, row in block["cells"].items():
            t.add_row(*_cell_row(cell_name, row))
        console.print(t)
        console.print(f"false micro events per minute on the un-injected videos: {block['false_per_min_all']} "
                      f"pooled over {block['minutes']} min, worst video {block['false_per_min_worst']}")
        console.print("  " + ", ".join(f"{k} {v:g}" for k, v in block["false_per_min"].items()))
    console.print(f"({result['wall_s']} s)")


# per person: the cells a reader compares first
PERSON_CELLS = ("warp calm@0.04", "mesh calm@0.04", "warp anywhere@0.04", "mesh anywhere@0.04", "warp calm@0.03")


def markdown(result: dict[str, Any]) -> str:
    """The figures as Markdown tables: per family, placement and amplitude; per person (F1 and TP/FN of the
    cells that matter most, false micro events a minute on that person's un-injected videos)."""
    lines: list[str] = []
    videos = result.get("videos", {})
    for name, block in result.items():
        if not isinstance(block, dict) or "cells" not in block:
            continue
        lines += [f"### {name}", "", "| " + " | ".join(CELL_COLUMNS) + " |", "|---" * len(CELL_COLUMNS) + "|"]
        for cell_name, row in block["cells"].items():
            lines.append("| " + " | ".join(_cell_row(cell_name, row)) + " |")
        lines += ["", f"False micro events a minute on the un-injected videos: {block['false_per_min_all']} pooled "
                  f"over {block['minutes']} min, worst video {block['false_per_min_worst']}.", ""]
        cells = [c for c in PERSON_CELLS if c in block["cells"]]
        people = block.get("people", {})
        if cells and people:
            lines += ["| person | videos | " + " | ".join(f"{c} F1 (TP/FN)" for c in cells) + " | false/min |",
                      "|---|---|" + "---|" * len(cells) + "---|"]
            for person in sorted(people):
                own = [v for v, info in videos.items() if info.get("person") == person]
                minutes = sum(videos[v]["minutes"] for v in own)
                false = sum(block["false_per_min"].get(v, 0.0) * videos[v]["minutes"] for v in own)
                rate = f"{false / minutes:.2f}" if minutes > 0 else "-"
                figures = []
                for c in cells:
                    row = people[person].get(c)
                    figures.append("-" if row is None or row["tp"] + row["fn"] == 0 else
                                   f"{row['f1']:.2f} ({row['tp']}/{row['fn']})")
                lines.append(f"| {person} | {', '.join(own)} | " + " | ".join(figures) + f" | {rate} |")
            lines.append("")
    return "\n".join(lines) + "\n"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

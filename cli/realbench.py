"""``mer-bench real``: the real-footage spotting benchmark's command line (see :mod:`training.realbench`)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cli.options import non_negative_number, positive_number
from core.paths import user_cache_dir
from realtime.face import FaceTrackerOptions
from realtime.face_model import FaceModelError, resolve_face_model
from realtime.native_stderr import native_stderr_silenced
from realtime.sources import SourceError
from training.realbench import BenchOptions, default_videos, prepare, run_benchmark
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mer-bench real",
        description=(
            "Spotting on real footage: micro-expressions are rendered onto real videos at fixed amplitudes "
            "(apex displacement as a fraction of the eye distance), the live analysis chain spots them, and "
            "the MEGC figures (F1 at IoU >= 0.5, precision, recall, onset/apex error) are reported per "
            "placement and amplitude, with false micro events per minute on the un-injected videos. "
            "Renders and motion are cached, so a second run only re-runs the spotter."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("videos", nargs="*", type=Path, metavar="VIDEO",
                   help="real videos with a face (default: ../shared/real/*.mp4 beside the repository)")
    p.add_argument("--amplitudes", type=_floats, default="0.02,0.03,0.04,0.06", metavar="A,B,...",
                   help="amplitudes to render, fractions of the inter-ocular distance")
    p.add_argument("--placement", choices=("calm", "anywhere", "both"), default="both",
                   help="where micro-expressions are placed: where the face is calm, anywhere it is visible "
                        "(talking and head turns included), or both")
    p.add_argument("--per-minute", type=positive_number, default=10.0, metavar="R", help="micro-expressions per minute")
    p.add_argument("--macro-per-minute", type=non_negative_number, default=1.0, metavar="R",
                   help="macro-expressions per minute (distractors)")
    p.add_argument("--seed", type=int, default=7, help="seed of the rendered expressions")
    p.add_argument("--lovo", action="store_true",
                   help="also choose the spotter's thresholds leave-one-video-out from a small grid and score "
                        "each video with the setting chosen on the others")
    p.add_argument("--max-fp", type=non_negative_number, default=1.0, metavar="R",
                   help="--lovo: false micro events per minute allowed on the training videos")
    p.add_argument("--work", type=Path, metavar="DIR", default=None,
                   help="cache of renders and motion (default: the user cache, realbench/)")
    p.add_argument("--face-model", type=Path, metavar="FILE", default=None,
                   help="face_landmarker.task (default: $MER_FACE_MODEL, else ../shared/models, else the cache)")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    videos = list(args.videos) or default_videos(_REPO)
    if not videos:
        print("mer-bench real: no videos given and ../shared/real not found; pass VIDEO files", file=sys.stderr)
        return 2
    missing = [v for v in videos if not v.is_file()]
    if missing:
        print(f"mer-bench real: no such video file: {missing[0]}", file=sys.stderr)
        return 2
    work = args.work or user_cache_dir() / "realbench"
    if work.exists() and not work.is_dir():
        print(f"mer-bench real: --work {work} is a file; give a folder for the renders and motion cache",
              file=sys.stderr)
        return 2
    try:
        model = args.face_model or (_REPO.parent / "shared" / "models" / "face_landmarker.task")
        face_model = resolve_face_model(args.face_model if args.face_model or not model.is_file() else model)
    except FaceModelError as exc:
        print(f"mer-bench real: {exc}", file=sys.stderr)
        return 2
    placements = ("calm", "anywhere") if args.placement == "both" else (args.placement,)
    settings = BenchOptions(amplitudes=args.amplitudes, placements=placements, micro_per_minute=args.per_minute,
                             macro_per_minute=args.macro_per_minute, seed=args.seed)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    progress = Progress(TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console, transient=True)
    tasks: dict[str, TaskID] = {}

    def report(stage: str, advance: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = progress.add_task(stage, total=total or None)
        progress.update(tasks[stage], advance=advance)

    start = time.monotonic()
    try:
        with native_stderr_silenced(True, keep_python=True), progress:
            data = prepare(videos, settings, work, tracker=FaceTrackerOptions(model_path=face_model),
                           progress=report)
        with console.status("spotting…"):
            result = run_benchmark(data, lovo=args.lovo, max_fp=args.max_fp)
    except KeyboardInterrupt:
        print("mer-bench real: interrupted", file=sys.stderr)
        return 130
    except (SourceError, SynthError, FaceModelError, OSError) as exc:
        print(f"mer-bench real: {exc}", file=sys.stderr)
        return 2
    result["videos"] = {v.stem: {"minutes": round(data[v.stem]["original"].minutes, 2), "path": str(v)}
                        for v in videos}
    result["settings"] = {"amplitudes": list(settings.amplitudes), "placements": list(placements),
                          "micro_per_minute": settings.micro_per_minute, "seed": settings.seed}
    result["wall_s"] = round(time.monotonic() - start, 1)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print(result)
    return 0


def _print(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for name in ("shipped", "lovo"):
        block = result.get(name)
        if block is None:
            continue
        title = "shipped settings" if name == "shipped" else "leave-one-video-out thresholds"
        t = Table(title=f"real-footage spotting — {title} (micro, IoU >= 0.5)")
        for col in ("placement", "amplitude", "F1", "precision", "recall", "TP/FP/FN", "masked", "onset err ms",
                    "apex err ms", *[f"F1 {v}" for v in block["videos"]]):
            t.add_column(col, justify="right" if col not in ("placement",) else "left")
        for tag, row in block["cells"].items():
            placement, _, amplitude = tag.partition("@")
            t.add_row(placement, amplitude, f"{row['f1']:.2f}", f"{row['precision']:.2f}", f"{row['recall']:.2f}",
                      f"{row['tp']}/{row['fp']}/{row['fn']}", str(row["masked"]), str(row["onset_err_ms"]),
                      str(row["apex_err_ms"]),
                      *[f"{block['videos'][v][tag]['f1']:.2f}" for v in block["videos"]])
        console.print(t)
        fp = ", ".join(f"{k} {v}" for k, v in block["false_per_min"].items())
        console.print(f"false micro events per minute on the un-injected videos: {fp}")
        if "chosen" in block:
            console.print("chosen on the other videos: " + "; ".join(
                f"{k}: {', '.join(f'{a}={b:g}' for a, b in v.items())}" for k, v in block["chosen"].items()))
    console.print(f"({result['wall_s']} s)")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

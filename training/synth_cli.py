"""``mer-synth``: write a synthetic micro-expression data set (recognition clips and spotting videos)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from training.aus import SCHEMES, AuError
from training.synth_faces import SHARED_FACES_ENV, FaceSourceError

__all__ = ["build_parser", "main"]

log = logging.getLogger("mer-synth")
_REPO = Path(__file__).resolve().parents[1]
_SHARED_MODEL = _REPO.parent / "shared" / "models" / "face_landmarker.task"


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 640x360, got {text!r}") from None
    return w, h


def _range(kind: type) -> Callable[[str], tuple[Any, ...]]:
    def parse(text: str) -> tuple[Any, ...]:
        parts = text.replace(",", "-").split("-") if kind is int else text.split(",")
        try:
            values = tuple(kind(p) for p in parts if p != "")
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected LO-HI (or one value), got {text!r}") from None
        if len(values) == 1:
            values = values * 2
        if len(values) != 2 or values[0] > values[1]:
            raise argparse.ArgumentTypeError(f"expected LO-HI with LO <= HI, got {text!r}")
        return values

    return parse


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _at_least_one(text: str) -> int:
    value = _positive_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mer-synth",
        description=(
            "Generate synthetic micro-expressions on real faces, with known onset/apex/offset. Writes a "
            "recognition set (aligned face-crop clips, one ME each) and/or a spotting set (long webcam-like "
            "videos with MEs, macro-expressions and distractors), plus README.md and manifest.json. "
            "Deterministic for a given --seed and settings."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    out = p.add_argument_group("output")
    out.add_argument("--out", required=True, type=Path, metavar="DIR",
                     help="output folder (DIR/recognition, DIR/spotting, DIR/README.md, DIR/manifest.json)")
    out.add_argument("--set", dest="which", choices=("recognition", "spotting", "both"), default="both",
                     help="which set(s) to write")
    out.add_argument("--force", action="store_true",
                     help="replace an existing, non-empty DIR/recognition or DIR/spotting")
    out.add_argument("--seed", type=int, default=0, help="random seed; same seed + settings = same data")
    out.add_argument("--workers", type=_at_least_one, default=1,
                     help="parallel processes (results do not depend on it)")

    faces = p.add_argument_group("faces")
    faces.add_argument("--faces", type=Path, metavar="DIR", default=None,
                       help="extra face photos (jpg/png/...): every face found becomes one more subject")
    faces.add_argument("--no-builtin-faces", action="store_true",
                       help="use only --faces photos, not the shared faces and the scikit-image astronaut")
    faces.add_argument("--shared-faces", type=Path, metavar="DIR", default=None,
                       help=f"folder with single_face.jpg and multi_face.jpg (default: ${SHARED_FACES_ENV}, "
                            "else ../shared/faces beside the repository)")
    faces.add_argument("--face-model", type=Path, metavar="FILE", default=None,
                       help="MediaPipe face_landmarker.task (default: $MER_FACE_MODEL, else "
                            "../shared/models/face_landmarker.task beside the repository, else the user cache)")
    faces.add_argument("--subjects", type=_at_least_one, default=None, metavar="N",
                       help="use the first N subjects (identities); default all found (7 built-in)")

    gen = p.add_argument_group("expressions")
    gen.add_argument("--fps", type=float, default=30.0, help="frame rate of clips and videos (e.g. 30, 200)")
    gen.add_argument("--classes", choices=sorted(SCHEMES), default="megc3",
                     help="class scheme: megc3 = negative/positive/surprise; casme5 = happiness/disgust/"
                          "repression/surprise/others")
    gen.add_argument("--micro-amplitude", type=_range(float), default=(0.03, 0.08), metavar="LO,HI",
                     help="ME peak landmark displacement as a fraction of the inter-ocular distance "
                          "(0.03-0.08 = 1.4-3.7 px on a 128-px crop)")
    gen.add_argument("--macro-amplitude", type=_range(float), default=(0.10, 0.22), metavar="LO,HI",
                     help="macro-expression peak displacement, fraction of the inter-ocular distance")

    rec = p.add_argument_group("recognition set")
    rec.add_argument("--clips-per-class", type=_positive_int, default=10, metavar="N",
                     help="clips per class per subject")
    rec.add_argument("--crop-size", type=int, default=128, metavar="PX", help="side of the aligned face crops")

    spot = p.add_argument_group("spotting set")
    spot.add_argument("--videos", type=_positive_int, default=6, metavar="N", help="number of videos")
    spot.add_argument("--video-seconds", type=float, default=30.0, metavar="S",
                      help="length of each video (20-60 s is typical; 5-600 accepted)")
    spot.add_argument("--video-size", type=_size, default=(640, 360), metavar="WxH", help="video frame size")
    spot.add_argument("--mes-per-video", type=_range(int), default=(4, 8), metavar="LO-HI",
                      help="micro-expressions per video (fewer if they do not fit with gaps of --me-gap)")
    spot.add_argument("--macros-per-video", type=_range(int), default=(1, 2), metavar="LO-HI",
                      help="macro-expressions (0.6-3 s) per video")
    spot.add_argument("--me-gap", type=float, default=1.5, metavar="S",
                      help="least gap between annotated intervals in a video")
    spot.add_argument("--blinks-per-minute", type=float, default=15.0, metavar="R", help="mean blink rate")

    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    return p


def _face_model(explicit: Path | None) -> Path | None:
    if explicit is not None:
        return explicit
    if os.environ.get("MER_FACE_MODEL", "").strip():
        return Path(os.environ["MER_FACE_MODEL"])
    return _SHARED_MODEL if _SHARED_MODEL.is_file() else None  # None: realtime.face looks in the user cache


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from rich.console import Console
    from rich.logging import RichHandler

    console = Console(stderr=True)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False)])
    try:
        return _run(args, console)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        return 130
    except (FaceSourceError, AuError, OSError, ValueError, RuntimeError) as exc:
        # SynthError and FaceModelError are RuntimeErrors; settings errors ValueErrors: one line each.
        console.print(f"[red]mer-synth: {exc}[/]")
        return 2


def _run(args: argparse.Namespace, console: Any) -> int:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.table import Table

    from training.synth import SynthGenerator, SynthSettings, write_dataset
    from training.synth_faces import load_identities

    settings = SynthSettings(
        seed=args.seed, fps=args.fps, scheme=args.classes, subjects=args.subjects,
        clips_per_class=args.clips_per_class, crop_size=args.crop_size, videos=args.videos,
        video_seconds=args.video_seconds, video_size=args.video_size,
        micro_amplitude=args.micro_amplitude, macro_amplitude=args.macro_amplitude,
        mes_per_video=args.mes_per_video, macros_per_video=args.macros_per_video, me_gap_s=args.me_gap,
        blinks_per_minute=args.blinks_per_minute,
    )
    sets = ("recognition", "spotting") if args.which == "both" else (args.which,)
    start = time.monotonic()
    with console.status("finding faces ..."):
        identities = load_identities(
            shared_faces=args.shared_faces, user_faces=args.faces, builtin=not args.no_builtin_faces,
            model_path=_face_model(args.face_model), limit=args.subjects,
        )
    faces_s = time.monotonic() - start
    console.print(f"{len(identities)} subjects: " + ", ".join(f"{i.subject} ({i.source})" for i in identities))
    progress = Progress(TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[unit]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                        console=console, transient=False)
    tasks: dict[str, TaskID] = {}

    def report(name: str, advance: int, total: int) -> None:
        if name not in tasks:
            tasks[name] = progress.add_task(name, total=total, unit="clips" if name == "recognition" else "frames")
        progress.update(tasks[name], advance=advance)

    with SynthGenerator(settings, identities) as gen, progress:
        summary = write_dataset(gen, args.out, sets=sets, workers=args.workers, force=args.force, progress=report)
    total_s = time.monotonic() - start
    table = Table(title=f"mer-synth → {args.out}", show_header=False)
    table.add_row("subjects", str(len(gen.identities)))
    if "recognition" in sets:
        table.add_row("recognition", f"{summary.recognition_clips} clips, {summary.recognition_frames} frames")
    if "spotting" in sets:
        distractors = ", ".join(f"{k} {v}" for k, v in sorted(summary.distractors.items()))
        table.add_row("spotting", f"{summary.videos} videos ({summary.container}), {summary.video_frames} frames, "
                                  f"{summary.micro} micro, {summary.macro} macro; distractors: {distractors}")
    table.add_row("time", f"{total_s:.1f} s (faces {faces_s:.1f} s)")
    console.print(table)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

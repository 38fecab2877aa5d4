"""``mer-synth``: write a synthetic micro-expression data set (recognition clips and spotting videos)."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mer_cli.help import DefaultsHelpFormatter
from mer_cli.options import (
    add_log_arguments,
    configure_logging,
    non_negative_integer,
    positive_integer,
    shows_native_logs,
)
from realtime.face import FaceTrackerOptions
from realtime.face_model import face_model_from_env
from realtime.native_stderr import native_stderr_silenced
from training.aus import SCHEMES, AuError
from training.synth import SynthGenerator
from training.synth_faces import SHARED_FACES_ENV, FaceSourceError, load_identities
from training.synth_onto import FAMILIES, OntoOptions, write_onto
from training.synth_options import SynthOptions
from training.synth_writer import write_dataset

__all__ = ["build_onto_parser", "build_parser", "main"]

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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mer-synth",
        description=(
            "Generate synthetic micro-expressions on real faces, with known onset/apex/offset. Writes a "
            "recognition set (aligned face-crop clips, one ME each) and/or a spotting set (long webcam-like "
            "videos with MEs, macro-expressions and distractors), plus README.md and manifest.json. "
            "Deterministic for a given --seed and settings. `mer-synth onto VIDEO... --out DIR` renders "
            "micro-expressions onto real video instead (see mer-synth onto --help)."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    out = p.add_argument_group("output")
    out.add_argument("--out", required=True, type=Path, metavar="DIR",
                     help="output folder (DIR/recognition, DIR/spotting, DIR/README.md, DIR/manifest.json)")
    out.add_argument("--set", dest="which", choices=("recognition", "spotting", "both"), default="both",
                     help="which set(s) to write")
    out.add_argument("--force", action="store_true",
                     help="replace an existing, non-empty DIR/recognition or DIR/spotting")
    out.add_argument("--seed", type=int, default=0, help="random seed; same seed + settings = same data")
    out.add_argument("--workers", type=positive_integer, default=1,
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
    faces.add_argument("--subjects", type=positive_integer, default=None, metavar="N",
                       help="use the first N subjects (identities); default all found (7 built-in)")

    gen = p.add_argument_group("expressions")
    gen.add_argument("--fps", type=float, default=30.0, help="frame rate of clips and videos (e.g. 30, 200)")
    gen.add_argument("--classes", choices=sorted(SCHEMES), default="megc3",
                     help="class scheme: megc3 = negative/positive/surprise; casme5 = happiness/disgust/"
                          "repression/surprise/others")
    # Defaults as the user would type them; argparse runs them through `type` like a typed value.
    gen.add_argument("--micro-amplitude", type=_range(float), default="0.03,0.08", metavar="LO,HI",
                     help="ME peak landmark displacement as a fraction of the inter-ocular distance "
                          "(0.03-0.08 = 1.4-3.7 px on a 128-px crop)")
    gen.add_argument("--macro-amplitude", type=_range(float), default="0.10,0.22", metavar="LO,HI",
                     help="macro-expression peak displacement, fraction of the inter-ocular distance")

    rec = p.add_argument_group("recognition set")
    rec.add_argument("--clips-per-class", type=non_negative_integer, default=10, metavar="N",
                     help="clips per class per subject")
    rec.add_argument("--crop-size", type=int, default=128, metavar="PX", help="side of the aligned face crops")

    spot = p.add_argument_group("spotting set")
    spot.add_argument("--videos", type=non_negative_integer, default=6, metavar="N", help="number of videos")
    spot.add_argument("--video-seconds", type=float, default=30.0, metavar="S",
                      help="length of each video (20-60 s is typical; 5-600 accepted)")
    spot.add_argument("--video-size", type=_size, default="640x360", metavar="WxH", help="video frame size")
    spot.add_argument("--mes-per-video", type=_range(int), default="4-8", metavar="LO-HI",
                      help="micro-expressions per video (fewer if they do not fit with gaps of --me-gap)")
    spot.add_argument("--macros-per-video", type=_range(int), default="1-2", metavar="LO-HI",
                      help="macro-expressions (0.6-3 s) per video")
    spot.add_argument("--me-gap", type=float, default=1.5, metavar="S",
                      help="least gap between annotated intervals in a video")
    spot.add_argument("--blinks-per-minute", type=float, default=15.0, metavar="R", help="mean blink rate")

    add_log_arguments(p, verbose_alias=True)
    return p


def _face_model(explicit: Path | None) -> Path | None:
    if explicit is not None:
        return explicit
    env = face_model_from_env()  # absolute, whatever folder it was set relative to
    if env is not None:
        return env
    return _SHARED_MODEL if _SHARED_MODEL.is_file() else None  # None: realtime.face looks in the user cache


def _sets(which: str) -> tuple[str, ...]:
    return ("recognition", "spotting") if which == "both" else (which,)


def check_out(out: Path, sets: Sequence[str], *, force: bool) -> str | None:
    """Why writing ``sets`` into ``out`` would be refused (the rule of ``training.synth_writer.write_dataset``), or
    None. Checked before faces are loaded, so a mistake is reported at once, not after the slow part."""
    for name in sets:
        path = out / name
        if path.exists() and not path.is_dir():
            return f"{path} exists and is not a folder"
        if path.is_dir() and any(path.iterdir()) and not force:
            return f"{path} exists and is not empty; pass --force to replace it"
    return None


def build_onto_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mer-synth onto",
        description=(
            "Render synthetic micro-expressions onto real video: the face is tracked in every frame and "
            "expressions are rendered onto it (by one of two families, see --family), riding on the video's own "
            "head motion, blinks, talking, lighting and noise. Writes the videos (re-encoded as a camera "
            "would), annotations.csv in the spotting-set format plus amplitude, side, source and family "
            "columns, README.md and manifest.json. Deterministic for a given --seed and settings."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("videos", nargs="+", type=Path, metavar="VIDEO", help="source video files (a face in view)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    p.add_argument("--force", action="store_true", help="write into a non-empty DIR (files of the same name "
                                                         "are replaced)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed + settings = same data")
    p.add_argument("--variants", type=positive_integer, default=1, metavar="N",
                   help="renderings per source video, each with its own expressions (named STEM_vK)")
    p.add_argument("--face-model", type=Path, metavar="FILE", default=None,
                   help="MediaPipe face_landmarker.task (default: $MER_FACE_MODEL, else "
                        "../shared/models/face_landmarker.task beside the repository, else the user cache)")
    e = p.add_argument_group("expressions")
    e.add_argument("--family", choices=FAMILIES, default="warp",
                   help="how expressions move the skin. warp: the generator's Action-Unit fields (smooth "
                        "Gaussian pushes) warped into the frame. mesh: the tracked face mesh itself deformed per "
                        "Action Unit (falloff along the mesh with an extent, direction and side balance drawn "
                        "per expression), warped piecewise-affinely over its triangles, shaded where skin is "
                        "compressed or stretched, with linear/smoothstep/skewed/hold profiles, and sensor noise "
                        "plus JPEG compression drawn per video on every frame (--quality is then drawn too). "
                        "Render both to train a spotter that does not learn one renderer")
    e.add_argument("--classes", choices=sorted(SCHEMES), default="megc3", help="class scheme")
    e.add_argument("--amplitude", type=_range(float), default="0.02,0.06", metavar="LO,HI",
                   help="micro-expression apex displacement (largest landmark movement) as a fraction of the "
                        "inter-ocular distance; one value for a fixed amplitude (real MEs: about 0.01-0.04)")
    e.add_argument("--duration", type=_range(float), default="0.2,0.5", metavar="LO,HI",
                   help="micro-expression length, onset to offset, seconds (phases drawn around CASME-II's)")
    e.add_argument("--per-minute", type=float, default=6.0, metavar="R",
                   help="micro-expressions per minute of video with a visible face")
    e.add_argument("--single-au", type=float, default=0.3, metavar="P",
                   help="fraction of micro-expressions that use one Action Unit of their recipe")
    e.add_argument("--one-sided", type=float, default=0.25, metavar="P",
                   help="fraction of micro-expressions that move one side of the face only")
    e.add_argument("--macro-per-minute", type=float, default=1.0, metavar="R",
                   help="macro-expressions (0.6-3 s, larger) per minute, as distractors; annotated as macro")
    e.add_argument("--gap", type=float, default=1.5, metavar="S", help="least gap between annotated expressions")
    e.add_argument("--calm", action="store_true",
                   help="place micro-expressions only where the face is calm (no talking, head still, judged "
                        "from the tracked landmarks); default: anywhere the face is visible")
    o = p.add_argument_group("encoding")
    o.add_argument("--codec", choices=("MJPG", "mp4v"), default="MJPG",
                   help="MJPG .avi (what webcams send) or mp4v .mp4")
    o.add_argument("--quality", type=int, default=90, metavar="Q",
                   help="JPEG quality of MJPG (1-100; the mesh family draws one per video)")
    p.add_argument("--clips", action="store_true",
                   help="also write the micro-expressions as a recognition set (DIR/recognition: aligned crops "
                        "as the live tracker sees them, one subject per source video) for mer-train")
    p.add_argument("--none-per-minute", type=float, default=0.0, metavar="R",
                   help="with --clips: also this many clips per minute labelled 'none', windows a permissive "
                        "spotter finds in the un-injected source video (talking, blinks, head turns), for a "
                        "model that can veto false windows (mer-train --scheme megc3n)")
    add_log_arguments(p, verbose_alias=True)
    return p


def _onto(argv: Sequence[str]) -> int:
    args = build_onto_parser().parse_args(argv)
    missing = [str(v) for v in args.videos if not v.is_file()]
    if missing:
        print(f"mer-synth onto: no such video file: {missing[0]}", file=sys.stderr)
        return 2
    if args.out.exists() and (not args.out.is_dir() or (any(args.out.iterdir()) and not args.force)):
        why = "is not a folder" if not args.out.is_dir() else "exists and is not empty; pass --force to write into it"
        print(f"mer-synth onto: {args.out} {why}", file=sys.stderr)
        return 2
    from rich.console import Console
    from rich.logging import RichHandler
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
    from rich.table import Table

    console = Console(stderr=True)
    configure_logging(args.log_level, handler=RichHandler(console=console, show_path=False))
    progress = Progress(TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("frames"), TimeElapsedColumn(), console=console)
    tasks: dict[str, TaskID] = {}
    current = {"video": ""}

    def report(stage: str, advance: int, total: int) -> None:
        key = f"{stage} {current['video']}"
        if advance == 0 or key not in tasks:
            tasks[key] = progress.add_task(key, total=total or None)
        progress.update(tasks[key], advance=advance)

    try:
        settings = OntoOptions(
            seed=args.seed, scheme=args.classes, amplitude=args.amplitude, micro_per_minute=args.per_minute,
            micro_duration_s=args.duration, single_au=args.single_au, one_sided=args.one_sided,
            macro_per_minute=args.macro_per_minute, gap_s=args.gap, calm=args.calm, codec=args.codec,
            quality=args.quality, family=args.family,
        )
        start = time.monotonic()
        with native_stderr_silenced(not shows_native_logs(args.log_level), keep_python=True), progress:
            summary = write_onto(args.videos, args.out, settings, variants=args.variants,
                                 tracker=FaceTrackerOptions(model_path=_face_model(args.face_model)),
                                 force=True, clips=args.clips, none_per_minute=args.none_per_minute,
                                 progress=report,
                                 on_video=lambda v: current.update(video=v))
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        return 130
    except (OSError, ValueError, RuntimeError) as exc:  # SynthError, SourceError, FaceModelError: one line
        console.print(f"mer-synth onto: {exc}", style="red", markup=False, soft_wrap=True)  # one line, as written
        return 2
    table = Table(title=f"mer-synth onto → {args.out}", show_header=False)
    table.add_row("videos", ", ".join(summary.videos))
    table.add_row("family", args.family)
    table.add_row("expressions", f"{summary.micro} micro, {summary.macro} macro over {summary.minutes:.1f} min")
    if args.clips:
        table.add_row("recognition", f"{summary.clips} clips in {args.out / 'recognition'}")
    table.add_row("time", f"{time.monotonic() - start:.1f} s")
    console.print(table)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["onto"]:
        return _onto(argv[1:])
    args = build_parser().parse_args(argv)
    problem = check_out(args.out, _sets(args.which), force=args.force)
    if problem is not None:
        print(f"mer-synth: {problem}", file=sys.stderr)
        return 2
    from rich.console import Console
    from rich.logging import RichHandler

    console = Console(stderr=True)
    configure_logging(args.log_level, handler=RichHandler(console=console, show_path=False))
    try:
        return _run(args, console)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        return 130
    except (FaceSourceError, AuError, OSError, ValueError, RuntimeError) as exc:
        # SynthError and FaceModelError are RuntimeErrors; settings errors ValueErrors: one line each.
        console.print(f"mer-synth: {exc}", style="red", markup=False, soft_wrap=True)
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

    settings = SynthOptions(
        seed=args.seed, fps=args.fps, scheme=args.classes, subjects=args.subjects,
        clips_per_class=args.clips_per_class, crop_size=args.crop_size, videos=args.videos,
        video_seconds=args.video_seconds, video_size=args.video_size,
        micro_amplitude=args.micro_amplitude, macro_amplitude=args.macro_amplitude,
        mes_per_video=args.mes_per_video, macros_per_video=args.macros_per_video, me_gap_s=args.me_gap,
        blinks_per_minute=args.blinks_per_minute,
    )
    sets = _sets(args.which)
    start = time.monotonic()
    # MediaPipe's native log lines would land in the progress output: hidden unless --log-level info or debug.
    with native_stderr_silenced(not shows_native_logs(args.log_level), keep_python=True), console.status("finding faces ..."):
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

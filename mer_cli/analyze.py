"""``mer-analyze``: analyse recorded videos offline, one output folder per video, and summarise the batch.

    mer-analyze PATH... --out DIR [--jobs N] [--shard K/N] [--force] [--blendshapes] [model and spotting options]
    mer-analyze merge DIR... [--out FILE]

This module is the edge where user mistakes become one line and an exit code; the work is done by
:mod:`mer_offline.batch` (which videos, where, skipping, workers, summary) and :mod:`mer_offline.analyze` (one video).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from engines.backends import load_engine
from engines.backends.base import EngineError
from engines.card import CardError
from mer_cli.exit_codes import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from mer_cli.options import add_log_arguments, add_model_arguments, add_spotting_arguments, configure_logging
from mer_cli.spotting import spotter_options, spotting_choice
from mer_core.errors import UserError
from mer_core.events import KINDS
from mer_offline.analyze import AnalyzeOptions
from mer_offline.batch import (
    BatchError,
    ModelIdentity,
    already_done,
    assign_names,
    collect_inputs,
    make_jobs,
    merge,
    parse_shard,
    prepare_output,
    run_jobs,
    select_shard,
    write_summary,
)
from realtime.face_model import FaceModelError, resolve_face_model
from realtime.native_stderr import native_stderr_silenced

if TYPE_CHECKING:
    from mer_offline.analyze import AnalyzeOptions, VideoJob, VideoResult
    from mer_offline.batch import ModelIdentity

PROG = "mer-analyze"

EPILOG = """\
inputs:
  A PATH is a video file, a folder (searched recursively for .mp4 .avi .mov .mkv .webm .m4v .mpg .mpeg .wmv),
  or a list file: a path ending in .txt or .lst, one video or folder per line, blank lines and lines starting
  with # ignored, relative paths taken from the list file's folder. Videos are ordered by absolute path.

outputs (DIR/<name>/; <name> = the video's stem, plus its extension or parent folders when stems clash):
  events.jsonl   the mer/1 records, exactly what `mer-live --video X --fast --record` writes
  events.csv     one row per spotted window (onset/apex/offset frames and seconds, kind, label, probabilities)
  frames.csv     one row per frame (time, face, score, threshold, region displacements[, blendshapes])
  rejected.csv   one row per candidate the rule spotter dropped (apex frame and time, region, score, reason)
  report.html    one self-contained page: score curve with the dropped candidates, a card per event, the
                 run's summary
  analysis.json  status and the re-run key; written last (a folder without it is analysed again)
  and DIR/summary.csv: one row per video, ordered by path (DIR/summary.shard-K-of-N.csv with --shard)

exit codes:
  0    every video was analysed (or had been, with the same model and settings)
  1    an unexpected internal error (please report it, with the traceback from --log-level debug)
  2    some video failed (unreadable, no face, cut short), a path held no video, or a bad option or model
  130  interrupted by Ctrl-C or SIGTERM (finished videos are kept; run the same command again to go on)

examples:
  mer-analyze clips/ --out results                       every video under clips/
  mer-analyze videos.txt --out results --jobs 2          a list file, two videos at a time
  mer-analyze /data/corpus --out results --shard $SLURM_ARRAY_TASK_ID/8     (sbatch --array=1-8)
  mer-analyze merge results                              results/summary.csv from every shard's videos
"""

MERGE_EPILOG = """\
merge reads DIR/*/analysis.json of every DIR (the --out folders of mer-analyze runs, e.g. the shards of a
Slurm array job) and writes one summary.csv with a row per video, ordered by path: the same table one run
over all the videos writes. A video found in several folders counts once (the latest analysis).

exit codes: 0 every video ok; 2 some video failed, or a DIR holds no analysed video.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Analyse recorded videos offline with the mer-live pipeline (every frame, the same engine "
        "and model) and write, per video, the mer/1 events, CSV tables and an HTML report; then a summary of "
        "the batch. `mer-analyze merge DIR...` joins the outputs of several runs (shards).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="video files, folders, or .txt/.lst list files")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (created if needed)")

    batch = p.add_argument_group("batch")
    batch.add_argument("--jobs", type=int, default=1, metavar="N",
                       help="analyse N videos at a time in separate processes (default: %(default)s); each "
                       "process runs the whole pipeline, so N above the number of CPU cores does not help")
    batch.add_argument("--shard", metavar="K/N",
                       help="analyse only every Nth video, starting with the Kth (K counts from 1, like "
                       "sbatch --array=1-N); give every shard the same PATHs, then `mer-analyze merge`")
    batch.add_argument("--force", action="store_true",
                       help="analyse again videos already analysed with the same model and settings "
                       "(default: skip them)")
    batch.add_argument("--no-progress", action="store_true",
                       help="no progress bar (automatic when stderr is not a terminal); one line per video stays")

    model = p.add_argument_group("model (as for mer-live)")
    add_model_arguments(model, auto=False)
    model.add_argument("--blendshapes", action="store_true",
                       help="also write MediaPipe's 52 face blendshape scores per frame into frames.csv")

    spot = p.add_argument_group("spotting (as for mer-live)")
    add_spotting_arguments(spot)

    add_log_arguments(p)
    return p


def build_merge_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"{PROG} merge",
        description="Join the outputs of mer-analyze runs (e.g. shards) into one summary.csv.",
        epilog=MERGE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="--out folders of mer-analyze runs")
    p.add_argument("--out", type=Path, metavar="FILE",
                   help="where to write the summary (default: summary.csv in the first DIR)")
    return p


# --- output --------------------------------------------------------------------------------------------


def _console(stderr: bool = True) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


class _Progress:
    """Rich progress: one bar over the videos, one per video being analysed (frames); thread-safe."""

    def __init__(self, console: Any, videos: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(TextColumn("{task.description:<32}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=console)
        self.videos = self.progress.add_task("videos", total=videos)
        self._tasks: dict[str, Any] = {}
        self._last: dict[str, float] = {}

    def __enter__(self) -> _Progress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start(self, name: str, total: int | None) -> None:
        label = name if len(name) <= 30 else name[:29] + "…"
        self._tasks[name] = self.progress.add_task(f"  {label}", total=total)

    def frames(self, name: str, done: int) -> None:
        now = time.monotonic()
        if name in self._tasks and now - self._last.get(name, 0.0) >= 0.1:
            self._last[name] = now
            self.progress.update(self._tasks[name], completed=done)

    def stop(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        if task is not None:
            self.progress.remove_task(task)

    def video_done(self) -> None:
        self.progress.advance(self.videos)


def _videos(n: int) -> str:
    return f"{n} video" if n == 1 else f"{n} videos"


def _describe(result: VideoResult) -> str:
    if result.skipped:
        return f"skipped  {result.name}: already analysed ({result.status}) with this model and settings"
    events = " / ".join(f"{result.events.get(k, 0)} {k}" for k in KINDS)
    counts = f"{result.frames} frames ({result.face_frames} with a face), {events} events"
    if result.status == "ok":
        return f"ok       {result.name}: {counts}, {result.analysis_fps or 0:.1f} fps"
    if result.status == "partial":
        return f"partial  {result.name}: {result.error}; analysed {counts}"
    if result.status == "no_face":
        return f"no face  {result.name}: {result.error}"
    return f"FAILED   {result.name}: {result.error}"


# --- commands ------------------------------------------------------------------------------------------


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_analyze(args: argparse.Namespace) -> int:
    console = _console()
    try:
        shard = parse_shard(args.shard) if args.shard else None
    except BatchError as exc:
        raise UserError(str(exc)) from None
    inputs = collect_inputs(args.paths)
    for problem in inputs.problems:
        console.print(f"{PROG}: warning: {problem}", markup=False)
    if not inputs.videos:
        raise UserError("no video to analyse: give video files, folders holding videos, or a .txt/.lst list")
    spotter = spotter_options(args)  # a bad setting is refused before anything is created or loaded
    spotting, spot_model = spotting_choice(args)
    out: Path = args.out
    try:
        prepare_output(out)  # created and writable, or one line now rather than a failure per video
    except BatchError as exc:
        raise UserError(str(exc)) from None
    try:
        engine = load_engine(args.model, backend=args.engine)
    except (EngineError, CardError) as exc:
        raise UserError(str(exc)) from None
    try:
        card = engine.card
        if card.channels != 1:
            raise UserError(f"model '{card.name}' wants {card.channels}-channel DIs; mer-analyze feeds grayscale "
                            "crops")
        try:
            face_model = resolve_face_model(args.face_model)
        except FaceModelError as exc:
            raise UserError(str(exc)) from None
        settings = AnalyzeOptions(model=args.model, engine=args.engine, face_model=str(face_model),
                                   landmark_every=args.landmark_every, blendshapes=args.blendshapes,
                                   spotter=spotter, spotting=spotting,
                                   spotting_model=None if spot_model is None else str(spot_model.path),
                                   # several videos at once already keep the cores busy
                                   face_workers=1 if args.jobs > 1 else None,
                                   quiet_native=args.log_level != "debug")
        model = ModelIdentity.of(engine)
        jobs = select_shard(make_jobs(inputs.videos, assign_names(inputs.videos), out, model, settings), shard)
        summary_path = out / ("summary.csv" if shard is None else f"summary.shard-{shard[0]}-of-{shard[1]}.csv")

        # MediaPipe's native lines (fd 2) are hidden unless --log-level debug; our own messages still show
        with native_stderr_silenced(args.log_level != "debug", keep_python=True):
            return _run_batch(args, console, jobs, settings, engine, model, summary_path, bool(inputs.problems))
    finally:
        engine.close()


def _run_batch(args: argparse.Namespace, console: Any, jobs: list[VideoJob], settings: AnalyzeOptions,
               engine: Any, model: ModelIdentity, summary_path: Path, problems: bool) -> int:
    """Skip what is done, analyse the rest, write the summary; the exit code."""
    results: list[VideoResult] = []
    todo = []
    show = not args.no_progress and console.is_terminal
    progress = _Progress(console, len(jobs)) if show else None

    def report(result: VideoResult) -> None:
        results.append(result)
        (progress.progress.console if progress is not None else console).print(_describe(result), markup=False)
        if progress is not None:
            progress.video_done()

    started = time.monotonic()
    try:
        if progress is not None:
            progress.__enter__()
        for job in jobs:
            stored = None if args.force else already_done(job)
            if stored is not None:
                report(stored)
            else:
                todo.append(job)
        run_jobs(todo, settings, engine=engine, model=model, workers=max(1, args.jobs), progress=progress,
                 report=report)
    except KeyboardInterrupt:
        if progress is not None:
            progress.__exit__()
        finished = sum(1 for r in results if r.status != "interrupted")
        console.print(f"{PROG}: interrupted: {finished} of {len(jobs)} videos done; run the same command again to "
                      "go on (finished videos are skipped)", markup=False)
        return EXIT_INTERRUPTED
    if progress is not None:
        progress.__exit__()
    try:
        write_summary(summary_path, results)
    except OSError as exc:  # the folder was writable when the batch started; the videos' results are kept
        raise UserError(f"cannot write the summary {summary_path}: {exc.strerror or exc}; each video's results "
                        f"are in its folder (`{PROG} merge {summary_path.parent} --out FILE` writes the summary "
                        "elsewhere)") from None
    bad = [r for r in results if not r.ok]
    skipped = sum(1 for r in results if r.skipped)
    console.print(f"{PROG}: {_videos(len(results))}: {len(results) - len(bad)} ok ({skipped} already done), "
                  f"{len(bad)} not ok; {time.monotonic() - started:.1f} s; summary {summary_path}", markup=False)
    return EXIT_USAGE if bad or problems else EXIT_OK


def run_merge(argv: list[str]) -> int:
    args = build_merge_parser().parse_args(argv)
    out: Path = args.out or args.dirs[0] / "summary.csv"
    console = _console()
    try:
        results = merge(args.dirs, out)
    except BatchError as exc:
        print(f"{PROG} merge: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"{PROG} merge: error: cannot write {out}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    bad = [r for r in results if not r.ok]
    console.print(f"{PROG} merge: {_videos(len(results))} from {len(args.dirs)} folder(s): {len(results) - len(bad)} "
                  f"ok, {len(bad)} not ok; summary {out}", markup=False)
    return EXIT_USAGE if bad else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["merge"]:
        return run_merge(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    if args.landmark_every < 1:
        parser.error("--landmark-every must be >= 1")
    configure_logging(args.log_level)
    if args.log_level != "debug":
        # FFmpeg's per-frame complaints about a damaged file would bury the one-line messages (see mer-live).
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")
        os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")
    previous = signal.signal(signal.SIGTERM, _on_signal)
    try:
        return run_analyze(args)
    except UserError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

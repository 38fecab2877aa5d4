"""``mer-bench``: measure the real pipeline and show the figures next to the project's targets.

Runs, on a generated synthetic video (default, so it works anywhere) or ``--video FILE``:
1. start-up: a fresh ``mer-live`` process, from spawn to its first analysed frame;
2. offline (``--fast``): throughput and per-stage p50/p95 (decode, face, motion, spotting, DI, classify,
   publish), event ``latency_ms`` / ``delay_ms``, and spotting F1 against the annotations when known;
   around it, the bare MediaPipe landmarker (VIDEO mode, one face) on the same frames with the same decode,
   and the ratio of the two frame rates (``--repeats`` alternates them);
3. paced at the source's fps for ``--paced-seconds``: dropped frames;
4. paced at each ``--paced-fps`` on a generated video of that frame rate: dropped frames and the
   ``--landmark-every`` N in use (the one ``auto`` chose);
5. classification latency per available engine at batch 1 and 8;
and peak RSS. A Rich table, or ``--json`` for machines. Nothing here is asserted in tests.

Other measurements, each with its own --help:
  mer-bench real          spotting on real footage of many people (renders, person folds, both spotters)
  mer-bench engines       inference latency per backend and model
  mer-bench spotting      spotting F1 of the live pipeline on mer-synth spotting videos
  mer-bench recognition   a model on recognition clips cut from real footage (mer-synth onto --clips)
  mer-bench soak          a long paced run: memory, drops and latency over time
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from engines.backends import EngineError, load_engine
from engines.card import CardError
from mer_cli.exit_codes import EXIT_OK, EXIT_USAGE
from mer_cli.options import (
    add_log_arguments,
    check_face_workers,
    configure_logging,
    landmark_every_arg,
    non_negative_number,
    positive_integer,
    positive_number,
)
from mer_cli.progress import Steps
from mer_cli.realbench import main as real_main
from mer_core.errors import UserError
from mer_offline.bench import (
    STAGES,
    RunFigures,
    engine_latency,
    landmarker_baseline,
    run_pipeline,
    throughput_ratio,
)
from realtime.face import FaceTracker, FaceTrackerOptions
from realtime.face_model import FaceModelError
from realtime.native_stderr import native_logs_hidden
from training.demo import synthetic_video
from training.synth_options import SynthError

log = logging.getLogger(__name__)


def measure_startup(video: Path, face_model: str | None, engine: str, model: str | None) -> float | None:
    """Seconds from spawning ``mer-live`` to its first analysed frame (CLOCK_MONOTONIC is system-wide)."""
    cmd = [sys.executable, "-m", "mer_cli.live", "--video", str(video), "--fast", "--no-dashboard",
           "--zmq", "none", "--duration", "0.5", "--log-level", "info", "--engine", engine]
    if face_model:
        cmd += ["--face-model", face_model]
    if model:
        cmd += ["--model", model]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    match = re.search(r"first frame analysed at monotonic ([0-9.]+)", proc.stderr)
    if not match:
        log.warning("start-up probe failed (exit %s): %s", proc.returncode, proc.stderr.strip()[-300:])
        return None
    return round(float(match.group(1)) - t0, 3)


TARGETS = [
    ("offline throughput (fps)", "fast.fps", ">=", 100.0),
    ("offline pipeline / bare landmarker (fps ratio)", "ratio.ratio", ">=", 0.9),
    ("paced: dropped frames", "paced.dropped", "<=", 0),
    ("event latency_ms p95 (paced, live-like)", "paced.latency_ms.p95", "<=", 50.0),
    ("ONNX Runtime b1 p50 (ms)", "engines.onnxruntime b1.p50", "<=", 5.0),
    ("start-up to first frame (s)", "startup_s", "<=", 3.0),
    ("peak RSS (MB)", "peak_rss_mb", "<=", 1536.0),
]


def _get(data: dict[str, Any], dotted: str) -> Any:
    cur: Any = data
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _help_texts(doc: str) -> tuple[str, str]:
    """(description, epilog) for --help from the module docstring: its first line without the command's name,
    then the rest, both without reStructuredText backticks."""
    first, _, rest = doc.replace("``", "").partition("\n")
    first = first.removeprefix("mer-bench: ").strip()
    return first[:1].upper() + first[1:], rest.strip()


def build_parser() -> argparse.ArgumentParser:
    description, epilog = _help_texts(__doc__ or "")
    p = argparse.ArgumentParser(prog="mer-bench", description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=epilog)
    p.add_argument("--video", type=Path, help="video to measure on (default: a generated synthetic one)")
    p.add_argument("--annotations", type=Path, help="mer-synth annotations.csv for spotting F1 (auto for the default)")
    p.add_argument("--seconds", type=positive_number, default=60.0,
                   help="length of the generated video (default %(default)s)")
    p.add_argument("--fps", type=positive_number, default=30.0,
                   help="frame rate of the generated video (default %(default)s)")
    p.add_argument("--paced-seconds", type=non_negative_number, default=60.0,  # the target: 60 s at 30 fps, no drops
                   help="how long to run paced at the source fps for the drop count; 0 skips (default %(default)s)")
    p.add_argument("--engine", default="auto", choices=("auto", "tensorrt", "onnxruntime", "torch"),
                   help="inference backend, as for mer-live (default %(default)s)")
    p.add_argument("--model", help="model to use (default: bundled)")
    p.add_argument("--face-model", help="face_landmarker.task (default: $MER_FACE_MODEL / cache)")
    p.add_argument("--landmark-every", type=landmark_every_arg, default=1, metavar="N|auto",
                   help="landmarks every Nth frame; auto: N from the measured landmark cost and the source's "
                   "frame rate (default %(default)s)")
    p.add_argument("--face-workers", type=int, metavar="N",
                   help="MediaPipe landmarkers on consecutive frames at once, as for mer-live (default: 2 with "
                   "2+ cores, else 1)")
    p.add_argument("--repeats", type=positive_integer, default=1, metavar="K",
                   help="offline runs, each between two bare-landmarker runs, for the ratio (default %(default)s)")
    p.add_argument("--paced-fps", type=positive_number, nargs="+", default=[], metavar="FPS",
                   help="also run paced on a generated video at each of these frame rates (e.g. 120 200) and "
                   "report its drops and --landmark-every N")
    p.add_argument("--paced-fps-seconds", type=positive_number, default=30.0, metavar="S",
                   help="length of those generated videos (default %(default)s)")
    p.add_argument("--skip-startup", action="store_true", help="do not measure process start-up")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    add_log_arguments(p)
    return p


# mer-bench NAME ...: measurements apart from the pipeline's, each a module with main(argv)
SUBCOMMANDS = {
    "engines": "mer_cli.bench_engines",  # inference latency per backend and model
    "spotting": "mer_cli.bench_spotting",  # spotting F1 of the live pipeline on mer-synth spotting videos
    "recognition": "mer_cli.bench_recognition",  # a model on recognition clips of real footage (mer-synth onto --clips)
    "soak": "mer_cli.bench_soak",  # a long paced run: memory, drops and latency over time
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["real"]:  # the real-footage spotting benchmark renders with the generator (training)
        return real_main(argv[1:])
    if argv[:1] and argv[0] in SUBCOMMANDS:  # the other measurements, each with its own options (--help)
        return int(importlib.import_module(SUBCOMMANDS[argv[0]]).main(argv[1:]))
    parser = build_parser()
    args = parser.parse_args(argv)
    check_face_workers(parser, args.face_workers)
    # StderrHandler follows sys.stderr, which native_logs_hidden() keeps while it hides fd 2 (native lines)
    configure_logging(args.log_level)
    try:
        with native_logs_hidden(args.log_level != "debug"):
            return _run(args)
    except UserError as exc:
        print(f"mer-bench: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _step_count(args: argparse.Namespace) -> int:
    """How many steps _run takes, for the [n/N] of its progress lines."""
    repeats = max(1, args.repeats)
    return ((args.video is None) + 1 + (not args.skip_startup) + 2 * repeats + 1 + (args.paced_seconds > 0)
            + 2 * len(args.paced_fps) + 1)


def _frames_note(note: Any) -> Any:
    """A pipeline's status records as a progress note: frames so far and the rate."""
    return lambda status: note(f"{status.frames} frames, {status.fps_proc:.0f} fps")


def _generated(steps: Steps, what: str, *, seconds: float, fps: float, face_model: str | None) -> tuple[Path, Path]:
    with steps.step(what) as note:
        try:
            return synthetic_video(seconds=seconds, fps=fps, face_model=face_model,
                                   progress=lambda done, total: note(f"{done}/{total} frames"))
        except SynthError as exc:  # e.g. --seconds 4: the generator makes 5 s at least
            raise UserError(f"cannot generate a {seconds:g} s video at {fps:g} fps to measure on: {exc}") from None


def _run(args: argparse.Namespace) -> int:
    steps = Steps("mer-bench", _step_count(args))
    video, annotations = args.video, args.annotations
    skipped: dict[str, str] = {}  # what was not measured, and why (shown instead of a value)
    if video is None:
        video, annotations = _generated(steps, "generating a synthetic video", seconds=args.seconds, fps=args.fps,
                                        face_model=args.face_model)
    elif not Path(video).is_file():
        raise UserError(f"{video}: no such file")
    if annotations is None:
        skipped["fast.spotting"] = "no annotations: give --annotations"
    with steps.step("loading the model"):
        try:
            engine = load_engine(args.model, backend=args.engine)
        except (EngineError, CardError) as exc:
            raise UserError(str(exc)) from None
    card = engine.card

    def tracker_factory() -> Any:
        try:
            return FaceTracker(FaceTrackerOptions(model_path=args.face_model, crop_size=card.crop_size,
                                                  landmark_every=args.landmark_every))
        except FaceModelError as exc:
            raise UserError(str(exc)) from None

    result: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "engine": engine.name, "reason": engine.reason,
                                          "video": str(video), "landmark_every": args.landmark_every}}
    if args.skip_startup:
        skipped["startup_s"] = "--skip-startup"
    else:
        with steps.step("start-up of a fresh mer-live"):
            result["startup_s"] = measure_startup(Path(video), args.face_model, args.engine, args.model)
        if result["startup_s"] is None:
            skipped["startup_s"] = "the start-up probe failed: see the warning above"
    landmarker: list[dict[str, Any]] = []
    fast: list[RunFigures] = []
    for i in range(max(1, args.repeats)):  # landmarker, pipeline, landmarker, ...: the same load around each
        with steps.step("bare MediaPipe landmarker"):
            landmarker.append(landmarker_baseline(Path(video), args.face_model))
        with steps.step(f"offline run {i + 1} (--fast)") as note:
            fast.append(run_pipeline(Path(video), fast=True, engine=engine, tracker_factory=tracker_factory,
                                     card=card, annotations=annotations, face_workers=args.face_workers,
                                     on_status=_frames_note(note)))
    with steps.step("bare MediaPipe landmarker"):
        landmarker.append(landmarker_baseline(Path(video), args.face_model))
    result["fast"] = fast[0].__dict__
    result["landmarker"] = landmarker[0]
    result["ratio"] = throughput_ratio([f.fps for f in fast], [b["fps"] for b in landmarker])
    if args.paced_seconds > 0:
        with steps.step(f"paced run ({args.paced_seconds:g} s at the video's frame rate)") as note:
            paced = run_pipeline(Path(video), fast=False, engine=engine, tracker_factory=tracker_factory,
                                 card=card, annotations=None, seconds=args.paced_seconds,
                                 face_workers=args.face_workers, on_status=_frames_note(note))
            result["paced"] = {"frames": paced.frames, "dropped": paced.dropped, "seconds": paced.wall_s,
                               "latency_ms": paced.latency_ms, "delay_ms": paced.delay_ms, "events": paced.events}
        if paced.latency_ms.get("p95") is None:
            skipped["paced.latency_ms"] = "no event in the paced run"
    else:
        skipped["paced"] = "--paced-seconds 0"
    targets = list(TARGETS)
    for fps in args.paced_fps:  # e.g. a 120 or 200 fps lab camera, with --landmark-every auto

        clip, _ = _generated(steps, f"generating a {fps:g} fps video", seconds=args.paced_fps_seconds, fps=fps,
                             face_model=args.face_model)
        with steps.step(f"paced at {fps:g} fps ({args.paced_fps_seconds:g} s)") as note:
            run = run_pipeline(clip, fast=False, engine=engine, tracker_factory=tracker_factory, card=card,
                               annotations=None, face_workers=args.face_workers, on_status=_frames_note(note))
        key = f"{fps:g}".replace(".", "_")
        result.setdefault("paced_fps", {})[key] = {
            "fps": fps, "frames": run.frames, "dropped": run.dropped, "seconds": run.wall_s,
            "landmark_every": run.landmark_every, "auto": run.auto,
            "stage_ms": {s: v["p50"] for s, v in run.stage_ms.items()}}
        targets.append((f"paced at {fps:g} fps, landmark_every {args.landmark_every} (N = {run.landmark_every}): "
                        "dropped frames", f"paced_fps.{key}.dropped", "<=", 0))
    engine.close()
    unavailable: dict[str, str] = {}
    with steps.step("classification latency per engine") as note:
        result["engines"] = engine_latency(args.model, unavailable=unavailable, progress=note)
    for backend, why in unavailable.items():
        skipped[f"engines.{backend}"] = f"{backend} not available: {why}"
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["skipped"] = skipped
    result["targets"] = [
        {"what": what, "value": _get(result, key), "target": f"{op} {limit:g}",
         "met": None if _get(result, key) is None else (
             _get(result, key) >= limit if op == ">=" else _get(result, key) <= limit),
         **({"skipped": why} if _get(result, key) is None and (why := _why_missing(skipped, key)) else {})}
        for what, key, op, limit in targets
    ]
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_tables(result)
    return EXIT_OK


def _why_missing(skipped: dict[str, str], key: str) -> str:
    """Why the figure at dotted ``key`` was not measured ("" if nobody said): the reason given for it or for
    the part it belongs to (``engines.onnxruntime b1.p50`` → ``engines.onnxruntime``)."""
    parts = key.replace(" ", ".").split(".")
    for n in range(len(parts), 0, -1):
        if (why := skipped.get(".".join(parts[:n]))) is not None:
            return why
    return ""


# --- the report: figures in words, never None or a Python dict -----------------------------------------


def _value(value: Any, why: str = "") -> str:
    """A measured figure, or why there is none."""
    if value is None:
        return f"skipped ({why})" if why else "-"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _pcts(figures: dict[str, Any] | None, unit: str = "ms") -> str:
    """``{"p50": 3.1, "p95": 5.2}`` → ``p50 3.1 ms, p95 5.2 ms`` (``-`` when not measured)."""
    if not figures or all(v is None for v in figures.values()):
        return "-"
    return ", ".join(f"{k} {_value(v)}{'' if v is None else ' ' + unit}" for k, v in figures.items())


def _events(counts: dict[str, int]) -> str:
    """``{"micro": 1, "macro": 0}`` → ``1 micro, 0 macro``."""
    return ", ".join(f"{n} {kind}" for kind, n in counts.items()) or "none"


def _spotting(scores: dict[str, float] | None, why: str) -> str:
    if scores is None:
        return f"not scored ({why})" if why else "not scored"
    return (f"F1 {scores['f1']:g} (precision {scores['precision']:g}, recall {scores['recall']:g}; "
            f"{scores['true']:g} true, {scores['predicted']:g} found)")


def _auto(figures: dict[str, float]) -> str:
    """What --landmark-every auto chose N from, in words."""
    if not figures:
        return ""
    parts = [f"{k.removesuffix('_ms')} {v:g} ms" if k.endswith("_ms") else f"{v:g} {k}" for k, v in figures.items()]
    return f" (auto, from {', '.join(parts)})"


def _engines(engines: dict[str, dict[str, float]]) -> str:
    return "; ".join(f"{name} {_pcts(figures)}" for name, figures in engines.items()) or "none loaded"


def _print_tables(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    skipped: dict[str, str] = result.get("skipped", {})
    fast = result["fast"]
    t = Table(title=f"mer-bench — {result['machine']['cpus']} CPUs, engine {result['machine']['engine']}")
    t.add_column("stage")
    t.add_column("p50 ms", justify="right")
    t.add_column("p95 ms", justify="right")
    for stage in STAGES:
        v = fast["stage_ms"].get(stage, {})
        t.add_row(stage, _value(v.get("p50")), _value(v.get("p95")))
    console.print(t)
    t = Table(title="targets")
    for col in ("what", "measured", "target", "met"):
        t.add_column(col)
    for row in result["targets"]:
        met = {True: "[green]yes", False: "[red]no", None: "-"}[row["met"]]
        t.add_row(row["what"], _value(row["value"], row.get("skipped", "")), row["target"], met)
    console.print(t)
    lines = [
        f"offline: {fast['frames']} frames in {fast['wall_s']:g} s = {fast['fps']:g} fps; events: "
        f"{_events(fast['events'])}; latency {_pcts(fast['latency_ms'])}; delay {_pcts(fast['delay_ms'])}; "
        f"spotting {_spotting(fast['spotting'], skipped.get('fast.spotting', ''))}",
    ]
    ratio = result["ratio"]
    lines.append(
        f"bare landmarker (VIDEO mode, one face, same decode): {' / '.join(f'{x:g}' for x in ratio['landmarker_fps'])}"
        f" fps, landmarks {_pcts(result['landmarker']['landmark_ms'])}; pipeline "
        f"{' / '.join(f'{x:g}' for x in ratio['pipeline_fps'])} fps with {fast['face_workers']} landmark worker(s); "
        f"ratio {ratio['ratio']:g} (runs {', '.join(f'{x:g}' for x in ratio['ratios'])})")
    for run in result.get("paced_fps", {}).values():
        lines.append(f"paced at {run['fps']:g} fps: {run['frames']} frames, {run['dropped']} dropped, "
                     f"landmark_every {_value(run['landmark_every'])}{_auto(run['auto'])}")
    if "paced" in result:
        paced = result["paced"]
        lines.append(f"paced: {paced['frames']} frames in {paced['seconds']:g} s, {paced['dropped']} dropped; events: "
                     f"{_events(paced['events'])}; latency {_pcts(paced['latency_ms'])}; delay "
                     f"{_pcts(paced['delay_ms'])}")
    else:
        lines.append(f"paced: skipped ({skipped.get('paced', 'not measured')})")
    lines.append(f"engines: {_engines(result['engines'])}")
    startup = result.get("startup_s")
    lines.append(f"peak RSS {result['peak_rss_mb']:g} MB; start-up "
                 f"{_value(startup, skipped.get('startup_s', ''))}{'' if startup is None else ' s'}")
    for line in lines:
        console.print(line, highlight=False, markup=False)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

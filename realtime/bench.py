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
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from realtime.errors import EXIT_OK, EXIT_USAGE, UserError
from realtime.live_cli import landmark_every_arg
from realtime.sources import FrameSource

log = logging.getLogger(__name__)

STAGES = ("decode", "face", "motion", "spotting", "di", "classify", "publish")


class TimedSource(FrameSource):
    """Wraps a source so the capture thread's ``read()`` is timed as the ``decode`` stage."""

    def __init__(self, inner: FrameSource, record: Any) -> None:
        super().__init__()
        self.inner = inner
        self.name, self.fps, self.is_live, self.frame_count = inner.name, inner.fps, inner.is_live, inner.frame_count
        self._record = record

    def read(self) -> np.ndarray | None:
        t0 = time.perf_counter()
        frame = self.inner.read()
        if frame is not None:
            self._record("decode", (time.perf_counter() - t0) * 1e3)
        self.error = self.inner.error
        return frame

    def reconnect(self) -> bool:
        return self.inner.reconnect()

    def close(self) -> None:
        self.inner.close()


def _pct(values: list[float] | np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if len(values) else None


@dataclass
class RunFigures:
    frames: int = 0
    dropped: int = 0
    wall_s: float = 0.0
    fps: float = 0.0
    stage_ms: dict[str, dict[str, float | None]] = field(default_factory=dict)
    latency_ms: dict[str, float | None] = field(default_factory=dict)
    delay_ms: dict[str, float | None] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)
    spotting: dict[str, float] | None = None
    landmark_every: int | None = None  # the tracker's N at the end (the one --landmark-every auto chose)
    auto: dict[str, float] = field(default_factory=dict)  # what auto chose N from (ms, fps)


def run_pipeline(video: Path, *, fast: bool, engine: Any, tracker_factory: Any, card: Any,
                 annotations: Path | None, seconds: float | None = None,
                 sink: Callable[[Any], object] | None = None) -> RunFigures:
    """One in-process pipeline run over ``video`` with full stage sampling; events also go to ``sink``."""
    from realtime.analysis import AnalyzerOptions
    from realtime.events import EventRecord
    from realtime.pipeline import Pipeline, PipelineOptions
    from realtime.sources import open_source

    records: list[Any] = []
    options = PipelineOptions(
        fast=fast, keep_stage_samples=True, duration_s=seconds,
        analyzer=AnalyzerOptions.for_card(card),
    )
    tracker = tracker_factory()
    source = open_source(str(video))
    pipeline: Pipeline | None = None

    def record(stage: str, ms: float) -> None:
        if pipeline is not None:
            pipeline._record_stage(stage, ms)

    def publish(record: Any) -> None:
        records.append(record)
        if sink is not None and isinstance(record, EventRecord):
            sink(record)

    timed = TimedSource(source, record)
    try:
        pipeline = Pipeline(timed, tracker, engine, publish, options)
        summary = pipeline.run()
    finally:
        tracker.close()
        timed.close()
    events = [r for r in records if isinstance(r, EventRecord)]
    figures = RunFigures(
        landmark_every=getattr(tracker, "landmark_every", None), auto=dict(getattr(tracker, "auto_figures", {})),
        frames=summary.frames, dropped=summary.dropped, wall_s=summary.wall_s, fps=summary.mean_fps,
        stage_ms={s: {"p50": _pct(v, 50), "p95": _pct(v, 95)} for s, v in pipeline.stage_samples.items()},
        latency_ms={"p50": _pct([e.latency_ms for e in events], 50), "p95": _pct([e.latency_ms for e in events], 95)},
        delay_ms={"p50": _pct([e.delay_ms for e in events], 50), "p95": _pct([e.delay_ms for e in events], 95)},
        events=dict(summary.events),
    )
    if annotations is not None:
        figures.spotting = score_against(events, annotations, video.stem)
    return figures


def landmarker_baseline(video: Path, face_model: str | None = None) -> dict[str, Any]:
    """The bare MediaPipe FaceLandmarker over ``video``: VIDEO mode, one face, public API, every frame decoded
    by OpenCV as the pipeline's source does and converted to RGB (a reused buffer), on this thread; what a
    minimal script gets. ``fps`` counts decode + conversion + landmarks; ``landmark_ms`` the landmarks alone."""
    import cv2

    from realtime.face import _mediapipe, resolve_face_model

    mp = _mediapipe()
    vision = mp.tasks.vision
    options = vision.FaceLandmarkerOptions(
        base_options=mp.tasks.BaseOptions(model_asset_path=str(resolve_face_model(face_model))),
        running_mode=vision.RunningMode.VIDEO, num_faces=1)
    cap = cv2.VideoCapture(str(video))
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0) or 30.0
    landmark_ms: list[float] = []
    rgb: np.ndarray | None = None
    try:
        with vision.FaceLandmarker.create_from_options(options) as landmarker:
            start = time.perf_counter()
            while True:
                ok, frame = cap.read()
                if not ok or frame is None:
                    break
                t0 = time.perf_counter()
                rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB, dst=rgb)
                landmarker.detect_for_video(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb),
                                            int(round(len(landmark_ms) * 1000.0 / fps)))
                landmark_ms.append((time.perf_counter() - t0) * 1e3)
            wall = time.perf_counter() - start
    finally:
        cap.release()
    n = len(landmark_ms)
    return {"frames": n, "wall_s": round(wall, 3), "fps": round(n / wall, 2) if n and wall > 0 else 0.0,
            "landmark_ms": {"p50": _pct(landmark_ms, 50), "p95": _pct(landmark_ms, 95)}}


def throughput_ratio(pipeline_fps: list[float], landmarker_fps: list[float]) -> dict[str, Any]:
    """Full offline pipeline against the bare landmarker, from runs that alternated on one machine: landmarker,
    pipeline, landmarker, pipeline, ..., landmarker (one more landmarker run than pipeline runs). Each pipeline
    run is compared with the mean of the landmarker runs just before and after it (the machine's load drifts);
    ``ratio`` is the median over runs (>= 0.9 is the target)."""
    if len(landmarker_fps) != len(pipeline_fps) + 1 or not pipeline_fps:
        raise ValueError("need one landmarker run before every pipeline run and one after the last")
    ratios = [round(fps / ((landmarker_fps[i] + landmarker_fps[i + 1]) / 2), 3) if landmarker_fps[i] > 0
              and landmarker_fps[i + 1] > 0 else 0.0 for i, fps in enumerate(pipeline_fps)]
    return {"landmarker_fps": landmarker_fps, "pipeline_fps": pipeline_fps, "ratios": ratios,
            "ratio": round(float(np.median(ratios)), 3)}


def score_against(events: list[Any], annotations: Path, video_id: str) -> dict[str, float]:
    """MEGC spotting scores of the micro events against a mer-synth annotations.csv."""
    import csv

    from training.metrics import spotting_scores

    with annotations.open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["video"] == video_id and r["kind"] == "micro"]
    truth = [(int(r["onset"]), int(r["offset"])) for r in rows]
    pred = [(e.onset.frame, e.offset.frame) for e in events if e.kind == "micro"]
    s = spotting_scores(pred, truth)
    return {"precision": round(s.precision, 4), "recall": round(s.recall, 4), "f1": round(s.f1, 4),
            "true": len(truth), "predicted": len(pred)}


def measure_startup(video: Path, face_model: str | None, engine: str, model: str | None) -> float | None:
    """Seconds from spawning ``mer-live`` to its first analysed frame (CLOCK_MONOTONIC is system-wide)."""
    cmd = [sys.executable, "-m", "realtime.live_cli", "--video", str(video), "--fast", "--no-dashboard",
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


def engine_latency(model: str | None) -> dict[str, dict[str, float]]:
    """predict() p50/p95 at batch 1 and 8 for every backend that loads here."""
    from engines.backends import BACKEND_NAMES, EngineError, load_engine
    from engines.benchmark import time_predict
    from engines.card import CardError

    out: dict[str, dict[str, float]] = {}
    for backend in BACKEND_NAMES:
        try:
            engine = load_engine(model, backend=backend)
        except (EngineError, CardError) as exc:
            log.info("%s: not available (%s)", backend, exc)
            continue
        with engine:
            rng = np.random.default_rng(0)
            for batch in (1, 8):
                x = rng.standard_normal((batch, *engine.card.input_shape)).astype(np.float32)
                t = time_predict(engine, x, iters=200)
                out[f"{backend} b{batch}"] = {"p50": round(t.p50_ms, 3), "p95": round(t.p95_ms, 3)}
    return out


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
    p.add_argument("--seconds", type=float, default=60.0, help="length of the generated video (default %(default)s)")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate of the generated video (default %(default)s)")
    p.add_argument("--paced-seconds", type=float, default=60.0,  # the target: 60 s at 30 fps, no drops
                   help="how long to run paced at the source fps for the drop count; 0 skips (default %(default)s)")
    p.add_argument("--engine", default="auto", choices=("auto", "tensorrt", "onnxruntime", "torch"),
                   help="inference backend, as for mer-live (default %(default)s)")
    p.add_argument("--model", help="model to use (default: bundled)")
    p.add_argument("--face-model", help="face_landmarker.task (default: $MER_FACE_MODEL / cache)")
    p.add_argument("--landmark-every", type=landmark_every_arg, default=1, metavar="N|auto",
                   help="landmarks every Nth frame; auto: N from the measured landmark cost and the source's "
                   "frame rate (default %(default)s)")
    p.add_argument("--repeats", type=int, default=1, metavar="K",
                   help="offline runs, each between two bare-landmarker runs, for the ratio (default %(default)s)")
    p.add_argument("--paced-fps", type=float, nargs="+", default=[], metavar="FPS",
                   help="also run paced on a generated video at each of these frame rates (e.g. 120 200) and "
                   "report its drops and --landmark-every N")
    p.add_argument("--paced-fps-seconds", type=float, default=30.0, metavar="S",
                   help="length of those generated videos (default %(default)s)")
    p.add_argument("--skip-startup", action="store_true", help="do not measure process start-up")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["real"]:  # the real-footage spotting benchmark renders with the generator (training)
        from training.realbench_cli import main as real_main

        return real_main(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _run(args)
    except UserError as exc:
        print(f"mer-bench: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from engines.backends import EngineError, load_engine
    from engines.card import CardError
    from realtime.face import FaceModelError, FaceTracker, FaceTrackerOptions

    console = Console(stderr=True)
    video, annotations = args.video, args.annotations
    if video is None:
        from realtime.demo import synthetic_video

        with console.status("generating a synthetic video…"):
            video, annotations = synthetic_video(seconds=args.seconds, fps=args.fps, face_model=args.face_model)
    elif not Path(video).is_file():
        raise UserError(f"{video}: no such file")
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
    if not args.skip_startup:
        with console.status("start-up…"):
            result["startup_s"] = measure_startup(Path(video), args.face_model, args.engine, args.model)
    landmarker: list[dict[str, Any]] = []
    fast: list[RunFigures] = []
    for i in range(max(1, args.repeats)):  # landmarker, pipeline, landmarker, ...: the same load around each
        with console.status("bare landmarker…"):
            landmarker.append(landmarker_baseline(Path(video), args.face_model))
        with console.status(f"offline run (--fast) {i + 1}…"):
            fast.append(run_pipeline(Path(video), fast=True, engine=engine, tracker_factory=tracker_factory,
                                     card=card, annotations=annotations))
    with console.status("bare landmarker…"):
        landmarker.append(landmarker_baseline(Path(video), args.face_model))
    result["fast"] = fast[0].__dict__
    result["landmarker"] = landmarker[0]
    result["ratio"] = throughput_ratio([f.fps for f in fast], [b["fps"] for b in landmarker])
    if args.paced_seconds > 0:
        with console.status(f"paced run ({args.paced_seconds:g} s)…"):
            paced = run_pipeline(Path(video), fast=False, engine=engine, tracker_factory=tracker_factory,
                                 card=card, annotations=None, seconds=args.paced_seconds)
            result["paced"] = {"frames": paced.frames, "dropped": paced.dropped, "seconds": paced.wall_s,
                               "latency_ms": paced.latency_ms, "delay_ms": paced.delay_ms, "events": paced.events}
    targets = list(TARGETS)
    for fps in args.paced_fps:  # e.g. a 120 or 200 fps lab camera, with --landmark-every auto
        from realtime.demo import synthetic_video

        with console.status(f"generating a {fps:g} fps video…"):
            clip, _ = synthetic_video(seconds=args.paced_fps_seconds, fps=fps, face_model=args.face_model)
        with console.status(f"paced at {fps:g} fps ({args.paced_fps_seconds:g} s)…"):
            run = run_pipeline(clip, fast=False, engine=engine, tracker_factory=tracker_factory, card=card,
                               annotations=None)
        key = f"{fps:g}".replace(".", "_")
        result.setdefault("paced_fps", {})[key] = {
            "fps": fps, "frames": run.frames, "dropped": run.dropped, "seconds": run.wall_s,
            "landmark_every": run.landmark_every, "auto": run.auto,
            "stage_ms": {s: v["p50"] for s, v in run.stage_ms.items()}}
        targets.append((f"paced at {fps:g} fps, landmark_every {args.landmark_every} (N = {run.landmark_every}): "
                        "dropped frames", f"paced_fps.{key}.dropped", "<=", 0))
    engine.close()
    with console.status("engines…"):
        result["engines"] = engine_latency(args.model)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["targets"] = [
        {"what": what, "value": _get(result, key), "target": f"{op} {limit:g}",
         "met": None if _get(result, key) is None else (
             _get(result, key) >= limit if op == ">=" else _get(result, key) <= limit)}
        for what, key, op, limit in targets
    ]
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_tables(result)
    return EXIT_OK


def _print_tables(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    fast = result["fast"]
    t = Table(title=f"mer-bench — {result['machine']['cpus']} CPUs, engine {result['machine']['engine']}")
    t.add_column("stage")
    t.add_column("p50 ms", justify="right")
    t.add_column("p95 ms", justify="right")
    for stage in STAGES:
        v = fast["stage_ms"].get(stage, {})
        t.add_row(stage, str(v.get("p50", "-")), str(v.get("p95", "-")))
    console.print(t)
    t = Table(title="targets")
    for col in ("what", "measured", "target", "met"):
        t.add_column(col)
    for row in result["targets"]:
        met = {True: "[green]yes", False: "[red]no", None: "-"}[row["met"]]
        t.add_row(row["what"], str(row["value"]), row["target"], met)
    console.print(t)
    console.print(f"offline: {fast['frames']} frames in {fast['wall_s']} s = {fast['fps']} fps; events {fast['events']}; "
                  f"latency_ms {fast['latency_ms']}; delay_ms {fast['delay_ms']}; spotting {fast['spotting']}")
    ratio = result["ratio"]
    console.print(f"bare landmarker (VIDEO mode, one face, same decode): {ratio['landmarker_fps']} fps, landmarks "
                  f"{result['landmarker']['landmark_ms']} ms; pipeline {ratio['pipeline_fps']} fps; "
                  f"ratio {ratio['ratio']} (runs {ratio['ratios']})")
    for run in result.get("paced_fps", {}).values():
        console.print(f"paced at {run['fps']:g} fps: {run['frames']} frames, {run['dropped']} dropped, "
                      f"landmark_every {run['landmark_every']} {run['auto'] or ''}")
    if "paced" in result:
        console.print(f"paced: {result['paced']}")
    console.print(f"engines: {result['engines']}")
    console.print(f"peak RSS {result['peak_rss_mb']} MB; start-up {result.get('startup_s')} s")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

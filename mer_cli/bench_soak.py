#!/usr/bin/env python
"""Soak test: the whole live pipeline, in process and ``--fast``, over many minutes' worth of frames.

A synthetic clip is looped (decoded again each pass, like a long file) through capture, face tracking,
motion, spotting, DIs, classification and a real publisher (ZeroMQ on a loopback port, optionally a JSONL
recording). Every ``--interval-s`` seconds of *source* time it samples the process RSS (``/proc/self/statm``)
and each stage's p95 over that interval, prints a table, then the RSS growth and first-vs-last p95 per stage.
Growth that keeps climbing, or p95s that drift up, are what this is for; a 2-minute run checks the script.

    mer-bench soak                                   # 30 min at 30 fps = 54,000 frames
    mer-bench soak --minutes 2 --model runs/a/final  # quick check
    mer-bench soak --json > soak.json

Without ``--model`` it uses the bundled model, or (none bundled) a random dual-phase model made in a
temporary folder: timings and memory are what count here, not labels.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from realtime.sources import FrameSource

STAGES = ("decode", "face", "motion", "spotting", "di", "classify", "publish")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    """Resident set size of this process (MB), from /proc/self/statm."""
    with open("/proc/self/statm", encoding="ascii") as fh:
        return int(fh.read().split()[1]) * _PAGE / 2**20


class LoopingSource(FrameSource):
    """``total`` frames of a video file, played again from the start whenever it ends (decoded each pass)."""

    def __init__(self, path: Path, total: int, *, record: Callable[[str, float], None] | None = None) -> None:
        import cv2

        super().__init__()
        self._cv2 = cv2
        self._path = path
        self._cap = cv2.VideoCapture(str(path))
        if not self._cap.isOpened():
            raise SystemExit(f"soak: cannot read {path}")
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0 < fps <= 1000 else 30.0
        self.name = f"loop:{path.name}"
        self.is_live = False
        self.frame_count = total
        self.passes = 1
        self._record = record

    def read(self) -> np.ndarray | None:
        if self._closed or self.frames_read >= (self.frame_count or 0):
            return None
        t0 = time.perf_counter()
        ok, frame = self._cap.read()
        if not ok:  # end of a pass: start the next one
            self._cap.release()
            self._cap = self._cv2.VideoCapture(str(self._path))
            self.passes += 1
            ok, frame = self._cap.read()
            if not ok:
                self.error = f"{self._path} stopped delivering frames on pass {self.passes}"
                return None
        if self._record is not None:
            self._record("decode", (time.perf_counter() - t0) * 1e3)
        self.frames_read += 1
        return frame

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._cap.release()


def _p95(values: list[float]) -> float | None:
    return round(float(np.percentile(values, 95)), 3) if values else None


def _engine(model: str | None, backend: str, tmp: Path) -> tuple[Any, str]:
    from engines.backends import ModelNotFoundError, load_engine

    if model is not None:
        return load_engine(model, backend=backend), model
    try:
        return load_engine(None, backend=backend), "bundled"
    except ModelNotFoundError:
        from engines.checkpoint import save_checkpoint
        from engines.onnx_io import export_onnx
        from engines.registry import build_model

        net = build_model("dual-phase", labels=("negative", "positive", "surprise"))
        save_checkpoint(net, tmp / "model.pt")
        export_onnx(net, tmp / "model.onnx")
        return load_engine(tmp, backend=backend), "random dual-phase (no bundled model)"


def soak(args: argparse.Namespace) -> dict[str, Any]:
    from mer_analysis.chain import AnalyzerOptions
    from mer_core.events import EventRecord, Record
    from realtime.face import FaceTracker, FaceTrackerOptions
    from realtime.pipeline import Pipeline, PipelineOptions
    from realtime.publisher import Publisher, PublisherOptions

    if args.video is not None:
        video = Path(args.video)
    else:
        from training.demo import demo_video

        video = demo_video(face_model=args.face_model)
    with tempfile.TemporaryDirectory(prefix="mer-soak-") as tmp:
        engine, model_name = _engine(args.model, args.engine, Path(tmp))
    card = engine.card
    tracker = FaceTracker(FaceTrackerOptions(model_path=args.face_model, crop_size=card.crop_size,
                                             landmark_every=args.landmark_every))
    publisher = Publisher(PublisherOptions(endpoint=args.zmq, record_path=args.record)).start()
    pipeline: Pipeline | None = None

    def record_stage(stage: str, ms: float) -> None:
        if pipeline is not None:
            pipeline._record_stage(stage, ms)  # decode is timed in the capture thread, as mer-bench does

    probe = LoopingSource(video, 1)
    fps = probe.fps
    probe.close()
    total = int(round(args.minutes * 60.0 * fps))
    source = LoopingSource(video, total, record=record_stage)
    events = {"micro": 0, "macro": 0}

    def publish(record: Record) -> object:
        if isinstance(record, EventRecord):
            events[record.kind] = events.get(record.kind, 0) + 1
        return publisher.publish(record)

    options = PipelineOptions(
        fast=True, keep_stage_samples=True,  # the sampler below takes (and so empties) the samples each interval
        analyzer=AnalyzerOptions.for_card(card),
    )
    pipeline = Pipeline(source, tracker, engine, publish, options, engine_reason=engine.reason)
    samples: list[dict[str, Any]] = []
    done = threading.Event()
    every = max(1, int(round(args.interval_s * fps)))
    start_rss = rss_mb()
    t_start = time.monotonic()

    def take(frames: int, last: dict[str, Any] | None) -> dict[str, Any]:
        assert pipeline is not None
        stage_p95: dict[str, float | None] = {}
        for stage in list(pipeline.stage_samples):
            taken, pipeline.stage_samples[stage] = pipeline.stage_samples[stage], []
            stage_p95[stage] = _p95(taken)
        wall = time.monotonic() - t_start
        prev_frames, prev_wall = (last["frames"], last["wall_s"]) if last else (0, 0.0)
        return {
            "source_s": round(frames / fps, 1),
            "frames": frames,
            "wall_s": round(wall, 1),
            "fps": round((frames - prev_frames) / max(wall - prev_wall, 1e-9), 1),
            "rss_mb": round(rss_mb(), 1),
            "events": sum(events.values()),
            "p95_ms": stage_p95,
        }

    def sampler() -> None:
        assert pipeline is not None
        next_at = every
        while not done.wait(0.05):
            frames = pipeline.analyzer.frames
            if frames >= next_at:
                samples.append(take(frames, samples[-1] if samples else None))
                if not args.json:
                    print(_row(samples[-1]), flush=True)
                next_at += every

    if not args.json:
        print(f"soak: {total} frames ({args.minutes:g} min at {fps:g} fps) of {video.name} looped; model "
              f"{model_name}, engine {engine.name}; RSS at start {start_rss:.1f} MB", flush=True)
        print(_header(), flush=True)
    thread = threading.Thread(target=sampler, name="soak-sampler")
    thread.start()
    try:
        summary = pipeline.run()
    finally:
        done.set()
        thread.join(5)
        tracker.close()
        engine.close()
        publisher.close()
    if pipeline.analyzer.frames > (samples[-1]["frames"] if samples else 0):
        samples.append(take(pipeline.analyzer.frames, samples[-1] if samples else None))
        if not args.json:
            print(_row(samples[-1]), flush=True)
    return _report(samples, summary, start_rss, model_name, engine.name, video, total, fps, source.passes,
                   publisher.stats)


def _header() -> str:
    return (f"{'source':>8} {'frames':>7} {'wall s':>7} {'fps':>6} {'RSS MB':>7} {'events':>6}  "
            + " ".join(f"{s:>8}" for s in STAGES) + "   (p95 ms per stage over the interval)")


def _row(s: dict[str, Any]) -> str:
    minutes, seconds = divmod(s["source_s"], 60)
    cells = [f"{s['p95_ms'][st]:8.2f}" if s["p95_ms"].get(st) is not None else f"{'-':>8}" for st in STAGES]
    return (f"{int(minutes):>4}:{seconds:04.1f} {s['frames']:>7} {s['wall_s']:>7.1f} {s['fps']:>6.1f} "
            f"{s['rss_mb']:>7.1f} {s['events']:>6}  " + " ".join(cells))


def _first_last(samples: list[dict[str, Any]], stage: str) -> tuple[float | None, float | None]:
    values = [s["p95_ms"].get(stage) for s in samples if s["p95_ms"].get(stage) is not None]
    return (values[0], values[-1]) if values else (None, None)


def _report(samples: list[dict[str, Any]], summary: Any, start_rss: float, model: str, engine: str, video: Path,
            total: int, fps: float, passes: int, pub: Any) -> dict[str, Any]:
    first, last = (samples[0], samples[-1]) if samples else ({}, {})
    return {
        "video": str(video),
        "passes": passes,
        "frames_planned": total,
        "fps_source": fps,
        "model": model,
        "engine": engine,
        "summary": {"frames": summary.frames, "dropped": summary.dropped, "face_frames": summary.face_frames,
                    "events": dict(summary.events), "wall_s": summary.wall_s, "mean_fps": summary.mean_fps,
                    "reason": summary.reason},
        "publisher": {"sent": pub.sent, "dropped_queue": pub.dropped_queue, "dropped_zmq": pub.dropped_zmq},
        "rss_mb": {"start": round(start_rss, 1), "first_sample": first.get("rss_mb"),
                   "last_sample": last.get("rss_mb"), "max": max((s["rss_mb"] for s in samples), default=None),
                   "growth_first_to_last": round(last["rss_mb"] - first["rss_mb"], 1) if samples else None},
        "p95_first_last_ms": {st: dict(zip(("first", "last"), _first_last(samples, st), strict=True))
                              for st in STAGES},
        "samples": samples,
    }


def _print_report(r: dict[str, Any]) -> None:
    s, rss = r["summary"], r["rss_mb"]
    print(f"\nsoak: {s['reason']}: {s['frames']} frames ({s['dropped']} dropped, {s['face_frames']} with a face) in "
          f"{r['passes']} passes, {s['events'].get('micro', 0)} micro / {s['events'].get('macro', 0)} macro events, "
          f"{s['mean_fps']:.1f} fps over {s['wall_s']:.1f} s")
    print(f"soak: publisher sent {r['publisher']['sent']} records, dropped {r['publisher']['dropped_queue']} "
          f"(queue) / {r['publisher']['dropped_zmq']} (ZMQ)")
    print(f"soak: RSS {rss['start']} MB at start, {rss['first_sample']} MB at the first sample, "
          f"{rss['last_sample']} MB at the last (max {rss['max']}): growth first->last "
          f"{rss['growth_first_to_last']:+.1f} MB")
    print(f"\n{'stage':<10} {'p95 first':>10} {'p95 last':>10} {'change':>8}")
    for stage, v in r["p95_first_last_ms"].items():
        if v["first"] is None:
            print(f"{stage:<10} {'-':>10} {'-':>10} {'-':>8}")
            continue
        change = f"{100 * (v['last'] - v['first']) / v['first']:+.0f} %" if v["first"] else "-"
        print(f"{stage:<10} {v['first']:>10.2f} {v['last']:>10.2f} {change:>8}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mer-bench soak", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30.0, help="minutes of source time (default 30)")
    p.add_argument("--interval-s", type=float, default=30.0, help="sample every S seconds of source time (default 30)")
    p.add_argument("--video", help="clip to loop (default: the synthetic demo clip, made once in the user cache)")
    p.add_argument("--model", help="model path (default: the bundled model, else a random one)")
    p.add_argument("--engine", default="auto", choices=("auto", "tensorrt", "onnxruntime", "torch"))
    p.add_argument("--face-model", help="face_landmarker.task (default: $MER_FACE_MODEL, the user cache)")
    p.add_argument("--landmark-every", type=int, default=1, metavar="N")
    p.add_argument("--zmq", default="tcp://127.0.0.1:0", help="PUB endpoint (default: a free loopback port); "
                   "'none' for no socket")
    p.add_argument("--record", type=Path, help="also write the JSONL recording here")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    args = p.parse_args(argv)
    if args.zmq.lower() == "none":
        args.zmq = None
        if args.record is None:
            p.error("--zmq none needs --record (the publisher must publish somewhere)")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from engines.backends import EngineError
    from engines.card import CardError
    from mer_core.errors import UserError
    from realtime.face_model import FaceModelError
    from realtime.publisher import PublisherError

    try:
        report = soak(args)
    except (EngineError, CardError, FaceModelError, PublisherError, UserError) as exc:
        print(f"soak: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

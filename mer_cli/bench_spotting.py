#!/usr/bin/env python
"""Spotting F1 of the live pipeline over a mer-synth spotting set (MEGC protocol, micro and macro apart).

    MER_FACE_MODEL=... mer-bench spotting data/synth/spotting [--landmark-every 3] [--model PATH]

Every video goes through the real pipeline (``--fast``: every frame analysed); predicted windows are matched
to the annotations with IoU >= 0.5 by ``mer_core.metrics``, pooled over all videos.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

from engines.backends import load_engine
from mer_cli.exit_codes import EXIT_FAILURE
from mer_cli.options import add_log_arguments, configure_logging
from mer_core.events import EventRecord
from mer_core.metrics import Interval, spotting_scores
from mer_offline.bench import run_pipeline
from realtime.face import FaceTracker, FaceTrackerOptions
from realtime.native_stderr import native_stderr_silenced


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mer-bench spotting", description=__doc__.split("\n")[0])
    p.add_argument("folder", type=Path, help="a mer-synth spotting folder (videos + annotations.csv)")
    p.add_argument("--landmark-every", type=int, default=1)
    p.add_argument("--model")
    add_log_arguments(p)
    args = p.parse_args(argv)
    configure_logging(args.log_level)
    with (args.folder / "annotations.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    engine = load_engine(args.model)
    try:
        return _score(args, rows, engine)
    finally:
        engine.close()


def _score(args: argparse.Namespace, rows: list[dict[str, str]], engine: Any) -> int:
    """Every video through the pipeline, then the pooled figures; EXIT_FAILURE when a run's analysis failed."""
    pred: dict[str, list[Interval]] = {"micro": [], "macro": []}
    true: dict[str, list[Interval]] = {"micro": [], "macro": []}
    frames = wall = 0.0
    for video in sorted(args.folder.glob("*.mp4")):
        events: list[EventRecord] = []
        with native_stderr_silenced(args.log_level != "debug", keep_python=True):  # MediaPipe's own lines
            figures = run_pipeline(
                video, fast=True, engine=engine, card=engine.card, annotations=None, sink=events.append,
                tracker_factory=lambda: FaceTracker(FaceTrackerOptions(landmark_every=args.landmark_every)),
            )
        if figures.ended == "error":  # scoring what a failed run published would report a wrong F1
            print(f"mer-bench spotting: error: the analysis of {video.name} failed ({figures.error}); no figures",
                  file=sys.stderr)
            return EXIT_FAILURE
        frames += figures.frames
        wall += figures.wall_s
        for e in events:
            pred[e.kind].append(Interval(e.onset.frame, e.offset.frame, e.kind, video.stem))
        for r in rows:
            if r["video"] == video.stem:
                true[r["kind"]].append(Interval(int(r["onset"]), int(r["offset"]), r["kind"], video.stem))
        print(f"{video.name}: {figures.frames} frames, {figures.fps:.0f} fps, events {figures.events}", flush=True)
    for kind in ("micro", "macro"):
        s = spotting_scores(pred[kind], true[kind])
        print(f"{kind}: true {len(true[kind])}, predicted {len(pred[kind])}, TP {s.tp}, "
              f"precision {s.precision:.3f}, recall {s.recall:.3f}, F1 {s.f1:.3f}")
    print(f"landmark_every {args.landmark_every}: {frames:.0f} frames in {wall:.1f} s = {frames / wall:.0f} fps")
    return 0


if __name__ == "__main__":
    sys.exit(main())

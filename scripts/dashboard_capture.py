#!/usr/bin/env python
"""Print a text capture of the dashboard for the README: the demo clip through the real pipeline.

    MER_FACE_MODEL=... python scripts/dashboard_capture.py [--model PATH] [--seconds 17] [--width 100]

Runs ``mer-live --demo``'s clip in process (``--fast``), stops at ``--seconds`` of source time, and renders
the snapshot the live dashboard would draw at that moment with ``realtime.dashboard.render_text``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.backends import load_engine  # noqa: E402
from realtime.analysis import AnalyzerOptions  # noqa: E402
from realtime.dashboard import render_text  # noqa: E402
from realtime.face import FaceTracker, FaceTrackerOptions  # noqa: E402
from realtime.pipeline import Pipeline, PipelineOptions  # noqa: E402
from realtime.sources import open_source  # noqa: E402
from training.demo import demo_video  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model")
    p.add_argument("--seconds", type=float, default=17.0)
    p.add_argument("--width", type=int, default=100)
    args = p.parse_args()
    video = demo_video()
    engine = load_engine(args.model)
    card = engine.card
    source = open_source(str(video))
    source.name = "demo:" + video.name
    with FaceTracker(FaceTrackerOptions(crop_size=card.crop_size)) as tracker:
        options = PipelineOptions(fast=True, duration_s=args.seconds,
                                  analyzer=AnalyzerOptions.for_card(card))
        pipeline = Pipeline(source, tracker, engine, lambda record: None, options, engine_reason=engine.reason)
        pipeline.start()
        # Snapshot while it runs, as the dashboard thread does (the spotter's threshold exists only then).
        frames = int(args.seconds * (source.fps or 30.0)) - 5
        while pipeline.analyzer.frames < frames:
            if pipeline.analyzer.frames % 15 == 0:
                pipeline.snapshot()  # rates come from successive samples, as on the live dashboard
            time.sleep(0.005)
        snapshot = pipeline.snapshot(message=f"demo clip, {args.seconds:g} s in")
        pipeline.stop()
        print(render_text(snapshot, width=args.width))
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``mer-live``'s run (:func:`run_live`, called by :mod:`mer_cli.live` once the options are checked): build and
check every component, then run the pipeline with a display.

Components are opened in the order that fails fastest on user mistakes (source, face model, engine,
publisher), each error becoming one line; nothing is published before all of them are ready, and once
anything is published a ``summary`` follows, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from engines.backends import load_engine
from engines.backends.base import EngineError
from engines.card import CardError
from mer_analysis.chain import AnalyzerOptions
from mer_cli.exit_codes import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from mer_cli.progress import FramesProgress
from mer_cli.spotting import spotter_options, spotting_choice
from mer_core.errors import UserError
from mer_core.events import SCHEMA, Record, SummaryRecord
from realtime.dashboard import PlainLog, make_display
from realtime.face import FaceTracker, FaceTrackerOptions
from realtime.face_model import FaceModelError
from realtime.native_stderr import native_stderr_silenced
from realtime.pipeline import Pipeline, PipelineOptions
from realtime.publisher import Publisher, PublisherError, PublisherOptions
from realtime.sources import SourceError, open_source
from realtime.windows import read_windows
from training.demo import demo_video

log = logging.getLogger(__name__)


def _source_spec(args: argparse.Namespace) -> str:
    if args.demo:  # made on first use, before the dashboard starts: seconds that a progress line explains
        making = FramesProgress("mer-live", "making the demo clip (once)")
        with native_stderr_silenced(args.log_level != "debug"), making as progress:
            return str(demo_video(face_model=args.face_model, progress=progress))
    if args.camera is not None:
        return args.camera
    return args.video


def check_record_path(record: Path | None, inputs: list[Path | str | None]) -> None:
    """``--record`` replaces its file: refuse (UserError) one of the run's own inputs (``--record clip.mp4`` for
    ``--video clip.mp4`` destroyed the video) and any existing file that is not an earlier recording."""
    if record is None:
        return
    path = Path(record).expanduser()
    if not path.is_file():
        return  # new, or a folder (the publisher says so)
    for given in inputs:
        other = None if given is None else Path(given).expanduser()
        if other is not None and other.is_file() and path.samefile(other):
            raise UserError(f"--record {record} is one of this run's inputs; give a new .jsonl path")
    try:
        with path.open("rb") as fh:
            first = fh.readline(4096)
    except OSError:
        return  # unreadable: the publisher reports it when it opens the file
    if first.strip() and not _is_record(first):
        raise UserError(f"--record {record} exists and is not a mer-live recording; give a new .jsonl path "
                        "(an earlier recording is replaced)")


def _is_record(line: bytes) -> bool:
    try:
        data = json.loads(line)
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("schema") == SCHEMA


def run_live(args: argparse.Namespace, *, on_pipeline: Callable[[Pipeline], None] | None = None) -> int:
    """Run ``mer-live`` for parsed ``args``; the exit code. ``on_pipeline`` is called with the pipeline once it
    is built, before it runs (``mer-live`` turns SIGTERM and Ctrl-C into :meth:`Pipeline.interrupt` from then)."""
    windows = read_windows(args.windows) if args.windows is not None else None  # checked before anything slow
    spotter = spotter_options(args)
    spotting, spot_model = spotting_choice(args)
    check_record_path(args.record, [args.video, args.windows, args.model, args.face_model])
    try:
        spec = _source_spec(args)
        source = open_source(int(spec) if isinstance(spec, str) and spec.isdigit() else spec)
    except SourceError as exc:
        raise UserError(str(exc)) from None
    if args.demo:
        source.name = "demo:" + Path(str(spec)).name
    with contextlib.ExitStack() as stack:
        stack.callback(source.close)
        if windows is not None:
            if source.is_live:
                raise UserError(f"--windows needs a recorded video with numbered frames; {source.name} is live")
            windows.check_length(source.frame_count)
        try:
            engine = load_engine(args.model, backend=args.engine)
        except (EngineError, CardError) as exc:
            raise UserError(str(exc)) from None
        stack.callback(engine.close)
        card = engine.card
        if card.channels != 1:
            raise UserError(f"model '{card.name}' wants {card.channels}-channel DIs; mer-live feeds grayscale crops")
        try:
            with native_stderr_silenced(args.log_level != "debug"):
                tracker = FaceTracker(FaceTrackerOptions(model_path=args.face_model, crop_size=card.crop_size,
                                                         landmark_every=args.landmark_every))
        except FaceModelError as exc:
            raise UserError(str(exc)) from None
        pipeline: Pipeline | None = None  # looked up when the stack unwinds: its threads may still use the tracker
        stack.callback(lambda: _close_tracker(tracker, pipeline))
        endpoint = None if args.zmq.lower() == "none" else args.zmq
        publish: Callable[[Record], object] = _discard
        shown_endpoint = ""  # for the dashboard: the address subscribers connect to
        if endpoint is not None or args.record is not None:
            try:
                publisher = Publisher(PublisherOptions(endpoint=endpoint, record_path=args.record,
                                                       curve_keydir=args.zmq_curve, insecure=args.insecure,
                                                       source=source.name)).start()
            except PublisherError as exc:
                raise UserError(str(exc)) from None
            stack.callback(publisher.close)
            publish = publisher.publish
            if publisher.endpoint:
                shown_endpoint = publisher.endpoint + ("  (CURVE)" if args.zmq_curve is not None else "")

        options = PipelineOptions(
            fast=args.fast,
            duration_s=args.duration,
            status_period_s=args.status_period,
            face_workers=args.face_workers,
            windows=windows,
            analyzer=AnalyzerOptions.for_card(card, spotter=spotter, spotting=spotting),
            spot_model=spot_model,
        )
        pipeline = Pipeline(source, tracker, engine, publish, options, engine_reason=engine.reason,
                            endpoint=shown_endpoint)
        if on_pipeline is not None:
            on_pipeline(pipeline)
        log.info("engine %s (%s), model %s, source %s, spotter %s", engine.name, engine.reason, card.name,
                 source.name, spotting if spot_model is None else f"{spotting} ({spot_model.name})")
        display = None
        if not args.no_dashboard:
            display = make_display(pipeline.snapshot)
        else:
            display = PlainLog(pipeline.snapshot, file=sys.stdout)
        stack.callback(display.close)
        display.start()
        try:
            summary = pipeline.run()
        except KeyboardInterrupt:
            display.close()
            _print_summary(pipeline.stop("interrupted"), args.record)
            return EXIT_INTERRUPTED
        display.close()
        if summary.reason == "interrupted":  # pipeline.interrupt(): SIGTERM or Ctrl-C
            _print_summary(summary, args.record)
            return EXIT_INTERRUPTED
        scores = pipeline.windows.scores(card.labels) if pipeline.windows is not None else None
        if scores is not None and scores.foreign:
            listed = ", ".join(f"{label!r} ({n})" for label, n in sorted(scores.foreign.items()))
            print(f"mer-live: warning: {args.windows}: labels the model does not know ({', '.join(card.labels)}) "
                  f"were counted as wrong: {listed}", file=sys.stderr)
        _print_summary(summary, args.record)
        if pipeline.error is not None:
            print(f"mer-live: error: analysis stopped: {pipeline.error}", file=sys.stderr)
            return EXIT_FAILURE
        if source.error:
            print(f"mer-live: warning: {source.error}; processed what could be read", file=sys.stderr)
        if pipeline.windows is not None and pipeline.windows.missing:
            print(f"mer-live: error: {_missing_windows(pipeline, args)}", file=sys.stderr)
            return EXIT_USAGE
        return EXIT_OK


def _close_tracker(tracker: FaceTracker, pipeline: Pipeline | None) -> None:
    """Close the face tracker, unless a pipeline thread that outlived ``stop()``'s wait may still call it:
    closing a MediaPipe landmarker under a running call can crash the process. It is then left open until the
    process exits (which waits for that thread), and logged."""
    if pipeline is not None and pipeline.tracker_in_use:
        log.warning("the face tracker is still in use by a pipeline thread that did not stop; it is left open "
                    "until the process exits")
        return
    tracker.close()


def _missing_windows(pipeline: Pipeline, args: argparse.Namespace) -> str:
    """One line for the rows of --windows whose frames never came (everything else was published)."""
    assert pipeline.windows is not None
    missing = pipeline.windows.missing
    first, more = missing[0], len(missing) - 1
    read = pipeline.capture.frames_read
    if pipeline.stopped_by_duration:
        why = f"frame {first.offset} lies beyond --duration {args.duration:g} s"
    else:
        why = f"frame {first.offset} is past the end of the video ({read} frames read, 0..{read - 1})"
    also = f" (and {more} more line{'s' if more > 1 else ''})" if more else ""
    return f"{args.windows} line {first.line}: {why}; no event for it{also}"


def _discard(record: Record) -> None:
    """Publisher stand-in for ``--zmq none`` without ``--record``: the dashboard still shows events."""


def _print_summary(s: SummaryRecord, record: Path | None) -> None:
    # "mer-live: error:" is kept for the one line that says what failed, so an error run reads "stopped early".
    reason = "stopped early" if s.reason == "error" else s.reason
    line = (f"mer-live: {reason}: {s.frames} frames ({s.dropped} dropped, {s.face_frames} with a face), "
            f"{s.events.get('micro', 0)} micro / {s.events.get('macro', 0)} macro events, "
            f"{s.mean_fps:.1f} fps over {s.wall_s:.1f} s")
    if s.accuracy is not None and s.uf1 is not None:
        line += f"; accuracy {s.accuracy:.1%}, UF1 {s.uf1:.3f} over {s.scored} labelled windows"
    if s.landmark_every is not None:
        line += f"; face landmarks on every {s.landmark_every} frame(s) (--landmark-every auto)"
    if s.overflow:
        line += f"; {s.overflow} window(s) published unlabelled: the classifier fell behind"
    if s.failed:
        line += f"; {s.failed} window(s) published unlabelled: the model failed on them"
    if s.rejected and any(s.rejected.values()):
        dropped = ", ".join(f"{n} {reason}" for reason, n in s.rejected.items() if n)
        line += f"; {sum(s.rejected.values())} spotter candidate(s) dropped ({dropped})"
    if record is not None:
        line += f"; recorded to {record}"
    print(line, file=sys.stderr)

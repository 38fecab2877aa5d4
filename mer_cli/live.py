"""``mer-live``: watch a camera, a video file or the built-in demo, and publish micro-expression events.

This module is the edge where user mistakes become one-line messages and exit codes; everything it calls
raises specific exceptions instead of printing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from mer_cli.exit_codes import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from mer_cli.live_run import run_live
from mer_cli.options import (
    add_log_arguments,
    add_model_arguments,
    add_spotting_arguments,
    check_face_workers,
    configure_logging,
    positive_number,
)
from mer_core.errors import UserError
from realtime.curve import CurveError, create_keys
from realtime.native_stderr import native_logs_hidden
from realtime.pipeline import Pipeline
from realtime.publisher import DEFAULT_ENDPOINT, PublisherError, check_exposure

EPILOG = """\
exit codes:
  0    the source ended and the summary was written
  1    an unexpected internal error (please report it, with the traceback from --log-level debug)
  2    bad input: no such camera, unreadable video, missing face model, bad model, port in use, bad option
  130  interrupted by Ctrl-C or SIGTERM (the summary record is still written)

examples:
  mer-live --demo                                  synthetic clip with micro-expressions, no camera needed
  mer-live --camera 0                              first webcam, dashboard, events on tcp://127.0.0.1:5556
  mer-live --video clip.mp4 --fast --record out.jsonl --no-dashboard
  mer-live --video clip.mp4 --fast --windows annotations.csv     classify annotated windows, score the labels
  mer-live keys KEYDIR                             create CURVE keys (same as --create-keys KEYDIR)
  mer-subscribe                                    print the events another terminal's mer-live publishes
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mer-live",
        description="Real-time micro-expression spotting and recognition. Finds short, faint facial movements "
        "(onset, apex, offset), classifies micro-expressions, and publishes mer/1 records over ZeroMQ "
        "(topics mer.event, mer.status, mer.summary), to a JSONL file and to a terminal dashboard.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_argument_group("source (pick one)")
    one = src.add_mutually_exclusive_group()
    one.add_argument("--camera", metavar="INDEX|PATH", help="camera index (0, 1, ...) or device path (/dev/video0)")
    one.add_argument("--video", metavar="FILE|URL", help="video file or stream URL (rtsp://, http://)")
    one.add_argument("--demo", action="store_true",
                     help="play a synthetic clip with known micro-expressions through the whole pipeline")
    src.add_argument("--fast", action="store_true",
                     help="read a file as fast as possible and analyse every frame (offline analysis); "
                     "default: play files at their own frame rate like a camera, dropping frames if behind")
    src.add_argument("--duration", type=positive_number, metavar="S", help="stop after S seconds of source time")
    src.add_argument("--windows", metavar="FILE.csv", type=Path,
                     help="with --video: classify the windows listed in FILE.csv (header onset,apex,offset, "
                     "optionally label: 0-based frames, inclusive) instead of spotting; one event per row, in "
                     "file order; with a label column the summary adds accuracy and UF1")

    model = p.add_argument_group("model")
    add_model_arguments(model, auto=True)

    out = p.add_argument_group("output")
    out.add_argument("--zmq", default=DEFAULT_ENDPOINT, metavar="ENDPOINT",
                     help="ZeroMQ PUB endpoint to bind (default: %(default)s, loopback only); 'none' disables")
    out.add_argument("--zmq-curve", metavar="KEYDIR", type=Path,
                     help="encrypt with CURVE using the server key in KEYDIR (required for non-loopback binds)")
    out.add_argument("--create-keys", metavar="KEYDIR", type=Path,
                     help="create CURVE server and client keys in KEYDIR and exit")
    out.add_argument("--insecure", action="store_true",
                     help="allow binding a non-loopback address without CURVE (anyone on the network can listen)")
    out.add_argument("--record", metavar="FILE.jsonl", type=Path,
                     help="also write every record to this JSONL file (an earlier recording there is replaced; "
                     "any other existing file is refused)")
    out.add_argument("--no-dashboard", action="store_true",
                     help="no live terminal dashboard; print one plain line per event instead")
    out.add_argument("--status-period", type=positive_number, default=1.0, metavar="S",
                     help="seconds between status records (default: %(default)g)")
    add_log_arguments(out)

    spot = p.add_argument_group("spotting (all in seconds, so any frame rate behaves the same)")
    add_spotting_arguments(spot)
    # `mer-live keys KEYDIR` is a second form of the command (main rewrites it to --create-keys).
    p.usage = p.format_usage().removeprefix("usage: ").rstrip() + "\n       mer-live keys KEYDIR"
    return p


def _check_zmq(args: argparse.Namespace) -> None:
    """A bad or exposed --zmq is refused before anything slow (model, face tracker) is loaded."""
    if args.zmq.lower() == "none":
        return

    try:
        check_exposure(args.zmq, curve=args.zmq_curve is not None, insecure=args.insecure)
    except PublisherError as exc:
        raise UserError(str(exc)) from None


class _StopOnSignal:
    """SIGTERM, and Ctrl-C unless it is ignored, as an orderly stop. Until the pipeline is built a signal raises
    ``KeyboardInterrupt`` as Ctrl-C does (nothing is published yet; what was opened is closed on the way out).
    From then on it only asks the pipeline to stop (:meth:`Pipeline.interrupt`, a flag its loop checks), so
    ``Pipeline.stop()`` and the closing of the publisher are never cut short and the summary is written; a
    second signal changes nothing."""

    def __init__(self) -> None:
        self._pipeline: Pipeline | None = None

    def watch(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self._pipeline is None:
            raise KeyboardInterrupt
        self._pipeline.interrupt()

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """This handler for SIGTERM and (unless ignored, as in a background job) SIGINT; the previous ones after."""
        signums = [signal.SIGTERM]
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signums.append(signal.SIGINT)
        previous = {signum: signal.signal(signum, self) for signum in signums}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["keys"]:  # `mer-live keys KEYDIR`, the spelling error messages suggest
        argv = ["--create-keys", *argv[1:]]
    parser = build_parser()
    args = parser.parse_args(argv)
    # StderrHandler follows sys.stderr, which native_logs_hidden() keeps while it hides fd 2 (native lines)
    configure_logging(args.log_level)
    if args.log_level != "debug":
        # FFmpeg's per-frame decoder complaints on a damaged file ("ac-tex damaged at 15 13", dozens of lines)
        # would bury our one-line messages; OpenCV reads this when it first opens a video. AV_LOG_FATAL = 8.
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")
        # OpenCV's own probing of camera back-ends ("[ WARN:0] can't open camera by index") likewise, for the
        # processes this one starts (this one imported cv2 already: native_logs_hidden() sets its level).
        os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")
    try:
        if args.create_keys:
            public, secret = create_keys(args.create_keys)
            print(f"CURVE keys written: server secret {secret}, server public {public} "
                  f"(give subscribers the public key and their own client key)")
            return EXIT_OK
        if not (args.camera is not None or args.video or args.demo):
            parser.error("pick a source: --camera INDEX, --video FILE, or --demo")
        if args.landmark_every != "auto" and args.landmark_every < 1:
            parser.error("--landmark-every must be >= 1 or auto")
        check_face_workers(parser, args.face_workers)
        if args.windows is not None and not args.video:
            raise UserError("--windows needs --video FILE: its frame numbers refer to a recorded video (a camera "
                            "has none in advance; for the demo clip pass its file with --video)")
        _check_zmq(args)

        stop_on_signal = _StopOnSignal()
        # MediaPipe's and OpenCV's own lines (W0000 ..., [ WARN:0] ...) hidden unless --log-level debug
        with stop_on_signal.installed(), native_logs_hidden(args.log_level != "debug"):
            return run_live(args, on_pipeline=stop_on_signal.watch)
    except (UserError, CurveError) as exc:
        print(f"mer-live: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Command-line options that several commands share, written once."""

from __future__ import annotations

import argparse
import logging
from typing import Any, Literal

from realtime.native_stderr import StderrHandler

__all__ = [
    "SPOTTING_OPTIONS",
    "add_model_arguments",
    "add_spotting_arguments",
    "landmark_every_arg",
    "non_negative_integer",
    "non_negative_number",
    "positive_integer",
    "positive_number",
]


def landmark_every_arg(text: str) -> int | Literal["auto"]:
    """``--landmark-every``: a whole number >= 1, or ``auto``."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1 or 'auto', got {text!r}")
    return value


def add_model_arguments(group: argparse._ArgumentGroup, *, auto: bool) -> None:
    """``--engine``, ``--model``, ``--face-model`` and ``--landmark-every`` (with ``auto`` where a live source
    has a frame rate to keep up with)."""
    group.add_argument("--engine", choices=("auto", "tensorrt", "onnxruntime", "torch"), default="auto",
                       help="inference backend; auto = TensorRT if usable, else ONNX Runtime, else torch "
                       "(default: %(default)s)")
    group.add_argument("--model", metavar="PATH",
                       help="trained model: .pt checkpoint, .onnx, .plan, or a folder (default: the bundled model)")
    group.add_argument("--face-model", metavar="PATH",
                       help="MediaPipe face_landmarker.task (default: $MER_FACE_MODEL, then the user cache, "
                       "then a verified download)")
    if auto:
        group.add_argument("--landmark-every", type=landmark_every_arg, default=1, metavar="N|auto",
                           help="run face landmarks on every Nth frame and track alignment in between; auto: N "
                           "from the landmarks' measured cost and the source's frame rate, so a 120 or 200 fps "
                           "camera keeps up (default: %(default)s = every frame)")
    else:
        group.add_argument("--landmark-every", type=int, default=1, metavar="N",
                           help="run face landmarks on every Nth frame and track alignment in between "
                           "(default: %(default)s = every frame)")
    if auto:
        group.add_argument("--face-workers", type=int, metavar="N",
                           help="MediaPipe landmarkers working on consecutive frames at once, one core each; "
                           "same results, more frames a second (default: 2 with 2+ cores, else 1; with "
                           "--landmark-every 1, or auto once it settles on 1)")


def check_face_workers(parser: argparse.ArgumentParser, workers: int | None) -> None:
    """``--face-workers``: None (the default) or 1..MAX_FACE_WORKERS; anything else exits 2 with a usage line."""
    from realtime.face_workers import MAX_FACE_WORKERS

    if workers is not None and not 1 <= workers <= MAX_FACE_WORKERS:
        parser.error(f"--face-workers must be 1..{MAX_FACE_WORKERS}")


def positive_number(text: str) -> float:
    """A number > 0 (argparse type): ``--threshold 0`` is a usage error, not a spotter that fires on noise."""
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def non_negative_number(text: str) -> float:
    """A number >= 0 (argparse type)."""
    value = _number(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def positive_integer(text: str) -> int:
    """A whole number >= 1 (argparse type)."""
    return _integer(text, 1)


def non_negative_integer(text: str) -> int:
    """A whole number >= 0 (argparse type)."""
    return _integer(text, 0)


def _integer(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = least - 1
    if value < least:
        raise argparse.ArgumentTypeError(f"must be a whole number >= {least}, got {text!r}")
    return value


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


# command-line option (argparse dest) → the SpotterOptions field it sets
SPOTTING_OPTIONS = {"micro_max": "micro_max_s", "min_duration": "min_duration_s", "threshold": "threshold",
                    "min_peak": "min_peak", "max_context": "max_context"}


def add_spotting_arguments(group: argparse._ArgumentGroup) -> None:
    """The spotter's settings a user may change (left None: the spotter's own defaults)."""
    group.add_argument("--spotter", choices=("auto", "rules", "learned"), default="auto",
                       help="which spotter finds the windows: 'rules' (motion rules, the options below), 'learned' "
                       "(a spotting model from mer-train spot, see --spotting-model), or 'auto': the learned one "
                       "when a spotting model is given or bundled, else the rules (none is bundled yet: the rules "
                       "did better on real footage, docs/spotting.md)")
    group.add_argument("--spotting-model", metavar="PATH",
                       help="spotting model (.onnx written by mer-train spot, or its folder); implies --spotter "
                       "learned unless --spotter rules")
    group.add_argument("--micro-max", type=positive_number, metavar="S",
                       help="longest window still called micro (default 0.5); longer ones are macro")
    group.add_argument("--min-duration", type=non_negative_number, metavar="S",
                       help="shortest window reported (default 0.08)")
    group.add_argument("--threshold", type=positive_number, metavar="X",
                       help="how far a region's movement must stand out: multiples of that region's own recent "
                       "level (default 2.5; lower finds fainter expressions and more false ones)")
    group.add_argument("--min-peak", type=positive_number, metavar="F",
                       help="smallest movement spotted, as a fraction of the distance between the eyes "
                       "(default 0.008, below the largest, 0.08)")
    group.add_argument("--max-context", type=positive_number, metavar="F",
                       help="how much the same face region may move in the second before a movement and just "
                       "after it, as a fraction of that movement (default 0.55). Higher finds more expressions on a "
                       "face that talks or moves, with more false ones; docs/spotting.md has the trade-off "
                       "measured on real footage of 20 people")


# --- logging: one set-up for every command -----------------------------------------------------------------

LOG_LEVELS = ("debug", "info", "warning", "error")


def add_log_arguments(group: Any, *, default: str = "warning", verbose_alias: bool = False) -> None:
    """``--log-level`` (and, where a command always had it, ``-v/--verbose`` for ``--log-level info``)."""
    group.add_argument("--log-level", default=default, choices=LOG_LEVELS,
                       help="log verbosity on stderr; debug (and info, for the commands that make data) also show "
                       "MediaPipe's and OpenCV's own lines (default: %(default)s)")
    if verbose_alias:
        group.add_argument("-v", "--verbose", dest="log_level", action="store_const", const="info",
                           help="the same as --log-level info")


def configure_logging(level: str, *, handler: logging.Handler | None = None,
                      fmt: str = "%(levelname)s %(name)s: %(message)s") -> None:
    """Every command's logging: one handler on the root logger at ``level``. The default handler follows
    sys.stderr, which :func:`realtime.native_stderr.native_stderr_silenced` keeps while it hides fd 2."""
    if handler is None:
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter(fmt))
    handler._mer_live = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    # replaces the handler an earlier call installed (a command run twice in one process), keeps others' (a
    # test's log capture, an application that embeds the command)
    root.handlers[:] = [h for h in root.handlers if not getattr(h, "_mer_live", False)] + [handler]
    root.setLevel(level.upper())


def shows_native_logs(level: str) -> bool:
    """Whether MediaPipe's and OpenCV's own log lines are shown for a command that makes data at ``level``."""
    return level in ("debug", "info")

"""Command-line options that several commands share, written once."""

from __future__ import annotations

import argparse
from typing import Literal

__all__ = ["add_model_arguments", "add_spotting_arguments", "landmark_every_arg"]


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


def add_spotting_arguments(group: argparse._ArgumentGroup) -> None:
    """The spotter's settings a user may change (left None: the spotter's own defaults)."""
    group.add_argument("--micro-max", type=float, metavar="S",
                       help="longest window still called micro (default 0.5); longer ones are macro")
    group.add_argument("--min-duration", type=float, metavar="S", help="shortest window reported (default 0.08)")
    group.add_argument("--threshold", type=float, metavar="X",
                       help="how far a region's movement must stand out: multiples of that region's own recent "
                       "level (default 2; lower finds fainter expressions and more false ones)")
    group.add_argument("--min-peak", type=float, metavar="F",
                       help="smallest movement spotted, as a fraction of the distance between the eyes "
                       "(default 0.008)")

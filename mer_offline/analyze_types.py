"""What mer-analyze's pieces hand each other: its settings, a video's result and a window's images. Apart from
:mod:`mer_offline.analyze` so that the report (:mod:`mer_offline.report`), which the analysis writes, reads them
without importing the analysis back."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mer_analysis.spotting import SpotterOptions

__all__ = ["DONE_STATUSES", "FAILED", "INTERRUPTED", "NO_FACE", "OK", "PARTIAL", "RESULT_FORMAT", "AnalyzeOptions",
           "VideoResult", "WindowImages"]

RESULT_FORMAT = "mer-analyze/1"

# Statuses of a video. Only "ok" counts as success for the exit code; the first three are complete results
# a re-run skips, "failed" is tried again, "interrupted" never gets a result file.
OK, PARTIAL, NO_FACE, FAILED, INTERRUPTED = "ok", "partial", "no_face", "failed", "interrupted"
DONE_STATUSES = (OK, PARTIAL, NO_FACE)


@dataclass(frozen=True)
class AnalyzeOptions:
    """Everything besides the video that decides the results (part of the re-run key), plus display."""

    model: str | None = None  # .pt / .onnx / .plan / folder; None = the bundled model
    engine: str = "auto"
    face_model: str | None = None
    landmark_every: int = 1
    blendshapes: bool = False
    spotter: SpotterOptions = field(default_factory=SpotterOptions)
    spotting: str = "rules"  # "rules" or "learned" (AnalyzerOptions.spotting)
    spotting_model: str | None = None  # the learned spotter's .onnx (with spotting "learned")
    quiet_native: bool = True  # worker processes hide what MediaPipe's native code prints (not a result setting)
    face_workers: int | None = None  # PipelineOptions.face_workers (speed only, not a result setting)

    def identity(self) -> dict[str, Any]:
        """The settings that change results, as plain JSON data (the model is keyed by its hashes)."""
        spotter = asdict(self.spotter)
        # keyed under its name before SpotterOptions.threshold was called so: earlier results are still found
        spotter["min_score"] = spotter.pop("threshold")
        ident: dict[str, Any] = {"engine": self.engine, "landmark_every": self.landmark_every, "blendshapes": self.blendshapes,
                 "spotter": spotter}
        if self.spotting == "learned" and self.spotting_model is not None:  # keyed by the model's bytes
            ident["spotting_model"] = hashlib.sha256(Path(self.spotting_model).read_bytes()).hexdigest()
        return ident



@dataclass(frozen=True)
class VideoResult:
    """What happened to one video; stored as ``analysis.json`` (except ``interrupted`` and ``skipped``)."""

    path: str
    name: str
    status: str
    error: str = ""
    frames: int | None = None
    face_frames: int | None = None
    duration_s: float | None = None
    fps: float | None = None  # the video's own frame rate
    events: dict[str, int] = field(default_factory=dict)
    wall_s: float | None = None
    analysis_fps: float | None = None
    model: str = ""
    engine: str = ""
    key: str = ""
    finished: str = ""
    skipped: bool = False  # this run found it already analysed (never stored)

    @property
    def ok(self) -> bool:
        return self.status == OK

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("skipped")
        return {"format": RESULT_FORMAT, **data}



@dataclass(frozen=True)
class WindowImages:
    """What a report card shows of one window: aligned crops and phase DIs as uint8 grey images."""

    onset: np.ndarray
    apex: np.ndarray
    offset: np.ndarray
    rise: np.ndarray  # onset→apex DI, mid-grey = no change
    fall: np.ndarray  # apex→offset DI
    flow: np.ndarray | None = None  # the apex's optical flow from both ends (the default model's input), BGR: hue = direction

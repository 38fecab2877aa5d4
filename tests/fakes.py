"""Typed stand-ins for the pipeline's joins (engine, analysis chain), shared by the tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engines.card import ModelCard
from mer_analysis.chain import FrameResult, WindowJob
from mer_analysis.spotting import SpottedWindow
from mer_core.events import TimePoint
from realtime.face import TrackedFace


def fake_card(labels: Sequence[str], name: str) -> ModelCard:
    """A model card for an engine stand-in (one stream; only labels and name matter to the pipeline)."""
    return ModelCard(name=name, architecture="single", labels=tuple(labels), streams=("onset_offset",))


def tracked_face(crop: np.ndarray, crop_landmarks: np.ndarray) -> TrackedFace:
    """A TrackedFace around an already aligned crop (what the analysis chain reads of it)."""
    h, w = crop.shape[:2]
    return TrackedFace(landmarks=crop_landmarks, anchors=np.zeros((3, 2), np.float32), bbox=(0.0, 0.0, w, h),
                       crop=crop, crop_bgr=None, crop_landmarks=crop_landmarks,
                       matrix=np.eye(2, 3, dtype=np.float64))


class SpotterState:
    """What the dashboard reads of a spotter."""

    def __init__(self, state: str = "idle", threshold: float | None = None) -> None:
        self.state = state
        self.threshold = threshold


class ScriptedAnalysis:
    """A stand-in for the analysis chain (:class:`realtime.pipeline.FrameAnalyzing`): a face on every frame,
    no windows unless a subclass scripts them in :meth:`windows_at` or :meth:`flush`."""

    def __init__(self) -> None:
        self.frames = self.face_frames = 0
        self.face_now = True
        self.spotter = SpotterState()
        self.last = -1

    def process(self, frame: np.ndarray, index: int, t: float, *, captured_at: float | None = None) -> FrameResult:
        self.frames += 1
        self.face_frames += 1
        self.last = index
        return FrameResult(index, t, True, 0.0, {}, self.windows_at(index, captured_at), captured_at)

    def windows_at(self, index: int, captured_at: float | None) -> tuple[WindowJob, ...]:
        return ()

    def flush(self) -> tuple[WindowJob, ...]:
        return ()

    def build_inputs(self, window: SpottedWindow) -> np.ndarray | None:
        return None

    def job(self, window: SpottedWindow, inputs: np.ndarray | None) -> WindowJob:
        return WindowJob(window, inputs)


def point(frame: int, fps: float) -> TimePoint:
    return TimePoint(frame, frame / fps)

"""The learned spotter's training data: grid features of tracked videos, with per-step labels.

A video's features come from the live chain itself (:func:`training.replay.replay` in ``features`` mode: the
motion meter and :class:`mer_analysis.spot_features.SpotFeatures` as ``mer-live`` runs them), cached beside the
tracked faces. A step is labelled 1 when it lies inside an annotated micro-expression (its onset frame to its
offset frame, both inclusive: half a frame either side) and 0 everywhere else — the face's own talking,
blinks, head turns and expressions, and any macro-expression, are what the model learns to ignore.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mer_analysis.chain import AnalyzerOptions
from mer_analysis.motion import REGION_NAMES, MotionSample
from mer_analysis.spot_features import FEATURE_VERSION, FEATURES, GridRow, SpotFeatureOptions, SpotFeatures
from training.replay import FaceTrack, replay

__all__ = ["RawMotion", "SpotSequence", "features_of", "label_steps", "rows_from_raw", "segments"]


@dataclass
class RawMotion:
    """Every frame's motion sample as the chain measured it, as arrays (NaN-free; ``present`` False where the
    frame had no face or no displacement yet): what the grid features are computed from."""

    fps: float
    present: np.ndarray  # (n,) bool
    since: np.ndarray  # (n,) int64, -1 where unknown
    disp: np.ndarray  # (n, R, 2) float32
    geometry: np.ndarray  # (n, R, 2) float32
    change: np.ndarray  # (n, R) float32
    head: np.ndarray  # (n,) float32
    eye: np.ndarray  # (n,) float32
    face: np.ndarray  # (n,) bool: a face (a sample, maybe without displacement)

    @classmethod
    def from_samples(cls, samples: Sequence[MotionSample | None], fps: float) -> RawMotion:
        n, regions = len(samples), len(REGION_NAMES)
        raw = cls(fps, np.zeros(n, bool), np.full(n, -1, np.int64), np.zeros((n, regions, 2), np.float32),
                  np.zeros((n, regions, 2), np.float32), np.zeros((n, regions), np.float32), np.zeros(n, np.float32),
                  np.zeros(n, np.float32), np.zeros(n, bool))
        for k, smp in enumerate(samples):
            if smp is None:
                continue
            raw.face[k] = True
            raw.head[k], raw.eye[k] = smp.head, smp.eye_opening
            if smp.displacement is not None and smp.since is not None:
                raw.present[k] = True
                raw.since[k] = smp.since
                raw.disp[k] = smp.displacement
                if smp.geometry is not None:
                    raw.geometry[k] = smp.geometry
                if smp.change is not None:
                    raw.change[k] = smp.change
        return raw

    def samples(self) -> list[MotionSample | None]:
        out: list[MotionSample | None] = []
        for k in range(len(self.present)):
            if not self.face[k]:
                out.append(None)
            elif not self.present[k]:
                out.append(MotionSample(k, k / self.fps, None, None, float(self.head[k]), float(self.eye[k])))
            else:
                out.append(MotionSample(k, k / self.fps, int(self.since[k]), self.disp[k], float(self.head[k]),
                                        float(self.eye[k]), self.change[k], self.geometry[k]))
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        return {"raw_present": self.present, "raw_since": self.since, "raw_disp": self.disp,
                "raw_geometry": self.geometry, "raw_change": self.change, "raw_head": self.head, "raw_eye": self.eye,
                "raw_face": self.face}

    @classmethod
    def from_arrays(cls, fps: float, z: Any) -> RawMotion:
        return cls(fps, z["raw_present"], z["raw_since"], z["raw_disp"], z["raw_geometry"], z["raw_change"],
                   z["raw_head"], z["raw_eye"], z["raw_face"])


def rows_from_raw(raw: RawMotion, options: SpotFeatureOptions | None = None) -> list[GridRow]:
    """The grid rows of ``raw``'s samples, by the live feature code."""
    features = SpotFeatures(options)
    rows: list[GridRow] = []
    for sample in raw.samples():
        rows += features.update(sample)
    return rows

log = logging.getLogger(__name__)


@dataclass
class SpotSequence:
    """One video's grid features and labels. ``steps`` are grid step numbers (time = step / rate_hz); steps
    missing between two rows mean the face was lost there."""

    name: str
    person: str
    tag: str  # "original" or the rendering's tag
    fps: float
    rate_hz: float
    frames_total: int
    steps: np.ndarray  # (T,) int64
    frames: np.ndarray  # (T,) int64, the native frame nearest each step
    times: np.ndarray  # (T,) float64, that frame's time
    values: np.ndarray  # (T, R, C) float32
    labels: np.ndarray  # (T,) float32
    truth: list[dict[str, Any]] = field(default_factory=list)
    family: str = ""
    weights: np.ndarray | None = None  # (T,) loss weight per step (None: all 1); 0 = ignored in training
    raw: RawMotion | None = None  # every frame's motion, for augmentation
    region_targets: np.ndarray | None = None  # (T, R) per-region targets (set_region_targets); NaN = not trained

    @property
    def minutes(self) -> float:
        return self.frames_total / self.fps / 60.0

    @property
    def rendered(self) -> bool:
        return self.tag != "original"

    def rows(self) -> list[GridRow]:
        return [GridRow(int(s), int(f), float(t), self.values[k])
                for k, (s, f, t) in enumerate(zip(self.steps, self.frames, self.times, strict=True))]


def label_steps(steps: np.ndarray, rate_hz: float, fps: float, truth: Iterable[dict[str, Any]]) -> np.ndarray:
    """1.0 for steps inside an annotated micro-expression (onset..offset frames, inclusive), else 0.0."""
    t = steps.astype(np.float64) / rate_hz
    out = np.zeros(len(steps), np.float32)
    half = 0.5 / fps
    for row in truth:
        if row.get("kind", "micro") != "micro":
            continue
        lo, hi = int(row["onset"]) / fps - half, int(row["offset"]) / fps + half
        out[(t >= lo) & (t < hi)] = 1.0
    return out


def _sequence(rows: Sequence[GridRow], *, name: str, person: str, tag: str, fps: float, rate_hz: float, frames: int,
              truth: Sequence[dict[str, Any]], family: str, raw: RawMotion | None) -> SpotSequence:
    steps = np.array([r.step for r in rows], np.int64)
    values = (np.stack([r.values for r in rows]) if rows
              else np.zeros((0, len(REGION_NAMES), len(FEATURES)), np.float32)).astype(np.float32)
    return SpotSequence(name, person, tag, fps, rate_hz, frames, steps, np.array([r.frame for r in rows], np.int64),
                        np.array([r.frame_t for r in rows], np.float64), values,
                        label_steps(steps, rate_hz, fps, truth), list(truth), family, raw=raw)


def features_of(track: FaceTrack, *, person: str, tag: str, truth: Sequence[dict[str, Any]] = (),
                family: str = "", options: SpotFeatureOptions | None = None, cache: Path | None = None
                ) -> SpotSequence:
    """``track``'s :class:`SpotSequence` (cached in ``cache``, keyed by the faces and the feature settings),
    with its raw motion."""
    opts = options or SpotFeatureOptions()
    file = None
    if cache is not None:
        digest = hashlib.sha256()
        digest.update(track.name.encode())
        digest.update(np.ascontiguousarray(track.landmarks[:: max(1, track.frames // 64)]).tobytes())
        digest.update(f"{track.frames}|{track.fps}|{opts}|{FEATURE_VERSION}|{FEATURES}|raw1".encode())
        file = cache / f"features-{digest.hexdigest()[:16]}.npz"
        if file.is_file():
            with np.load(file, allow_pickle=False) as z:
                steps, frames, times, values = z["steps"], z["frames"], z["times"], z["values"]
                raw = RawMotion.from_arrays(track.fps, z)
            return SpotSequence(track.name, person, tag, track.fps, opts.rate_hz, track.frames, steps, frames, times,
                                values, label_steps(steps, opts.rate_hz, track.fps, truth), list(truth), family,
                                raw=raw)
    result = replay(track, AnalyzerOptions(spotting="features", features=opts))
    raw = RawMotion.from_samples(result.samples, track.fps)
    seq = _sequence(result.rows, name=track.name, person=person, tag=tag, fps=track.fps, rate_hz=opts.rate_hz,
                    frames=track.frames, truth=truth, family=family, raw=raw)
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(file.name + ".tmp.npz")
        arrays = {"steps": seq.steps, "frames": seq.frames, "times": seq.times, "values": seq.values, **raw.arrays()}
        np.savez(tmp, **arrays)  # type: ignore[arg-type]  # numpy's stub reads **kwds as allow_pickle
        tmp.replace(file)
    return seq


def expression_motion(rendered: SpotSequence, original: SpotSequence, *, lag_s: float = 0.25) -> list[np.ndarray]:
    """Per micro-expression of ``rendered`` (in truth order): how far the rendering moved each region — the
    largest change it made to the region's displacement over the lag (``rendered`` minus the un-injected
    ``original``, onset to offset + lag), (R,) in feature units (zeros where the two do not overlap)."""
    micro = [row for row in rendered.truth if row.get("kind", "micro") == "micro"]
    common, io, ir = np.intersect1d(original.steps, rendered.steps, return_indices=True)
    o, r = original.values[io], rendered.values[ir]
    frames = rendered.frames[ir]
    lag = int(round(lag_s * rendered.fps))
    out = []
    for row in micro:
        inside = (frames >= int(row["onset"])) & (frames <= int(row["offset"]) + lag)
        if not inside.any():
            out.append(np.zeros(len(REGION_NAMES), np.float32))
            continue
        change = np.hypot(r[inside][:, :, 0] - o[inside][:, :, 0], r[inside][:, :, 1] - o[inside][:, :, 1])
        out.append(change.max(axis=0).astype(np.float32))
    return out


def visibility(rendered: SpotSequence, original: SpotSequence, *, lag_s: float = 0.25, context_s: float = 2.0,
               share: float = 0.5, moved: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """Per micro-expression of ``rendered`` (in truth order): whether the motion features can see it at all —
    what it added to its most moved region (:func:`expression_motion`) is at least ``share`` of how much that
    region moves by itself around it (its 90th percentile over ± ``context_s`` in ``original``). On a face that
    talks, many rendered expressions are as small as the talking around them: labels no measurement supports."""
    micro = [row for row in rendered.truth if row.get("kind", "micro") == "micro"]
    moved = expression_motion(rendered, original, lag_s=lag_s) if moved is None else moved
    frames, size = original.frames, original.values[..., FEATURES.index("size")]
    context = int(round(context_s * rendered.fps))
    out = []
    for row, m in zip(micro, moved, strict=True):
        if m.max() <= 0:
            out.append(False)
            continue
        region = int(m.argmax())
        around = (frames >= int(row["onset"]) - context) & (frames <= int(row["offset"]) + context)
        usual = float(np.percentile(size[around, region], 90)) if around.any() else 0.0
        out.append(bool(m.max() >= share * usual))
    return np.array(out, bool)


def set_region_targets(seq: SpotSequence, moved: Sequence[np.ndarray], *, strong: float = 0.5,
                       weak: float = 0.15) -> None:
    """Per step and region, what the network should say (``seq.region_targets``): inside a micro-expression
    1 for the regions it moved most (at least ``strong`` of its largest), 0 for those it hardly moved (below
    ``weak``), unknown (NaN: not trained) in between; everywhere else 0 for every region."""
    t = seq.steps.astype(np.float64) / seq.rate_hz
    half = 0.5 / seq.fps
    targets = np.zeros((len(seq.steps), len(REGION_NAMES)), np.float32)
    micro = [row for row in seq.truth if row.get("kind", "micro") == "micro"]
    for row, m in zip(micro, moved, strict=True):
        lo, hi = int(row["onset"]) / seq.fps - half, int(row["offset"]) / seq.fps + half
        top = float(m.max())
        row_targets = np.where(m >= strong * top, 1.0, np.where(m < weak * top, 0.0, np.nan)).astype(np.float32)
        if top <= 0:
            row_targets[:] = np.nan
        targets[(t >= lo) & (t < hi)] = row_targets
        # just outside the annotated frames a moved region's state is ambiguous (the lag, the easing)
        edge = ((t >= lo - 0.15) & (t < lo)) | ((t >= hi) & (t < hi + 0.3))
        targets[np.ix_(edge, row_targets != 0)] = np.nan
    seq.region_targets = targets


def ignore_unseen(rendered: SpotSequence, seen: np.ndarray) -> None:
    """Training weights of ``rendered``: the steps of micro-expressions not ``seen`` (and a margin) are ignored."""
    weights = np.ones(len(rendered.steps), np.float32)
    t = rendered.steps.astype(np.float64) / rendered.rate_hz
    half = 0.5 / rendered.fps
    micro = [r for r in rendered.truth if r.get("kind", "micro") == "micro"]
    for row, ok in zip(micro, seen, strict=True):
        if not ok:
            lo, hi = int(row["onset"]) / rendered.fps - half, int(row["offset"]) / rendered.fps + half
            weights[(t >= lo - 0.2) & (t < hi + 0.3)] = 0.0
    rendered.weights = weights


def segments(steps: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) index ranges of consecutive grid steps."""
    if len(steps) == 0:
        return []
    breaks = np.nonzero(np.diff(steps) != 1)[0] + 1
    bounds = np.r_[0, breaks, len(steps)]
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

"""The real-footage spotting benchmark (``mer-bench real``): micro-expressions rendered onto real video at fixed
amplitudes, spotted by the live analysis chain, scored by the MEGC protocol.

For every source video (by default the videos of ``../shared/real``): the face is tracked once
(:func:`training.synth_onto.track_video`); for each placement (``calm``: where the face is calm; ``anywhere``:
anywhere it is visible, talking and head turns included) and each amplitude (apex displacement × IOD),
micro-expressions are planned and rendered onto the video (:mod:`training.synth_onto`), and the rendered video
goes through the live chain — :class:`realtime.face.FaceTracker`, :class:`realtime.motion.MotionMeter`,
:class:`realtime.spotting.Spotter` with its rise-and-return probe on held crops, as :class:`realtime.analysis.
Analyzer` runs them. The un-injected original goes through the same chain: every micro window it gives is a
false micro event. Micro windows are matched to the rendered ones with IoU ≥ 0.5 (:mod:`core.metrics`).

The spotter has no learned parameters, but its thresholds were chosen by looking at real footage. ``--lovo``
re-checks that choice honestly: for each video, the setting of a small grid that does best on the *other*
videos (F1 at 0.03 and 0.04 IOD, at most ``--max-fp`` false micro events per minute) is scored on it.

Renders, crops and motion are cached under ``--work`` (default: the user cache), keyed by the source file and
the settings, so a second run, or ``--lovo`` after a plain run, only re-runs the spotter.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from core.metrics import Interval, SpottingScores, match_windows
from realtime.face import FaceTracker, FaceTrackerOptions
from realtime.face_workers import track_frames
from realtime.motion import REGION_NAMES, MotionMeter, MotionOptions, MotionSample
from realtime.sources import open_source
from realtime.spotting import SpottedWindow, Spotter, SpotterOptions
from training.synth_onto import OntoOptions, plan_onto, render_onto, track_video, video_suffix

__all__ = ["BenchOptions", "VideoMotion", "analyze", "run_benchmark", "score_rows"]

log = logging.getLogger(__name__)

AMPLITUDES = (0.02, 0.03, 0.04, 0.06)
PLACEMENTS = ("calm", "anywhere")
# The --lovo grid: how far a region must stand out, and how quiet its surroundings must be.
GRID: tuple[dict[str, float], ...] = tuple(
    {"min_score": score, "max_context": context} for score in (1.5, 2.0, 3.0, 4.0) for context in (0.4, 0.5, 0.6)
)
_CACHE_VERSION = 1
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class BenchOptions:
    """What the benchmark renders. Rates per minute of visible face; amplitudes in IOD."""

    amplitudes: tuple[float, ...] = AMPLITUDES
    placements: tuple[str, ...] = PLACEMENTS
    micro_per_minute: float = 10.0
    macro_per_minute: float = 1.0
    seed: int = 7

    def onto(self, amplitude: float, placement: str) -> OntoOptions:
        return OntoOptions(seed=self.seed, amplitude=(amplitude, amplitude), micro_per_minute=self.micro_per_minute,
                            macro_per_minute=self.macro_per_minute, calm=placement == "calm")


@dataclass
class VideoMotion:
    """A video run through face tracking and the motion meter: what the spotter needs, cached."""

    name: str
    fps: float
    frames: int
    samples: list[MotionSample | None]
    crops: np.ndarray  # (n, S, S) uint8, for the spotter's rise-and-return probe
    landmarks: np.ndarray  # (n, 478, 2) float32, crop pixels
    truth: list[dict[str, Any]] = field(default_factory=list)  # annotation rows (rendered videos)

    @property
    def minutes(self) -> float:
        return self.frames / self.fps / 60.0

    def spot(self, settings: SpotterOptions) -> list[SpottedWindow]:
        """The live spotter over the cached motion, with the probe on the cached crops."""
        meter = MotionMeter()
        crops, landmarks = self.crops, self.landmarks

        def displacement(a: int, b: int) -> np.ndarray | None:
            return meter.displacement(crops[a], landmarks[a], crops[b], landmarks[b])

        spotter = Spotter(settings, displacement=displacement)
        out: list[SpottedWindow] = []
        for k, sample in enumerate(self.samples):
            out += spotter.update(sample, index=k, t=k / self.fps)
        return out + spotter.flush()


def analyze(video: Path, *, tracker: FaceTrackerOptions, progress: Progress | None = None,
            name: str | None = None) -> VideoMotion:
    """Face tracking and motion of every frame of ``video``, as the live analyser computes them."""
    source = open_source(video)
    samples: list[MotionSample | None] = []
    crops: list[np.ndarray] = []
    marks: list[np.ndarray] = []
    total = source.frame_count or 0
    if progress:
        progress(f"analyse {name or video.name}", 0, total)
    with source, FaceTracker(tracker) as face_tracker:
        meter = MotionMeter()
        fps = float(source.fps)
        size = tracker.crop_size
        blank, no_marks = np.zeros((size, size), np.uint8), np.zeros((478, 2), np.float32)
        for k, face in enumerate(track_frames(face_tracker, source.frames(), fps)):
            if face is None:
                meter.reset()
                samples.append(None)
                crops.append(blank)
                marks.append(no_marks)
            else:
                samples.append(meter.update(face.crop, face.crop_landmarks, k, k / fps))
                crops.append(face.crop)
                marks.append(face.crop_landmarks.astype(np.float32))
            if progress and (k + 1) % 25 == 0:
                progress(f"analyse {name or video.name}", 25, total)
    if not samples:
        raise RuntimeError(f"{video}: no frames could be read")
    return VideoMotion(name or video.stem, fps, len(samples), samples, np.stack(crops), np.stack(marks))


def _digest(path: Path, extra: Any) -> str:
    st = path.stat()
    key = json.dumps([str(path.resolve()), st.st_size, st.st_mtime_ns, extra, _CACHE_VERSION], sort_keys=True,
                     default=str)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _save_motion(motion: VideoMotion, file: Path) -> None:
    """Plain arrays (no pickle): samples become NaN-padded arrays, ``since`` -1 where unknown."""
    n, regions = motion.frames, len(REGION_NAMES)
    face = np.array([s is not None for s in motion.samples])
    since = np.full(n, -1, np.int64)
    disp = np.full((n, regions, 2), np.nan, np.float32)
    change = np.full((n, regions), np.nan, np.float32)
    head, eye = np.zeros(n, np.float32), np.zeros(n, np.float32)
    for k, s in enumerate(motion.samples):
        if s is None:
            continue
        head[k], eye[k] = s.head, s.eye_opening
        if s.since is not None and s.displacement is not None:
            since[k], disp[k] = s.since, s.displacement
        if s.change is not None:
            change[k] = s.change
    tmp = file.with_name(file.name + ".tmp.npz")
    np.savez(tmp, name=np.array(motion.name), fps=np.array(motion.fps), face=face, since=since, disp=disp,
             change=change, head=head, eye=eye, crops=motion.crops, landmarks=motion.landmarks)
    tmp.replace(file)


def _load_motion(file: Path) -> VideoMotion:
    """Each array is read from the file once: an ``NpzFile`` reads (and decompresses) an array again on every
    ``z[name]``, and a per-frame ``z[name][k]`` would keep a whole copy alive per frame (tens of GB over the
    benchmark's videos)."""
    with np.load(file, allow_pickle=False) as z:
        a = {name: z[name] for name in z.files}
    fps = float(a["fps"])
    since_all, disp, change_all, head, eye = a["since"], a["disp"], a["change"], a["head"], a["eye"]
    samples: list[MotionSample | None] = []
    for k, present in enumerate(a["face"]):
        if not present:
            samples.append(None)
            continue
        since = int(since_all[k])
        known = since >= 0
        change = change_all[k]
        samples.append(MotionSample(k, k / fps, since if known else None, disp[k] if known else None,
                                    float(head[k]), float(eye[k]), None if np.isnan(change).all() else change))
    return VideoMotion(str(a["name"]), fps, len(samples), samples, a["crops"], a["landmarks"])


def _cached_motion(work: Path, key: str, compute: Callable[[], VideoMotion]) -> VideoMotion:
    file = work / f"motion-{key}.npz"
    if file.is_file():
        try:
            return _load_motion(file)
        except (OSError, ValueError, KeyError):
            log.info("motion cache %s unreadable; computing again", file)
    motion = compute()
    _save_motion(motion, file)
    return motion


def _analysis_key(tracker: FaceTrackerOptions) -> dict[str, Any]:
    """The tracker settings that change the analysed landmarks, for the motion cache key. Settings added
    later enter only when they differ from what every earlier cache was made with, so those stay valid."""
    key: dict[str, Any] = {}
    if tracker.follow_one_face:
        key["follow_one_face"] = True
    return key


def prepare(videos: Sequence[Path], settings: BenchOptions, work: Path, *, tracker: FaceTrackerOptions,
            progress: Progress | None = None) -> dict[str, dict[str, VideoMotion]]:
    """Every video's original and renderings, analysed (cached): ``{video: {variant: motion}}`` where variant
    is ``original`` or ``PLACEMENT@AMPLITUDE``.

    The renderings do not depend on how the chain under test tracks the face: they are planned and warped
    from MediaPipe's per-frame detection (one face, every frame), so two trackers are scored on the same
    videos."""
    work.mkdir(parents=True, exist_ok=True)
    render_tracker = replace(tracker, follow_one_face=False, landmark_every=1, blendshapes=False)
    analysed = _analysis_key(tracker)
    out: dict[str, dict[str, VideoMotion]] = {}
    for vi, path in enumerate(videos):
        stem = path.stem
        variants: dict[str, VideoMotion] = {}
        base_key = _digest(path, {"crop": tracker.crop_size, **analysed})
        variants["original"] = _cached_motion(
            work, base_key, partial(analyze, path, tracker=tracker, progress=progress, name=path.name))
        track = None
        for pi, placement in enumerate(settings.placements):
            for ai, amplitude in enumerate(settings.amplitudes):
                onto = settings.onto(amplitude, placement)
                tag = f"{placement}@{amplitude:g}"
                render_id = {"onto": asdict(onto), "index": [vi, pi, ai], "crop": tracker.crop_size}
                key, motion_key = _digest(path, render_id), _digest(path, {**render_id, **analysed})
                rendered = work / f"render-{key}{video_suffix(onto)}"
                truth_file = work / f"render-{key}.json"
                if not (rendered.is_file() and truth_file.is_file()):
                    if track is None:
                        track = track_video(path, tracker=render_tracker, progress=progress)
                    plan = plan_onto(track, onto, video=f"{stem}_{placement}_{amplitude:g}", index=vi * 100 + ai)
                    render_onto(track, plan, rendered, onto, progress=progress)
                    truth_file.write_text(json.dumps(plan.rows()), encoding="utf-8")
                motion = _cached_motion(work, motion_key, partial(
                    analyze, rendered, tracker=tracker, progress=progress, name=f"{stem} {tag}"))
                motion.truth = json.loads(truth_file.read_text(encoding="utf-8"))
                variants[tag] = motion
        out[stem] = variants
    return out


# --- scoring -------------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """Counts of one cell of the table (pooled over videos)."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    onset_err: list[float] = field(default_factory=list)  # ms, matched windows
    apex_err: list[float] = field(default_factory=list)
    masked: int = 0  # true micro-expressions where the region moved by itself as much (see masked())

    def add(self, other: Tally) -> None:
        self.masked += other.masked
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.onset_err += other.onset_err
        self.apex_err += other.apex_err

    def row(self) -> dict[str, Any]:
        s = SpottingScores.from_counts(self.tp, self.fp, self.fn)

        def median_abs(values: list[float]) -> float | None:
            return round(float(np.median(np.abs(values))), 1) if values else None

        return {"f1": round(s.f1, 3), "precision": round(s.precision, 3), "recall": round(s.recall, 3),
                "tp": s.tp, "fp": s.fp, "fn": s.fn, "masked": self.masked, "onset_err_ms": median_abs(self.onset_err),
                "apex_err_ms": median_abs(self.apex_err)}


def score_rendered(motion: VideoMotion, windows: Iterable[SpottedWindow]) -> Tally:
    """Micro windows against the rendered micro-expressions (IoU ≥ 0.5), with onset/apex errors."""
    pred = [w for w in windows if w.kind == "micro"]
    true = [r for r in motion.truth if r["kind"] == "micro"]
    p = [Interval(w.onset.frame, w.offset.frame) for w in pred]
    t = [Interval(int(r["onset"]), int(r["offset"])) for r in true]
    matches = match_windows(p, t)
    tally = Tally(tp=len(matches), fp=len(p) - len(matches), fn=len(t) - len(matches))
    ms = 1000.0 / motion.fps
    for i, j, _ in matches:
        tally.onset_err.append((pred[i].onset.frame - int(true[j]["onset"])) * ms)
        tally.apex_err.append((pred[i].apex.frame - int(true[j]["apex"])) * ms)
    return tally


def masked(rendered: VideoMotion, original: VideoMotion, *, context_s: float = 1.0, share: float = 0.5) -> int:
    """How many rendered micro-expressions fall where the face already moves: the region the rendering moved
    most also moves by itself (in the un-injected ``original``, from ``context_s`` before the onset to the end
    of the fall) by at least ``share`` of the size the rendering reached there. A spotter that asks for a
    region quiet around its movement cannot find these; they bound its recall."""
    def sizes(motion: VideoMotion, lo: int, hi: int) -> np.ndarray:
        rows = [s.displacement for s in motion.samples[max(lo, 0):min(hi, motion.frames)]
                if s is not None and s.displacement is not None]
        return np.sqrt((np.asarray(rows) ** 2).sum(axis=2)) if rows else np.zeros((1, len(REGION_NAMES)))

    lag = int(round(MotionOptions().lag_s * rendered.fps))  # the meter's displacement reaches a lag past the offset
    count = 0
    for row in rendered.truth:
        if row["kind"] != "micro":
            continue
        on, off = int(row["onset"]), int(row["offset"]) + lag + 1
        peak = sizes(rendered, on, off).max(axis=0)
        region = int(np.argmax(peak - sizes(original, on, off).max(axis=0)))
        context = sizes(original, on - int(round(context_s * rendered.fps)), off).max(axis=0)
        count += bool(context[region] >= share * peak[region])
    return count


def score_rows(data: dict[str, dict[str, VideoMotion]], per_video: dict[str, SpotterOptions]) -> dict[str, Any]:
    """The benchmark's figures: per placement × amplitude (pooled and per video), false micro events per
    minute on the originals; each video scored with its own spotter settings."""
    result: dict[str, Any] = {"cells": {}, "videos": {}, "false_per_min": {}}
    pooled: dict[str, Tally] = {}
    for stem, variants in data.items():
        settings = per_video[stem]
        original = variants["original"]
        fp = sum(1 for w in original.spot(settings) if w.kind == "micro")
        result["false_per_min"][stem] = round(fp / original.minutes, 2) if original.minutes else None
        rows: dict[str, Any] = {}
        for tag, motion in variants.items():
            if tag == "original":
                continue
            tally = score_rendered(motion, motion.spot(settings))
            tally.masked = masked(motion, original)
            rows[tag] = tally.row()
            pooled.setdefault(tag, Tally()).add(tally)
        result["videos"][stem] = rows
    result["cells"] = {tag: t.row() for tag, t in sorted(pooled.items(), key=lambda kv: _order(kv[0]))}
    minutes = sum(v["original"].minutes for v in data.values())
    events = sum(result["false_per_min"][s] * data[s]["original"].minutes for s in data)
    result["false_per_min"]["all"] = round(events / minutes, 2) if minutes else None
    return result


def _order(tag: str) -> tuple[int, float]:
    placement, _, amplitude = tag.partition("@")
    return (PLACEMENTS.index(placement) if placement in PLACEMENTS else 9, float(amplitude or 0))


def _objective(result: dict[str, Any], max_fp: float) -> float:
    """What --lovo maximises on the training videos: F1 at 0.03 and 0.04 (both placements), with a penalty for
    every false micro event per minute over ``max_fp``."""
    f1 = [row["f1"] for tag, row in result["cells"].items() if tag.endswith(("@0.03", "@0.04"))]
    excess = max(0.0, (result["false_per_min"]["all"] or 0.0) - max_fp)
    return (float(np.mean(f1)) if f1 else 0.0) - excess


def run_benchmark(data: dict[str, dict[str, VideoMotion]], *, base: SpotterOptions | None = None,
                  lovo: bool = False, max_fp: float = 1.0) -> dict[str, Any]:
    """Score ``data`` with the shipped settings, and with ``lovo`` also leave-one-video-out over :data:`GRID`."""
    base = base or SpotterOptions()
    result: dict[str, Any] = {"shipped": score_rows(data, dict.fromkeys(data, base))}
    if lovo and len(data) >= 2:
        chosen: dict[str, SpotterOptions] = {}
        picks: dict[str, dict[str, float]] = {}
        for held in data:
            train = {k: v for k, v in data.items() if k != held}
            best = max(GRID, key=lambda g: _objective(
                score_rows(train, dict.fromkeys(train, replace(base, **g))), max_fp))
            chosen[held] = replace(base, **best)
            picks[held] = best
        result["lovo"] = score_rows(data, chosen)
        result["lovo"]["chosen"] = picks
    return result


def default_videos(repo: Path) -> list[Path]:
    """The shared real videos beside the repository (``../shared/real/*.mp4``), if any."""
    folder = repo.parent / "shared" / "real"
    return sorted(folder.glob("*.mp4")) if folder.is_dir() else []

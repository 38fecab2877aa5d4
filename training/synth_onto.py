"""Micro-expressions rendered onto real video (``mer-synth onto``): real footage with known ground truth.

The face is tracked in every source frame (:class:`realtime.face.FaceTracker`, the live tracker), then the
generator's Action-Unit fields (:mod:`training.aus`) are anchored on *that frame's* landmarks and warped into
it (the "warp" family), or the frame's face mesh itself is deformed (the "mesh" family,
:mod:`training.synth_mesh`: mesh-shaped fields, a piecewise-affine warp, shading and camera effects), so that
a spotter trained on both does not just learn one renderer. The source keeps everything a real camera gives:
head motion, blinks, talking, lighting, noise and its compression; the expression rides on top with the face's
own motion. Amplitude is the largest landmark displacement at apex as a fraction of the inter-ocular distance
(IOD) of the frame, so it follows the face as it comes closer or moves away. Durations follow the generator's
(CASME-II-like) phase distributions (the mesh family: its own profiles); some expressions use a single AU of
their recipe or move one side of the face only, as real ones often do.

Two passes per video: :func:`track_video` (MediaPipe on every frame, the slow part, reusable for many
renderings) and :func:`render_onto` (decode, warp the frames inside expressions, re-encode as a camera
would: MJPG by default). :func:`write_onto` does both for many videos and writes ``annotations.csv`` in the
spotting-set format (plus ``amplitude``, ``side``, ``source`` and ``family`` columns), ``manifest.json`` and a
README.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from engines.card import NONE_LABEL
from mer_analysis.chain import Analyzer, AnalyzerOptions
from mer_analysis.spotting import SpotterOptions
from realtime.face import FaceTracker, FaceTrackerOptions
from realtime.face_workers import track_frames
from realtime.sources import open_source
from training.aus import SIDES, format_aus, get_scheme
from training.replay import FaceTrack
from training.synth_mesh import Camera, MeshExpression, MeshOptions, draw_mesh_expression, render_mesh
from training.synth_options import MAX_AMPLITUDE, SynthError, SynthOptions
from training.synth_plans import _frames
from training.synth_render import FaceRig
from training.synth_timing import Expression, draw_expression
from training.synth_writer import RECOGNITION_COLUMNS, SPOTTING_COLUMNS, write_csv

__all__ = [
    "CLIP_CONTEXT_S",
    "FAMILIES",
    "ONTO_COLUMNS",
    "OntoPlan",
    "OntoOptions",
    "PERMISSIVE_SPOTTER",
    "SourceTrack",
    "plan_onto",
    "render_onto",
    "track_clips",
    "track_video",
    "write_clips",
    "write_onto",
]

log = logging.getLogger(__name__)

ONTO_COLUMNS = (*SPOTTING_COLUMNS, "amplitude", "side", "source", "family")
CODECS = ("MJPG", "mp4v")
FAMILIES = ("warp", "mesh")  # render families: AU RBF warps (training.aus), face-mesh deformation (synth_mesh)
Range = tuple[float, float]
Progress = Callable[[str, int, int], None]  # (stage, advance, total)


@dataclass(frozen=True)
class OntoOptions:
    """What is rendered onto a video. Times in seconds, amplitudes as fractions of the IOD."""

    seed: int = 0
    scheme: str = "megc3"
    amplitude: Range = (0.02, 0.06)  # micro-expression apex displacement × IOD (real MEs: ~0.01-0.04)
    micro_per_minute: float = 6.0  # micro-expressions per minute of video with a visible face
    micro_duration_s: Range = (0.2, 0.5)  # onset → offset (CASME-II: median about 0.3 s)
    phase_median_s: float = 0.15  # median onset→apex and apex→offset
    phase_spread: float = 0.35
    single_au: float = 0.3  # fraction of MEs reduced to one AU of their recipe
    one_sided: float = 0.25  # fraction of MEs that move one half of the face only
    macro_per_minute: float = 1.0  # macro-expressions (distractors, annotated as macro)
    macro_amplitude: Range = (0.10, 0.22)
    macro_duration_s: Range = (0.6, 3.0)
    gap_s: float = 1.5  # least gap between annotated intervals
    margin_s: float = 0.5  # the face is tracked for this long before onset and after offset
    lead_s: float = 1.0  # nothing starts in the first second (a tracker and a spotter warm up)
    calm: bool = False  # place expressions only where the face is calm (no talking, head still)
    calm_quantile: float = 0.5  # ... calm = facial activity below this quantile of the video's
    codec: str = "MJPG"  # MJPG (.avi, what webcams send) or mp4v (.mp4)
    quality: int = 90  # JPEG quality of MJPG (the mesh family draws one per video: mesh.quality)
    family: str = "warp"  # how expressions move the skin: one of FAMILIES
    mesh: MeshOptions = field(default_factory=MeshOptions)  # what the mesh family draws

    def __post_init__(self) -> None:
        def bad(msg: str) -> SynthError:
            return SynthError(f"invalid setting: {msg}")

        get_scheme(self.scheme)
        for name in ("amplitude", "micro_duration_s", "macro_amplitude", "macro_duration_s"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise bad(f"{name} must be a range 0 <= lo <= hi, got {(lo, hi)}")
        if self.amplitude[1] > MAX_AMPLITUDE:
            raise bad(f"amplitude is the apex displacement as a fraction of the eye distance: at most "
                      f"{MAX_AMPLITUDE} (real micro-expressions: about 0.01-0.04), got {self.amplitude}")
        if self.micro_duration_s[1] > 0.5:
            raise bad(f"micro-expressions last at most 0.5 s, got {self.micro_duration_s}")
        for name in ("single_au", "one_sided", "calm_quantile"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise bad(f"{name} must be within 0..1, got {getattr(self, name)}")
        for name in ("micro_per_minute", "macro_per_minute", "gap_s", "margin_s", "lead_s"):
            if not getattr(self, name) >= 0:
                raise bad(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.codec not in CODECS:
            raise bad(f"codec must be one of {CODECS}, got {self.codec!r}")
        if not 1 <= self.quality <= 100:
            raise bad(f"quality must be 1..100, got {self.quality}")
        if self.family not in FAMILIES:
            raise bad(f"family must be one of {FAMILIES}, got {self.family!r}")

    def expression_settings(self, fps: float) -> SynthOptions:
        """The generator's settings that :func:`training.synth.draw_expression` reads, at ``fps``."""
        lo = max(self.micro_duration_s[0], 2.0 / fps)
        return SynthOptions(
            fps=fps, scheme=self.scheme, micro_amplitude=self.amplitude,
            micro_duration_s=(lo, max(lo, self.micro_duration_s[1])), phase_median_s=self.phase_median_s,
            phase_spread=self.phase_spread, macro_amplitude=self.macro_amplitude,
            macro_duration_s=self.macro_duration_s,
        )


# --- tracking ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceTrack:
    """A source video and its face landmarks in every frame (NaN where no face was found)."""

    path: Path
    fps: float
    size: tuple[int, int]  # width, height
    landmarks: np.ndarray  # (n_frames, 478, 2) float32, frame pixels

    @property
    def n_frames(self) -> int:
        return len(self.landmarks)

    @property
    def face(self) -> np.ndarray:
        """(n_frames,) bool: a face was tracked in the frame."""
        return ~np.isnan(self.landmarks[:, 0, 0])

    def iod(self) -> np.ndarray:
        """Inter-ocular distance per frame (pixels; NaN without a face), from the eye corners."""
        lm = self.landmarks
        right, left = lm[:, [33, 133]].mean(1), lm[:, [263, 362]].mean(1)
        return np.hypot(*(left - right).T)

    def activity(self, smooth_s: float = 0.2) -> np.ndarray:
        """Per frame, how much the face moves (IOD per second): the head's speed plus the fastest facial part
        (brows, eyelids, mouth, jaw) relative to the head, averaged over ``smooth_s``. High while talking,
        blinking or turning; NaN without a face."""
        lm = self.landmarks.astype(np.float64)
        iod = self.iod()
        anchors = lm[:, [33, 133, 263, 362, 1]]
        centre = anchors.mean(1)
        rel = (lm - centre[:, None]) / iod[:, None, None]
        head = np.hypot(*np.diff(centre, axis=0).T) / iod[1:]
        step = np.hypot(*np.moveaxis(np.diff(rel, axis=0), -1, 0))  # (n-1, 478) per-landmark steps
        parts = np.stack([step[:, list(ids)].mean(1) for ids in _ACTIVITY_PARTS], axis=1).max(1)
        speed = np.full(len(lm), np.nan)
        speed[1:] = (head + parts) * self.fps
        speed[0] = speed[1] if len(lm) > 1 else np.nan
        width = max(1, int(round(smooth_s * self.fps)))
        if width > 1:
            kernel = np.ones(width) / width
            filled = np.nan_to_num(speed, nan=np.inf)
            speed = np.convolve(filled, kernel, mode="same")
            speed[~np.isfinite(speed)] = np.nan
        return speed


# Facial parts whose own motion makes a face "busy" (MediaPipe indices): brows, eyelids, mouth, jaw.
_ACTIVITY_PARTS: tuple[tuple[int, ...], ...] = (
    (46, 53, 52, 65, 55, 70, 63, 105, 66, 107), (276, 283, 282, 295, 285, 300, 293, 334, 296, 336),
    (159, 145, 158, 153, 160, 144), (386, 374, 385, 380, 387, 373),
    (61, 291, 0, 17, 13, 14, 78, 308, 40, 270, 91, 321), (152, 175, 199, 200, 18, 32, 262),
)


def track_video(path: str | Path, *, tracker: FaceTrackerOptions | None = None,
                progress: Progress | None = None) -> SourceTrack:
    """Run the live face tracker over every frame of ``path``."""
    path = Path(path)
    source = open_source(path)
    if source.is_live:
        source.close()
        raise SynthError(f"{path}: onto needs a video file, not a live source")
    total = source.frame_count or 0
    if progress:
        progress("track", 0, total)
    rows: list[np.ndarray] = []
    size: tuple[int, int] | None = None
    nan = np.full((478, 2), np.nan, np.float32)

    def frames() -> Iterator[np.ndarray]:
        nonlocal size
        while (frame := source.read()) is not None:
            size = (frame.shape[1], frame.shape[0])
            yield frame

    with source, FaceTracker(tracker or FaceTrackerOptions()) as face_tracker:
        fps = float(source.fps)
        for face in track_frames(face_tracker, frames(), fps):
            rows.append(nan if face is None else face.landmarks.astype(np.float32))
            if progress and len(rows) % 25 == 0:
                progress("track", 25, total)
        if source.error:
            raise SynthError(f"{path}: {source.error}")
    if progress and len(rows) % 25:
        progress("track", len(rows) % 25, total)
    if not rows or size is None:
        raise SynthError(f"{path}: no frames could be read")
    track = SourceTrack(path, fps, size, np.stack(rows))
    if not track.face.any():
        raise SynthError(f"{path}: no face found in any frame; onto needs a visible face")
    return track


# --- planning ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OntoPlan:
    """The expressions to render onto one tracked video (times on the source clock, frame-aligned)."""

    video: str
    source: str
    fps: float
    n_frames: int
    expressions: tuple[Expression, ...]  # MeshExpression in the mesh family
    seed: tuple[int, ...]
    family: str = "warp"
    camera: Camera | None = None  # the mesh family's noise and compression, on every frame

    def rows(self) -> list[dict[str, object]]:
        out = []
        for e in self.expressions:
            on, ap, off = _frames(e, self.fps, self.n_frames)
            out.append({"video": self.video, "subject": self.video, "onset": on, "apex": ap, "offset": off,
                        "kind": e.kind, "label": e.label, "aus": format_aus(e.aus), "fps": f"{self.fps:g}",
                        "n_frames": self.n_frames, "amplitude": f"{e.amplitude:.4f}", "side": e.side,
                        "source": self.source, "family": self.family})
        return out


def _allowed_starts(track: SourceTrack, settings: OntoOptions) -> np.ndarray:
    """(n_frames,) bool: an expression may cover this frame (face tracked around it; calm if asked)."""
    ok = track.face.copy()
    ok[: int(math.ceil(settings.lead_s * track.fps))] = False
    # widen every gap by the margin: the whole margin around an expression must be allowed too
    m = int(math.ceil(settings.margin_s * track.fps))
    if m > 0:
        bad = (~ok).astype(np.uint8)
        bad = cv2.dilate(bad[None, :], np.ones((1, 2 * m + 1), np.uint8))[0].astype(bool)
        ok = ~bad
    return ok


class _Calm:
    """Is the face calm around an interval? Its mean activity over the interval and the margins is at most
    the ``calm_quantile`` of the same mean over every such stretch of the video."""

    def __init__(self, track: SourceTrack, settings: OntoOptions, span: int) -> None:
        activity = np.nan_to_num(track.activity(), nan=0.0)
        self.margin = int(math.ceil(settings.margin_s * track.fps))
        self.cum = np.concatenate([[0.0], np.cumsum(activity)])
        width = span + 2 * self.margin
        means = (self.cum[width:] - self.cum[:-width]) / width if len(activity) > width else activity
        self.limit = float(np.quantile(means, settings.calm_quantile))

    def __call__(self, on: int, off: int) -> bool:
        a, b = max(on - self.margin, 0), min(off + self.margin + 1, len(self.cum) - 1)
        return (self.cum[b] - self.cum[a]) / max(b - a, 1) <= self.limit


def plan_onto(track: SourceTrack, settings: OntoOptions, *, video: str, index: int = 0) -> OntoPlan:
    """Draw and place micro- (and macro-) expressions on a tracked video; deterministic for (seed, index)."""
    mesh = settings.family == "mesh"
    seed = (int(settings.seed), 6 if mesh else 3, int(index))  # the warp family's stream as it always was
    rng = np.random.default_rng(np.random.SeedSequence(list(seed)))
    fps, n = track.fps, track.n_frames
    ok = _allowed_starts(track, settings)
    visible_min = float(track.face.sum()) / fps / 60.0
    st = settings.expression_settings(fps)
    labels = st.class_scheme.labels
    taken: list[tuple[int, int]] = []  # annotated frame intervals
    gap = int(math.ceil(settings.gap_s * fps))
    placed: list[Expression] = []
    calm = _Calm(track, settings, int(round(0.35 * fps))) if settings.calm else None
    for kind, rate in (("macro", settings.macro_per_minute), ("micro", settings.micro_per_minute)):
        count = int(round(rate * visible_min))
        missed = 0
        for _ in range(count):
            label = labels[int(rng.integers(len(labels)))]
            e = (draw_mesh_expression(rng, st, settings.mesh, label, kind) if mesh
                 else draw_expression(rng, st, label, kind))
            if kind == "micro":
                e = _vary(e, rng, settings)
            span = int(math.ceil(e.duration_s * fps))
            for _try in range(400):
                on = int(rng.integers(0, max(n - span - 1, 1)))
                off = on + span
                if off >= n or not ok[on : off + 1].all():
                    continue
                if calm is not None and kind == "micro" and not calm(on, off):
                    continue
                if any(off + gap >= a and on <= b + gap for a, b in taken):
                    continue
                placed.append(e.shifted(on / fps))
                taken.append((on, off))
                break
            else:
                missed += 1
        if missed:
            log.info("%s: no room for %d of %d %s-expressions", video, missed, count, kind)
    placed.sort(key=lambda e: e.onset_s)
    camera = Camera.draw((int(settings.seed), 7, int(index)), settings.mesh) if mesh else None
    return OntoPlan(video, str(track.path.name), fps, n, tuple(placed), seed, settings.family, camera)


_SHARED_AUS = (25, 26)  # Action Units that go with several classes' recipes


def _vary(e: Expression, rng: np.random.Generator, settings: OntoOptions) -> Expression:
    """Single-AU and one-sided variants, as real micro-expressions often are."""
    # one AU of the recipe, never one that no class owns: lips parting (25) or a jaw drop (26) alone is no
    # expression of the class at all
    telling = [k for k, au in enumerate(e.aus) if au not in _SHARED_AUS]
    if len(e.aus) > 1 and telling and rng.random() < settings.single_au:
        k = telling[int(rng.integers(len(telling)))]
        e = replace(e, aus=(e.aus[k],), intensities=(e.intensities[k],))
    if rng.random() < settings.one_sided:
        e = replace(e, side=SIDES[1 + int(rng.integers(2))])
    return e


# --- rendering ---------------------------------------------------------------------------------------------


def _writer(path: Path, settings: OntoOptions, fps: float, size: tuple[int, int], quality: int
            ) -> cv2.VideoWriter:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*settings.codec), fps, size)
    if not writer.isOpened():
        raise SynthError(f"cannot open a {settings.codec} video writer for {path}")
    if settings.codec == "MJPG":
        writer.set(cv2.VIDEOWRITER_PROP_QUALITY, float(quality))
    return writer


def video_suffix(settings: OntoOptions) -> str:
    return ".avi" if settings.codec == "MJPG" else ".mp4"


def render_frame(frame: np.ndarray, landmarks: np.ndarray, expressions: Sequence[Expression], t: float
                 ) -> np.ndarray | None:
    """``frame`` with every expression active at ``t`` rendered onto the face at ``landmarks`` (a new array),
    or None when none is active. Amplitudes are normalised on this frame's face. Each expression is rendered by
    its family: a :class:`training.synth_mesh.MeshExpression` deforms the mesh, any other is warped by AU fields.
    No camera effects (:func:`render_onto` adds those)."""
    meshes = [e for e in expressions if isinstance(e, MeshExpression)]
    warps = [e for e in expressions if not isinstance(e, MeshExpression) and e.onset_s < t < e.offset_s]
    out = _warp_frame(frame, landmarks, warps, t) if warps else None
    shaped = render_mesh(frame if out is None else out, landmarks, meshes, t) if meshes else None
    return out if shaped is None else shaped


def _warp_frame(frame: np.ndarray, landmarks: np.ndarray, active: Sequence[Expression], t: float
                ) -> np.ndarray | None:
    """The warp family: the AU fields of the ``active`` expressions, summed and warped in."""
    if np.isnan(landmarks[0, 0]):
        return None
    rig = FaceRig(frame, landmarks)
    weights: dict = {}
    for e in active:
        for key, w in e.weights(t, rig).items():
            weights[key] = weights.get(key, 0.0) + w
    out = frame.copy()
    rig.region(out)[...] = rig.render(rig.region(frame), weights).image
    return out


def render_onto(track: SourceTrack, plan: OntoPlan, out_path: str | Path, settings: OntoOptions, *,
                progress: Progress | None = None) -> Path:
    """Decode the source, render the planned expressions in, re-encode to ``out_path``. A plan with a camera
    (the mesh family) gets its noise on every frame and its JPEG quality (MJPG's, else a JPEG round trip)."""
    out_path = Path(out_path)
    source = open_source(track.path)
    camera = plan.camera
    writer = _writer(out_path, settings, track.fps, track.size, settings.quality if camera is None else camera.quality)
    noise = None if camera is None else camera.noise()  # one seeded stream per rendering
    if progress:
        progress("render", 0, track.n_frames)
    k = 0
    try:
        with source:
            while k < track.n_frames and (frame := source.read()) is not None:
                rendered = render_frame(frame, track.landmarks[k], plan.expressions, k / track.fps)
                out = frame if rendered is None else rendered
                if noise is not None:
                    out = noise(out)
                if camera is not None and settings.codec != "MJPG":
                    out = camera.compress(out)  # MJPG compresses at the camera's quality itself
                writer.write(out)
                k += 1
                if progress and k % 25 == 0:
                    progress("render", 25, track.n_frames)
    finally:
        writer.release()
    if progress and k % 25:
        progress("render", k % 25, track.n_frames)
    if k != track.n_frames:
        raise SynthError(f"{track.path}: read {k} frames on the second pass, {track.n_frames} on the first")
    return out_path


# --- recognition clips ---------------------------------------------------------------------------------------

CLIP_CONTEXT_S = 0.25  # neutral face kept before onset and after offset in a recognition clip


def _clip_windows(rows: Sequence[dict[str, object]], *, fps: float, n_frames: int, subject: str,
                  name: str) -> list[tuple[int, int, dict[str, object]]]:
    """Each micro-expression's clip: its first and last frame in the video (``CLIP_CONTEXT_S`` of context
    either side) and its row of ``recognition/annotations.csv`` (frame numbers within the clip)."""
    ctx = int(round(CLIP_CONTEXT_S * fps))
    windows = []
    for k, row in enumerate(r for r in rows if r["kind"] == "micro"):
        on, ap, off = (int(str(row[c])) for c in ("onset", "apex", "offset"))
        first, last = max(on - ctx, 0), min(off + ctx, n_frames - 1)
        clip = f"{subject}/{name}_{k + 1:04d}"
        windows.append((first, last, {
            "subject": subject, "clip": clip, "onset": on - first, "apex": ap - first, "offset": off - first,
            "label": row["label"], "aus": row["aus"], "fps": row["fps"], "n_frames": last - first + 1}))
    return windows


def _save_clips(windows: Sequence[tuple[int, int, dict[str, object]]], crop: Callable[[int, int], np.ndarray | None],
                root: Path, *, source: str) -> list[dict[str, object]]:
    """Write each clip's crops (``crop(window number, frame)``; None: no face there, and the clip is skipped) as
    ``root/<clip>/000000.png ...``; the rows of the clips written."""
    rows = []
    for i, (first, last, row) in enumerate(windows):
        found = [crop(i, f) for f in range(first, last + 1)]
        frames = [f for f in found if f is not None]
        if len(frames) != len(found):
            log.info("%s: clip %s skipped (no face on some of its frames)", source, row["clip"])
            continue
        folder = root / str(row["clip"])
        folder.mkdir(parents=True, exist_ok=True)
        for n, image in enumerate(frames):
            if not cv2.imwrite(str(folder / f"{n:06d}.png"), image):
                raise SynthError(f"cannot write {folder / f'{n:06d}.png'}")
        rows.append(row)
    return rows


def write_clips(video: Path, plan: OntoPlan, root: Path, *, subject: str, tracker: FaceTrackerOptions,
                progress: Progress | None = None) -> list[dict[str, object]]:
    """Recognition clips of a rendered video's micro-expressions, as live use sees them: the rendered video is
    tracked by the live :class:`realtime.face.FaceTracker` and each window (plus ``CLIP_CONTEXT_S`` of context)
    is written as aligned BGR crops (``root/<subject>/<clip>/000000.png``), the layout of the synthetic
    recognition set, so ``mer-train --dataset synth`` reads it. Rows for ``recognition/annotations.csv``;
    a window with a frame where no face was found is skipped (logged)."""
    # the seed in the name: several renderings merge
    windows = _clip_windows(plan.rows(), fps=plan.fps, n_frames=plan.n_frames, subject=subject,
                            name=f"{plan.video}_s{plan.seed[0]}")
    wanted: dict[int, list[int]] = {}
    for i, (first, last, _) in enumerate(windows):
        for f in range(first, last + 1):
            wanted.setdefault(f, []).append(i)
    crops: dict[int, dict[int, np.ndarray]] = {i: {} for i in range(len(windows))}
    options = replace(tracker, color=True)
    source = open_source(video)
    if progress:
        progress("clips", 0, plan.n_frames)
    with source, FaceTracker(options) as face_tracker:
        k = 0
        # every frame: the tracker follows the face
        for face in track_frames(face_tracker, source.frames(), plan.fps):
            if face is not None and face.crop_bgr is not None:
                for i in wanted.get(k, []):
                    crops[i][k] = face.crop_bgr
            k += 1
            if progress and k % 25 == 0:
                progress("clips", 25, plan.n_frames)
    return _save_clips(windows, lambda i, f: crops[i].get(f), root, source=video.name)


def track_clips(track: FaceTrack, rows: Sequence[dict[str, object]], root: Path, *, subject: str,
                name: str) -> list[dict[str, object]]:
    """:func:`write_clips` from a rendered video's cached live track (:class:`training.replay.FaceTrack`: the
    grayscale crops ``mer-live --video X --fast`` analyses) instead of tracking it again: how the real-footage
    benchmark's renders become recognition sets (``mer-bench real --clips``)."""
    windows = _clip_windows(rows, fps=track.fps, n_frames=track.frames, subject=subject, name=name)

    def crop(_: int, f: int) -> np.ndarray | None:
        return track.crops[f] if track.present[f] else None

    return _save_clips(windows, crop, root, source=track.name)


# Spotting settings that find far more than micro-expressions: for harvesting windows that are not one.
PERMISSIVE_SPOTTER = {"threshold": 1.0, "min_peak": 0.005, "max_context": 100.0, "max_blink": 0.99, "max_head": 100.0,
               "max_lid_change": 1e6, "max_lid_change_widened": 1e6, "max_return": 100.0}


def write_none_clips(video: Path, root: Path, *, subject: str, tracker: FaceTrackerOptions, per_minute: float,
                     seed: int = 0, progress: Progress | None = None) -> list[dict[str, object]]:
    """Clips labelled ``none`` from an un-injected video: windows a permissive version of the live spotter finds
    there (talking, blinks, gaze, head turns, natural expressions), at most ``per_minute`` per minute, drawn at
    random. A model trained with them (class scheme ``megc3n``) can veto a false window live."""
    source = open_source(video)
    fps = float(source.fps)
    found = []
    n = 0
    with source, FaceTracker(tracker) as face_tracker:
        # the live chain (mer_analysis.chain.Analyzer), its spotter made permissive
        analyzer = Analyzer(face_tracker, AnalyzerOptions(spotting="rules",
                                                          spotter=SpotterOptions(**PERMISSIVE_SPOTTER)))
        if progress:
            progress("none windows", 0, source.frame_count or 0)
        for face in track_frames(face_tracker, source.frames(), fps):
            found += [job.window for job in analyzer.analyze(face, n, n / fps).jobs]
            n += 1
            if progress and n % 25 == 0:
                progress("none windows", 25, source.frame_count or 0)
        found += [job.window for job in analyzer.flush()]
    found = [w for w in found if w.kind == "micro"]
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 4, len(found)]))
    keep = int(round(per_minute * n / fps / 60.0))
    chosen = sorted(rng.choice(len(found), size=min(keep, len(found)), replace=False).tolist()) if found else []
    expressions = tuple(Expression("micro", NONE_LABEL, (), (), 0.0, found[i].onset.t, found[i].apex.t -
                                   found[i].onset.t, 0.0, found[i].offset.t - found[i].apex.t) for i in chosen)
    plan = OntoPlan(f"{video.stem}_none", video.name, fps, n, expressions, (int(seed), 4))
    log.info("%s: %d windows that are no micro-expression found, %d kept", video.name, len(found), len(chosen))
    return write_clips(video, plan, root, subject=subject, tracker=tracker, progress=progress)


# --- many videos -------------------------------------------------------------------------------------------


@dataclass
class OntoSummary:
    """What :func:`write_onto` wrote."""

    videos: list[str] = field(default_factory=list)
    frames: int = 0
    micro: int = 0
    macro: int = 0
    minutes: float = 0.0
    clips: int = 0


def video_ids(paths: Sequence[Path], variants: int) -> list[tuple[Path, int, str]]:
    """(source, variant, output id) per rendering; ids are the source stems, made unique."""
    seen: dict[str, int] = {}
    out = []
    for path in paths:
        stem = path.stem
        seen[stem] = seen.get(stem, 0) + 1
        base = stem if seen[stem] == 1 else f"{stem}_{seen[stem]}"
        for v in range(variants):
            out.append((path, v, base if variants == 1 else f"{base}_v{v + 1}"))
    return out


def write_onto(videos: Sequence[str | Path], out: str | Path, settings: OntoOptions, *, variants: int = 1,
               tracker: FaceTrackerOptions | None = None, force: bool = False, clips: bool = False,
               none_per_minute: float = 0.0, progress: Progress | None = None,
               on_video: Callable[[str], object] | None = None) -> OntoSummary:
    """Render ``settings`` onto each video (``variants`` different draws each) into ``out``. ``on_video`` is
    told each source's name before it is tracked and each output's name before it is rendered. With ``clips``
    the micro-expressions are also written as a recognition set (``out/recognition``, see
    :func:`write_clips`), one subject per source video, plus ``none_per_minute`` clips labelled ``none`` per
    minute of each *source* video (:func:`write_none_clips`)."""
    root = Path(out)
    paths = [Path(v) for v in videos]
    for p in paths:
        if not p.is_file():
            raise SynthError(f"no such video file: {p}")
    if root.exists() and any(root.iterdir()) and not force:
        raise SynthError(f"{root} exists and is not empty; pass --force to replace its contents")
    suffix = video_suffix(settings)
    sources = {p.resolve() for p in paths}
    for path, _, vid in video_ids(paths, variants):  # --force replaces outputs, never a source video
        if (root / f"{vid}{suffix}").resolve() in sources:
            raise SynthError(f"the rendering of {path.name} would replace {root / f'{vid}{suffix}'}, one of the "
                             "source videos; choose another --out")
    root.mkdir(parents=True, exist_ok=True)
    summary = OntoSummary()
    rows: list[dict[str, object]] = []
    index = 0
    tracks: dict[Path, SourceTrack] = {}
    clip_rows: list[dict[str, object]] = []
    subjects = {p: vid.rsplit("_v", 1)[0] if variants > 1 else vid for p, _, vid in video_ids(paths, variants)}
    for path, variant, vid in video_ids(paths, variants):
        track = tracks.get(path)
        if track is None:
            if on_video:
                on_video(path.name)
            track = tracks[path] = track_video(path, tracker=tracker, progress=progress)
        if on_video:
            on_video(vid)
        if clips and none_per_minute > 0 and variant == 0:  # once per source video
            clip_rows += write_none_clips(path, root / "recognition", subject=subjects[path],
                                          tracker=tracker or FaceTrackerOptions(), per_minute=none_per_minute,
                                          seed=settings.seed, progress=progress)
        plan = plan_onto(track, settings, video=vid, index=index)
        index += 1
        render_onto(track, plan, root / f"{vid}{suffix}", settings, progress=progress)
        rows += plan.rows()
        if clips:
            clip_rows += write_clips(root / f"{vid}{suffix}", plan, root / "recognition", subject=subjects[path],
                                     tracker=tracker or FaceTrackerOptions(), progress=progress)
        summary.videos.append(vid + suffix)
        summary.frames += track.n_frames
        summary.minutes += track.n_frames / track.fps / 60.0
        summary.micro += sum(e.kind == "micro" for e in plan.expressions)
        summary.macro += sum(e.kind == "macro" for e in plan.expressions)
    write_csv(root / "annotations.csv", ONTO_COLUMNS, rows)
    if clips:
        write_csv(root / "recognition" / "annotations.csv", RECOGNITION_COLUMNS, clip_rows)
        summary.clips = len(clip_rows)
    manifest = {"generator": "mer-synth onto", "format": 1, "settings": asdict(settings), "variants": variants,
                "sources": [str(p) for p in paths], "videos": summary.videos,
                "counts": {"micro": summary.micro, "macro": summary.macro, "frames": summary.frames}}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    (root / "README.md").write_text(_readme(settings, summary), encoding="utf-8")
    return summary


def _readme(settings: OntoOptions, summary: OntoSummary) -> str:
    lo, hi = settings.amplitude
    return "\n".join([
        "# Micro-expressions rendered onto real video (mer-synth onto)\n",
        f"{len(summary.videos)} videos ({summary.minutes:.1f} min, {summary.frames} frames): {summary.micro} micro- "
        f"and {summary.macro} macro-expressions rendered onto the tracked face of real footage, amplitude "
        f"{lo:g}-{hi:g} of the inter-ocular distance (largest landmark displacement at apex). Everything else is",
        "the source's own: head motion, blinks, talking, lighting, noise. Settings: `manifest.json`.\n",
        f"Render family `{settings.family}`: " + _FAMILY_TEXT[settings.family] + "\n",
        "`annotations.csv` — one row per expression, frame indices 0-based and inclusive:\n",
        "| column | meaning |", "|---|---|",
        "| video | output file name without suffix |", "| subject | the same (one source video = one subject) |",
        "| onset, apex, offset | frames of the rendered video |", "| kind | `micro` or `macro` |",
        "| label | class |", "| aus | Action Units, e.g. `12+6` |", "| fps, n_frames | of the video |",
        "| amplitude | apex displacement × IOD |", "| side | `both`, or `left` / `right` (image side) for "
        "one-sided expressions |", "| source | the source video's file name |",
        "| family | render family: `warp` or `mesh` |", "",
    ]) + "\n"


_FAMILY_TEXT = {
    "warp": "Action-Unit Gaussian RBF displacement fields warped into the frame (training.aus).",
    "mesh": "the tracked face mesh deformed per Action Unit (falloff along the mesh, extent, direction and side "
            "balance drawn per expression), a piecewise-affine warp over its Delaunay triangulation, shading "
            "that follows the deformation, and sensor noise plus JPEG compression drawn per video on every "
            "frame (training.synth_mesh).",
}

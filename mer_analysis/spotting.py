"""Streaming spotter: region displacements → micro-expression windows (onset, apex, offset, micro/macro).

A micro-expression moves a patch of skin and brings it back within half a second. For each region the
spotter therefore asks, for every frame ``s``, how far the skin at ``s`` stands out from *both* the frame a lag
before and the frame a lag after (:class:`mer_analysis.motion.MotionSample` gives displacements over the lag)::

    contrast_r(s) = min(F_r(s) · u, −F_r(s + lag) · u),   u = the direction of F_r(s) − F_r(s + lag)

where ``F_r(t)`` is the region's displacement from ``t − lag`` to ``t``. A bump that rises and comes back gives
its own height; a step (a lasting expression, a head turn) or a slow drift gives about zero, because one of the
two sides did not move. Real faces move all the time at micro-expression size (talking, blinks, gaze,
conversational brow raises), so each region's contrast is compared with that region's own recent level (its
``level_quantile`` over the last ``level_window_s``): a talking mouth needs a larger bump than a still brow.

A peak of one region's contrast above both an absolute floor and ``threshold`` × its level is a candidate.
Its window runs from where the contrast falls below ``edge_fraction`` of the peak before it to where it does
after it. A candidate is kept only when it is isolated (the same region is quiet just before and after), the
eyes did not blink, the head did not move, and — when a ``displacement`` probe is given — the region rose
from the onset face to the apex and came back to it. Overlapping candidates of several regions give one
window, the best scored. Everything is in seconds, so a 30 fps webcam and a 200 fps lab camera behave alike.
The decision comes about ``lag + context_after_s`` after the offset: that delay is reported, not hidden.

A score above the threshold is therefore only a candidate. Every peak that crosses it and is not kept is
counted by why it was dropped (:data:`REJECT_REASONS`, :attr:`Spotter.rejected`), and the most recent are kept
for an offline reader (:meth:`Spotter.drain_rejected`): a person looking at the score curve can see why a
crossing gave no window.

Talking, blinks and gaze move many regions together, so a smile's 1-2 px hide under them. Before anything else,
:class:`FaceCoupling` removes from every region the part of its movement that the rest of the face predicts (a
linear fit over the last ``coupling_s``, refitted every frame from decayed sums, applied in proportion to how
much it explains). A region is never predicted from the regions one expression moves with it (both brows and the
glabella; the eyelids; cheeks, nose wings and lip corners; lips and chin), so an expression on both sides
survives; what is left is what this group did on its own: a lip-corner pull that the chin does not share, a brow
raise the lids do not share, stands out again.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from mer_analysis.motion import REGION_NAMES, MotionSample
from mer_core.events import TimePoint

log = logging.getLogger(__name__)

__all__ = [
    "REJECT_REASONS",
    "STATES",
    "Displacement",
    "FaceCoupling",
    "Rejection",
    "SpottedWindow",
    "Spotter",
    "SpotterOptions",
]

STATES = ("warming-up", "idle", "moving", "no-face")

# Why a peak of a region's score that crossed the threshold gave no window: the one list of the names that the
# spotter counts, the summary record carries and the dashboard and report show, in the order they are checked.
REJECT_REASONS: dict[str, str] = {
    "too_small": "below min_peak, the smallest movement spotted",
    "too_large": "above max_peak, larger than a micro-expression",
    "cut": "its fall was not seen: the data ended",
    "overlap": "overlaps the window already spotted",
    "too_short": "shorter than min_duration_s",
    "context": "the region was not quiet before or after it, or moved again (max_context)",
    "blink": "a blink: the eyes closed or the eyelids changed",
    "head": "the head moved (max_head)",
    "no_return": "the region did not come back to the onset face (max_return)",
    "weaker": "an overlapping candidate scored higher",
}

# (frame a, frame b) → region displacement (R, 2) in IOD units from a to b, or None when either crop is gone.
Displacement = Callable[[int, int], "np.ndarray | None"]


@dataclass(frozen=True)
class SpotterOptions:
    """Spotting thresholds and timings. Times in seconds; displacements in fractions of the IOD."""

    min_peak: float = 0.008  # a region's contrast must reach this (0.8 % of the IOD, about 0.4 px at 128 px)
    max_peak: float = 0.08  # ... and stay below this: larger, faster movements are not micro-expressions
    threshold: float = 2.5  # ... and be this many times the region's recent level
    level_window_s: float = 10.0  # a region's level: the level_quantile of its contrast over this long
    level_quantile: float = 0.9
    level_floor: float = 0.001  # the level never goes below this (a perfectly still face is not infinitely strict)
    min_level_s: float = 1.0  # no window opens before this much of the face was seen
    level_period_s: float = 0.5  # how often the levels are recomputed
    peak_half_width_s: float = 0.2  # a candidate's apex is the largest contrast within ± this
    edge_fraction: float = 0.2  # onset / offset: where the contrast falls below this fraction of the peak
    max_rise_s: float = 0.5  # the onset is at most this long before the apex (and the offset after it)
    context_before_s: float = 1.0  # the region must be quiet this long before the onset ...
    context_after_s: float = 0.3  # ... and this long after the offset
    max_context: float = 0.55  # quiet = the region's contrast there stays below this fraction of the peak
    max_blink: float = 0.3  # the eyes may close by at most this fraction of their usual opening (a blink
    #                         closes them by more; cheek raisers and lid tighteners by less) ...
    max_lid_change: float = 3.5  # ... and the eyelids' unexplained change (motion.MotionSample.change) may
    #                              reach at most this × its usual level (a lid drawn over the eye, which the
    #                              landmarks do not always follow, changes far more than moving skin does),
    #                              or, when the eyes opened wider than usual by ``widened_eyes`` (an upper-lid
    #                              raise uncovers the eye; the landmarks of a blink seldom look like that), at
    #                              most ``max_lid_change_widened`` × its usual level
    widened_eyes: float = 0.06
    max_lid_change_widened: float = 8.0
    max_head: float = 0.12  # the head's residual motion (motion.MotionSample.head) must stay below this
    max_return: float = 0.4  # displacement onset → offset must be below this fraction of onset → apex
    min_duration_s: float = 0.08  # shorter windows (onset to offset) are dropped
    micro_max_s: float = 0.5  # windows up to this long are micro-expressions, longer ones macro
    hold_s: float = 0.1  # a kept candidate waits this long for an overlapping, better one
    max_gap_s: float = 1.0  # a longer gap between frames (or time going back) restarts the spotter
    coupling_s: float = 10.0  # memory of the fit of each region on the rest of the face (FaceCoupling); 0 = off
    coupling_ridge: float = 0.1  # its ridge, × each input's mean squared movement in that memory

    def __post_init__(self) -> None:
        for name in ("min_peak", "threshold", "level_window_s", "level_floor", "level_period_s",
                     "peak_half_width_s", "max_rise_s", "micro_max_s", "max_gap_s", "max_peak"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("min_level_s", "context_before_s", "context_after_s", "min_duration_s", "hold_s",
                     "coupling_s", "coupling_ridge"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("level_quantile", "edge_fraction"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be within (0, 1), got {getattr(self, name)}")
        if not 0.0 < self.max_blink < 1.0:
            raise ValueError(f"max_blink must be within (0, 1), got {self.max_blink}")
        for name in ("max_context", "max_head", "max_return", "max_lid_change", "max_lid_change_widened",
                     "widened_eyes"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.max_peak <= self.min_peak:
            raise ValueError(f"min_peak ({self.min_peak}) must be below max_peak ({self.max_peak}), the largest "
                             "movement spotted")
        if self.min_level_s > self.level_window_s:
            raise ValueError("min_level_s cannot exceed level_window_s")


# FaceCoupling's groups: the regions one expression moves together (a brow raise: both brows and the glabella; a
# smile: lip corners, cheeks and nose wings), each predicted from the other groups only, never from itself
COUPLING_GROUPS: tuple[tuple[str, ...], ...] = (
    ("brow_inner_l", "brow_inner_r", "brow_outer_l", "brow_outer_r", "glabella"),
    ("lid_upper_l", "lid_upper_r", "lid_lower_l", "lid_lower_r"),
    ("cheek_l", "cheek_r", "nose_l", "nose_r", "lip_corner_l", "lip_corner_r"),
    ("lip_upper", "lip_lower", "chin"),
)


def _group_columns() -> list[np.ndarray]:
    """Each group's columns in the flattened (R, 2) displacement: x and y of each of its regions."""
    return [np.array([2 * REGION_NAMES.index(name) + k for name in group for k in (0, 1)]) for group in COUPLING_GROUPS]


_NOISE_FLOOR = 0.001  # IOD: a region's unexplained movement is never taken as smaller


class FaceCoupling:
    """Removes from every region the movement that the rest of the face predicts.

    ``remove(displacement, t)`` returns the (R, 2) displacement with each region replaced by what a linear map
    of the *other* regions' displacement (fitted on the frames before ``t``, each weighted by
    ``exp(-age / memory_s)``) does not explain, in proportion to how much of that region's movement the fit
    explains (its R²): on a face that talks, blinks or looks around, much of it; on a still face, next to nothing,
    so noise is not added. Each of :data:`COUPLING_GROUPS` (brows; eyelids; cheeks, nose wings and lip corners;
    lips and chin) is predicted from the other groups only: an expression moves its whole group, on both sides
    (a brow raise lifts both brows and the glabella), and the rest of the group would explain it away. Talking
    moves the lips and chin with the lip corners and cheeks, two groups, and that link is what is taken out.

    On the 20 people of ``../shared/real``, a first form of this fit (each left/right pair on all the other
    regions, before the guards below) raised the median ratio of a rendered micro-expression to its region's own
    movement around it from 0.84 to 1.15 (0.04 IOD, calm, warp renders; 0.67 to 0.97 for mesh renders), where a
    fit on the lips and chin alone, as the earlier ``JawCoupling`` did, gave 0.88 even fitted on the whole video.
    Predicting whole groups rather than pairs then kept the brow raises of the synthetic spotting videos that
    their neighbours had explained away (31 → 34 of 36).

    All regions are solved at once: with ``P`` the inverse of the (ridged) covariance of the 2R displacement
    components, the part of a block ``b`` that the rest does not explain is ``inv(P[b, b]) @ (P[b, :] @ x)`` and
    its variance ``inv(P[b, b])``; one 36 × 36 inverse and four small ones a frame (about 0.1 ms). The fit only
    uses the past, so a micro-expression is measured before it can be learnt; it lasts a fraction of a second
    against a memory of seconds, so it barely enters the fit afterwards either.

    Three guards keep the fit from eating what it should reveal. Its R² is adjusted for its 30-odd inputs, so over
    a face's first seconds, when such a fit explains noise, little is taken out. The ridge of a region's own
    inputs does not count as movement the fit missed. And a frame that a region's usual unexplained movement does
    not cover (beyond ``outlier`` times its RMS: most likely the expression itself) is learnt from less, so a 2 %
    pull against 0.1 % noise does not teach the fit a link to whatever else moved then, which would come back as
    movement afterwards.
    """

    def __init__(self, memory_s: float = 10.0, ridge: float = 0.1, outlier: float = 3.0) -> None:
        if memory_s <= 0 or ridge < 0 or outlier <= 0:
            raise ValueError(f"memory_s and outlier must be > 0 and ridge >= 0, got {memory_s}, {outlier}, {ridge}")
        self.memory_s, self.ridge, self.outlier = memory_s, ridge, outlier
        self._blocks = _group_columns()
        n = 2 * len(REGION_NAMES)
        self._moments = np.zeros((n, n))  # decayed sum of x xᵀ
        self._count = 0.0  # decayed number of frames in it
        self._last_t: float | None = None

    def reset(self) -> None:
        self._moments[:] = 0.0
        self._count = 0.0
        self._last_t = None

    def remove(self, displacement: np.ndarray, t: float) -> np.ndarray:
        x = displacement.astype(np.float64).ravel()
        moments = self._moments
        out = displacement.astype(np.float32, copy=True)
        power = np.diag(moments).copy()
        weight = 1.0
        if power.max() > 0:
            # the ridge is relative to each component's own power: lips move ten times as much as brows
            precision = np.linalg.inv(moments + np.diag(self.ridge * power + 1e-12))
            px = precision @ x
            flat = out.reshape(-1)
            for cols in self._blocks:
                left = np.linalg.inv(precision[np.ix_(cols, cols)])  # the covariance the other groups leave
                unexplained = left @ px[cols]
                # per region (its two components together); the group's own ridge is in ``left`` too, and is
                # not movement the fit missed
                missed = np.maximum((np.diag(left) - self.ridge * power[cols]).reshape(-1, 2).sum(axis=1), 0.0)
                # R² adjusted for the 30-odd inputs (a 0.08 IOD smile 2 s into a video was lost without it)
                inputs = len(x) - len(cols)
                dof = (self._count - 1.0) / (self._count - inputs - 1.0) if self._count > inputs + 1 else math.inf
                explained = 1.0 - dof * missed / np.maximum(power[cols].reshape(-1, 2).sum(axis=1), 1e-12)
                share = np.clip(explained, 0.0, 1.0).repeat(2)
                xb = x[cols]
                flat[cols] = xb - share * (xb - unexplained)
                # a frame beyond its usual unexplained movement is learnt from less (see above)
                usual = np.maximum(missed / max(self._count, 1.0), _NOISE_FLOOR**2)
                surprise = (unexplained**2).reshape(-1, 2).sum(axis=1) / usual
                weight = min(weight, self.outlier**2 / max(float(surprise.max()), 1e-12))
        decay = 1.0 if self._last_t is None else math.exp(-max(t - self._last_t, 0.0) / self.memory_s)
        self._last_t = t
        moments *= decay
        moments += weight * np.outer(x, x)
        self._count = self._count * decay + weight
        return out


@dataclass(frozen=True)
class SpottedWindow:
    """One spotted movement. ``peak`` is its score (contrast over the region's level); ``region`` the region
    that moved most; ``decided_at`` the frame on which it was emitted (look-ahead included)."""

    onset: TimePoint
    apex: TimePoint
    offset: TimePoint
    kind: str
    peak: float
    decided_at: TimePoint
    region: str = ""
    displacement: float = 0.0  # the region's contrast at the apex, IOD units

    @property
    def duration_s(self) -> float:
        return self.offset.t - self.onset.t

    @property
    def delay_s(self) -> float:
        """The look-ahead cost: from the offset frame to the frame that decided the window."""
        return self.decided_at.t - self.offset.t


@dataclass(frozen=True, slots=True)
class Rejection:
    """A candidate the spotter dropped: its apex frame and time, its region, its score (contrast over the
    region's level, as :attr:`Spotter.score`) and why (a :data:`REJECT_REASONS` name). ``shown_t``: when
    :attr:`Spotter.score` showed it, a motion lag after the apex (the frame whose movement completed its
    contrast), where it sits on a plot of the score."""

    frame: int
    t: float
    region: str
    score: float
    reason: str
    shown_t: float


@dataclass(slots=True)
class _Frame:
    """What the spotter keeps per frame: its motion, and (once the frame a lag later arrived) its contrast."""

    index: int
    t: float
    since: int | None
    displacement: np.ndarray | None
    head: float
    eye: float
    change: np.ndarray | None  # (R,) unexplained change, RMS grey levels
    contrast: np.ndarray | None = None  # (R,) IOD units
    level: np.ndarray | None = None  # (R,) the region levels when the contrast was computed


@dataclass(slots=True)
class _Candidate:
    onset: int  # positions in the spotter's frame deque are unstable: keep frame indices and times
    onset_t: float
    apex: int
    apex_t: float
    offset: int
    offset_t: float
    region: int
    contrast: float  # the region's contrast at the apex, IOD units (SpottedWindow.displacement)
    score: float  # contrast over the region's level (SpottedWindow.peak)
    ready_t: float  # when it may be emitted (hold_s after it was kept)


@dataclass
class _Levels:
    """Recent contrasts per region, sampled, and their quantile."""

    values: deque[np.ndarray] = field(default_factory=deque)
    changes: deque[np.ndarray] = field(default_factory=deque)
    times: deque[float] = field(default_factory=deque)
    level: np.ndarray | None = None
    usual_change: np.ndarray | None = None  # per region, the median unexplained change
    next_t: float = -math.inf


class Spotter:
    """Streaming spotter: ``update(sample, index=, t=)`` per frame (``None`` = no face), ``flush()`` at the end.

    ``displacement`` (optional) measures a region's movement between two frames that are still held; with it
    the spotter checks that a candidate rose from its onset face and came back to it. The last ``keep_rejected``
    dropped candidates wait in :meth:`drain_rejected` (older ones are forgotten; their counts are not).
    """

    def __init__(self, settings: SpotterOptions | None = None, *, displacement: Displacement | None = None,
                 keep_rejected: int = 256) -> None:
        self.settings = settings or SpotterOptions()
        self._displacement = displacement
        # run totals: never reset, and every name there from the start, so another thread may copy the dict
        self._rejected = dict.fromkeys(REJECT_REASONS, 0)
        self._recent: deque[Rejection] = deque(maxlen=max(keep_rejected, 0))
        s = self.settings
        self._coupling = FaceCoupling(s.coupling_s, s.coupling_ridge) if s.coupling_s > 0 else None
        self._frames: deque[_Frame] = deque()
        self._levels = _Levels()
        self._pending: list[_Candidate] = []
        self._lids = np.array([k for k, name in enumerate(REGION_NAMES) if name.startswith("lid_")])
        self._state = "no-face"
        self._score = 0.0
        self._reset("no-face")

    # --- public state -------------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """``warming-up`` / ``idle`` / ``moving`` (a region stands out) / ``no-face``."""
        return self._state

    @property
    def ready(self) -> bool:
        """Enough of the face has been seen for windows to open."""
        return self._levels.level is not None

    @property
    def score(self) -> float:
        """The latest frame's score: the largest region contrast over its level (what ``threshold`` gates)."""
        return self._score

    @property
    def threshold(self) -> float | None:
        """The score a region must reach (None until ready), for display."""
        return self.settings.threshold if self.ready else None

    @property
    def rejected(self) -> dict[str, int]:
        """Candidates dropped so far, by :data:`REJECT_REASONS` name (every name, zeros included): a copy."""
        return dict(self._rejected)

    def drain_rejected(self) -> list[Rejection]:
        """The dropped candidates recorded since the last call, oldest first (read on the thread that updates)."""
        recent = self._recent
        if not recent:
            return []
        out = list(recent)
        recent.clear()
        return out

    # --- lifecycle ----------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget everything (levels included); candidates not yet emitted are dropped."""
        self._reset("no-face")

    def close(self) -> None:
        """Nothing to release; present so every component closes the same way."""

    def __enter__(self) -> Spotter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _reset(self, state: str) -> None:
        self._frames.clear()
        if self._coupling is not None:
            self._coupling.reset()
        self._levels = _Levels()
        self._pending = []
        self._state = state
        self._score = 0.0
        self._start_t: float | None = None
        self._scanned = -1  # frame index up to which peaks were looked for
        self._floor = -1  # windows start after the last emitted offset
        self._lag: float | None = None  # the motion lag, as measured between a frame and its reference

    # --- per frame ----------------------------------------------------------------------------------------

    def update(self, sample: MotionSample | None, *, index: int, t: float) -> list[SpottedWindow]:
        """Feed one frame (``sample`` None when no face was found); returns the windows decided on it."""
        s = self.settings
        if not math.isfinite(t):
            raise ValueError(f"frame time must be a finite number of seconds, got {t!r}")
        now = TimePoint(int(index), float(t))
        if sample is None:
            lost = self._emit_pending(now, force=True)
            self._reset("no-face")
            return lost
        last = self._frames[-1] if self._frames else None
        out: list[SpottedWindow] = []
        if last is not None and (t <= last.t or t - last.t > s.max_gap_s):
            log.debug("spotter restarted: t jumped from %.3f to %.3f", last.t, t)
            out += self._emit_pending(now, force=True)
            self._reset("idle")
        if self._start_t is None:
            self._start_t = t
        moved = sample.displacement
        if moved is not None and self._coupling is not None:
            moved = self._coupling.remove(moved, t)
        frame = _Frame(sample.index, sample.t, sample.since, moved, sample.head, sample.eye_opening, sample.change)
        self._frames.append(frame)
        self._contrast(frame)
        self._trim(t)
        self._scan(now)
        out += self._emit_pending(now, force=False)
        if not self.ready:
            self._state = "warming-up"
        else:
            self._state = "moving" if self._score >= s.threshold else "idle"
        return out

    def flush(self) -> list[SpottedWindow]:
        """End of stream: the frames still waiting for their look-ahead are judged with what there is (a
        movement whose fall was not seen is dropped, never guessed), and every kept candidate is decided."""
        last = self._frames[-1] if self._frames else None
        out: list[SpottedWindow] = []
        if last is not None:
            now = TimePoint(last.index, last.t)
            self._scan(now, final=True)
            out = self._emit_pending(now, force=True)
        self._reset("idle" if last is not None else "no-face")
        return out

    # --- internals ----------------------------------------------------------------------------------------

    def _find(self, index: int) -> _Frame | None:
        frames = self._frames
        if not frames:
            return None
        k = index - frames[0].index
        if 0 <= k < len(frames) and frames[k].index == index:
            return frames[k]
        for f in frames:  # indices are consecutive unless frames were skipped upstream
            if f.index == index:
                return f
        return None

    def _contrast(self, frame: _Frame) -> None:
        """The new frame's displacement completes the contrast of the frame it was measured from."""
        s = self.settings
        d = frame.displacement
        if d is None or frame.since is None:
            return
        ref = self._find(frame.since)
        if ref is None:
            return
        self._lag = frame.t - ref.t
        if ref.displacement is None:
            return
        back, ahead = ref.displacement, d  # F(s) and F(s + lag)
        diff = back - ahead
        norm = np.sqrt((diff**2).sum(axis=1)) + 1e-9
        u = diff / norm[:, None]
        contrast = np.minimum((back * u).sum(axis=1), -(ahead * u).sum(axis=1))
        ref.contrast = contrast
        levels = self._levels
        levels.values.append(contrast)
        levels.changes.append(ref.change if ref.change is not None else np.zeros_like(contrast))
        levels.times.append(ref.t)
        horizon = ref.t - s.level_window_s
        while levels.times and levels.times[0] < horizon:
            levels.times.popleft()
            levels.values.popleft()
            levels.changes.popleft()
        seen = ref.t - (self._start_t if self._start_t is not None else ref.t)
        if ref.t >= levels.next_t and seen >= s.min_level_s and len(levels.values) >= 5:
            stacked = np.stack(levels.values)
            levels.level = np.maximum(np.quantile(stacked, s.level_quantile, axis=0), s.level_floor)
            levels.usual_change = np.median(np.stack(levels.changes), axis=0) + 0.5  # + half a grey level
            levels.next_t = ref.t + s.level_period_s
        ref.level = levels.level
        self._score = float((contrast / levels.level).max()) if levels.level is not None else 0.0

    def _trim(self, t: float) -> None:
        s = self.settings
        keep = s.context_before_s + 2 * s.max_rise_s + s.context_after_s + s.peak_half_width_s + 2.0
        while self._frames and self._frames[0].t < t - keep:
            self._frames.popleft()

    def _scan(self, now: TimePoint, *, final: bool = False) -> None:
        """Look for peaks in frames whose surroundings are now known (``final``: all that are left); keep the
        candidates that pass."""
        s = self.settings
        frames = self._frames
        newest = next((f.t for f in reversed(frames) if f.contrast is not None), None)
        if newest is None:
            return
        start = max(0, self._scanned + 1 - frames[0].index)
        while start > 0 and frames[start - 1].index > self._scanned:  # indices skipped upstream
            start -= 1
        for pos in range(start, len(frames)):
            f = frames[pos]
            # the whole window and its context after must have contrasts before the frame can be judged: at the
            # latest max_rise_s after it, sooner once every crossing region's fall has been seen
            if f.t + s.max_rise_s + s.context_after_s > newest and not final and not self._seen_out(pos, newest):
                break
            self._scanned = f.index
            if f.contrast is not None and f.level is not None:
                self._judge(pos, now)

    def _seen_out(self, pos: int, newest: float) -> bool:
        """Whether frame ``pos`` can be judged before max_rise_s has passed: every region that crosses the
        threshold there has its neighbourhood for the peak test, and, if it could be a candidate, its fall below
        the window's edge and the quiet context after that fall, all with known contrasts (up to ``newest``).
        The window and checks are then the ones a later judgement would give; only the event comes sooner."""
        s = self.settings
        frames = self._frames
        f = frames[pos]
        if f.contrast is None or f.level is None:
            return f.t < newest  # a later frame already has its contrast, so none will come for this one
        if f.t + s.peak_half_width_s > newest:
            return False
        c = f.contrast
        for r in map(int, np.nonzero(c >= s.threshold * f.level)[0]):
            peak = float(c[r])
            if not s.min_peak <= peak <= s.max_peak:
                continue
            edge = s.edge_fraction * peak
            fall = frames[self._edge(pos, r, edge, 1)]  # where _window will put the offset
            if fall.contrast is None:
                return False  # not known yet (or a gap): wait as before
            if fall.contrast[r] > edge and fall.t - f.t < s.max_rise_s:
                return False  # the newest frame, still above the edge: the fall has not been seen
            if fall.t + s.context_after_s > newest:
                return False
        return True

    def _edge(self, pos: int, r: int, edge: float, step: int) -> int:
        """From the apex at ``pos``, the first frame towards ``step`` (-1: the onset, +1: the offset) where region
        ``r``'s contrast is at or below ``edge``, unknown, max_rise_s away, or the last frame held."""
        frames = self._frames
        t0, end = frames[pos].t, (0 if step < 0 else len(frames) - 1)
        k = pos
        while k != end and abs(frames[k].t - t0) < self.settings.max_rise_s:
            c = frames[k].contrast
            if c is None or c[r] <= edge:
                break
            k += step
        return k

    def _judge(self, pos: int, now: TimePoint) -> None:
        s = self.settings
        frames = self._frames
        f = frames[pos]
        assert f.contrast is not None and f.level is not None
        c = f.contrast
        # every region whose score crosses the threshold here (what the score curve shows), sizes checked after
        # the peak test, so that a crossing too small or too large to be a candidate is counted once too
        crossed = np.nonzero(c >= s.threshold * f.level)[0]
        for r in map(int, crossed):
            peak = float(c[r])
            if not self._is_peak(pos, r, peak):
                continue
            score = peak / float(f.level[r])
            if peak < s.min_peak:
                self._reject(f.index, f.t, r, score, "too_small")
                continue
            if peak > s.max_peak:
                self._reject(f.index, f.t, r, score, "too_large")
                continue
            cand = self._window(pos, r, peak, score)
            if cand is None:
                continue
            cand.ready_t = now.t + s.hold_s
            self._keep(cand)

    def _is_peak(self, pos: int, r: int, peak: float) -> bool:
        """No frame within ± peak_half_width_s has a larger contrast in region ``r``: frames are in time order,
        so only the neighbours are looked at, walking out from ``pos``."""
        frames = self._frames
        t0 = frames[pos].t
        w = self.settings.peak_half_width_s
        for step in (-1, 1):
            k = pos + step
            while 0 <= k < len(frames) and abs(frames[k].t - t0) <= w:
                c = frames[k].contrast
                if c is not None and c[r] > peak:
                    return False
                k += step
        return True

    def _reject(self, frame: int, t: float, r: int, score: float, reason: str) -> None:
        """Count a dropped candidate (apex frame ``frame``) and record it for :meth:`drain_rejected`."""
        self._rejected[reason] += 1
        self._recent.append(Rejection(frame, t, REGION_NAMES[r], score, reason, t + (self._lag or 0.0)))

    def _window(self, pos: int, r: int, peak: float, score: float) -> _Candidate | None:
        s = self.settings
        frames = self._frames
        apex = frames[pos]
        edge = s.edge_fraction * peak

        def value(f: _Frame) -> float | None:
            return None if f.contrast is None else float(f.contrast[r])

        lo = self._edge(pos, r, edge, -1)
        hi = self._edge(pos, r, edge, 1)
        n = len(frames)
        onset, offset = frames[lo], frames[hi]
        name = REGION_NAMES[r]
        last = value(offset)
        cut = last is None or (hi == n - 1 and last > edge)  # the data ended before the movement fell

        def reject(reason: str, why: str = "") -> _Candidate | None:
            log.debug("candidate %d-%d-%d (%s, %.4f) dropped: %s", onset.index, apex.index, offset.index, name,
                      peak, why or REJECT_REASONS[reason])
            self._reject(apex.index, apex.t, r, score, reason)
            return None

        if cut:
            return reject("cut")
        if onset.index <= self._floor:
            return reject("overlap")
        if offset.t - onset.t < s.min_duration_s:
            return reject("too_short")
        # isolated: the same region quiet before and after. Its contrast alone would miss a mouth that talks
        # at about 1/lag syllables a second (x(t) - x(t - lag) is then near zero), so its own displacement
        # over the lag must be small too: before the onset, and after the lag that still holds the fall.
        quiet = s.max_context * peak
        lag = self._lag or 0.0
        before = [f for f in frames if onset.t - s.context_before_s <= f.t < onset.t]
        for f in before:
            if f.contrast is not None and f.contrast[r] > quiet:
                return reject("context", f"region not quiet before: at frame {f.index} it stood out "
                                         f"{f.contrast[r] / peak:.2f} of the peak")
            if (moved := _size(f, r)) > quiet:
                return reject("context", f"region not quiet before: at frame {f.index} it moved "
                                         f"{moved / peak:.2f} of the peak")
        for f in frames:
            if offset.t < f.t <= offset.t + s.context_after_s and f.contrast is not None and f.contrast[r] > quiet:
                return reject("context", f"region not quiet after, at frame {f.index}")
            if offset.t + lag < f.t <= offset.t + lag + s.context_after_s and _size(f, r) > quiet:
                return reject("context", f"region moves again at frame {f.index}")
        inside = [f for f in frames if onset.t <= f.t <= offset.t]
        # no blink, no head motion inside the window
        usual_eye = float(np.median([f.eye for f in frames]))
        if usual_eye > 0 and min(f.eye for f in inside) < (1.0 - s.max_blink) * usual_eye:
            return reject("blink", "the eyes closed")
        if max(f.head for f in inside) > s.max_head:
            return reject("head")
        usual = self._levels.usual_change
        widened = max(f.eye for f in inside) > (1.0 + s.widened_eyes) * usual_eye
        if usual is not None:
            lids = self._lids
            worst = max((float((f.change[lids] / usual[lids]).max()) for f in inside if f.change is not None),
                        default=0.0)
            if worst > (s.max_lid_change_widened if widened else s.max_lid_change):
                return reject("blink", f"eyelids changed {worst:.1f}x their usual (a blink)")
        if self._displacement is not None:
            before_onset = frames[max(lo - 1, 0)].index
            after_offset = frames[min(hi + 1, n - 1)].index
            rise = self._displacement(before_onset, apex.index)
            back = self._displacement(before_onset, after_offset)
            if rise is not None and back is not None:
                up = float(np.hypot(*rise[r]))
                if float(np.hypot(*back[r])) > s.max_return * max(up, 1e-6):
                    return reject("no_return", f"did not come back ({float(np.hypot(*back[r])):.4f} of {up:.4f})")
        return _Candidate(onset.index, onset.t, apex.index, apex.t, offset.index, offset.t, int(r), peak, score, 0.0)

    def _keep(self, cand: _Candidate) -> None:
        """Overlapping candidates compete: the best score stays (the others are dropped as ``weaker``)."""
        rivals = [p for p in self._pending if cand.onset <= p.offset and cand.offset >= p.onset]
        if any(p.score >= cand.score for p in rivals):
            self._reject(cand.apex, cand.apex_t, cand.region, cand.score, "weaker")
            return
        for p in rivals:
            self._reject(p.apex, p.apex_t, p.region, p.score, "weaker")
        self._pending = [p for p in self._pending if p not in rivals] + [cand]

    def _emit_pending(self, now: TimePoint, *, force: bool) -> list[SpottedWindow]:
        s = self.settings
        out = []
        keep = []
        for p in sorted(self._pending, key=lambda p: p.onset):
            if not force and p.ready_t > now.t:
                keep.append(p)
                continue
            if p.onset <= self._floor:  # a window emitted since it was kept reaches into it
                self._reject(p.apex, p.apex_t, p.region, p.score, "overlap")
                continue
            self._floor = p.offset
            duration = p.offset_t - p.onset_t
            out.append(SpottedWindow(
                onset=TimePoint(p.onset, p.onset_t), apex=TimePoint(p.apex, p.apex_t),
                offset=TimePoint(p.offset, p.offset_t), kind="micro" if duration <= s.micro_max_s else "macro",
                peak=p.score, decided_at=now, region=REGION_NAMES[p.region], displacement=p.contrast,
            ))
        self._pending = keep
        return out


def _size(frame: _Frame, r: int) -> float:
    """Length of region ``r``'s displacement over the lag at ``frame`` (0 when unknown)."""
    d = frame.displacement
    return 0.0 if d is None else float(np.hypot(d[r, 0], d[r, 1]))

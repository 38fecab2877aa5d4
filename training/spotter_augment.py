"""More rendered micro-expressions than rendering can afford: their measured motion pasted into other footage.

A rendering and its un-injected original are measured frame by frame by the same chain, so their difference
around an expression is the motion the expression added: per region, its displacement over the lag, its
mesh-landmark movement and its unexplained change (:class:`Bump`). For small movements the measurement is
close to additive, so adding a bump to another stretch of real footage — another moment, another person of
the training fold, scaled, mirrored — gives the motion that rendering the expression there would have given,
for the cost of recomputing the grid features. Training sees each expression on many faces and over many
kinds of natural movement (calm, talking, blinking), with exact labels. Which steps a pasted bump can be
seen in is judged as for rendered ones (:func:`training.spotter_data.visibility`): an expression drowned by
the footage's own movement is ignored, not taught.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from realtime.spot_features import SCALE, SpotFeatureOptions
from training.spotter_data import SpotSequence, _sequence, ignore_unseen, rows_from_raw, set_region_targets
from training.spotter_train import _MIRROR

__all__ = ["Bump", "PasteOptions", "bumps_of", "pasted"]


@dataclass(frozen=True)
class Bump:
    """The motion one rendered micro-expression added, frame by frame from ``lead`` frames before its onset."""

    disp: np.ndarray  # (L, R, 2) float32
    geometry: np.ndarray  # (L, R, 2)
    change: np.ndarray  # (L, R)
    fps: float
    onset: int  # frame offsets within the bump
    apex: int
    offset: int

    @property
    def seconds(self) -> float:
        return len(self.disp) / self.fps


@dataclass(frozen=True)
class PasteOptions:
    per_minute: float = 20.0  # pasted micro-expressions per minute of footage
    copies: int = 3  # augmented copies of each un-injected video
    scale: tuple[float, float] = (0.6, 1.4)  # amplitude factor drawn per paste
    gap_s: float = 1.5  # least gap between pasted expressions
    seen_share: float = 0.5  # visibility threshold (training.spotter_data.visibility)
    seed: int = 0


def bumps_of(rendered: SpotSequence, original: SpotSequence, *, lag_s: float = 0.25, lead: int = 2) -> list[Bump]:
    """The bumps of ``rendered``'s micro-expressions (frames where both videos have motion)."""
    r, o = rendered.raw, original.raw
    if r is None or o is None or len(r.present) != len(o.present):
        return []
    lag = int(math.ceil(lag_s * rendered.fps)) + 2
    out = []
    for row in rendered.truth:
        if row.get("kind", "micro") != "micro":
            continue
        on, ap, off = int(row["onset"]), int(row["apex"]), int(row["offset"])
        a, b = on - lead, off + lag + 1
        if a < 0 or b > len(r.present) or not (r.present[a:b].all() and o.present[a:b].all()):
            continue
        out.append(Bump((r.disp[a:b] - o.disp[a:b]).astype(np.float32),
                        (r.geometry[a:b] - o.geometry[a:b]).astype(np.float32),
                        (r.change[a:b] - o.change[a:b]).astype(np.float32), rendered.fps, lead, ap - a, off - a))
    return out


def _resampled(values: np.ndarray, fps_from: float, fps_to: float, length: int) -> np.ndarray:
    """``values`` (L, ...) at ``fps_from`` → ``length`` frames at ``fps_to`` (linear in time, 0 past the end)."""
    if fps_from == fps_to and length == len(values):
        return values
    t = np.arange(length) / fps_to * fps_from
    lo = np.clip(np.floor(t).astype(int), 0, len(values) - 1)
    hi = np.clip(lo + 1, 0, len(values) - 1)
    w = (t - lo).reshape(-1, *([1] * (values.ndim - 1)))
    out = (1 - w) * values[lo] + w * values[hi]
    out[t > len(values) - 1] = 0.0
    return out.astype(np.float32)


def _mirrored(bump: Bump) -> Bump:
    disp, geometry = bump.disp[:, _MIRROR].copy(), bump.geometry[:, _MIRROR].copy()
    disp[..., 0] *= -1.0
    geometry[..., 0] *= -1.0
    return replace(bump, disp=disp, geometry=geometry, change=bump.change[:, _MIRROR].copy())


def pasted(original: SpotSequence, bumps: Sequence[Bump], options: PasteOptions, *, copy: int,
           features: SpotFeatureOptions | None = None) -> SpotSequence | None:
    """One augmented copy of the un-injected ``original``: ``bumps`` pasted at random frames with a face and
    motion throughout, labelled; steps of pasted expressions the footage's own movement hides get weight 0."""
    raw = original.raw
    if raw is None or not bumps:
        return None
    rng = np.random.default_rng(np.random.SeedSequence([options.seed, copy, len(raw.present),
                                                        abs(hash(original.name)) % (2**31)]))
    fps = original.fps
    n = len(raw.present)
    count = int(round(options.per_minute * n / fps / 60.0))
    disp, geometry, change = raw.disp.copy(), raw.geometry.copy(), raw.change.copy()
    taken: list[tuple[int, int]] = []
    truth: list[dict[str, object]] = []
    seen: list[bool] = []
    moved: list[np.ndarray] = []
    gap = int(round(options.gap_s * fps))
    for _ in range(count):
        bump = bumps[int(rng.integers(len(bumps)))]
        if rng.random() < 0.5:
            bump = _mirrored(bump)
        length = int(round(bump.seconds * fps))
        if length < 3 or length >= n:
            continue
        for _try in range(50):
            start = int(rng.integers(0, n - length))
            stop = start + length
            if not raw.present[start:stop].all() or any(stop + gap > a and start < b + gap for a, b in taken):
                continue
            scale = float(rng.uniform(*options.scale))
            add = _resampled(bump.disp, bump.fps, fps, length) * scale
            natural = np.hypot(raw.disp[start:stop, :, 0], raw.disp[start:stop, :, 1])
            disp[start:stop] += add
            geometry[start:stop] += _resampled(bump.geometry, bump.fps, fps, length) * scale
            change[start:stop] += _resampled(bump.change, bump.fps, fps, length)
            taken.append((start, stop))
            on = start + int(round(bump.onset * fps / bump.fps))
            off = start + int(round(bump.offset * fps / bump.fps))
            ap = start + int(round(bump.apex * fps / bump.fps))
            truth.append({"onset": on, "apex": min(max(ap, on), off), "offset": off, "kind": "micro"})
            # seen: what it adds reaches `seen_share` of how much its region moves by itself around it
            added = np.hypot(add[..., 0], add[..., 1])
            region = int(added.max(axis=0).argmax())
            lo, hi = max(start - 2 * int(fps), 0), min(stop + 2 * int(fps), n)
            around = np.hypot(raw.disp[lo:hi, region, 0], raw.disp[lo:hi, region, 1])[raw.present[lo:hi]]
            usual = float(np.percentile(around, 90)) if around.size else float(natural[:, region].max())
            seen.append(bool(added.max() >= options.seen_share * usual))
            moved.append((added.max(axis=0) / SCALE).astype(np.float32))
            break
    if not truth:
        return None
    order = np.argsort([int(str(t["onset"])) for t in truth])
    truth = [truth[k] for k in order]
    seen_sorted = np.array([seen[k] for k in order])
    moved = [moved[k] for k in order]
    new_raw = replace(raw, disp=disp, geometry=geometry, change=change)
    rows = rows_from_raw(new_raw, features)
    seq = _sequence(rows, name=f"{original.name} pasted#{copy}", person=original.person, tag=f"pasted#{copy}",
                    fps=fps, rate_hz=(features or SpotFeatureOptions()).rate_hz, frames=n, truth=truth,
                    family="pasted", raw=new_raw)
    ignore_unseen(seq, seen_sorted)
    set_region_targets(seq, moved)
    return seq

"""Dynamic images by approximate rank pooling (Bilen et al., CVPR 2016), and the window DI builder.

    DI = Σ_t α_t I_t,   α_t = 2(T − t + 1) − (T + 1)(H_T − H_{t−1}),   H_t = Σ_{i≤t} 1/i

This module is the *only* implementation of DIs: training, evaluation and the live pipeline all build
their network inputs through :func:`build_streams`, so what a model sees live is what it saw in training.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from functools import lru_cache

import cv2
import numpy as np

__all__ = [
    "APEX_FLOW_STREAMS",
    "FLOW_STREAMS",
    "HORIZONTAL_STREAMS",
    "STREAMS",
    "VECTOR_STREAMS",
    "apex_flow",
    "apex_offset_di",
    "build_streams",
    "dynamic_image",
    "midi",
    "motion_intensity",
    "normalize_di",
    "onset_apex_di",
    "phase_dynamic_images",
    "rank_pool_weights",
    "trdi",
]


@lru_cache(maxsize=512)
def _weights_cached(length: int) -> np.ndarray:
    t = np.arange(1, length + 1, dtype=np.float64)
    harmonic = np.concatenate([[0.0], np.cumsum(1.0 / t)])  # H_0 .. H_T
    weights = 2.0 * (length - t + 1) - (length + 1) * (harmonic[length] - harmonic[:-1])
    weights.flags.writeable = False
    return weights


def rank_pool_weights(length: int) -> np.ndarray:
    """The T approximate-rank-pooling weights α_1..α_T (float64). ``[1.0]`` for T = 1; they sum to 0 for T ≥ 2."""
    if length < 1:
        raise ValueError(f"a dynamic image needs at least one frame, got T={length}")
    if length == 1:
        return np.ones(1, dtype=np.float64)
    return _weights_cached(int(length)).copy()


def _pool(frames: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Σ_t w_t I_t as one matrix-vector product in float32 (frames (T, ...))."""
    flat = frames.reshape(frames.shape[0], -1)
    if flat.dtype != np.float32:
        flat = flat.astype(np.float32)
    return (weights.astype(np.float32) @ flat).reshape(frames.shape[1:])


def _as_frames(frames: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    arr = np.asarray(frames)
    if arr.ndim not in (3, 4):
        raise ValueError(f"frames must be (T, H, W) or (T, H, W, C), got shape {arr.shape}")
    if arr.shape[0] < 1:
        raise ValueError("frames is empty: a dynamic image needs at least one frame")
    return arr


def dynamic_image(frames: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """The DI of frames in the given order: float32 of shape (H, W) or (H, W, C). T = 1 gives the frame."""
    arr = _as_frames(frames)
    length = arr.shape[0]
    weights = np.ones(1) if length == 1 else _weights_cached(length)
    return _pool(arr, weights)


def trdi(frames: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """Temporal-ranked DI (AFN): frames in time order — the onset→offset DI."""
    return _motion_di(_as_frames(frames))


def midi(frames: np.ndarray | Sequence[np.ndarray], intensity: Sequence[float] | np.ndarray) -> np.ndarray:
    """Motion-intensity DI (AFN): frames ranked by intensity, ascending, so the most intense get the largest weights.

    Implemented by permuting the weights instead of the frames (no frame copy). Ties keep time order.
    """
    arr = _as_frames(frames)
    values = np.asarray(intensity, dtype=np.float64).reshape(-1)
    if values.shape[0] != arr.shape[0]:
        raise ValueError(f"need one intensity per frame: {values.shape[0]} values for {arr.shape[0]} frames")
    values = np.where(np.isfinite(values), values, -np.inf)
    length = arr.shape[0]
    if length < 2:
        return _motion_di(arr)
    order = np.argsort(values, kind="stable")
    weights = np.empty(length, dtype=np.float64)
    weights[order] = _weights_cached(length)
    return _pool(arr, weights)


def _motion_di(frames: np.ndarray) -> np.ndarray:
    """DI of a window that must show motion: one frame has none, so it gives a zero image, not the frame."""
    if frames.shape[0] == 1:
        return np.zeros(frames.shape[1:], dtype=np.float32)
    return dynamic_image(frames)


def _phase(frames: np.ndarray, start: int, stop: int, direction: int) -> np.ndarray:
    """DI of frames[start..stop] (inclusive). A one-frame phase borrows its neighbour in ``direction``
    (+1 forward, −1 backward, falling back to the other side) so it becomes a two-frame difference."""
    if stop > start:
        return dynamic_image(frames[start : stop + 1])
    n = frames.shape[0]
    for step in (direction, -direction):
        other = start + step
        if 0 <= other < n:
            lo, hi = min(start, other), max(start, other)
            return dynamic_image(frames[lo : hi + 1])
    return np.zeros(frames.shape[1:], dtype=np.float32)


def _check_window(n: int, onset: int, apex: int, offset: int) -> tuple[int, int, int]:
    if n < 1:
        raise ValueError("no frames")
    onset = int(np.clip(onset, 0, n - 1))
    offset = int(np.clip(offset, onset, n - 1))
    apex = int(np.clip(apex, onset, offset))
    return onset, apex, offset


def onset_apex_di(frames: np.ndarray | Sequence[np.ndarray], onset: int, apex: int) -> np.ndarray:
    """Phase DI of the rising phase onset..apex (inclusive); indices into ``frames``."""
    arr = _as_frames(frames)
    onset, apex, _ = _check_window(arr.shape[0], onset, apex, apex)
    return _phase(arr, onset, apex, +1)


def apex_offset_di(frames: np.ndarray | Sequence[np.ndarray], apex: int, offset: int) -> np.ndarray:
    """Phase DI of the falling phase apex..offset (inclusive); indices into ``frames``."""
    arr = _as_frames(frames)
    apex, _, offset = _check_window(arr.shape[0], apex, apex, offset)
    return _phase(arr, apex, offset, -1)


def phase_dynamic_images(
    frames: np.ndarray | Sequence[np.ndarray], onset: int, apex: int, offset: int
) -> tuple[np.ndarray, np.ndarray]:
    """The two phase DIs (onset→apex, apex→offset), both inclusive. Indices are clipped into the clip
    and ordered; a one-frame phase uses its neighbour, so every window gives finite, non-trivial images."""
    arr = _as_frames(frames)
    onset, apex, offset = _check_window(arr.shape[0], onset, apex, offset)
    return _phase(arr, onset, apex, +1), _phase(arr, apex, offset, -1)


def normalize_di(di: np.ndarray, *, eps: float = 1e-3) -> np.ndarray:
    """Network input normalisation, the one used everywhere: per image, zero mean and unit std (float32).

    DI magnitude grows with T, and micro-expressions are faint, so scale is removed per image; a still
    window (zero DI) stays zero rather than amplifying nothing into noise.
    """
    x = np.asarray(di, dtype=np.float32)
    mean = float(x.mean())
    std = float(x.std())
    return (x - mean) / max(std, eps)


_FLOW = threading.local()  # one DIS instance per thread (OpenCV's is not thread-safe)


def apex_flow(
    frames: np.ndarray | Sequence[np.ndarray], onset: int, apex: int, offset: int | None = None
) -> np.ndarray:
    """Dense optical flow to the apex frame, (H, W, 2) float32 pixels, minus its median (what alignment left of
    the head's motion), scaled to unit RMS length so that faces of any contrast and expressions of any
    amplitude give fields of the same size; the two components keep their ratio.

    Without ``offset``: the flow from the onset frame to the apex. With it: the mean of the flows from the
    onset and from the offset to the apex. A micro-expression leaves the face and comes back, so both ends see
    the same movement at the apex; a movement that goes on through the window (a brow raise that stays, the
    jaw of a talking face, a slow turn) points the other way from the offset and largely cancels. This is the
    spotter's two-sided contrast (``mer_analysis.spotting``) applied to the classifier's input.

    Where a DI sums brightness changes (which depend on the face's texture and lighting), the flow says how far
    and which way the skin moved: the same Action Unit gives the same field on any face, which is what carries
    a model trained on synthetic expressions over to real footage (DIS, OpenCV's medium preset)."""
    arr = _as_frames(frames)
    grey = arr if arr.ndim == 3 else arr.mean(axis=3)
    if onset == apex or min(grey.shape[1:]) < 16:  # no motion to see, or too small for the flow's patches
        return np.zeros((*grey.shape[1:], 2), np.float32)
    dis = getattr(_FLOW, "dis", None)
    if dis is None:
        dis = _FLOW.dis = cv2.DISOpticalFlow.create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)

    def image(i: int) -> np.ndarray:
        return np.clip(grey[i], 0, 255).astype(np.uint8)

    target = image(apex)
    flow = dis.calc(image(onset), target, np.zeros((*target.shape, 2), np.float32))
    if offset is not None and offset != apex:
        flow += dis.calc(image(offset), target, np.zeros((*target.shape, 2), np.float32))
        flow *= 0.5
    flow -= np.median(flow.reshape(-1, 2), axis=0)
    rms = float(np.sqrt((flow**2).sum(axis=2).mean()))
    return flow / max(rms, 1e-3)


# Flow streams come in (horizontal, vertical) pairs, scaled jointly; a mirror image negates the horizontal one,
# and augmentation turns the pair with the image.
FLOW_STREAMS = ("flow_u", "flow_v")  # apex_flow from the onset only (the first flow models)
APEX_FLOW_STREAMS = ("apex_flow_u", "apex_flow_v")  # apex_flow from both ends of the window
VECTOR_STREAMS: tuple[tuple[str, str], ...] = (FLOW_STREAMS, APEX_FLOW_STREAMS)
HORIZONTAL_STREAMS: tuple[str, ...] = tuple(u for u, _ in VECTOR_STREAMS)  # change sign in a mirror image


# Stream name → builder(frames, intensity, onset, apex, offset). Model cards list these names in order.
StreamBuilder = Callable[[np.ndarray, np.ndarray, int, int, int], np.ndarray]
STREAMS: dict[str, StreamBuilder] = {
    "onset_apex": lambda f, m, on, ap, off: _phase(f, on, ap, +1),
    "apex_offset": lambda f, m, on, ap, off: _phase(f, ap, off, -1),
    "trdi": lambda f, m, on, ap, off: _motion_di(f[on : off + 1]),
    "midi": lambda f, m, on, ap, off: midi(f[on : off + 1], m[on : off + 1]),
    "flow_u": lambda f, m, on, ap, off: apex_flow(f, on, ap)[..., 0],
    "flow_v": lambda f, m, on, ap, off: apex_flow(f, on, ap)[..., 1],
    "apex_flow_u": lambda f, m, on, ap, off: apex_flow(f, on, ap, off)[..., 0],
    "apex_flow_v": lambda f, m, on, ap, off: apex_flow(f, on, ap, off)[..., 1],
}


def build_streams(
    frames: np.ndarray | Sequence[np.ndarray],
    onset: int,
    apex: int,
    offset: int,
    streams: Sequence[str],
    *,
    intensity: Sequence[float] | np.ndarray | None = None,
    size: int | None = None,
) -> np.ndarray:
    """Network input for one window: (S, C, size, size) float32, one normalised DI per named stream.

    ``frames`` are aligned crops (T, H, W) or (T, H, W, C); ``onset/apex/offset`` index into them.
    ``intensity`` (one value per frame) orders frames for ``midi``; without it :func:`motion_intensity`
    (difference to the onset frame) is used, as in training. ``size`` resizes each DI (area interpolation) to the model's input side.
    Each pair of flow streams (:data:`VECTOR_STREAMS`, :func:`apex_flow`) comes from one flow per window,
    scaled jointly.
    """
    arr = _as_frames(frames)
    onset, apex, offset = _check_window(arr.shape[0], onset, apex, offset)
    unknown = [s for s in streams if s not in STREAMS]
    if unknown:
        raise KeyError(f"unknown DI stream(s) {unknown}; known: {sorted(STREAMS)}")
    if intensity is None:
        intensity = motion_intensity(arr, onset)
    values = np.asarray(intensity, dtype=np.float64).reshape(-1)
    if values.shape[0] != arr.shape[0]:
        raise ValueError(f"need one intensity per frame: {values.shape[0]} values for {arr.shape[0]} frames")
    flows: dict[tuple[str, str], np.ndarray] = {}
    images = []
    for name in streams:
        pair = next((p for p in VECTOR_STREAMS if name in p), None)
        if pair is not None:
            if pair not in flows:
                flows[pair] = apex_flow(arr, onset, apex, offset if pair == APEX_FLOW_STREAMS else None)
            # already scaled, jointly: normalising each component apart would bend the field's directions
            di = np.ascontiguousarray(flows[pair][..., pair.index(name)])
            if arr.ndim == 4:
                di = np.repeat(di[..., None], arr.shape[3], axis=2)
        else:
            di = STREAMS[name](arr, values, onset, apex, offset)
        if size is not None and di.shape[0] != size:
            di = cv2.resize(di, (size, size), interpolation=cv2.INTER_AREA)
        if pair is None:
            di = normalize_di(di)
        images.append(di[None] if di.ndim == 2 else np.moveaxis(di, -1, 0))
    return np.stack(images).astype(np.float32, copy=False)


def motion_intensity(frames: np.ndarray | Sequence[np.ndarray], reference: int = 0) -> np.ndarray:
    """Per-frame motion intensity of a window, the one used for MIDI and apex estimates in training and
    live use alike: how much each frame differs from the ``reference`` (onset) frame where it differs most.

    Frames are blurred first (1.5 px on a 128-px crop, against sensor noise and alignment jitter) and the
    95th percentile of the absolute difference is taken, so a movement of a few pixels in one part of the
    face is not averaged away by the still rest of it.
    """
    arr = _as_frames(frames)
    grey = arr.astype(np.float32)
    if grey.ndim == 4:
        grey = grey.mean(axis=3)
    sigma = 1.5 * grey.shape[2] / 128.0
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in grey])
    diff = np.abs(blurred - blurred[reference]).reshape(len(blurred), -1)
    return np.percentile(diff, 95, axis=1).astype(np.float32)

"""Checking exported artefacts against the torch model they came from, on random and on real-face DIs.

Real inputs are built the way live inputs are: aligned face crops (``mer_core.alignment.align_face`` on
scikit-image's astronaut portrait, a real face) with a small synthetic facial movement (a smooth local
warp rising to an apex and falling back, plus sub-pixel head jitter), turned into the card's streams by
``mer_core.dynamic_image.build_streams`` — the one DI builder used in training and live.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engines.card import ModelCard
from mer_core.alignment import align_face
from mer_core.dynamic_image import build_streams

FP32_TOLERANCE = 1e-4
FP16_TOLERANCE = 1e-2
ASTRONAUT_ANCHORS = np.array([[202.0, 101.0], [248.0, 101.0], [224.0, 127.0]])  # left eye, right eye, nose tip


@dataclass(frozen=True)
class Comparison:
    """How closely one artefact's probabilities follow the torch reference on one input set."""

    artefact: str
    backend: str
    inputs: str  # "random" | "real"
    samples: int
    max_abs_diff: float
    top1_agreement: float  # fraction of samples with the same arg-max
    tolerance: float
    flips: int  # top-1 disagreements on samples that were not near-ties in the reference

    @property
    def ok(self) -> bool:
        return bool(self.max_abs_diff <= self.tolerance and self.flips == 0)


def compare(reference: np.ndarray, candidate: np.ndarray, *, artefact: str, backend: str, inputs: str,
            tolerance: float) -> Comparison:
    """Max |Δp| and top-1 agreement; a disagreement counts as a flip unless the reference's top-2 margin
    is within 2 × tolerance (a near-tie that reduced precision may legitimately break either way)."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        return Comparison(artefact, backend, inputs, len(ref), float("inf"), 0.0, tolerance, len(ref))
    same = ref.argmax(1) == cand.argmax(1)
    top2 = np.sort(ref, axis=1)[:, -2:] if ref.shape[1] > 1 else np.concatenate([ref, ref], 1)
    near_tie = (top2[:, 1] - top2[:, 0]) <= 2 * tolerance
    flips = int(np.sum(~same & ~near_tie))
    diff = float(np.abs(ref - cand).max()) if ref.size else 0.0
    return Comparison(artefact, backend, inputs, len(ref), diff, float(same.mean()) if len(ref) else 1.0,
                      tolerance, flips)


def random_inputs(card: ModelCard, samples: int = 8, *, seed: int = 0) -> np.ndarray:
    """Standard-normal DI stacks (the network inputs are standardised per DI, so this is their scale)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((samples, *card.input_shape)).astype(np.float32)


def real_inputs(card: ModelCard, samples: int = 8, *, frames: int = 9, seed: int = 0) -> np.ndarray:
    """DI stacks built from a real aligned face with synthetic micro-movements (see module docstring)."""
    import cv2
    from skimage import data

    rng = np.random.default_rng(seed)
    image = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    size = card.crop_size
    crop = align_face(image, ASTRONAUT_ANCHORS, crop_size=size).crop
    if card.channels == 1:
        crop = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    base = crop.astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    out = []
    for _ in range(samples):
        # A Gaussian-windowed displacement at a random facial spot (brows, eyes or mouth corners).
        cx, cy = rng.uniform(0.3, 0.7) * size, rng.choice([0.3, 0.4, 0.72]) * size
        sigma = rng.uniform(0.06, 0.12) * size
        direction = rng.normal(size=2)
        direction /= np.linalg.norm(direction) + 1e-9
        amplitude = rng.uniform(0.5, 2.5)  # pixels at the apex: faint, as micro-expressions are
        window = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))
        apex = int(rng.integers(2, frames - 2))
        clip = []
        for t in range(frames):
            level = t / apex if t <= apex else max(0.0, 1 - (t - apex) / (frames - 1 - apex))
            jitter = rng.normal(scale=0.15, size=2)
            map_x = (xx - amplitude * level * direction[0] * window - jitter[0]).astype(np.float32)
            map_y = (yy - amplitude * level * direction[1] * window - jitter[1]).astype(np.float32)
            clip.append(cv2.remap(base, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))
        stack = np.stack(clip)
        out.append(build_streams(stack, 0, apex, frames - 1, card.streams, size=card.input_size))
    return np.stack(out).astype(np.float32)

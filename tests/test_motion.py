"""mer_analysis.motion: region displacement on a real face (skimage astronaut) with synthetic, known movements."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from mer_analysis.motion import REGION_NAMES, REGIONS, MotionError, MotionMeter, MotionOptions, eye_opening
from mer_core.alignment import align_face
from realtime.landmarks import anchors_from_landmarks
from training.still_faces import detect_faces

FPS = 30.0
IOD_PX = 0.36 * 128  # eye distance on the 128-px template crop


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="module")
def landmarks(image: np.ndarray, face_model_path: Path) -> np.ndarray:
    return detect_faces(image, model_path=face_model_path)[0]


def aligned(image: np.ndarray, landmarks: np.ndarray, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    a = align_face(image, anchors_from_landmarks(landmarks), crop_size=size, landmarks=landmarks)
    return cv2.cvtColor(a.crop, cv2.COLOR_BGR2GRAY), a.landmarks.astype(np.float32)


def warp(img: np.ndarray, centre: np.ndarray, d: tuple[float, float], sigma: float) -> np.ndarray:
    """Move the skin around ``centre`` by ``d`` pixels, fading out with a Gaussian of ``sigma`` pixels."""
    h, w = img.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    g = np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * sigma**2))
    return cv2.remap(img, xs - d[0] * g, ys - d[1] * g, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def region_centre(lm: np.ndarray, name: str) -> np.ndarray:
    return lm[list(REGIONS[name])].mean(axis=0)


def measure(meter: MotionMeter, frames: list[np.ndarray], lm: np.ndarray, noise: float = 1.5, seed: int = 0):
    rng = np.random.default_rng(seed)
    out = []
    for i, f in enumerate(frames):
        noisy = np.clip(f + rng.normal(0.0, noise, f.shape), 0, 255).astype(np.uint8)
        out.append(meter.update(noisy, lm, i, i / FPS))
    return out


def test_a_still_face_gives_almost_no_displacement(image: np.ndarray, landmarks: np.ndarray) -> None:
    crop, lm = aligned(image, landmarks)
    samples = measure(MotionMeter(), [crop] * 30, lm)
    assert samples[0].displacement is None and samples[0].since is None
    moved = np.stack([s.displacement for s in samples if s.displacement is not None]) * IOD_PX  # pixels
    size = np.sqrt((moved**2).sum(axis=2))
    assert size.max() < 0.4  # sensor noise alone: under 0.4 px anywhere, even on smooth, featureless skin ...
    assert np.median(size) < 0.1  # ... and typically a tenth of that
    assert all(s.head < 0.02 for s in samples)


@pytest.mark.parametrize(("name", "d"), [("brow_inner_l", (0.0, -1.5)), ("lip_corner_r", (1.2, -0.8)),
                                         ("cheek_l", (0.0, -1.0))])
def test_a_pixel_or_two_of_local_movement_is_measured_where_it_happens(
        image: np.ndarray, landmarks: np.ndarray, name: str, d: tuple[float, float]) -> None:
    crop, lm = aligned(image, landmarks)
    moved = warp(crop, region_centre(lm, name), d, sigma=6.0)
    lag = int(round(MotionOptions().lag_s * FPS))
    samples = measure(MotionMeter(), [crop] * 20 + [moved] * lag, lm)
    last = samples[-1]
    assert last.since == len(samples) - 1 - lag
    assert last.displacement is not None
    r = REGION_NAMES.index(name)
    got = last.displacement[r] * IOD_PX  # back to pixels
    assert np.hypot(*got) == pytest.approx(np.hypot(*d), rel=0.45)
    assert float(np.dot(got, d)) > 0.8 * np.hypot(*got) * np.hypot(*d)  # in the right direction
    far = [k for k, n in enumerate(REGION_NAMES) if np.hypot(*(region_centre(lm, n) - region_centre(lm, name))) > 30]
    assert np.sqrt((last.displacement[far] ** 2).sum(axis=1)).max() * IOD_PX < 0.4  # noise level, see above


@pytest.mark.parametrize("jitter", [(0.6, -0.4, 0.0, 1.0), (0.0, 0.0, 1.0, 1.0), (0.0, 0.0, 0.0, 1.02)],
                         ids=["shift", "rotation-1deg", "scale-2%"])
def test_the_heads_own_motion_is_fitted_away(image: np.ndarray, landmarks: np.ndarray,
                                             jitter: tuple[float, float, float, float]) -> None:
    crop, lm = aligned(image, landmarks)
    dx, dy, deg, scale = jitter
    m = cv2.getRotationMatrix2D((64, 64), deg, scale)
    m[:, 2] += np.array((dx, dy))
    moved = cv2.warpAffine(crop, m, (128, 128), borderMode=cv2.BORDER_REPLICATE)
    lag = int(round(MotionOptions().lag_s * FPS))
    last = measure(MotionMeter(), [crop] * 20 + [moved] * lag, lm)[-1]
    assert last.magnitude < 0.006, last.displacement  # under 0.3 px left in any region
    assert last.head > 0.005 or (dx, dy) != (0.0, 0.0)


def test_displacement_between_held_crops_matches_the_stream(image: np.ndarray, landmarks: np.ndarray) -> None:
    crop, lm = aligned(image, landmarks)
    moved = warp(crop, region_centre(lm, "brow_outer_r"), (0.0, -1.5), sigma=6.0)
    meter = MotionMeter()
    lag = int(round(meter.options.lag_s * FPS))
    last = measure(meter, [crop] * 20 + [moved] * lag, lm, noise=0.0)[-1]
    direct = meter.displacement(crop, lm, moved, lm)
    assert last.displacement is not None
    np.testing.assert_allclose(direct, last.displacement, atol=1e-3)


@pytest.mark.parametrize("size", [96, 160, 256])
@pytest.mark.parametrize("grey", [False, True])
def test_any_crop_size_grey_or_bgr_gives_the_same_iod_units(image: np.ndarray, landmarks: np.ndarray,
                                                            size: int, grey: bool) -> None:
    a = align_face(image, anchors_from_landmarks(landmarks), crop_size=size, landmarks=landmarks)
    crop = a.crop if not grey else cv2.cvtColor(a.crop, cv2.COLOR_BGR2GRAY)
    lm = a.landmarks.astype(np.float32)
    k = size / 128
    moved = warp(crop, region_centre(lm, "lip_corner_l"), (1.5 * k, 0.0), sigma=6.0 * k)
    lag = int(round(MotionOptions().lag_s * FPS))
    last = measure(MotionMeter(), [crop] * 20 + [moved] * lag, lm)[-1]
    assert last.displacement is not None
    got = np.hypot(*last.displacement[REGION_NAMES.index("lip_corner_l")])
    assert got == pytest.approx(1.5 / IOD_PX, rel=0.45)


def test_eye_opening_drops_when_the_lids_close(landmarks: np.ndarray) -> None:
    open_ = eye_opening(landmarks)
    closed = landmarks.copy()
    for upper, lower in (((159, 158, 160), (145, 153, 144)), ((386, 385, 387), (374, 380, 373))):
        closed[list(upper)] = closed[list(lower)] - (0.0, 0.5)
    assert 0.15 < open_ < 0.6
    assert eye_opening(closed) < 0.3 * open_


def test_time_going_back_or_a_gap_restarts(image: np.ndarray, landmarks: np.ndarray) -> None:
    crop, lm = aligned(image, landmarks)
    meter = MotionMeter()
    for i in range(20):
        meter.update(crop, lm, i, i / FPS)
    assert meter.update(crop, lm, 20, 20 / FPS).since is not None
    assert meter.update(crop, lm, 21, 0.1).since is None  # back in time: a fresh start
    assert meter.update(crop, lm, 22, 5.0).since is None  # a 4.9 s gap: also a fresh start


def test_bad_input_is_refused_with_a_clear_error(image: np.ndarray, landmarks: np.ndarray) -> None:
    crop, lm = aligned(image, landmarks)
    meter = MotionMeter()
    with pytest.raises(MotionError, match="crop"):
        meter.update(np.zeros(100, np.uint8), lm, 0, 0.0)
    with pytest.raises(MotionError, match="square"):
        meter.update(np.zeros((64, 80), np.uint8), lm, 0, 0.0)
    with pytest.raises(MotionError, match="landmarks"):
        meter.update(crop, lm[:68], 0, 0.0)
    with pytest.raises(MotionError, match="finite"):
        meter.update(crop, lm, 0, math.nan)


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="lag_s"):
        MotionOptions(lag_s=0.0)
    with pytest.raises(ValueError, match="work_size"):
        MotionOptions(work_size=8)

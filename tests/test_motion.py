"""realtime.motion: motion intensity on a real face (skimage astronaut) with synthetic, known movements."""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np
import pytest
import skimage.data
from traces import TraceEvent, bump

from realtime.alignment import align_face
from realtime.motion import MotionError, MotionMeter, MotionOptions
from realtime.spotting import Spotter
from training.metrics import spotting_report

# Eye centres and nose tip of skimage.data.astronaut() (found once with the MediaPipe face landmarker).
ANCHORS = np.array([[203.5, 101.1], [246.0, 103.5], [223.5, 131.1]])
FPS = 30.0
Edit = Callable[[np.ndarray], np.ndarray]


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="module")
def face(image: np.ndarray) -> np.ndarray:
    """The astronaut aligned to the canonical 128-px template (BGR)."""
    return align_face(image, ANCHORS, crop_size=128).crop


# --- synthetic movements, positions in fractions of the crop -------------------------------------------


def warp(img: np.ndarray, fx: float, fy: float, dx: float, dy: float, sigma: float = 6.0) -> np.ndarray:
    """Move the skin around (fx, fy) by (dx, dy) pixels of a 128-px face, fading out with a Gaussian."""
    h, w = img.shape[:2]
    k = w / 128.0
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    g = np.exp(-((xs - fx * w) ** 2 + (ys - fy * h) ** 2) / (2 * (sigma * k) ** 2))
    return cv2.remap(img, xs - dx * k * g, ys - dy * k * g, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def cover(img: np.ndarray, box: tuple[float, float, float, float], amount: float = 1.0) -> np.ndarray:
    """Pull the row just above ``box`` down over it (an eyelid closing when the box is an eye)."""
    h, w = img.shape[:2]
    x0, y0, x1, y1 = round(box[0] * w), round(box[1] * h), round(box[2] * w), round(box[3] * h)
    out = img.copy()
    above = img[y0 - 2 : y0 - 1, x0:x1].astype(np.float32)
    out[y0:y1, x0:x1] = np.clip(img[y0:y1, x0:x1] * (1 - amount) + above * amount, 0, 255).astype(np.uint8)
    return out


EYES = ((0.24, 0.336, 0.41, 0.42), (0.59, 0.336, 0.76, 0.42))
MOUTH_BOXES = ((0.24, 0.69, 0.41, 0.77), (0.59, 0.69, 0.76, 0.77))  # same size as the eye boxes


def blink(img: np.ndarray) -> np.ndarray:
    return cover(cover(img, EYES[0]), EYES[1])


def mouth_like_blink(img: np.ndarray) -> np.ndarray:
    return cover(cover(img, MOUTH_BOXES[0]), MOUTH_BOXES[1])


def smile(img: np.ndarray, px: float = 2.0) -> np.ndarray:
    return warp(img, 0.36, 0.74, -px, -px / 2)


def brow_raise(img: np.ndarray) -> np.ndarray:
    return warp(img, 0.31, 0.23, 0.0, -2.0)


def cheek_raise(img: np.ndarray) -> np.ndarray:
    return warp(img, 0.28, 0.56, 0.0, -1.5)


def run(face: np.ndarray, edit: Edit | None, *, pre: int = 30, during: int = 6, post: int = 30, noise: float = 2.0,
        seed: int = 0, options: MotionOptions | None = None) -> tuple[np.ndarray, list]:
    """Intensities of ``pre`` neutral frames, ``during`` edited frames, ``post`` neutral frames (sensor noise)."""
    rng = np.random.default_rng(seed)
    meter = MotionMeter(options)
    values, samples = [], []
    for i in range(pre + during + post):
        frame = edit(face) if edit is not None and pre <= i < pre + during else face
        frame = np.clip(frame + rng.normal(0.0, noise, frame.shape), 0, 255).astype(np.uint8)
        sample = meter.update(frame, i / FPS)
        values.append(sample.intensity)
        samples.append(sample)
    return np.array(values), samples


def noise_p95(values: np.ndarray, pre: int = 30) -> float:
    return float(np.percentile(values[10:pre], 95))


# --- tests ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(128, 128), (128, 128, 3), (57, 57), (300, 300, 3), (64, 80)])
def test_constant_frames_give_zero(shape: tuple[int, ...]) -> None:
    meter = MotionMeter()
    for i, level in enumerate([0, 100, 100, 101, 255, 3, 3, 3, 128, 128]):
        for dtype in (np.uint8, np.float32):
            sample = meter.update(np.full(shape, level, dtype), i / FPS + (0.001 if dtype is np.float32 else 0))
            assert sample.intensity == 0.0
            assert all(v == 0.0 for v in sample.regions.values())


def test_noise_only_is_low_finite_and_non_negative(face: np.ndarray) -> None:
    values, samples = run(face, None, post=60)
    assert np.isfinite(values).all() and (values >= 0).all()
    assert set(samples[-1].regions) == {"brows", "left_eye", "right_eye", "nose", "mouth", "left_cheek",
                                        "right_cheek"}
    assert values[10:].max() < 1.5  # intensity is in multiples of the noise level


@pytest.mark.parametrize("edit", [smile, brow_raise, cheek_raise, lambda f: smile(f, 1.0)],
                         ids=["smile-2px", "brow-raise-2px", "cheek-raise-1.5px", "smile-1px"])
def test_a_few_pixels_of_local_deformation_rise_clearly(face: np.ndarray, edit: Edit) -> None:
    values, samples = run(face, edit)
    assert values[30:36].max() > 5 * noise_p95(values)
    assert not any(s.blink for s in samples[30:36])


def test_the_signal_comes_back_down_without_an_echo(face: np.ndarray) -> None:
    values, _ = run(face, smile, post=45)
    assert values[30:36].min() > 5 * noise_p95(values)
    assert values[38:].max() < 2 * noise_p95(values)  # a "frame k back" reference would echo here


@pytest.mark.parametrize(
    "edit",
    [
        lambda f: (f * 0.75).astype(np.uint8),
        lambda f: np.clip(f + 10.0, 0, 255).astype(np.uint8),
        lambda f: np.clip(f * np.linspace(0.8, 1.2, f.shape[1])[None, :, None], 0, 255).astype(np.uint8),
        lambda f: np.clip(f * np.linspace(1.1, 0.85, f.shape[0])[:, None, None], 0, 255).astype(np.uint8),
    ],
    ids=["darker", "brighter", "side-light", "top-light"],
)
def test_global_lighting_changes_stay_small(face: np.ndarray, edit: Edit) -> None:
    values, _ = run(face, edit)
    reference, _ = run(face, smile)
    assert values[30:36].max() < 0.25 * reference[30:36].max()
    assert values[30:36].max() < 4 * noise_p95(values)  # (a few bright pixels do clip)


@pytest.mark.parametrize("shift", [(0.5, 0.3), (1.0, 0.6)])
def test_alignment_jitter_is_fitted_away(face: np.ndarray, shift: tuple[float, float]) -> None:
    moved: Edit = lambda f: cv2.warpAffine(f, np.float32([[1, 0, shift[0]], [0, 1, shift[1]]]), (128, 128),  # noqa: E731
                                            borderMode=cv2.BORDER_REPLICATE)
    values, _ = run(face, moved)
    reference, _ = run(face, smile)
    assert values[30:36].max() < 0.25 * reference[30:36].max()


def test_a_blink_is_suppressed_relative_to_the_same_change_at_the_mouth(face: np.ndarray) -> None:
    blinking, samples = run(face, blink)
    mouth, _ = run(face, mouth_like_blink)
    assert mouth[30:36].max() > 10 * noise_p95(mouth)
    assert blinking[30:36].max() < 0.1 * mouth[30:36].max()
    assert all(s.blink for s in samples[30:36])


def test_the_brows_still_count_during_a_blink(face: np.ndarray) -> None:
    both, _ = run(face, lambda f: blink(brow_raise(f)))
    brows_only, _ = run(face, brow_raise)
    assert both[30:36].max() > 0.6 * brows_only[30:36].max()


def test_a_long_eye_only_change_counts_after_blink_max_s(face: np.ndarray) -> None:
    values, samples = run(face, blink, during=30)  # eyes closed for 1 s
    limit = int(MotionOptions().blink_max_s * FPS)
    assert all(s.blink for s in samples[30 : 30 + limit])
    assert values[30 + limit + 2 : 60].max() > 10 * noise_p95(values)


@pytest.mark.parametrize("size", [48, 96, 200, 256])
@pytest.mark.parametrize("grey", [False, True])
def test_any_crop_size_grey_or_bgr(image: np.ndarray, size: int, grey: bool) -> None:
    crop = align_face(image, ANCHORS, crop_size=size).crop
    if grey:
        crop = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    values, _ = run(crop, smile)
    assert np.isfinite(values).all()
    # The same sensor noise per pixel weighs more on a 48-px face than on a 256-px one.
    assert values[30:36].max() > (3 if size < 64 else 5) * noise_p95(values)


def test_bad_input_is_refused_with_a_clear_error(face: np.ndarray) -> None:
    meter = MotionMeter()
    with pytest.raises(MotionError, match="shape"):
        meter.update(np.zeros(100, np.uint8), 0.0)
    with pytest.raises(MotionError, match="shape"):
        meter.update(np.zeros((64, 64, 2), np.uint8), 0.0)
    with pytest.raises(MotionError, match="finite"):
        meter.update(face, math.nan)


def test_time_going_back_or_a_gap_restarts_the_reference(face: np.ndarray) -> None:
    meter = MotionMeter()
    for i in range(20):
        meter.update(face, i / FPS)
    moved = smile(face)
    assert meter.update(moved, 0.1).intensity == 0.0  # back in time: a fresh start on this frame
    assert meter.update(face, 0.1 + 5.0).intensity == 0.0  # a 5 s gap: also a fresh start
    assert meter.update(face, 5.2).intensity == 0.0


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="eye_regions"):
        MotionOptions(eye_regions=("third_eye",))
    with pytest.raises(ValueError, match="release_factor"):
        MotionOptions(quiet_factor=1.0, release_factor=2.0)
    with pytest.raises(ValueError, match="work_size"):
        MotionOptions(work_size=8)


def test_meter_and_spotter_find_the_expressions_not_the_blinks(image: np.ndarray) -> None:
    """A 12 s, 30 fps clip with landmark jitter and sensor noise: three movements, three blinks."""
    rng = np.random.default_rng(7)
    events = [(TraceEvent(2.0, 2.15, 2.35), smile), (TraceEvent(5.0, 5.2, 5.4), brow_raise),
              (TraceEvent(9.0, 9.15, 9.35), cheek_raise)]
    blinks = [TraceEvent(3.5, 3.55, 3.65), TraceEvent(7.0, 7.05, 7.2), TraceEvent(10.6, 10.66, 10.8)]
    meter, spotter, windows = MotionMeter(), Spotter(), []
    for frame in range(int(12 * FPS)):
        t = np.array([frame / FPS])
        crop = align_face(image, ANCHORS + rng.normal(0.0, 0.3, 2), crop_size=128).crop  # jittery landmarks
        for event, edit in events:
            amount = float(bump(t, event.onset_s, event.apex_s, event.offset_s)[0])
            if amount > 0:
                crop = cv2.addWeighted(edit(crop), amount, crop, 1 - amount, 0)  # fade the movement in and out
        closed = max(float(bump(t, b.onset_s, b.apex_s, b.offset_s)[0]) for b in blinks)
        if closed > 0:
            crop = cover(cover(crop, EYES[0], closed), EYES[1], closed)
        crop = np.clip(crop + rng.normal(0.0, 2.0, crop.shape), 0, 255).astype(np.uint8)
        windows += spotter.update(frame, frame / FPS, meter.update(crop, frame / FPS).intensity)
    windows += spotter.flush()
    true = [(round(e.onset_s * FPS), round(e.offset_s * FPS), "micro") for e, _ in events]
    report = spotting_report([(w.onset.frame, w.offset.frame, w.kind) for w in windows], true)
    assert report["overall"].f1 == 1.0, windows

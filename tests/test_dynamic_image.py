"""Dynamic images: the formula, its degenerate cases, and the shared window builder."""

from __future__ import annotations

import numpy as np
import pytest

from core.dynamic_image import (
    STREAMS,
    apex_offset_di,
    build_streams,
    dynamic_image,
    midi,
    normalize_di,
    onset_apex_di,
    phase_dynamic_images,
    rank_pool_weights,
    trdi,
)


def _loop_weights(length: int) -> np.ndarray:
    return np.array([sum((2 * k - length - 1) / k for k in range(t, length + 1)) for t in range(1, length + 1)])


def _closed_form(length: int) -> np.ndarray:
    h = [0.0]
    for i in range(1, length + 1):
        h.append(h[-1] + 1.0 / i)
    return np.array([2 * (length - t + 1) - (length + 1) * (h[length] - h[t - 1]) for t in range(1, length + 1)])


@pytest.mark.parametrize("length", range(1, 61))
def test_weights_match_closed_and_loop_forms(length: int) -> None:
    w = rank_pool_weights(length)
    assert w.dtype == np.float64 and w.shape == (length,)
    if length == 1:
        assert w.tolist() == [1.0]
        return
    np.testing.assert_allclose(w, _closed_form(length), rtol=0, atol=1e-12)
    np.testing.assert_allclose(w, _loop_weights(length), rtol=0, atol=1e-9)
    assert abs(w.sum()) < 1e-9
    assert w[0] < 0 < w[-1]  # early frames subtract, late frames add


def test_weights_are_copies_and_validate() -> None:
    w = rank_pool_weights(5)
    w[0] = 99
    assert rank_pool_weights(5)[0] != 99
    with pytest.raises(ValueError):
        rank_pool_weights(0)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7, 16, 12), (7, 16, 12, 3)])
def test_still_sequence_gives_zero(dtype: type, shape: tuple[int, ...]) -> None:
    frame: np.ndarray = (np.arange(np.prod(shape[1:])).reshape(shape[1:]) % 200).astype(dtype)
    di = dynamic_image(np.stack([frame] * shape[0]))
    assert di.shape == shape[1:] and di.dtype == np.float32
    assert np.abs(di).max() < 1e-3


def test_two_frames_is_half_difference() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 255, (2, 8, 9)).astype(np.uint8)
    np.testing.assert_allclose(dynamic_image(np.stack([a, b])), (b.astype(np.float32) - a) / 2, atol=1e-5)


def test_matches_weighted_sum() -> None:
    rng = np.random.default_rng(1)
    frames = rng.random((13, 5, 6, 3))
    expected = np.tensordot(rank_pool_weights(13), frames, axes=1)
    np.testing.assert_allclose(dynamic_image(frames), expected, rtol=1e-4, atol=1e-4)


def test_midi_orders_by_intensity() -> None:
    rng = np.random.default_rng(2)
    frames = rng.random((6, 4, 4)).astype(np.float32)
    intensity = np.array([0.5, 0.1, 0.9, 0.3, 0.0, 0.7])
    order = np.argsort(intensity)
    np.testing.assert_allclose(midi(frames, intensity), dynamic_image(frames[order]), atol=1e-5)
    # Ascending intensity already in time order → MIDI equals TRDI.
    np.testing.assert_allclose(midi(frames, np.arange(6)), trdi(frames), atol=1e-6)
    with pytest.raises(ValueError):
        midi(frames, [1, 2])


def test_midi_handles_nan_intensity() -> None:
    frames = np.random.default_rng(3).random((4, 3, 3))
    assert np.isfinite(midi(frames, [np.nan, 1.0, 2.0, np.nan])).all()


def _ramp(n: int) -> np.ndarray:
    """Frames whose brightness rises linearly: every sub-window has a positive, non-zero DI."""
    return np.stack([np.full((6, 6), 10.0 * i, dtype=np.float32) for i in range(n)])


def test_phase_dis_cover_inclusive_ranges() -> None:
    frames = np.random.default_rng(4).random((10, 5, 5)).astype(np.float32)
    first, second = phase_dynamic_images(frames, 2, 5, 8)
    np.testing.assert_allclose(first, dynamic_image(frames[2:6]), atol=1e-6)
    np.testing.assert_allclose(second, dynamic_image(frames[5:9]), atol=1e-6)
    np.testing.assert_allclose(onset_apex_di(frames, 2, 5), first, atol=1e-6)
    np.testing.assert_allclose(apex_offset_di(frames, 5, 8), second, atol=1e-6)


@pytest.mark.parametrize(
    ("n", "onset", "apex", "offset"),
    [(10, 3, 3, 7), (10, 3, 7, 7), (10, 4, 4, 4), (10, 0, 0, 0), (10, 9, 9, 9), (1, 0, 0, 0), (2, 0, 0, 1),
     (2, 0, 1, 1), (10, 6, 2, 4), (10, -3, 50, 99)],
)
def test_degenerate_windows_are_finite_and_meaningful(n: int, onset: int, apex: int, offset: int) -> None:
    frames = _ramp(n)
    first, second = phase_dynamic_images(frames, onset, apex, offset)
    for di in (first, second):
        assert np.isfinite(di).all()
        if n >= 2:  # a one-frame phase borrows a neighbour, so the ramp's motion shows
            assert np.abs(di).max() > 0
    stack = build_streams(frames, onset, apex, offset, list(STREAMS))
    assert stack.shape == (len(STREAMS), 1, 6, 6) and np.isfinite(stack).all()


def test_single_frame_clip_is_zero_not_nan() -> None:
    stack = build_streams(_ramp(1), 0, 0, 0, ["onset_apex", "apex_offset", "trdi", "midi"])
    assert np.isfinite(stack).all() and np.abs(stack).max() == 0


def test_normalize_di() -> None:
    di = np.random.default_rng(5).normal(3.0, 7.0, (32, 32)).astype(np.float32)
    out = normalize_di(di)
    assert out.dtype == np.float32
    assert abs(float(out.mean())) < 1e-5 and abs(float(out.std()) - 1.0) < 1e-4
    assert np.all(normalize_di(np.zeros((4, 4))) == 0)
    # Scale-free: the DI of a longer window (bigger weights) normalises to the same image.
    np.testing.assert_allclose(normalize_di(di * 40), out, atol=1e-4)


def test_build_streams_shapes_colour_resize_and_errors() -> None:
    rng = np.random.default_rng(6)
    colour = rng.integers(0, 255, (9, 32, 32, 3)).astype(np.uint8)
    stack = build_streams(colour, 1, 4, 8, ["onset_apex", "apex_offset"], size=16)
    assert stack.shape == (2, 3, 16, 16) and stack.dtype == np.float32
    with pytest.raises(KeyError):
        build_streams(colour, 1, 4, 8, ["nope"])
    with pytest.raises(ValueError):
        build_streams(colour, 1, 4, 8, ["midi"], intensity=[1.0])
    with pytest.raises(ValueError):
        dynamic_image(np.zeros((4, 4)))

"""Dynamic images: the formula, its degenerate cases, and the shared window builder."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mer_core.dynamic_image import (
    APEX_FLOW_STREAMS,
    FLOW_STREAMS,
    HORIZONTAL_STREAMS,
    STREAMS,
    VECTOR_STREAMS,
    apex_flow,
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


def _moved(texture: np.ndarray, blobs: list[tuple[float, float, float, float]]) -> np.ndarray:
    """``texture`` with Gaussian patches of skin moved: each blob (x, y, dx, dy) in pixels, sigma 6."""
    h, w = texture.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    map_x, map_y = xs.copy(), ys.copy()
    for x, y, dx, dy in blobs:
        weight = np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 6.0**2))
        map_x -= dx * weight  # backward map: the pixel at p shows what was at p - d
        map_y -= dy * weight
    return cv2.remap(texture, map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


def _strength(flow: np.ndarray, x: int, y: int) -> float:
    return float(np.linalg.norm(flow[y - 3 : y + 4, x - 3 : x + 4].reshape(-1, 2).mean(axis=0)))


def test_apex_flow_from_both_ends_keeps_what_returns_and_cancels_what_goes_on() -> None:
    texture = cv2.GaussianBlur(np.random.default_rng(7).uniform(0, 255, (96, 96)).astype(np.float32), (0, 0), 1.5)
    texture = cv2.normalize(texture, None, 0, 255, cv2.NORM_MINMAX)
    # a patch at (30, 30) rises 2 px and comes back (a micro-expression); one at (66, 66) moves 2 px to the
    # right by the apex and 4 px by the offset (a movement that goes on through the window)
    onset = texture
    apex = _moved(texture, [(30, 30, 0, -2), (66, 66, 2, 0)])
    offset = _moved(texture, [(66, 66, 4, 0)])
    frames = np.clip(np.stack([onset, apex, offset]), 0, 255).astype(np.uint8)

    one_sided = apex_flow(frames, 0, 1)
    both = apex_flow(frames, 0, 1, 2)
    assert one_sided.shape == both.shape == (96, 96, 2) and both.dtype == np.float32
    # from the onset alone the two movements look alike
    assert 0.5 < _strength(one_sided, 30, 30) / _strength(one_sided, 66, 66) < 2.0
    # from both ends the returning one stands, pointing up, and the lasting one nearly cancels
    assert _strength(both, 30, 30) > 3 * _strength(both, 66, 66)
    assert both[27:34, 27:34, 1].mean() < 0
    # unit RMS length either way, and an offset at the apex is the onset-only flow
    for flow in (one_sided, both):
        assert abs(float(np.sqrt((flow**2).sum(axis=2).mean())) - 1.0) < 1e-3
    np.testing.assert_array_equal(apex_flow(frames, 0, 1, 1), one_sided)


def test_flow_streams_come_in_pairs_and_the_model_input_uses_both_ends() -> None:
    assert VECTOR_STREAMS == (FLOW_STREAMS, APEX_FLOW_STREAMS)
    assert set(HORIZONTAL_STREAMS) == {"flow_u", "apex_flow_u"}  # a mirror image negates these
    texture = np.random.default_rng(8).uniform(0, 255, (64, 64)).astype(np.float32)
    frames = np.clip(np.stack([texture, _moved(texture, [(20, 20, 0, -2)]), _moved(texture, [(40, 40, 3, 0)])]),
                     0, 255).astype(np.uint8)
    stack = build_streams(frames, 0, 1, 2, [*FLOW_STREAMS, *APEX_FLOW_STREAMS], size=32)
    assert stack.shape == (4, 1, 32, 32)
    resize = lambda f: cv2.resize(np.ascontiguousarray(f), (32, 32), interpolation=cv2.INTER_AREA)  # noqa: E731
    for k, flow in enumerate((apex_flow(frames, 0, 1), apex_flow(frames, 0, 1, 2))):
        np.testing.assert_allclose(stack[2 * k, 0], resize(flow[..., 0]), atol=1e-6)
        np.testing.assert_allclose(stack[2 * k + 1, 0], resize(flow[..., 1]), atol=1e-6)
    assert not np.allclose(stack[0], stack[2])  # the offset changes the two-sided flow

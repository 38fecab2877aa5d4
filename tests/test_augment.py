"""Training augmentation on DIs: phase samples and the spatial / contrast jitter."""

from __future__ import annotations

import pytest
import torch

from training.augment import AugmentOptions, SpatialAugment, expand_with_phases


def test_every_stream_of_a_sample_gets_the_same_transform() -> None:
    x = torch.randn(6, 1, 1, 32, 32).repeat(1, 3, 1, 1, 1)  # three identical streams
    out = SpatialAugment()(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert torch.allclose(out[:, 0], out[:, 1]) and torch.allclose(out[:, 0], out[:, 2])
    assert not torch.allclose(out[0], out[1])  # but each sample its own


def test_contrast_field_is_a_smooth_positive_gain() -> None:
    only_field = AugmentOptions(flip=False, rotation_deg=0, scale=0, shift=0, gain=0, bias=0, contrast_field=0.5)
    x = torch.ones(8, 2, 1, 32, 32)
    out = SpatialAugment(only_field)(x, torch.Generator().manual_seed(1))
    interior = out[..., 4:-4, 4:-4]  # bilinear resampling at the border is not the point here
    assert (interior > 0).all()
    log_gain = interior.log()
    assert log_gain.std() > 0.2  # it varies across the face ...
    step = (log_gain[..., 1:] - log_gain[..., :-1]).abs().mean()
    assert step < 0.25 * log_gain.std()  # ... smoothly: neighbours differ far less than the whole field does
    off = SpatialAugment(AugmentOptions(flip=False, rotation_deg=0, scale=0, shift=0, gain=0, bias=0,
                                        contrast_field=0))(x, torch.Generator().manual_seed(1))
    assert torch.allclose(off[..., 4:-4, 4:-4], x[..., 4:-4, 4:-4], atol=1e-5)


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="contrast_field"):
        AugmentOptions(contrast_field=-1)
    with pytest.raises(ValueError, match="contrast_cells"):
        AugmentOptions(contrast_cells=1)


def test_phase_augmentation_triples_single_stream_samples() -> None:
    streams = ("trdi", "onset_apex", "apex_offset")
    x, y = torch.randn(4, 3, 1, 8, 8), torch.arange(4)
    xs, ys = expand_with_phases(x, y, streams, ("trdi",), enabled=True)
    assert xs.shape == (12, 1, 1, 8, 8) and ys.tolist() == [0, 1, 2, 3] * 3
    assert torch.equal(xs[4:8, 0], x[:, 1]) and torch.equal(xs[8:, 0], x[:, 2])
    xd, yd = expand_with_phases(x, y, streams, ("onset_apex", "apex_offset"), enabled=True)
    assert xd.shape == (4, 2, 1, 8, 8)  # multi-stream models take the phases as inputs instead


def test_the_flow_pair_of_a_model_is_found_for_augmentation() -> None:
    from training.train_data import vector_streams

    assert vector_streams(("flow_u", "flow_v")) == (0, 1)
    assert vector_streams(("apex_flow_v", "apex_flow_u")) == (1, 0)
    assert vector_streams(("onset_apex", "apex_offset")) is None
    assert vector_streams(("flow_u",)) is None  # half a field is not turned

"""Training augmentation on DIs: phase DIs as extra samples, and spatial/intensity jitter.

*Phase augmentation* (dual-phase DI paper): for a single-stream model, the onset→apex and apex→offset DIs
of every training clip are added as extra training samples in the model's one stream, same label — three
views of each ME instead of one. Multi-stream models already take the phase DIs (or TRDI/MIDI) as inputs,
so for them it changes nothing.

*Spatial augmentation* is applied to the cached, normalised DIs rather than to frames: a DI is a linear
combination of frames, so a flip, rotation, scale or shift of the DI equals the DI of the transformed frames
(up to interpolation), and working on DIs keeps training pure in-memory tensor work. One random transform
per sample is applied identically to all its streams, so streams stay registered to each other. Brightness
and contrast changes of frames cancel in a DI (its weights sum to zero) and in the per-image
normalisation, so the "brightness" here is a small gain/offset jitter on the normalised DI instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "PHASE_STREAMS",
    "AugmentOptions",
    "SpatialAugment",
    "expand_with_phases",
    "phase_augmentation_applies",
    "select_streams",
]

PHASE_STREAMS = ("onset_apex", "apex_offset")


def select_streams(x: torch.Tensor, all_streams: Sequence[str], wanted: Sequence[str]) -> torch.Tensor:
    """The ``wanted`` streams of ``x`` (N, S_all, C, H, W), in ``wanted`` order."""
    index = [list(all_streams).index(s) for s in wanted]
    return x[:, index]


def phase_augmentation_applies(model_streams: Sequence[str]) -> bool:
    """Phase augmentation adds samples only for single-stream models whose stream is not a phase DI."""
    return len(model_streams) == 1 and model_streams[0] not in PHASE_STREAMS


def expand_with_phases(
    x: torch.Tensor,
    y: torch.Tensor,
    all_streams: Sequence[str],
    model_streams: Sequence[str],
    *,
    enabled: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training inputs for the model's streams, plus (single-stream models, ``enabled``) each phase DI
    as an extra sample in that one stream. Returns (x (M, S_model, C, H, W), y (M,))."""
    base = select_streams(x, all_streams, model_streams)
    if not enabled or not phase_augmentation_applies(model_streams):
        return base, y
    extra = [select_streams(x, all_streams, [p]) for p in PHASE_STREAMS]
    return torch.cat([base, *extra]), torch.cat([y] * (1 + len(extra)))


@dataclass(frozen=True)
class AugmentOptions:
    """Spatial jitter ranges (degrees; fractions of the image side) and intensity jitter."""

    flip: bool = True  # horizontal flip with probability 1/2
    rotation_deg: float = 8.0  # uniform in ±rotation_deg
    scale: float = 0.08  # zoom factor uniform in 1 ± scale (zoom in = crop)
    shift: float = 0.06  # translation uniform in ±shift of the side
    gain: float = 0.1  # multiply by 1 ± gain
    bias: float = 0.1  # add ±bias (normalised units)
    contrast_field: float = 0.5  # std of the log of a smooth random gain field (0 = off); see SpatialAugment
    contrast_cells: int = 4  # the field's control grid is cells × cells, bicubically upsampled

    def __post_init__(self) -> None:
        for name in ("rotation_deg", "scale", "shift", "gain", "bias", "contrast_field"):
            if getattr(self, name) < 0:
                raise ValueError(f"AugmentOptions.{name} must be >= 0")
        if self.contrast_cells < 2:
            raise ValueError("AugmentOptions.contrast_cells must be >= 2")
        if self.scale >= 1:
            raise ValueError("AugmentOptions.scale must be < 1")


class SpatialAugment:
    """Random per-sample affine + intensity jitter of a DI batch (B, S, C, H, W), same for all streams.

    The *contrast field* stands in for identities the data does not have: a DI of a small motion is about
    the image gradient times the displacement, so the same expression on another face gives the same motion
    pattern seen through that face's local contrast (brows, glasses, hair, skin). Multiplying by a smooth
    random positive field exp(N(0, σ²)) keeps the pattern and varies that contrast region by region.
    """

    def __init__(self, options: AugmentOptions | None = None, *, vector_streams: tuple[int, int] | None = None
                 ) -> None:
        """``vector_streams``: the indices of the horizontal and vertical components of a vector field (the
        flow streams), whose values are turned with the image: a mirror negates the horizontal component, a
        rotation mixes the two."""
        self.options = options or AugmentOptions()
        self.vector_streams = vector_streams

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        o = self.options
        b, s, c, h, w = x.shape
        dev = x.device

        def uniform(lo: float, hi: float) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(b, generator=generator).to(dev)

        angle = uniform(-o.rotation_deg, o.rotation_deg) * (math.pi / 180.0)
        zoom = uniform(1.0 - o.scale, 1.0 + o.scale)
        tx, ty = uniform(-2 * o.shift, 2 * o.shift), uniform(-2 * o.shift, 2 * o.shift)  # grid units span 2
        flip = torch.ones(b, device=dev)
        if o.flip:
            flip = torch.where(torch.rand(b, generator=generator).to(dev) < 0.5, -1.0, 1.0)
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack(
            [torch.stack([cos * flip, -sin, tx], dim=1), torch.stack([sin * flip, cos, ty], dim=1)], dim=1
        ).to(x.dtype)
        flat = x.reshape(b, s * c, h, w)
        grid = F.affine_grid(theta, list(flat.shape), align_corners=False)
        out = F.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if self.vector_streams is not None:
            # The output at p shows the input at A p + t, so a movement d of the input appears as A⁻¹ d.
            iu, iv = self.vector_streams
            inverse = torch.linalg.inv(theta[:, :, :2].to(torch.float64)).to(x.dtype)  # (b, 2, 2)
            view = out.reshape(b, s, c, h, w)
            u, v = view[:, iu].clone(), view[:, iv].clone()
            view[:, iu] = inverse[:, 0, 0].view(b, 1, 1, 1) * u + inverse[:, 0, 1].view(b, 1, 1, 1) * v
            view[:, iv] = inverse[:, 1, 0].view(b, 1, 1, 1) * u + inverse[:, 1, 1].view(b, 1, 1, 1) * v
            out = view.reshape(b, s * c, h, w)
        if o.contrast_field > 0:
            cells = torch.randn(b, 1, o.contrast_cells, o.contrast_cells, generator=generator).to(dev)
            field = F.interpolate(cells * o.contrast_field, size=(h, w), mode="bicubic", align_corners=False)
            out = out * torch.exp(field).to(x.dtype)  # same field for every stream and channel of a sample
        gain = uniform(1.0 - o.gain, 1.0 + o.gain).to(x.dtype).view(b, 1, 1, 1)
        bias = uniform(-o.bias, o.bias).to(x.dtype).view(b, 1, 1, 1)
        return (out * gain + bias).reshape(b, s, c, h, w)

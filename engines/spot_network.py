"""The learned spotter's network (torch): a small temporal convolution over each face region's features.

Every region's feature sequence goes through the same stack of dilated 1-D convolutions (weights shared by
all regions, so a movement is judged the same wherever the face makes it, and a one-sided or single-AU
expression is no special case); after the second layer each region also hears the mean over all regions (the
whole face talking or turning is context). The convolutions are *valid*: an output step sees exactly
``context`` steps before it and ``lookahead`` after it, so the live spotter, which holds just that many, gets
the same numbers as training over a whole recording. Output: each region's logit per step
(:mod:`engines.spotting_model` pools and decodes them). torch is needed only to train and export.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["SpotNet", "receptive_field"]

# Kernel 3; dilations of the stack. The receptive field is 1 + 2 * sum(dilations) steps.
DILATIONS = (1, 2, 4, 8, 4, 2, 1)


def receptive_field(dilations: tuple[int, ...] = DILATIONS) -> int:
    return 1 + 2 * sum(dilations)


class _Block(nn.Module):
    def __init__(self, width: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv1d(width, width, 3, dilation=dilation)
        self.mix = nn.Conv1d(width, width, 1)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)
        self.trim = dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mix(self.act(self.conv(x)))
        return x[..., self.trim:-self.trim] + self.drop(y)


class SpotNet(nn.Module):
    """(B, R, C, T) features → (B, R, T - receptive_field + 1) region logits."""

    def __init__(self, channels: int, regions: int, *, width: int = 24, dilations: tuple[int, ...] = DILATIONS,
                 dropout: float = 0.1, region_bias: bool = True, log_inputs: bool = True) -> None:
        super().__init__()
        self.settings: dict[str, Any] = {"width": width, "dilations": list(dilations), "dropout": dropout,
                                         "region_bias": region_bias, "log_inputs": log_inputs}
        self.log_inputs = log_inputs
        self.regions = regions
        self.stem = nn.Conv1d(channels, width, 1)
        self.region = nn.Parameter(torch.zeros(regions, width, 1)) if region_bias else None
        self.blocks = nn.ModuleList(_Block(width, d, dropout) for d in dilations)
        self.face = nn.Conv1d(width, width, 1)  # what every region hears of the whole face
        self.head = nn.Conv1d(width, 1, 1)
        self.act = nn.GELU()

    @property
    def receptive_field(self) -> int:
        return receptive_field(tuple(self.settings["dilations"]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, r, c, t = x.shape
        if self.log_inputs:  # sizes are heavy-tailed (a still brow reads 0.1, a laugh 20): compress them
            x = torch.sign(x) * torch.log1p(torch.abs(x))
        h = self.act(self.stem(x.reshape(b * r, c, t)))
        if self.region is not None:
            h = (h.reshape(b, r, -1, t) + self.region).reshape(b * r, -1, t)
        for k, block in enumerate(self.blocks):
            h = block(h)
            if k == 1:
                width, steps = h.shape[1], h.shape[2]
                mean = h.reshape(b, r, width, steps).mean(dim=1)  # (B, W, T')
                h = (h.reshape(b, r, width, steps) + self.face(mean).unsqueeze(1)).reshape(b * r, width, steps)
        out = self.head(self.act(h))  # (B*R, 1, T_out)
        return out.reshape(b, r, -1)

"""Fusion of per-stream feature maps into one feature vector for the classifier.

Every fusion takes the list of stream feature maps ``[(B, C, h, w)] * S`` (in card stream order) and
returns ``(B, out_features)``. All use plain matmul/softmax ops so they export to ONNX opset 17.

- ``concat``: pooled features concatenated (the ablation baseline; also the single-stream model).
- ``adaptive``: AFN-style input-dependent gate, softmax weights over streams, weighted sum.
- ``cross-attention``: DIANet-style, each stream's spatial tokens attend to the other's.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "FUSIONS",
    "AdaptiveFusion",
    "ConcatFusion",
    "CrossAttention",
    "CrossAttentionFusion",
    "Fusion",
    "build_fusion",
]


def _pool(feature: torch.Tensor) -> torch.Tensor:
    """Global average pool (B, C, h, w) -> (B, C)."""
    return feature.mean(dim=(2, 3))


class Fusion(nn.Module):
    """Base class: ``forward([(B, C, h, w)] * S) -> (B, out_features)``."""

    out_features: int


class ConcatFusion(Fusion):
    """Concatenate the globally pooled features of all streams: (B, S*C)."""

    def __init__(self, channels: int, n_streams: int) -> None:
        super().__init__()
        self.out_features = channels * n_streams

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([_pool(f) for f in features], dim=1)


class AdaptiveFusion(Fusion):
    """AFN-style adaptive fusion: w = softmax(MLP([f_1, ..., f_S])), fused = Σ_s w_s f_s, (B, C).

    The gate sees all streams' pooled features, so how much each DI counts depends on the input.
    """

    def __init__(self, channels: int, n_streams: int, hidden: int = 64) -> None:
        super().__init__()
        self.gate = nn.Sequential(
            nn.Linear(channels * n_streams, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, n_streams)
        )
        self.out_features = channels

    def weights(self, pooled: torch.Tensor) -> torch.Tensor:
        """Stream weights (B, S), each row summing to 1, from pooled features (B, S, C)."""
        return torch.softmax(self.gate(pooled.flatten(1)), dim=1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        pooled = torch.stack([_pool(f) for f in features], dim=1)  # (B, S, C)
        return (pooled * self.weights(pooled).unsqueeze(-1)).sum(dim=1)


class CrossAttention(nn.Module):
    """Multi-head attention of query tokens over key/value tokens (B, N, C), written as plain matmuls."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by heads={heads}")
        self.heads = heads
        self.head_dim = dim // heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        # (B, N, C) -> (B, heads, N, head_dim); -1 keeps batch and token count dynamic for export
        return x.reshape(x.shape[0], -1, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        q = self._split(self.q(query))
        k, v = self.kv(context).chunk(2, dim=-1)
        k, v = self._split(k), self._split(v)
        attn = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim)), dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).flatten(2)  # (B, N, C)
        return self.proj(out)


class CrossAttentionFusion(Fusion):
    """DIANet-style fusion of two streams: A attends to B and B to A (residual + LayerNorm), each pooled,
    then concatenated: (B, 2C).

    Spatial positions of the aligned face matter (the same cell is the same facial region in both DIs),
    so each stream's tokens get a learned position embedding.
    """

    def __init__(self, channels: int, n_streams: int, tokens: int, heads: int = 4) -> None:
        super().__init__()
        if n_streams != 2:
            raise ValueError(f"cross-attention fusion joins exactly 2 streams, got {n_streams}")
        self.pos = nn.Parameter(torch.zeros(2, tokens, channels))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.attend_ab = CrossAttention(channels, heads)  # A's queries over B
        self.attend_ba = CrossAttention(channels, heads)  # B's queries over A
        self.norm_a = nn.LayerNorm(channels)
        self.norm_b = nn.LayerNorm(channels)
        self.out_features = 2 * channels

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        a = features[0].flatten(2).transpose(1, 2) + self.pos[0]  # (B, N, C)
        b = features[1].flatten(2).transpose(1, 2) + self.pos[1]
        a2 = self.norm_a(a + self.attend_ab(a, b))
        b2 = self.norm_b(b + self.attend_ba(b, a))
        return torch.cat([a2.mean(dim=1), b2.mean(dim=1)], dim=1)


class PhaseFlowFusion(Fusion):
    """The phase DIs and the apex flow in one model: streams (onset→apex DI, apex→offset DI, flow u, flow v).

    The two phase DIs are joined by :class:`CrossAttentionFusion` (DIANet), the flow's two components by
    concatenation (together they are one vector field), each projected to C; an input-dependent gate
    (:class:`AdaptiveFusion`, AFN) then weighs the two: how the face looked against how it moved."""

    def __init__(self, channels: int, n_streams: int, tokens: int, heads: int = 4, hidden: int = 64) -> None:
        super().__init__()
        if n_streams != 4:
            raise ValueError(f"phase-flow fusion joins 4 streams (2 phase DIs, flow u and v), got {n_streams}")
        self.phases = CrossAttentionFusion(channels, 2, tokens, heads=heads)
        self.phase_proj = nn.Sequential(nn.Linear(2 * channels, channels), nn.ReLU(inplace=True))
        self.flow_proj = nn.Sequential(nn.Linear(2 * channels, channels), nn.ReLU(inplace=True))
        self.gate = AdaptiveFusion(channels, 2, hidden=hidden)
        self.out_features = channels

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        phase = self.phase_proj(self.phases(features[:2]))
        flow = self.flow_proj(torch.cat([_pool(f) for f in features[2:]], dim=1))
        pooled = torch.stack([phase, flow], dim=1)  # (B, 2, C)
        return (pooled * self.gate.weights(pooled).unsqueeze(-1)).sum(dim=1)


FUSIONS = ("concat", "adaptive", "cross-attention", "phase-flow")


def build_fusion(
    kind: str, *, channels: int, n_streams: int, tokens: int, heads: int, gate_hidden: int
) -> Fusion:
    """The fusion module ``kind`` sized for ``n_streams`` maps of ``channels`` x ``tokens`` cells."""
    if kind == "concat":
        return ConcatFusion(channels, n_streams)
    if kind == "adaptive":
        return AdaptiveFusion(channels, n_streams, hidden=gate_hidden)
    if kind == "cross-attention":
        return CrossAttentionFusion(channels, n_streams, tokens, heads=heads)
    if kind == "phase-flow":
        return PhaseFlowFusion(channels, n_streams, tokens, heads=heads, hidden=gate_hidden)
    raise KeyError(f"unknown fusion {kind!r}; known: {list(FUSIONS)}")

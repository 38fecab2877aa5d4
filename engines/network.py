"""The multi-stream MER network and its one builder.

A model is S per-stream backbones (one per DI stream, separate weights unless ``shared_backbone``), a
fusion of their feature maps, and a linear classifier. What it expects and predicts is its
:class:`~engines.card.ModelCard`, attached as ``model.card`` at build time.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from engines.backbones import BACKBONES, DEFAULT_WIDTHS, build_backbone
from engines.card import ModelCard
from engines.fusion import FUSIONS, build_fusion
from mer_core.dynamic_image import HORIZONTAL_STREAMS

__all__ = ["HORIZONTAL_STREAMS", "MERModel", "ModelError", "ModelOptions", "create_model"]


log = logging.getLogger(__name__)


class ModelError(ValueError):
    """A model cannot be built from the given name, labels or settings."""


# Settings added after models were shipped, with the value every earlier model had: left out of the card at
# that value.
_ADDED_SETTINGS: dict[str, Any] = {"members": 1}


@dataclass(frozen=True)
class ModelOptions:
    """Everything ``build_model(**settings)`` accepts. Sizes in pixels."""

    backbone: str = "fast"  # "fast" | "resnet18"
    input_size: int = 64  # DI side fed to the network
    channels: int = 1  # 1 = grayscale DIs, 3 = BGR
    crop_size: int = 128  # aligned face crop the DIs are computed on (recorded in the card)
    dropout: float = 0.2  # before the classifier
    width: int | None = None  # backbone base width; None = the backbone's default (fast 16, resnet18 64)
    shared_backbone: bool = False  # one backbone for all streams instead of one per stream
    heads: int = 4  # attention heads (cross-attention fusion)
    gate_hidden: int = 64  # hidden units of the adaptive-fusion gate
    flip_average: bool = False  # average the logits of the DIs and their mirror image (test-time flip)
    members: int = 1  # independently initialised networks whose logits are averaged (a deep ensemble)

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ModelError(f"unknown backbone {self.backbone!r}; choose one of {sorted(BACKBONES)}")
        if self.width is None:
            object.__setattr__(self, "width", DEFAULT_WIDTHS[self.backbone])
        for name in ("input_size", "channels", "crop_size", "width", "heads", "gate_hidden", "members"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ModelError(f"setting {name} must be a positive integer, got {value!r}")
        if self.channels not in (1, 3):
            raise ModelError(f"setting channels must be 1 or 3, got {self.channels}")
        if self.input_size < 16:
            raise ModelError(f"setting input_size must be at least 16 pixels, got {self.input_size}")
        if (
            isinstance(self.dropout, bool)
            or not isinstance(self.dropout, int | float)
            or not 0 <= self.dropout < 1
        ):
            raise ModelError(f"setting dropout must be in [0, 1), got {self.dropout!r}")
        object.__setattr__(self, "dropout", float(self.dropout))
        for name in ("shared_backbone", "flip_average"):
            if not isinstance(getattr(self, name), bool):
                raise ModelError(f"setting {name} must be true or false, got {getattr(self, name)!r}")

    @classmethod
    def from_kwargs(cls, settings: dict[str, Any]) -> ModelOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ModelError(f"unknown model settings {unknown}; known: {sorted(known)}")
        return cls(**settings)

    def card_settings(self) -> dict[str, Any]:
        """The settings that have no field of their own in the card (all of them, resolved, so a card
        still rebuilds the same network if a default changes later)."""
        own = {"backbone", "input_size", "channels", "crop_size"}
        settings = {k: v for k, v in asdict(self).items() if k not in own}
        for added, plain in _ADDED_SETTINGS.items():
            if settings[added] == plain:
                del settings[added]  # cards written before the setting existed still match their network
        return settings


def _stream_features(encoders: nn.ModuleList, x: torch.Tensor, n_streams: int) -> list[torch.Tensor]:
    """Per-stream feature maps [(B, C', h, w)] of ``x`` (B, S = n_streams, C, H, W) in stream order: one
    backbone per stream, or one shared backbone run once over all streams. ``n_streams`` comes from the card, a
    Python int, so an exported graph does not depend on a traced shape."""
    if len(encoders) == 1 and n_streams > 1:
        maps = encoders[0](x.flatten(0, 1))
        maps = maps.reshape(-1, n_streams, *maps.shape[1:])
        return list(maps.unbind(1))
    return [encoder(x[:, i]) for i, encoder in enumerate(encoders)]


class _Member(nn.Module):
    """One network of the model: a backbone per stream (or one shared), the fusion and the classifier."""

    def __init__(self, card: ModelCard, fusion: str, settings: ModelOptions) -> None:
        super().__init__()
        n_streams = self.n_streams = len(card.streams)
        width = settings.width
        assert width is not None  # resolved in ModelOptions
        n_backbones = 1 if settings.shared_backbone else n_streams
        backbones = [
            build_backbone(settings.backbone, in_channels=settings.channels, width=width)
            for _ in range(n_backbones)
        ]
        self.encoders = nn.ModuleList(backbones)
        side = backbones[0].feature_size(settings.input_size)
        try:
            fusion_module = build_fusion(
                fusion,
                channels=backbones[0].out_channels,
                n_streams=n_streams,
                tokens=side * side,
                heads=settings.heads,
                gate_hidden=settings.gate_hidden,
            )
        except (KeyError, ValueError) as exc:
            raise ModelError(f"model {card.architecture!r}: {exc.args[0]}") from None
        self.fusion = fusion_module
        self.head = nn.Sequential(
            nn.Dropout(settings.dropout), nn.Linear(fusion_module.out_features, len(card.labels))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.fusion(_stream_features(self.encoders, x, self.n_streams)))


class MERModel(nn.Module):
    """Multi-stream DI classifier: ``forward(x (B, S, C, H, W)) -> logits (B, n_classes)``.

    Input: normalised DIs (``mer_core.dynamic_image.build_streams``) in ``card.streams`` order. In eval
    mode the logits are divided by ``card.temperature`` (calibration; 1 = as trained); training sees them raw.
    With ``members`` > 1 the model holds that many independently initialised networks: training sees each
    one's logits, (B, members, n_classes), and is scored on each; eval mode answers their mean. Member 0's
    parts sit at the top level (``encoders``, ``fusion``, ``head``) so one-member checkpoints keep their keys.
    """

    def __init__(self, card: ModelCard, fusion: str, settings: ModelOptions) -> None:
        super().__init__()
        self.card = card
        self.fusion_kind = fusion
        first = _Member(card, fusion, settings)
        self.encoders, self.fusion, self.head = first.encoders, first.fusion, first.head
        self.others = nn.ModuleList(_Member(card, fusion, settings) for _ in range(settings.members - 1))
        self.flip_average = settings.flip_average
        # A mirrored horizontal-flow image points the other way: mirror() negates those streams.
        signs = [-1.0 if stream in HORIZONTAL_STREAMS else 1.0 for stream in card.streams]
        self._negates = -1.0 in signs
        self.register_buffer("mirror_signs", torch.tensor(signs).reshape(1, -1, 1, 1, 1), persistent=False)

    mirror_signs: torch.Tensor  # (1, S, 1, 1, 1): -1 for streams that change sign in a mirror image

    def mirror(self, x: torch.Tensor) -> torch.Tensor:
        """The mirror image of model inputs (B, S, C, H, W): flipped left-right, horizontal flow negated."""
        flipped = torch.flip(x, dims=[-1])
        return flipped * self.mirror_signs if self._negates else flipped

    @property
    def shared_backbone(self) -> bool:
        return len(self.encoders) == 1 and len(self.card.streams) > 1

    def example_input(self, batch: int = 1) -> torch.Tensor:
        """A random input of the right shape (for export, benchmarks and tests)."""
        param = next(self.parameters())
        return torch.randn(batch, *self.card.input_shape, device=param.device, dtype=param.dtype)

    def _check_input(self, x: torch.Tensor) -> None:
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            return
        if x.dim() != 5 or tuple(x.shape[1:]) != self.card.input_shape:
            raise ValueError(
                f"model {self.card.name!r} expects input (batch, {', '.join(map(str, self.card.input_shape))}) "
                f"= (batch, streams {list(self.card.streams)}, channels, size, size), got {tuple(x.shape)}"
            )

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Member 0's per-stream feature maps [(B, C', h, w)] in stream order."""
        return _stream_features(self.encoders, x, len(self.card.streams))

    @property
    def members(self) -> int:
        return 1 + len(self.others)

    def member_encoders(self) -> list[nn.ModuleList]:
        """Every member's backbones (member 0 first)."""
        return [self.encoders, *(m.encoders for m in self.others if isinstance(m, _Member))]

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, K) with one member, else each member's (B, members, K)."""
        first = self.head(self.fusion(self.features(x)))
        if not len(self.others):
            return first
        return torch.stack([first, *(member(x) for member in self.others)], dim=1)

    def _answer(self, x: torch.Tensor) -> torch.Tensor:
        logits = self._logits(x)
        return logits.mean(dim=1) if len(self.others) else logits

    @property
    def temperature(self) -> float:
        """The softmax temperature of the card; eval-mode outputs are the logits divided by it."""
        return self.card.temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        if self.training:
            return self._logits(x)
        if self.flip_average:
            # Faces are near-symmetric and training flips DIs, so the mirror image is a second, independent
            # look at the same expression. Two passes rather than one batch of 2B, so the exported graph keeps
            # a static class dimension.
            logits = 0.5 * (self._answer(x) + self._answer(self.mirror(x)))
        else:
            logits = self._answer(x)
        # Calibration: the temperature lives in the card and is read here, so the torch backend's softmax,
        # the ONNX graph (a constant, traced at export) and TensorRT plans built from it all include it.
        temperature = self.card.temperature
        return logits if temperature == 1.0 else logits / temperature


def create_model(
    architecture: str, *, labels: Sequence[str], streams: Sequence[str], fusion: str, **settings: Any
) -> MERModel:
    """The one builder behind every registered entry point: validate, make the card, build the network."""
    parsed = ModelOptions.from_kwargs(settings)
    if isinstance(labels, str):
        raise ModelError(f"labels must be a sequence of class names, not the string {labels!r}")
    labels = tuple(str(label) for label in labels)
    if len(labels) < 2:
        raise ModelError(f"a classifier needs at least 2 labels, got {list(labels)}")
    if len(set(labels)) != len(labels):
        raise ModelError(f"labels must be unique, got {list(labels)}")
    if fusion not in FUSIONS:
        raise ModelError(f"unknown fusion {fusion!r}; known: {list(FUSIONS)}")
    card = ModelCard(
        name=architecture,
        architecture=architecture,
        labels=labels,
        streams=tuple(streams),
        backbone=parsed.backbone,
        crop_size=parsed.crop_size,
        input_size=parsed.input_size,
        channels=parsed.channels,
        settings=parsed.card_settings(),
    )
    log.debug("building %s (%s backbone, streams %s)", architecture, parsed.backbone, card.streams)
    return MERModel(card, fusion, parsed)

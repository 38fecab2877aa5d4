"""The torch backend: the checkpoint itself, on CPU or a CUDA GPU. torch is imported here only."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from engines.backends.artefacts import load_checkpoint_checked
from engines.backends.base import BackendUnavailableError, Engine, EngineError, parse_device
from engines.card import ModelCard

log = logging.getLogger(__name__)


class TorchEngine(Engine):
    """Runs an ``nn.Module`` returning logits (already divided by the card's temperature, in eval mode); the
    softmax is applied here, in float32."""

    name = "torch"

    def __init__(self, model: Any, *, device: str | None = None, max_batch: int = 8, threads: int | None = None,
                 reason: str = "", artefact: Path | None = None, warmup: bool = True) -> None:
        import torch

        card = getattr(model, "card", None)
        if not isinstance(card, ModelCard):
            raise EngineError("the torch backend needs a model with a model card attached (.card)")
        kind, index = parse_device(device)
        if kind == "auto":
            kind = "cuda" if torch.cuda.is_available() else "cpu"
        if kind == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailableError(f"device {device!r} requested but torch sees no CUDA GPU "
                                          "(CPU-only torch build, or no GPU)")
        dev = f"cuda:{index}" if kind == "cuda" else "cpu"
        super().__init__(card, device=dev, max_batch=max_batch, reason=reason or "torch: requested",
                         artefact=artefact)
        if threads is not None:  # process-wide in torch: only when asked for explicitly
            torch.set_num_threads(threads)
        self._torch = torch
        self._device = torch.device(dev)
        self._model = model.to(self._device).eval()
        if warmup:
            self.warm_up()

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, card: ModelCard | None = None, **kwargs: Any) -> TorchEngine:
        """Load a ``.pt`` checkpoint (its card must equal ``card`` when one was found beside it)."""

        model = load_checkpoint_checked(Path(path), card)
        return cls(model, artefact=Path(path), **kwargs)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self._device, non_blocking=True)
            logits = self._model(x)
            if logits.ndim != 2 or logits.shape[1] != len(self.card.labels):
                raise EngineError(f"model '{self.card.name}' returned shape {tuple(logits.shape)}, expected "
                                  f"(B, {len(self.card.labels)}) for its {len(self.card.labels)} labels")
            probs = torch.softmax(logits.float(), dim=1)
            return probs.cpu().numpy().astype(np.float32, copy=False)

    def _release(self) -> None:
        self._model = None
        if self._device.type == "cuda":
            self._torch.cuda.empty_cache()

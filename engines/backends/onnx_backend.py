"""The ONNX Runtime backend: CPU everywhere, the CUDA provider when onnxruntime-gpu and a GPU exist.

Threads: ``intra_op_num_threads`` defaults to half the cores (one on a 2-core machine) and the pool does
not spin while idle, so inference does not steal the per-frame pipeline's CPU; ``threads`` overrides it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from engines.backends.base import (
    BackendUnavailableError,
    Engine,
    ModelFileError,
    default_threads,
    import_onnxruntime,
    parse_device,
    softmax,
)
from engines.backends.select import _cuda_device
from engines.card import CardError, ModelCard
from engines.onnx_io import OUTPUT_NAME

log = logging.getLogger(__name__)


class OnnxRuntimeEngine(Engine):
    """An ``onnxruntime.InferenceSession`` over an exported graph (``dis`` → ``probs``)."""

    name = "onnxruntime"

    def __init__(self, card: ModelCard, path: str | Path, *, device: str | None = None, max_batch: int = 8,
                 threads: int | None = None, reason: str = "", warmup: bool = True) -> None:
        ort = import_onnxruntime()
        path = Path(path)
        if path.suffix.lower() in (".plan", ".engine"):
            raise ModelFileError(f"onnxruntime needs an .onnx model; {path.name} is a TensorRT plan "
                                 "(use backend 'tensorrt', or give the .onnx it was built from)")
        if path.suffix.lower() in (".pt", ".pth"):
            raise ModelFileError(f"onnxruntime needs an .onnx model; {path.name} is a torch checkpoint "
                                 "(use backend 'torch', or export it with mer-export --onnx)")
        available = ort.get_available_providers()
        kind, index = parse_device(device)
        if kind == "auto":
            kind = "cuda" if "CUDAExecutionProvider" in available and _has_gpu() else "cpu"
        if kind == "cuda" and "CUDAExecutionProvider" not in available:
            raise BackendUnavailableError(f"device {device!r} requested but onnxruntime has no CUDA provider "
                                          "(install onnxruntime-gpu)")
        providers: list[str | tuple[str, dict[str, object]]] = ["CPUExecutionProvider"]
        if kind == "cuda":
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": index}))
        dev = f"cuda:{index}" if kind == "cuda" else "cpu"
        super().__init__(card, device=dev, max_batch=max_batch, reason=reason or "onnxruntime: requested",
                         artefact=path)

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or default_threads()
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3  # errors only; our own messages say what went wrong
        try:
            self._session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as exc:  # noqa: BLE001 - InvalidProtobuf, Fail, NoSuchFile ...
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelFileError(f"onnxruntime cannot load {path.name}: {text[:300]}") from None
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise CardError(f"{path.name} has {len(inputs)} inputs / {len(outputs)} outputs; expected one of each")
        self._input = inputs[0].name
        self._output = outputs[0].name
        # Our exports end in a softmax ("probs"); a foreign graph with another output name returns logits.
        self._logits = self._output != OUTPUT_NAME
        self.threads = opts.intra_op_num_threads
        if warmup:
            self.warm_up()

    def _run(self, batch: np.ndarray) -> np.ndarray:
        out = self._session.run([self._output], {self._input: batch})[0]
        if out.ndim != 2 or out.shape[1] != len(self.card.labels):
            raise CardError(f"{self.artefact.name if self.artefact else 'ONNX'} returned shape {out.shape}, "
                            f"expected (B, {len(self.card.labels)}): card and artefact do not match")
        out = out.astype(np.float32, copy=False)
        return softmax(out) if self._logits else out

    def _release(self) -> None:
        self._session = None


def _has_gpu() -> bool:

    return _cuda_device(0)[0]

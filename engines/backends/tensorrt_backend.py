"""The TensorRT backend: a deserialised plan run with name-based I/O on one CUDA stream.

Device memory comes from cuda-python (``cuda.bindings.runtime``, or the older ``cuda.cudart``), not from
torch, so a TensorRT deployment needs neither torch nor pycuda. Input and output buffers are allocated
once for ``max_batch`` (pinned host + device) and reused by every call; a call only copies, sets the input
shape (when the batch size changed), enqueues ``execute_async_v3`` and synchronises the stream.
Plans are checked against their ``<plan>.meta.json`` before TensorRT sees them (see plan_meta).
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path
from typing import Any

import numpy as np

from engines.backends.base import BackendUnavailableError, Engine, EngineError, ModelFileError
from engines.backends.plan_meta import PlanMeta
from engines.card import CardError, ModelCard

log = logging.getLogger(__name__)


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailableError(f"TensorRT is not installed ({exc}); pip install -e '.[tensorrt]' in the mer-live clone "
                                      "on a machine with an NVIDIA GPU") from None
    return trt


def import_cudart() -> Any:
    """cuda-python's runtime module (``cuda.bindings.runtime`` ≥ 12.6, else ``cuda.cudart``)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[no-redef]
        except ImportError:
            raise BackendUnavailableError("the TensorRT backend needs cuda-python for device memory: "
                                          "pip install cuda-python") from None
    return cudart


def _check(cudart: Any, result: Any, what: str) -> Any:
    """Unpack a cuda-python ``(err, *values)`` tuple, raising EngineError on a CUDA error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        name = cudart.cudaGetErrorString(err)[1]
        raise EngineError(f"CUDA error during {what}: {name.decode() if isinstance(name, bytes) else name}")
    return values[0] if len(values) == 1 else (values or None)


class TensorRTEngine(Engine):
    """Runs a TensorRT plan built by ``mer-export --tensorrt`` (one input ``dis``, one output ``probs``)."""

    name = "tensorrt"

    def __init__(self, card: ModelCard, plan: str | Path, *, meta: PlanMeta, device_index: int = 0,
                 max_batch: int = 8, reason: str = "", warmup: bool = True) -> None:
        plan = Path(plan)
        if plan.suffix.lower() == ".onnx":
            raise ModelFileError(f"the tensorrt backend runs a .plan; {plan.name} is ONNX (build a plan with "
                                 "mer-export --tensorrt, or let backend 'auto' build one)")
        trt = import_tensorrt()
        cudart = import_cudart()
        super().__init__(card, device=f"cuda:{device_index}", max_batch=max_batch,
                         reason=reason or "tensorrt: requested", artefact=plan)
        self._cudart = cudart
        self._host: list[int] = []
        self._dev: list[int] = []
        self._stream: Any = None
        self._context: Any = None
        self._engine: Any = None
        _check(cudart, cudart.cudaSetDevice(device_index), "cudaSetDevice")

        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        if meta.version_compatible:
            self._runtime.engine_host_code_allowed = True  # lean runtime inside the plan: we built it
        self._engine = self._runtime.deserialize_cuda_engine(plan.read_bytes())
        if self._engine is None:
            raise ModelFileError(f"TensorRT could not deserialize {plan.name} (corrupt, or built for another "
                                 "TensorRT/GPU); rebuild it with mer-export --tensorrt")
        engine = self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise CardError(f"{plan.name} has {len(inputs)} inputs / {len(outputs)} outputs; expected one of each")
        self._in, self._out = inputs[0], outputs[0]
        in_shape = tuple(engine.get_tensor_shape(self._in))
        out_shape = tuple(engine.get_tensor_shape(self._out))
        if in_shape[1:] != card.input_shape or out_shape[-1] != len(card.labels):
            raise CardError(f"{plan.name} takes {in_shape} → {out_shape}, model card '{card.name}' says "
                            f"(B, {', '.join(map(str, card.input_shape))}) → (B, {len(card.labels)}): rebuild the plan")
        for name in (self._in, self._out):
            if trt.nptype(engine.get_tensor_dtype(name)) != np.float32:
                raise ModelFileError(f"{plan.name}: tensor '{name}' is not float32; export the ONNX with mer-export")
        profile_max = int(engine.get_tensor_profile_shape(self._in, 0)[2][0])
        self.max_batch = min(self.max_batch, profile_max)

        self._context = engine.create_execution_context()
        if self._context is None:
            raise EngineError(f"TensorRT could not create an execution context for {plan.name} (out of GPU memory?)")
        self._stream = _check(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
        sample_in = int(np.prod(card.input_shape))
        n_out = len(card.labels)
        self._h_in, ptr_in = self._pinned((self.max_batch, *card.input_shape))
        self._h_out, ptr_out = self._pinned((self.max_batch, n_out))
        self._d_in = self._device_alloc(self.max_batch * sample_in * 4)
        self._d_out = self._device_alloc(self.max_batch * n_out * 4)
        self._ptr_in, self._ptr_out = ptr_in, ptr_out
        self._bytes_in, self._bytes_out = sample_in * 4, n_out * 4
        self._context.set_tensor_address(self._in, self._d_in)
        self._context.set_tensor_address(self._out, self._d_out)
        self._batch = 0
        if warmup:
            self.warm_up()

    def _pinned(self, shape: tuple[int, ...]) -> tuple[np.ndarray, int]:
        """A page-locked float32 host array (fast, truly asynchronous copies)."""
        nbytes = int(np.prod(shape)) * 4
        ptr = int(_check(self._cudart, self._cudart.cudaMallocHost(nbytes), "cudaMallocHost"))
        self._host.append(ptr)
        array = np.ctypeslib.as_array((ctypes.c_float * (nbytes // 4)).from_address(ptr)).reshape(shape)
        return array, ptr

    def _device_alloc(self, nbytes: int) -> int:
        ptr = int(_check(self._cudart, self._cudart.cudaMalloc(nbytes), "cudaMalloc"))
        self._dev.append(ptr)
        return ptr

    def _run(self, batch: np.ndarray) -> np.ndarray:
        cudart = self._cudart
        n = batch.shape[0]
        self._h_in[:n] = batch
        if n != self._batch:
            if not self._context.set_input_shape(self._in, (n, *self.card.input_shape)):
                raise EngineError(f"TensorRT refused batch size {n} (plan profile allows 1..{self.max_batch})")
            self._batch = n
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(cudart, cudart.cudaMemcpyAsync(self._d_in, self._ptr_in, n * self._bytes_in, h2d, self._stream),
               "input copy")
        if not self._context.execute_async_v3(int(self._stream)):
            raise EngineError("TensorRT execute_async_v3 failed (see the TensorRT log above)")
        _check(cudart, cudart.cudaMemcpyAsync(self._ptr_out, self._d_out, n * self._bytes_out, d2h, self._stream),
               "output copy")
        _check(cudart, cudart.cudaStreamSynchronize(self._stream), "stream synchronize")
        return self._h_out[:n].copy()  # the pinned buffer is reused by the next call

    def _release(self) -> None:
        cudart = self._cudart
        if self._stream is not None:
            cudart.cudaStreamSynchronize(self._stream)
        self._context = None
        self._engine = None
        for ptr in self._dev:
            cudart.cudaFree(ptr)
        for ptr in self._host:
            cudart.cudaFreeHost(ptr)
        self._dev, self._host = [], []
        if self._stream is not None:
            cudart.cudaStreamDestroy(self._stream)
            self._stream = None

"""A stand-in for ``tensorrt`` and ``cuda.bindings.runtime``, enough to drive mer-live's TensorRT code paths
on a machine without a GPU: "device memory" is host memory, and a "plan" is the ONNX file it was built
from, run by onnxruntime when the fake execution context is enqueued. It checks call order and names
(name-based I/O, shapes set before execution, addresses bound), not TensorRT's numerics.
"""

from __future__ import annotations

import ctypes
import enum
import sys
import types
from typing import Any

import numpy as np
import pytest

MAGIC = b"FAKEPLAN"
_IntEnum: Any = enum.IntEnum  # called, not subclassed: mypy refuses functional enums stored as module attributes
VERSION = "10.9.0.34"


def make_tensorrt(version: str = VERSION) -> types.ModuleType:
    import onnxruntime as ort

    trt: Any = types.ModuleType("tensorrt")  # Any: the fake grows attributes a ModuleType has not
    trt.__version__ = version
    trt.TensorIOMode = _IntEnum("TensorIOMode", "NONE INPUT OUTPUT", start=0)
    trt.DataType = _IntEnum("DataType", "FLOAT HALF INT8 INT32", start=0)
    trt.NetworkDefinitionCreationFlag = _IntEnum("NetworkDefinitionCreationFlag", "STRONGLY_TYPED", start=0)
    trt.BuilderFlag = _IntEnum("BuilderFlag", "FP16 TF32 VERSION_COMPATIBLE", start=0)
    trt.MemoryPoolType = _IntEnum("MemoryPoolType", "WORKSPACE", start=0)
    trt.HardwareCompatibilityLevel = _IntEnum("HardwareCompatibilityLevel", "NONE AMPERE_PLUS", start=0)
    trt.nptype = lambda dtype: {trt.DataType.FLOAT: np.float32, trt.DataType.HALF: np.float16}[dtype]
    trt.calls = []

    class Logger:
        WARNING = 2

        def __init__(self, severity: int = 2) -> None:
            self.severity = severity

    class Engine:
        def __init__(self, onnx_bytes: bytes) -> None:
            self.session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
            self.io = [(i.name, trt.TensorIOMode.INPUT, i.shape) for i in self.session.get_inputs()]
            self.io += [(o.name, trt.TensorIOMode.OUTPUT, o.shape) for o in self.session.get_outputs()]
            self.num_io_tensors = len(self.io)
            self.max_batch = 1  # the plan's profile; set when deserialized

        def get_tensor_name(self, i: int) -> str:
            return self.io[i][0]

        def _entry(self, name: str) -> tuple[str, Any, list[Any]]:
            return next(e for e in self.io if e[0] == name)

        def get_tensor_mode(self, name: str) -> Any:
            return self._entry(name)[1]

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return tuple(d if isinstance(d, int) else -1 for d in self._entry(name)[2])

        def get_tensor_dtype(self, name: str) -> Any:
            return trt.DataType.FLOAT

        def get_tensor_profile_shape(self, name: str, profile: int) -> list[tuple[int, ...]]:
            rest = self.get_tensor_shape(name)[1:]
            return [(1, *rest), (1, *rest), (self.max_batch, *rest)]

        def create_execution_context(self) -> Context:
            return Context(self)

    class Context:
        def __init__(self, engine: Engine) -> None:
            self.engine = engine
            self.shapes: dict[str, tuple[int, ...]] = {}
            self.addresses: dict[str, int] = {}

        def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
            if shape[0] > self.engine.max_batch:
                return False
            self.shapes[name] = tuple(shape)
            trt.calls.append(("set_input_shape", name, tuple(shape)))
            return True

        def set_tensor_address(self, name: str, ptr: int) -> None:
            self.addresses[name] = int(ptr)

        def execute_async_v3(self, stream_handle: int) -> bool:
            assert isinstance(stream_handle, int)
            (in_name, _, _), (out_name, _, _) = self.engine.io
            shape = self.shapes[in_name]
            n = int(np.prod(shape))
            x = np.ctypeslib.as_array((ctypes.c_float * n).from_address(self.addresses[in_name])).reshape(shape)
            y = self.engine.session.run(None, {in_name: x.copy()})[0].astype(np.float32)
            ctypes.memmove(self.addresses[out_name], y.ctypes.data, y.nbytes)
            trt.calls.append(("execute_async_v3", shape[0]))
            return True

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            self.engine_host_code_allowed = False

        def deserialize_cuda_engine(self, data: bytes) -> Engine | None:
            if not data.startswith(MAGIC):
                return None
            max_batch = int.from_bytes(data[len(MAGIC) : len(MAGIC) + 4], "little")
            engine = Engine(bytes(data[len(MAGIC) + 4 :]))
            engine.max_batch = max_batch
            return engine

    class Network:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.onnx = b""

    class Parser:
        def __init__(self, network: Network, logger: Logger) -> None:
            self.network = network
            self.num_errors = 0

        def parse(self, data: bytes) -> bool:
            self.network.onnx = bytes(data)
            return True

        def get_error(self, i: int) -> str:
            return ""

    class TimingCache:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def serialize(self) -> bytes:
            return self.data + b"+timings"

    class Profile:
        def set_shape(self, name: str, lo: tuple[int, ...], opt: tuple[int, ...], hi: tuple[int, ...]) -> None:
            self.shape = (name, tuple(lo), tuple(opt), tuple(hi))

    class Config:
        def __init__(self) -> None:
            self.flags: set[Any] = set()
            self.hardware_compatibility_level = trt.HardwareCompatibilityLevel.NONE
            self.profiles: list[Profile] = []
            self.cache: TimingCache | None = None
            self.pool: dict[Any, int] = {}

        def set_memory_pool_limit(self, pool: Any, size: int) -> None:
            self.pool[pool] = size

        def set_flag(self, flag: Any) -> None:
            self.flags.add(flag)

        def clear_flag(self, flag: Any) -> None:
            self.flags.discard(flag)

        def add_optimization_profile(self, profile: Profile) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, data: bytes) -> TimingCache:
            return TimingCache(bytes(data))

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            self.cache = cache
            return True

        def get_timing_cache(self) -> TimingCache | None:
            return self.cache

    class Builder:
        def __init__(self, logger: Logger) -> None:
            self.logger = logger

        def create_network(self, flags: int = 0) -> Network:
            return Network(flags)

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes:
            trt.last_build = (network, config)
            max_batch = config.profiles[0].shape[3][0]
            return MAGIC + int(max_batch).to_bytes(4, "little") + network.onnx

    trt.Logger, trt.Runtime, trt.Builder, trt.OnnxParser = Logger, Runtime, Builder, Parser
    return trt


def make_cudart() -> types.ModuleType:
    rt: Any = types.ModuleType("cuda.bindings.runtime")
    buffers: dict[int, ctypes.Array[ctypes.c_char]] = {}
    rt.buffers = buffers
    rt.cudaMemcpyKind = _IntEnum("cudaMemcpyKind", "cudaMemcpyHostToDevice cudaMemcpyDeviceToHost", start=1)

    def alloc(nbytes: int) -> tuple[int, int]:
        buf = ctypes.create_string_buffer(nbytes)
        buffers[ctypes.addressof(buf)] = buf
        return 0, ctypes.addressof(buf)

    def free(ptr: int) -> tuple[int]:
        buffers.pop(ptr)
        return (0,)

    def memcpy(dst: int, src: int, count: int, kind: Any, stream: Any) -> tuple[int]:
        ctypes.memmove(dst, src, count)
        return (0,)

    rt.cudaSetDevice = lambda i: (0,)
    rt.cudaStreamCreate = lambda: (0, 4242)
    rt.cudaStreamSynchronize = lambda s: (0,)
    rt.cudaStreamDestroy = lambda s: (0,)
    rt.cudaMallocHost = alloc
    rt.cudaMalloc = alloc
    rt.cudaFreeHost = free
    rt.cudaFree = free
    rt.cudaMemcpyAsync = memcpy
    rt.cudaGetErrorString = lambda err: (0, b"fake CUDA error")
    return rt


def install(monkeypatch: pytest.MonkeyPatch, version: str = VERSION) -> tuple[Any, Any]:
    """Put the fakes into ``sys.modules`` for one test."""
    trt, rt = make_tensorrt(version), make_cudart()
    cuda: Any = types.ModuleType("cuda")
    bindings: Any = types.ModuleType("cuda.bindings")
    bindings.runtime = rt
    cuda.bindings = bindings
    for name, module in (("tensorrt", trt), ("cuda", cuda), ("cuda.bindings", bindings),
                         ("cuda.bindings.runtime", rt)):
        monkeypatch.setitem(sys.modules, name, module)
    return trt, rt

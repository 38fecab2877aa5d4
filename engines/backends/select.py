"""Which backend runs a model here, and why: environment probing and the (pure) selection rule.

``probe_environment()`` looks at the machine without importing torch or TensorRT (package metadata and
the CUDA driver through ctypes), so choosing a backend is cheap and tests can fake the machine by
passing their own :class:`Environment` to :func:`choose_backend` or ``load_engine(environment=...)``.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
from collections.abc import Collection
from dataclasses import dataclass
from importlib import metadata

from engines.backends.base import TRAIN_EXTRA, BackendUnavailableError, import_onnxruntime

log = logging.getLogger(__name__)

# Artefact kinds a model offers (see engines.backends.artefacts.Artefacts.kinds).
CHECKPOINT, ONNX, PLAN = "checkpoint", "onnx", "plan"


@dataclass(frozen=True)
class Environment:
    """What this machine can run. Every field is plain data so tests can build any machine."""

    has_tensorrt: bool = False
    tensorrt_version: str = ""
    has_cuda_python: bool = False  # cuda-python (cuda.bindings.runtime): device memory for TensorRT
    has_cuda: bool = False  # a CUDA driver and at least one GPU
    gpu_name: str = ""
    compute_capability: tuple[int, int] = (0, 0)
    has_onnxruntime: bool = False
    onnxruntime_providers: tuple[str, ...] = ()
    has_torch: bool = False

    @property
    def sm(self) -> str:
        major, minor = self.compute_capability
        return f"sm_{major}{minor}"

    @property
    def ort_cuda(self) -> bool:
        return self.has_cuda and "CUDAExecutionProvider" in self.onnxruntime_providers

    def describe(self) -> str:
        gpu = f"{self.gpu_name} ({self.sm})" if self.has_cuda else "no CUDA GPU"
        trt = f"TensorRT {self.tensorrt_version}" if self.has_tensorrt else "no TensorRT"
        ort = "onnxruntime " + ",".join(p.replace("ExecutionProvider", "") for p in self.onnxruntime_providers) \
            if self.has_onnxruntime else "no onnxruntime"
        return f"{gpu}; {trt}; {ort}; torch {'yes' if self.has_torch else 'no'}"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _dist_version(*names: str) -> str:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return ""


def _cuda_device(index: int = 0) -> tuple[bool, str, tuple[int, int]]:
    """(present, name, compute capability) of GPU ``index`` via the CUDA driver API, without torch."""
    for lib in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            cuda = ctypes.CDLL(lib)
            break
        except OSError:
            continue
    else:
        return False, "", (0, 0)
    try:
        if cuda.cuInit(0) != 0:
            return False, "", (0, 0)
        count = ctypes.c_int(0)
        if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value <= index:
            return False, "", (0, 0)
        dev = ctypes.c_int(0)
        if cuda.cuDeviceGet(ctypes.byref(dev), index) != 0:
            return False, "", (0, 0)
        name = ctypes.create_string_buffer(256)
        cuda.cuDeviceGetName(name, 256, dev)
        major, minor = ctypes.c_int(0), ctypes.c_int(0)
        cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, dev)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
        cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev)  # ..._MINOR
        return True, name.value.decode(errors="replace"), (major.value, minor.value)
    except (AttributeError, OSError):
        return False, "", (0, 0)


def probe_environment(device_index: int = 0) -> Environment:
    """Look at this machine (GPU ``device_index``) without importing torch or TensorRT."""
    has_cuda, gpu_name, cc = _cuda_device(device_index)
    providers: tuple[str, ...] = ()
    has_ort = _installed("onnxruntime")
    if has_ort:
        try:
            ort = import_onnxruntime()
            providers = tuple(ort.get_available_providers())
        except Exception as exc:  # noqa: BLE001 - a broken install is "not available", with a log line
            log.warning("onnxruntime is installed but does not import: %s", exc)
            has_ort = False
    env = Environment(
        has_tensorrt=_installed("tensorrt"),
        tensorrt_version=_dist_version("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt_cu12_libs"),
        has_cuda_python=_installed("cuda.bindings") or _installed("cuda.cudart"),
        has_cuda=has_cuda,
        gpu_name=gpu_name,
        compute_capability=cc,
        has_onnxruntime=has_ort,
        onnxruntime_providers=providers,
        has_torch=_installed("torch"),
    )
    log.debug("environment: %s", env.describe())
    return env


def tensorrt_blocker(env: Environment) -> str | None:
    """Why TensorRT cannot run here (None when it can)."""
    if not env.has_tensorrt:
        return "TensorRT not installed"
    if not env.has_cuda:
        return "no CUDA GPU"
    if not env.has_cuda_python:
        return "cuda-python not installed (pip install cuda-python)"
    return None


def choose_backend(env: Environment, available_artefacts: Collection[str], *,
                   plan_problem: str | None = None, build_plan: bool = True) -> tuple[str, str]:
    """The backend ``auto`` uses for a model offering ``available_artefacts``, and why.

    ``available_artefacts`` holds ``"checkpoint"``, ``"onnx"`` and/or ``"plan"`` (a plan that matches
    this machine). ``plan_problem`` says why a plan that exists does not match (then it is not offered).
    Order: TensorRT (matching plan, or one can be built from ONNX/checkpoint when no plan was refused),
    else ONNX Runtime (an .onnx, or one exported from the checkpoint into the cache), else torch.
    """
    kinds = set(available_artefacts)
    onnx_source = ONNX in kinds or (CHECKPOINT in kinds and env.has_torch)
    trt_blocker = tensorrt_blocker(env)
    if trt_blocker is None:
        if PLAN in kinds:
            return "tensorrt", f"tensorrt: matching plan for {env.gpu_name} ({env.sm}), TensorRT {env.tensorrt_version}"
        if plan_problem is None and build_plan and onnx_source:
            return "tensorrt", (f"tensorrt: no plan yet, building one for {env.gpu_name} ({env.sm}) "
                                "into the cache")
    why_not_trt = plan_problem or trt_blocker or "no TensorRT plan (plan building disabled)"
    if env.has_onnxruntime and onnx_source:
        where = "CUDA" if env.ort_cuda else "CPU"
        if ONNX in kinds:
            return "onnxruntime", f"onnxruntime ({where}): {why_not_trt}"
        return "onnxruntime", f"onnxruntime ({where}): {why_not_trt}; ONNX exported from the checkpoint into the cache"
    if env.has_torch and CHECKPOINT in kinds:
        why_not_ort = "onnxruntime not installed" if not env.has_onnxruntime else "no ONNX model"
        return "torch", f"torch: {why_not_trt}; {why_not_ort}"
    offered = ", ".join(sorted(kinds)) or "nothing"
    hints = []
    if PLAN in kinds or plan_problem:
        hints.append(f"its TensorRT plan cannot run here ({plan_problem or trt_blocker})")
    if ONNX in kinds and not env.has_onnxruntime:
        hints.append("onnxruntime is not installed")
    if CHECKPOINT in kinds and not env.has_torch:
        hints.append(f"torch is not installed ({TRAIN_EXTRA})")
    hints.append("give the model's .onnx or .pt (mer-export makes an ONNX from a checkpoint)")
    raise BackendUnavailableError(
        f"no backend can run this model here (model offers: {offered}; machine: {env.describe()}): "
        + "; ".join(hints)
    )

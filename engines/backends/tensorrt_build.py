"""Building a TensorRT plan from an exported ONNX file, with its metadata file and a reusable timing cache.

Precision: TensorRT 11 networks are strongly typed (the weak-typing flags such as BuilderFlag.FP16 are
gone), so precision comes from the ONNX: export with ``--fp16`` for an fp16 plan. On TensorRT 10, an
fp32 ONNX with ``fp16=True`` may still use BuilderFlag.FP16 (weakly typed network) when the flag exists.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engines.backends.base import BackendUnavailableError
from engines.backends.plan_meta import PlanMeta
from engines.backends.select import Environment, probe_environment, tensorrt_blocker
from engines.backends.tensorrt_backend import import_tensorrt
from engines.card import ModelCard
from engines.onnx_io import INPUT_NAME, META_PRECISION, ExportError, metadata, read_onnx
from mer_core.paths import atomic_write, file_sha256

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlanBuildOptions:
    """How a plan is built."""

    max_batch: int = 8  # optimisation profile: batch 1..max_batch
    opt_batch: int = 1  # the batch TensorRT tunes for (live use classifies one window at a time)
    workspace_mib: int = 1024
    timing_cache: Path | None = None  # read before and written after the build, shared across builds
    version_compatible: bool = False  # BuilderFlag.VERSION_COMPATIBLE (lean runtime embedded)
    hardware_compatible: bool = False  # HardwareCompatibilityLevel.AMPERE_PLUS
    fp16: bool = False  # fp32 ONNX on TensorRT 10 only: BuilderFlag.FP16
    tf32: bool = False  # allow TF32 math in fp32 layers (faster on Ampere+, ~1e-3 off the torch reference)

    def __post_init__(self) -> None:
        if not 1 <= self.opt_batch <= self.max_batch:
            raise ValueError(f"need 1 <= opt_batch ({self.opt_batch}) <= max_batch ({self.max_batch})")


def build_plan(onnx_path: str | Path, plan_path: str | Path, card: ModelCard,
               options: PlanBuildOptions = PlanBuildOptions(), *, env: Environment | None = None) -> PlanMeta:
    """Build ``plan_path`` from ``onnx_path``; writes ``<plan>.meta.json`` and returns the metadata."""
    env = env or probe_environment()
    blocker = tensorrt_blocker(env)
    if blocker == "TensorRT not installed":
        import_tensorrt()  # raises the install hint
    if blocker is not None:
        raise BackendUnavailableError(f"cannot build a TensorRT plan: {blocker}")
    trt = import_tensorrt()
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    precision = metadata(read_onnx(onnx_path)).get(META_PRECISION, "fp32")
    major = int(str(trt.__version__).split(".")[0])

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    weak_fp16 = options.fp16 and precision != "fp16" and hasattr(trt.BuilderFlag, "FP16") and major < 11
    if options.fp16 and precision != "fp16" and not weak_fp16:
        raise ExportError(f"TensorRT {trt.__version__} is strongly typed: an fp16 plan needs an fp16 ONNX "
                          "(mer-export --fp16 exports one)")
    flags = 0
    if not weak_fp16 and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        first = errors[0].splitlines()[0] if errors else "unknown parser error"
        hint = " (unsupported operation)" if "unsupported" in first.lower() or "no importer" in first.lower() else ""
        raise ExportError(f"TensorRT cannot parse {onnx_path.name}{hint}: {first}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    if weak_fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if not options.tf32 and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # fp32 plans match torch to 1e-4 (mer-export --verify)
    if options.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if options.hardware_compatible:
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    shape = card.input_shape
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, (1, *shape), (options.opt_batch, *shape), (options.max_batch, *shape))
    config.add_optimization_profile(profile)
    cache = _timing_cache(config, options.timing_cache)

    log.info("building TensorRT plan %s (batch 1..%d, %s)", plan_path.name, options.max_batch, precision)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT failed to build a plan from {onnx_path.name} (see the TensorRT log above)")
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(plan_path, memoryview(serialized))
    if options.timing_cache is not None and cache is not None:
        atomic_write(Path(options.timing_cache), memoryview(config.get_timing_cache().serialize()))
    meta = PlanMeta(
        tensorrt_version=str(trt.__version__), gpu_name=env.gpu_name, compute_capability=env.compute_capability,
        onnx_sha256=file_sha256(onnx_path), card_sha256=card.sha256(), max_batch=options.max_batch,
        precision="fp16" if (precision == "fp16" or weak_fp16) else "fp32",
        version_compatible=options.version_compatible, hardware_compatible=options.hardware_compatible,
        card=card.to_dict(),
    )
    meta.save(plan_path)
    card.save(plan_path.with_name(plan_path.stem + ".card.json"))
    return meta


def _timing_cache(config: Any, path: Path | None) -> Any:
    """Attach a timing cache (loaded from ``path`` when it exists) so repeated builds skip re-timing."""
    data = b""
    if path is not None and Path(path).is_file():
        data = Path(path).read_bytes()
    cache = config.create_timing_cache(data)
    if cache is None and data:  # stale or foreign cache: start a fresh one instead of failing the build
        log.warning("timing cache %s is unusable; starting a new one", path)
        cache = config.create_timing_cache(b"")
    if cache is not None:
        config.set_timing_cache(cache, False)
    return cache


def cached_plan_path(cache_dir: Path, onnx_sha256: str, card: ModelCard, env: Environment, max_batch: int) -> Path:
    """Where ``auto`` keeps a plan it built: keyed by ONNX, card, GPU, TensorRT version and batch."""
    key = f"{onnx_sha256[:16]}-{card.sha256()[:8]}-{env.sm}-trt{env.tensorrt_version}-b{max_batch}"
    return cache_dir / "plans" / key / "model.plan"

"""``load_engine``: from "a model" (or nothing: the bundled default) to a ready :class:`Engine`.

``auto`` order (see select.choose_backend): TensorRT when it is installed, a CUDA GPU is present and a
matching plan exists (or none was given and one can be built into the cache); otherwise ONNX Runtime;
otherwise torch. With only a ``.pt`` checkpoint, ONNX Runtime runs an ONNX export made once into
``~/.cache/mer-live/onnx/<checkpoint sha256>/`` (torch is needed that first time only). A plan that does
not match this machine or its card is refused in words; ``auto`` then falls back to ONNX Runtime.
``engine.reason`` says what was picked and why.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from engines.backends.artefacts import Artefacts, load_checkpoint_checked, resolve_artefacts
from engines.backends.base import (
    TRAIN_EXTRA,
    BackendUnavailableError,
    Engine,
    EngineOptions,
    ModelFileError,
    PlanMismatchError,
    TorchMissingError,
    cache_root,
    parse_device,
)
from engines.backends.plan_meta import PlanMeta, check_plan
from engines.backends.select import (
    CHECKPOINT,
    Environment,
    choose_backend,
    probe_environment,
    tensorrt_blocker,
)
from engines.onnx_io import ExportError, cached_onnx, onnx_card
from mer_core.paths import file_sha256

log = logging.getLogger(__name__)


def load_engine(model: str | Path | None = None, backend: str = "auto", *, device: str | None = None,
                max_batch: int = 8, threads: int | None = None, cache_dir: str | Path | None = None,
                options: EngineOptions | None = None, environment: Environment | None = None,
                default_dir: Path | None = None) -> Engine:
    """An engine for ``model`` (``.pt`` / ``.onnx`` / ``.plan`` / model directory / None = bundled default).

    ``options`` replaces the keyword settings when given; ``environment`` replaces probing (tests);
    ``default_dir`` replaces ``engines/default`` (tests).
    """
    opts = options or EngineOptions(backend=backend, device=device, max_batch=max_batch, threads=threads,
                                    cache_dir=Path(cache_dir) if cache_dir is not None else None)
    kind, index = parse_device(opts.device)
    artefacts = resolve_artefacts(model, default_dir=default_dir)
    env = environment or probe_environment(index)
    if kind == "cpu":  # an explicit CPU request rules out TensorRT and CUDA providers
        env = dataclasses.replace(env, has_cuda=False)

    plan_meta: PlanMeta | None = None
    plan_problem: str | None = None
    kinds = set(artefacts.kinds)
    if artefacts.plan is not None:
        try:
            plan_meta = PlanMeta.load(artefacts.plan)
            if tensorrt_blocker(env) is None or opts.backend == "tensorrt":
                check_plan(artefacts.plan, plan_meta, env, card_sha256=artefacts.card.sha256(),
                           onnx_sha256=file_sha256(artefacts.onnx) if artefacts.onnx else None)
        except (PlanMismatchError, ModelFileError) as exc:
            if opts.backend == "tensorrt":
                raise
            plan_problem = str(exc)
            kinds.discard("plan")
            log.warning("%s", exc)

    if opts.backend == "auto" and kinds == {CHECKPOINT} and not env.has_torch:
        raise TorchMissingError(f"{artefacts.source.name} is a torch checkpoint: running it needs torch, which is "
                                f"not installed: {TRAIN_EXTRA} (or give the model's .onnx, made by mer-export)")
    if opts.backend == "auto":
        name, reason = choose_backend(env, kinds, plan_problem=plan_problem, build_plan=opts.build_plan)
    else:
        name, reason = opts.backend, f"{opts.backend}: requested"
    log.info("engine for '%s': %s", artefacts.card.name, reason)
    try:
        return _create(name, artefacts, env, opts, reason, plan_meta, index)
    except _CacheExportError as exc:
        if opts.backend != "auto" or artefacts.checkpoint is None or not env.has_torch:
            raise ModelFileError(str(exc)) from None
        log.warning("%s; falling back to torch", exc)
        return _create("torch", artefacts, env, opts, f"torch: {exc}", plan_meta, index)


class _CacheExportError(Exception):
    """The ONNX export of a checkpoint into the cache failed (auto then runs the checkpoint in torch)."""



def _create(name: str, artefacts: Artefacts, env: Environment, opts: EngineOptions, reason: str,
            plan_meta: PlanMeta | None, device_index: int) -> Engine:
    card = artefacts.card
    cache = opts.cache_dir or cache_root()
    if name == "torch":
        if not env.has_torch:
            raise TorchMissingError(f"the torch backend needs torch, which is not installed: {TRAIN_EXTRA} "
                                    "(or use --engine onnxruntime)")
        if artefacts.checkpoint is None:
            raise ModelFileError(f"the torch backend needs a .pt checkpoint; {artefacts.source.name} offers "
                                 f"{artefacts.describe()} (use backend 'onnxruntime' or 'auto')")
        from engines.backends.torch_backend import TorchEngine  # torch, loaded only for this backend

        return TorchEngine.from_checkpoint(artefacts.checkpoint, card=card, device=opts.device,
                                           max_batch=opts.max_batch, threads=opts.threads, reason=reason,
                                           warmup=opts.warmup)
    if name == "onnxruntime":
        from engines.backends.onnx_backend import OnnxRuntimeEngine  # onnxruntime, only for this backend

        onnx_path = artefacts.onnx or _onnx_from_checkpoint(artefacts, cache)
        return OnnxRuntimeEngine(card, onnx_path, device=opts.device, max_batch=opts.max_batch,
                                 threads=opts.intra_op_threads, reason=reason, warmup=opts.warmup)
    if name == "tensorrt":
        blocker = tensorrt_blocker(env)
        if blocker is not None:
            raise BackendUnavailableError(f"the tensorrt backend cannot run here: {blocker}")
        from engines.backends.tensorrt_backend import TensorRTEngine  # tensorrt + CUDA, only for this backend

        plan = artefacts.plan
        if plan is None or plan_meta is None:
            plan, plan_meta = _plan_in_cache(artefacts, env, opts, cache)
        return TensorRTEngine(card, plan, meta=plan_meta, device_index=device_index,
                              max_batch=opts.max_batch, reason=reason, warmup=opts.warmup)
    raise BackendUnavailableError(f"unknown backend {name!r}")


def _onnx_from_checkpoint(artefacts: Artefacts, cache: Path) -> Path:
    if artefacts.checkpoint is None:
        raise ModelFileError(f"onnxruntime needs an .onnx model; {artefacts.source.name} offers only "
                             f"{artefacts.describe()} (a TensorRT plan runs on backend 'tensorrt'; give the "
                             ".onnx it was built from for onnxruntime)")
    try:
        path = cached_onnx(artefacts.checkpoint, cache_dir=cache)
    except (ExportError, OSError) as exc:
        raise _CacheExportError(f"cannot export {artefacts.checkpoint.name} to ONNX in {cache}: {exc}") from None
    card = onnx_card(path)
    if card.sha256() != artefacts.card.sha256():
        load_checkpoint_checked(artefacts.checkpoint, artefacts.card)  # raises the card mismatch in words
    return path


def _plan_in_cache(artefacts: Artefacts, env: Environment, opts: EngineOptions, cache: Path) -> tuple[Path, PlanMeta]:
    """A plan for this machine in the cache, built from the model's ONNX the first time."""
    if not opts.build_plan:
        raise ModelFileError(f"no TensorRT plan for {artefacts.source.name}; build one with "
                             "mer-export --tensorrt")
    # tensorrt, only when a plan is built
    from engines.backends.tensorrt_build import PlanBuildOptions, build_plan, cached_plan_path

    onnx_path = artefacts.onnx or _onnx_from_checkpoint(artefacts, cache)
    plan = cached_plan_path(cache, file_sha256(onnx_path), artefacts.card, env, opts.max_batch)
    if plan.is_file():
        try:
            meta = PlanMeta.load(plan)
            check_plan(plan, meta, env, card_sha256=artefacts.card.sha256(), onnx_sha256=file_sha256(onnx_path))
            return plan, meta
        except (PlanMismatchError, ModelFileError) as exc:
            log.warning("rebuilding cached plan: %s", exc)
    meta = build_plan(onnx_path, plan, artefacts.card, PlanBuildOptions(max_batch=opts.max_batch), env=env)
    return plan, meta

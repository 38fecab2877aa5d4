"""Inference backends: torch ↔ ONNX Runtime agreement for every registered model, the Engine contract,
artefact/card resolution and mismatch refusal, auto selection on faked machines, TensorRT plan checks."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engines.backends import (
    BACKEND_NAMES,
    BackendUnavailableError,
    EngineError,
    EngineOptions,
    Environment,
    InputShapeError,
    ModelFileError,
    ModelNotFoundError,
    PlanMeta,
    PlanMismatchError,
    TorchMissingError,
    check_plan,
    choose_backend,
    load_engine,
    meta_path,
    plan_problems,
    probe_environment,
    resolve_artefacts,
)
from engines.backends.artefacts import DEFAULT_MODEL_DIR
from engines.backends.base import Engine
from engines.backends.onnx_backend import OnnxRuntimeEngine
from engines.card import CardError, ModelCard

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
import onnx  # noqa: E402

pytest.importorskip("onnxruntime")

from engines.checkpoint import save_checkpoint  # noqa: E402
from engines.onnx_io import export_onnx, read_onnx, set_card_metadata  # noqa: E402
from engines.registry import build_model, list_models  # noqa: E402
from engines.verify import real_inputs  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/fake_tensorrt.py
LABELS = ("negative", "positive", "surprise")

# Machines for the selection logic.
CPU_ONLY = Environment(has_onnxruntime=True, onnxruntime_providers=("CPUExecutionProvider",), has_torch=True)
GPU_TRT = Environment(has_tensorrt=True, tensorrt_version="10.9.0", has_cuda_python=True, has_cuda=True,
                      gpu_name="NVIDIA H100 80GB HBM3", compute_capability=(9, 0), has_onnxruntime=True,
                      onnxruntime_providers=("CPUExecutionProvider",), has_torch=True)


def _model(name: str = "single", **settings: object):
    torch.manual_seed(0)
    return build_model(name, labels=LABELS, **settings)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with model.pt, model.card.json and model.onnx of the small 'single' model."""
    root = tmp_path_factory.mktemp("model")
    model = _model()
    save_checkpoint(model, root / "model.pt")
    export_onnx(model, root / "model.onnx")
    return root


def _batch(card: ModelCard, n: int = 3, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *card.input_shape)).astype(np.float32)


# -- torch ↔ ONNX Runtime, every registered model ---------------------------------------------------
@pytest.mark.parametrize(("name", "settings"), [*((n, {}) for n in list_models()),
                                                ("dual-phase", {"flip_average": True})])
def test_torch_and_onnxruntime_agree(name: str, settings: dict[str, object], tmp_path: Path) -> None:
    model = _model(name, **settings)
    checkpoint = save_checkpoint(model, tmp_path / "m.pt")
    export_onnx(model, tmp_path / "m.onnx")
    inputs = np.concatenate([_batch(model.card, 4), real_inputs(model.card, 4)])
    with load_engine(checkpoint, "torch") as ref, load_engine(tmp_path / "m.onnx", "onnxruntime") as ort:
        assert (ref.name, ort.name) == ("torch", "onnxruntime")
        expected, got = ref.predict(inputs), ort.predict(inputs)
    assert got.shape == (len(inputs), len(LABELS)) and got.dtype == np.float32
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
    assert float(np.abs(expected - got).max()) <= 1e-4
    assert np.array_equal(expected.argmax(1), got.argmax(1))


def test_importing_engines_does_not_import_torch(model_dir: Path) -> None:
    """Neither importing the package nor running an ONNX model through auto imports torch or TensorRT."""
    code = ("import sys, engines, engines.backends, engines.card\n"
            "bad = [m for m in ('torch', 'tensorrt', 'onnx') if m in sys.modules]\n"
            "assert not bad, bad\n"
            f"engine = engines.backends.load_engine({str(model_dir / 'model.onnx')!r})\n"
            "assert engine.name == 'onnxruntime', engine.reason\n"
            "assert 'torch' not in sys.modules and 'tensorrt' not in sys.modules\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=env, timeout=60)


# -- the Engine contract, for every backend the loader knows (BACKEND_NAMES) ---------------------------
def _open(backend: str, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
          **options: Any) -> Engine:
    """``backend``'s engine for the test model. TensorRT runs through tests/fake_tensorrt.py on a machine
    without it (the real one is tested on a GPU machine below): the contract is the same."""
    if backend == "tensorrt" and importlib.util.find_spec("tensorrt") is None:
        import fake_tensorrt

        fake_tensorrt.install(monkeypatch)
        return load_engine(model_dir, backend, environment=GPU_TRT, cache_dir=tmp_path / "cache", **options)
    return load_engine(model_dir, backend, **options)


def test_every_backend_is_tested() -> None:
    assert BACKEND_NAMES == ("torch", "onnxruntime", "tensorrt")  # a new one: give it a case in _open


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_engine_contract(backend: str, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = _open(backend, model_dir, tmp_path, monkeypatch, max_batch=2)
    card = engine.card
    assert engine.name == backend and engine.reason.startswith(backend)
    assert engine.device == ("cuda:0" if backend == "tensorrt" else "cpu")
    assert card.labels == LABELS and engine.labels == LABELS
    probs = engine.predict(_batch(card, 5))  # > max_batch: split into 2 + 2 + 1
    assert probs.shape == (5, 3) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(engine.predict(_batch(card, 5)[:1]), probs[:1], atol=1e-6)
    assert engine.predict(np.zeros((0, *card.input_shape), np.float32)).shape == (0, 3)
    assert engine.predict(_batch(card, 2).astype(np.float64)).dtype == np.float32
    with engine as same:
        assert same is engine
    assert engine.closed
    engine.close()  # idempotent
    with pytest.raises(EngineError, match="closed"):
        engine.predict(_batch(card, 1))


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_input_shape_is_checked(backend: str, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with _open(backend, model_dir, tmp_path, monkeypatch) as engine:
        s, c, h, w = engine.card.input_shape
        for bad in (np.zeros((2, s + 1, c, h, w), np.float32), np.zeros((s, c, h, w), np.float32),
                    np.zeros((1, s, c, h // 2, w // 2), np.float32)):
            with pytest.raises(InputShapeError, match=rf"\(B, {s}, {c}, {h}, {w}\)"):
                engine.predict(bad)
        with pytest.raises(InputShapeError, match="floating"):
            engine.predict(np.zeros((1, s, c, h, w), np.int64))


def test_onnxruntime_threads_option(model_dir: Path) -> None:
    with load_engine(model_dir / "model.onnx", "onnxruntime", threads=2) as engine:
        assert isinstance(engine, OnnxRuntimeEngine) and engine.threads == 2
    with load_engine(model_dir / "model.onnx", "onnxruntime") as engine:
        assert isinstance(engine, OnnxRuntimeEngine) and engine.threads == max(1, min(4, (os.cpu_count() or 2) // 2))


def test_engine_options_are_validated() -> None:
    with pytest.raises(EngineError, match="unknown backend"):
        EngineOptions(backend="tflite")
    with pytest.raises(EngineError, match="max_batch"):
        EngineOptions(max_batch=0)
    with pytest.raises(EngineError, match="unknown device"):
        load_engine(None, device="tpu:0")


# -- finding models -------------------------------------------------------------------------------
def test_no_bundled_model_is_a_clear_error(tmp_path: Path) -> None:
    assert DEFAULT_MODEL_DIR == REPO / "engines" / "default"
    with pytest.raises(ModelNotFoundError, match="no bundled model"):
        load_engine(None, default_dir=tmp_path)


def test_missing_and_unknown_files(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="not found"):
        load_engine(tmp_path / "nope.onnx")
    (tmp_path / "model.tflite").write_bytes(b"x")
    with pytest.raises(ModelFileError, match="unknown model file type"):
        load_engine(tmp_path / "model.tflite")
    with pytest.raises(ModelNotFoundError, match="no model in"):
        load_engine(tmp_path)


def test_a_file_that_is_no_model_says_what_is_accepted(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"  # e.g. --model /etc/passwd
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(ModelFileError) as exc:
        load_engine(passwd)
    message = str(exc.value)
    assert str(passwd) in message and "not a model file" in message and "no file extension" in message
    for accepted in (".pt", ".onnx", ".plan", "folder"):
        assert accepted in message


NO_TORCH = dataclasses.replace(CPU_ONLY, has_torch=False)


def test_torch_backend_without_torch_names_the_extra(model_dir: Path) -> None:
    with pytest.raises(TorchMissingError, match=r"pip install -e \"\.\[train\]\" in the mer-live clone"):
        load_engine(model_dir, "torch", environment=NO_TORCH)
    with load_engine(model_dir, environment=NO_TORCH) as engine:  # its .onnx runs without torch
        assert engine.name == "onnxruntime"


def test_a_checkpoint_without_torch_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoint = save_checkpoint(_model(), tmp_path / "with_card" / "net.pt")  # card JSON beside it
    with pytest.raises(TorchMissingError, match=r"net.pt is a torch checkpoint.*-e \"\.\[train\]\""):
        load_engine(checkpoint, environment=NO_TORCH)
    alone = tmp_path / "alone" / "net.pt"
    alone.parent.mkdir()
    alone.write_bytes(checkpoint.read_bytes())  # no card beside it: reading it needs torch itself
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    with pytest.raises(TorchMissingError, match=r"reading the checkpoint net.pt needs torch.*-e \"\.\[train\]\""):
        load_engine(alone, environment=NO_TORCH)


def test_directory_with_auto_on_a_cpu_machine(model_dir: Path) -> None:
    artefacts = resolve_artefacts(model_dir)
    assert artefacts.kinds == {"checkpoint", "onnx"}
    with load_engine(model_dir, environment=CPU_ONLY) as engine:
        assert engine.name == "onnxruntime"
        assert engine.reason == "onnxruntime (CPU): TensorRT not installed"
        assert engine.artefact == model_dir / "model.onnx"


def test_auto_exports_a_lone_checkpoint_to_the_cache(tmp_path: Path) -> None:
    checkpoint = save_checkpoint(_model(), tmp_path / "alone" / "net.pt")
    cache = tmp_path / "cache"
    with load_engine(checkpoint, cache_dir=cache, environment=CPU_ONLY) as engine:
        assert engine.name == "onnxruntime" and "exported from the checkpoint" in engine.reason
        cached = engine.artefact
        assert cached is not None and cached.is_relative_to(cache) and cached.suffix == ".onnx"
        first = engine.predict(_batch(engine.card))
    stamp = cached.stat().st_mtime_ns
    with load_engine(checkpoint, cache_dir=cache, environment=CPU_ONLY) as again:
        assert again.artefact == cached
        np.testing.assert_allclose(again.predict(_batch(again.card)), first, atol=1e-6)
    assert cached.stat().st_mtime_ns == stamp  # reused, not exported again
    no_ort = dataclasses.replace(CPU_ONLY, has_onnxruntime=False)
    with load_engine(checkpoint, environment=no_ort) as engine:
        assert engine.name == "torch" and "onnxruntime not installed" in engine.reason


def test_corrupt_files_give_clear_errors(tmp_path: Path, model_dir: Path) -> None:
    bad_onnx = tmp_path / "bad.onnx"
    bad_onnx.write_bytes(os.urandom(2048))
    with pytest.raises(ModelFileError, match="not a valid ONNX file") as info:
        load_engine(bad_onnx, "onnxruntime")
    assert "protobuf" not in str(info.value).lower()
    bad_pt = tmp_path / "bad.pt"
    bad_pt.write_bytes(os.urandom(2048))
    (tmp_path / "bad.card.json").write_text((model_dir / "model.card.json").read_text())
    with pytest.raises((CardError, ModelFileError), match="corrupt|not a"):
        load_engine(bad_pt, "torch")


# -- card / artefact mismatch -------------------------------------------------------------------------
def _copy_onnx(model_dir: Path, target: Path, edit: Callable[[onnx.ModelProto], None] | None = None) -> Path:
    proto = read_onnx(model_dir / "model.onnx")
    if edit is not None:
        edit(proto)
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(target))
    return target


def test_card_beside_onnx_must_match_card_inside(model_dir: Path, tmp_path: Path) -> None:
    path = _copy_onnx(model_dir, tmp_path / "m.onnx")
    card = ModelCard.load(model_dir / "model.card.json")
    dataclasses.replace(card, labels=("a", "b", "c")).save(tmp_path / "m.card.json")
    with pytest.raises(CardError, match="differs from the one inside"):
        load_engine(path, "onnxruntime")


def test_card_that_does_not_fit_the_graph_is_refused(model_dir: Path, tmp_path: Path) -> None:
    card = ModelCard.load(model_dir / "model.card.json")
    small = dataclasses.replace(card, input_size=32)
    path = _copy_onnx(model_dir, tmp_path / "a" / "m.onnx", lambda p: set_card_metadata(p, small))
    with pytest.raises(CardError, match="card and artefact do not match"):
        load_engine(path, "onnxruntime")
    more = dataclasses.replace(card, labels=(*card.labels, "fear"))
    path = _copy_onnx(model_dir, tmp_path / "b" / "m.onnx", lambda p: set_card_metadata(p, more))
    with pytest.raises(CardError, match="4 labels"):
        load_engine(path, "onnxruntime")


def test_card_hash_in_onnx_metadata_must_match(model_dir: Path, tmp_path: Path) -> None:
    def tamper(proto: onnx.ModelProto) -> None:
        for entry in proto.metadata_props:
            if entry.key == "mer_card_sha256":
                entry.value = "0" * 64

    path = _copy_onnx(model_dir, tmp_path / "m.onnx", tamper)
    with pytest.raises(CardError, match="stored hash"):
        load_engine(path, "onnxruntime")


def test_onnx_without_any_card_is_refused(model_dir: Path, tmp_path: Path) -> None:
    def strip(proto: onnx.ModelProto) -> None:
        del proto.metadata_props[:]

    path = _copy_onnx(model_dir, tmp_path / "m.onnx", strip)
    with pytest.raises(CardError, match="carries no model card"):
        load_engine(path, "onnxruntime")


def test_wrong_artefact_for_the_backend(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="torch backend needs a .pt"):
        load_engine(model_dir / "model.onnx", "torch")
    plan = _fake_plan(tmp_path, ModelCard.load(model_dir / "model.card.json"))
    with pytest.raises(ModelFileError, match="onnxruntime needs an .onnx model.*TensorRT plan"):
        load_engine(plan, "onnxruntime")
    with pytest.raises(BackendUnavailableError, match="TensorRT not installed"):
        load_engine(plan, environment=CPU_ONLY)  # auto: a plan alone cannot run without TensorRT


# -- backend selection (pure, faked machines) ------------------------------------------------------
@pytest.mark.parametrize(
    ("env", "kinds", "kwargs", "backend", "reason"),
    [
        (GPU_TRT, {"plan", "onnx"}, {}, "tensorrt", "matching plan for NVIDIA H100"),
        (GPU_TRT, {"onnx"}, {}, "tensorrt", "building one"),
        (GPU_TRT, {"checkpoint"}, {}, "tensorrt", "building one"),
        (GPU_TRT, {"onnx"}, {"build_plan": False}, "onnxruntime", "plan building disabled"),
        (GPU_TRT, {"onnx"}, {"plan_problem": "built for sm_86, rebuild"}, "onnxruntime", "rebuild"),
        (CPU_ONLY, {"onnx", "checkpoint"}, {}, "onnxruntime", "onnxruntime (CPU): TensorRT not installed"),
        (CPU_ONLY, {"checkpoint"}, {}, "onnxruntime", "exported from the checkpoint"),
        (dataclasses.replace(GPU_TRT, has_cuda=False), {"onnx"}, {}, "onnxruntime", "no CUDA GPU"),
        (dataclasses.replace(GPU_TRT, has_cuda_python=False), {"onnx"}, {}, "onnxruntime", "cuda-python"),
        (dataclasses.replace(GPU_TRT, onnxruntime_providers=("CUDAExecutionProvider", "CPUExecutionProvider"),
                             has_tensorrt=False), {"onnx"}, {}, "onnxruntime", "onnxruntime (CUDA)"),
        (dataclasses.replace(CPU_ONLY, has_onnxruntime=False), {"checkpoint", "onnx"}, {}, "torch",
         "onnxruntime not installed"),
    ],
)
def test_choose_backend(env: Environment, kinds: set[str], kwargs: dict, backend: str, reason: str) -> None:
    chosen, why = choose_backend(env, kinds, **kwargs)
    assert chosen == backend
    assert reason in why and why.startswith(backend)


@pytest.mark.parametrize(
    ("env", "kinds"),
    [
        (dataclasses.replace(CPU_ONLY, has_onnxruntime=False), {"onnx"}),
        (CPU_ONLY, {"plan"}),
        (dataclasses.replace(CPU_ONLY, has_torch=False, has_onnxruntime=False), {"checkpoint"}),
        (CPU_ONLY, set()),
    ],
)
def test_choose_backend_refuses_what_cannot_run(env: Environment, kinds: set[str]) -> None:
    with pytest.raises(BackendUnavailableError, match="no backend can run this model"):
        choose_backend(env, kinds)


def test_probe_environment_on_this_machine() -> None:
    env = probe_environment()
    assert isinstance(env, Environment)
    assert env.has_onnxruntime and "CPUExecutionProvider" in env.onnxruntime_providers
    assert env.has_torch
    assert isinstance(env.describe(), str)


def test_cpu_device_rules_out_tensorrt(model_dir: Path) -> None:
    with load_engine(model_dir, device="cpu", environment=GPU_TRT) as engine:
        assert engine.name == "onnxruntime" and engine.device == "cpu" and "no CUDA GPU" in engine.reason


def test_cuda_device_without_a_gpu_is_refused(model_dir: Path) -> None:
    if probe_environment().has_cuda:
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(BackendUnavailableError, match="CUDA"):
        load_engine(model_dir, "onnxruntime", device="cuda")


# -- TensorRT plans: metadata, mismatch refusal, fallback (no TensorRT needed) -------------------------
def _meta(card: ModelCard, onnx_sha: str = "a" * 64, **changes: Any) -> PlanMeta:
    base = PlanMeta(tensorrt_version="10.9.0.34", gpu_name=GPU_TRT.gpu_name, compute_capability=(9, 0),
                    onnx_sha256=onnx_sha, card_sha256=card.sha256(), max_batch=8, card=card.to_dict())
    return dataclasses.replace(base, **changes)


def _fake_plan(root: Path, card: ModelCard, meta: PlanMeta | None = None, name: str = "model.plan") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    plan = root / name
    plan.write_bytes(b"not a real plan")
    (meta or _meta(card)).save(plan)
    return plan


def test_plan_metadata_round_trip(tmp_path: Path, model_dir: Path) -> None:
    card = ModelCard.load(model_dir / "model.card.json")
    plan = _fake_plan(tmp_path, card, _meta(card, hardware_compatible=True))
    path = meta_path(plan)
    assert path.name == "model.plan.meta.json"
    data = json.loads(path.read_text())
    assert data["schema"] == "mer-plan/1"
    for key in ("tensorrt_version", "gpu_name", "compute_capability", "onnx_sha256", "card_sha256"):
        assert key in data
    loaded = PlanMeta.load(plan)
    assert loaded == _meta(card, hardware_compatible=True, built_at=loaded.built_at)
    assert ModelCard.from_dict(loaded.card) == card


def test_plan_problems(model_dir: Path) -> None:
    card = ModelCard.load(model_dir / "model.card.json")
    env = dataclasses.replace(GPU_TRT, tensorrt_version="10.9.0.34")
    ok = _meta(card)
    assert plan_problems(ok, env, card_sha256=card.sha256(), onnx_sha256="a" * 64) == []
    other_card = dataclasses.replace(card, labels=("x", "y"))
    assert "different model card" in plan_problems(ok, env, card_sha256=other_card.sha256())[0]
    assert "different ONNX" in plan_problems(ok, env, card_sha256=card.sha256(), onnx_sha256="b" * 64)[0]
    newer = dataclasses.replace(env, tensorrt_version="10.11.0")
    assert "TensorRT 10.9.0.34" in plan_problems(ok, newer, card_sha256=card.sha256())[0]
    assert plan_problems(_meta(card, version_compatible=True), newer, card_sha256=card.sha256()) == []
    older = dataclasses.replace(env, tensorrt_version="10.3.0")
    assert plan_problems(_meta(card, version_compatible=True), older, card_sha256=card.sha256())
    ampere = dataclasses.replace(env, gpu_name="NVIDIA A10", compute_capability=(8, 6))
    assert "sm_90" in plan_problems(ok, ampere, card_sha256=card.sha256())[0]
    assert plan_problems(_meta(card, hardware_compatible=True), ampere, card_sha256=card.sha256()) == []
    turing = dataclasses.replace(env, gpu_name="Tesla T4", compute_capability=(7, 5))
    assert "Ampere" in plan_problems(_meta(card, hardware_compatible=True), turing, card_sha256=card.sha256())[0]


def test_mismatched_plan_is_refused_with_rebuild_hint(tmp_path: Path, model_dir: Path) -> None:
    card = ModelCard.load(model_dir / "model.card.json")
    plan = _fake_plan(tmp_path, card, _meta(card, gpu_name="NVIDIA A10", compute_capability=(8, 6)))
    with pytest.raises(PlanMismatchError, match="Rebuild it on this machine.*mer-export"):
        check_plan(plan, PlanMeta.load(plan), GPU_TRT, card_sha256=card.sha256())
    with pytest.raises(PlanMismatchError, match="A10.*Rebuild"):
        load_engine(plan, "tensorrt", environment=GPU_TRT)
    meta_path(plan).unlink()
    with pytest.raises(PlanMismatchError, match="has no model.plan.meta.json.*rebuild"):
        load_engine(plan, "tensorrt", environment=GPU_TRT)


def test_auto_falls_back_to_onnxruntime_for_a_stale_plan(tmp_path: Path, model_dir: Path) -> None:
    root = tmp_path / "model"
    root.mkdir()
    for name in ("model.pt", "model.card.json", "model.onnx"):
        (root / name).write_bytes((model_dir / name).read_bytes())
    card = ModelCard.load(root / "model.card.json")
    from mer_core.paths import file_sha256

    _fake_plan(root, card, _meta(card, onnx_sha=file_sha256(root / "model.onnx"), tensorrt_version="10.0.1"))
    env = dataclasses.replace(GPU_TRT, tensorrt_version="10.9.0.34")
    with load_engine(root, environment=env) as engine:
        assert engine.name == "onnxruntime"
        assert "TensorRT 10.0.1" in engine.reason and "Rebuild" in engine.reason
    # the same plan, matching this (faked) machine, would be chosen — checked without running it
    _fake_plan(root, card, _meta(card, onnx_sha=file_sha256(root / "model.onnx"), tensorrt_version="10.9.0.34"))
    check_plan(root / "model.plan", PlanMeta.load(root / "model.plan"), env, card_sha256=card.sha256(),
               onnx_sha256=file_sha256(root / "model.onnx"))
    assert choose_backend(env, resolve_artefacts(root).kinds)[0] == "tensorrt"


def test_tensorrt_backend_needs_tensorrt(model_dir: Path) -> None:
    if probe_environment().has_tensorrt:
        pytest.skip("TensorRT is installed here")
    with pytest.raises(BackendUnavailableError, match="TensorRT not installed"):
        load_engine(model_dir, "tensorrt", environment=CPU_ONLY)


# -- TensorRT for real (GPU machines only) --------------------------------------------------------
def _needs_tensorrt() -> None:
    pytest.importorskip("tensorrt", reason="TensorRT not installed (pip install -e '.[tensorrt]' on a GPU machine)")
    pytest.importorskip("cuda.bindings", reason="cuda-python not installed (pip install cuda-python)")
    if not probe_environment().has_cuda:
        pytest.skip("no CUDA GPU: the TensorRT backend needs one")


def test_tensorrt_plan_builds_runs_and_matches_torch(tmp_path: Path, model_dir: Path) -> None:
    _needs_tensorrt()
    from engines.backends.tensorrt_build import PlanBuildOptions, build_plan

    card = ModelCard.load(model_dir / "model.card.json")
    cache = tmp_path / "timing.cache"
    meta = build_plan(model_dir / "model.onnx", tmp_path / "model.plan", card,
                      PlanBuildOptions(max_batch=4, timing_cache=cache))
    assert cache.is_file() and meta_path(tmp_path / "model.plan").is_file()
    assert meta.card_sha256 == card.sha256() and meta.max_batch == 4
    inputs = _batch(card, 6)
    with load_engine(model_dir, "torch") as ref, load_engine(tmp_path / "model.plan", "tensorrt") as trt:
        assert trt.device.startswith("cuda") and trt.max_batch == 4
        expected, got = ref.predict(inputs), trt.predict(inputs)  # 6 > 4: split
    assert float(np.abs(expected - got).max()) <= 1e-4
    assert np.array_equal(expected.argmax(1), got.argmax(1))
    with load_engine(tmp_path / "model.plan", "auto") as auto:
        assert auto.name == "tensorrt" and "matching plan" in auto.reason


def test_auto_runs_torch_when_the_cache_export_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from engines import onnx_io

    def broken(*args: object, **kwargs: object) -> None:
        raise onnx_io.ExportError("ONNX unsupported operation for model 'x' (opset 17): aten::foo")

    monkeypatch.setattr(onnx_io, "export_onnx", broken)
    checkpoint = save_checkpoint(_model(), tmp_path / "net.pt")
    with load_engine(checkpoint, cache_dir=tmp_path / "cache", environment=CPU_ONLY) as engine:
        assert engine.name == "torch" and "cannot export net.pt to ONNX" in engine.reason
    with pytest.raises(ModelFileError, match="unsupported operation"):
        load_engine(checkpoint, "onnxruntime", cache_dir=tmp_path / "cache2", environment=CPU_ONLY)


# -- TensorRT code paths against a fake tensorrt / cuda-python (any machine) ------------------------
def test_build_plan_with_fake_tensorrt(tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fake_tensorrt

    trt, _ = fake_tensorrt.install(monkeypatch)
    from engines.backends.tensorrt_build import PlanBuildOptions, build_plan

    card = ModelCard.load(model_dir / "model.card.json")
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    options = PlanBuildOptions(max_batch=4, timing_cache=cache, version_compatible=True, hardware_compatible=True)
    meta = build_plan(model_dir / "model.onnx", tmp_path / "model.plan", card, options, env=GPU_TRT)
    network, config = trt.last_build
    assert network.flags == 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert config.flags == {trt.BuilderFlag.VERSION_COMPATIBLE}  # TF32 cleared, no weak FP16
    assert config.hardware_compatibility_level == trt.HardwareCompatibilityLevel.AMPERE_PLUS
    s = card.input_shape
    assert config.profiles[0].shape == ("dis", (1, *s), (1, *s), (4, *s))
    assert config.pool[trt.MemoryPoolType.WORKSPACE] == 1024 << 20
    assert cache.read_bytes() == b"old+timings"  # loaded, then written back
    from mer_core.paths import file_sha256

    saved = PlanMeta.load(tmp_path / "model.plan")
    assert saved == meta and saved.tensorrt_version == fake_tensorrt.VERSION
    assert saved.gpu_name == GPU_TRT.gpu_name and saved.compute_capability == (9, 0)
    assert saved.onnx_sha256 == file_sha256(model_dir / "model.onnx") and saved.card_sha256 == card.sha256()
    assert saved.version_compatible and saved.hardware_compatible and saved.max_batch == 4
    assert ModelCard.load(tmp_path / "model.card.json") == card


def test_fp16_plans_follow_the_onnx_precision(tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fake_tensorrt

    from engines.onnx_io import ExportError

    card = ModelCard.load(model_dir / "model.card.json")
    trt, _ = fake_tensorrt.install(monkeypatch, version="10.9.0.34")
    from engines.backends.tensorrt_build import PlanBuildOptions, build_plan

    meta = build_plan(model_dir / "model.onnx", tmp_path / "a.plan", card, PlanBuildOptions(fp16=True), env=GPU_TRT)
    network, config = trt.last_build
    assert network.flags == 0 and trt.BuilderFlag.FP16 in config.flags and meta.precision == "fp16"  # TRT 10, weak
    trt, _ = fake_tensorrt.install(monkeypatch, version="11.0.0")
    with pytest.raises(ExportError, match="strongly typed.*fp16 ONNX"):
        build_plan(model_dir / "model.onnx", tmp_path / "b.plan", card, PlanBuildOptions(fp16=True), env=GPU_TRT)
    fp16_onnx = export_onnx(_model(), tmp_path / "m16.onnx", fp16=True)
    meta = build_plan(fp16_onnx, tmp_path / "c.plan", card, PlanBuildOptions(), env=GPU_TRT)
    network, config = trt.last_build
    assert network.flags == 1 and not config.flags and meta.precision == "fp16"


def test_tensorrt_engine_with_fake_tensorrt(tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fake_tensorrt

    trt, cudart = fake_tensorrt.install(monkeypatch)
    from engines.backends.tensorrt_build import PlanBuildOptions, build_plan

    card = ModelCard.load(model_dir / "model.card.json")
    plan = tmp_path / "model.plan"
    build_plan(model_dir / "model.onnx", plan, card, PlanBuildOptions(max_batch=4), env=GPU_TRT)
    inputs = _batch(card, 6)
    with load_engine(model_dir, "torch") as ref:
        expected = ref.predict(inputs)
    engine = load_engine(plan, environment=GPU_TRT, max_batch=8)
    assert engine.name == "tensorrt" and engine.device == "cuda:0" and "matching plan" in engine.reason
    assert engine.max_batch == 4  # clipped to the plan's optimisation profile
    assert len(cudart.buffers) == 4  # pinned in/out + device in/out, allocated once
    trt.calls.clear()
    got = engine.predict(inputs)  # 4 + 2
    again = engine.predict(inputs[:2])  # same batch size as the last chunk: no new shape
    assert [c for c in trt.calls if c[0] == "set_input_shape"] == [("set_input_shape", "dis", (4, *card.input_shape)),
                                                                   ("set_input_shape", "dis", (2, *card.input_shape))]
    assert float(np.abs(expected - got).max()) <= 1e-4 and np.array_equal(expected.argmax(1), got.argmax(1))
    np.testing.assert_allclose(again, got[:2], atol=1e-6)
    assert len(cudart.buffers) == 4  # no per-call allocation
    engine.close()
    engine.close()
    assert cudart.buffers == {}
    plan.write_bytes(b"garbage")  # corrupt plan with a valid meta file beside it
    with pytest.raises(ModelFileError, match="could not deserialize"):
        load_engine(plan, "tensorrt", environment=GPU_TRT)


def test_auto_builds_and_caches_a_plan(tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fake_tensorrt

    trt, _ = fake_tensorrt.install(monkeypatch)
    cache = tmp_path / "cache"
    with load_engine(model_dir, environment=GPU_TRT, cache_dir=cache, max_batch=2) as engine:
        assert engine.name == "tensorrt" and "building one" in engine.reason
        plan = engine.artefact
        assert plan is not None and plan.is_relative_to(cache / "plans") and PlanMeta.load(plan).max_batch == 2
        first = engine.predict(_batch(engine.card, 3))
    trt.last_build = None
    with load_engine(model_dir, environment=GPU_TRT, cache_dir=cache, max_batch=2) as engine:
        assert engine.artefact == plan and trt.last_build is None  # reused, not rebuilt
        np.testing.assert_allclose(engine.predict(_batch(engine.card, 3)), first, atol=1e-6)

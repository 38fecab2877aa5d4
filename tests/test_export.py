"""mer-export: ONNX layout and metadata, fp16, verification, Triton repositories, one-line errors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
import torch  # noqa: E402

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import mer_cli.export as export_cli  # noqa: E402
from engines import verify  # noqa: E402
from engines.backends import probe_environment  # noqa: E402
from engines.card import ModelCard  # noqa: E402
from engines.checkpoint import save_checkpoint  # noqa: E402
from engines.onnx_io import ExportError, export_onnx, io_signature  # noqa: E402
from engines.registry import build_model  # noqa: E402
from engines.triton import TritonError, TritonOptions, config_pbtxt, write_triton_repository  # noqa: E402
from mer_cli.export import EXIT_ERROR, EXIT_OK, EXIT_VERIFY, main  # noqa: E402

LABELS = ("negative", "positive", "surprise", "others")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build_model("dual-phase", labels=LABELS)
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "dual.pt")


@pytest.fixture(scope="module")
def card(checkpoint: Path) -> ModelCard:
    return ModelCard.load(checkpoint.with_name("dual.card.json"))


# -- a small protobuf-text parser, enough for config.pbtxt ------------------------------------------
_TOKEN = re.compile(r'\s*(?:(#[^\n]*)|("(?:[^"\\]|\\.)*")|([{}\[\]:,])|([^\s{}\[\]:,"]+))')


def parse_pbtxt(text: str) -> dict[str, Any]:
    """Messages → dicts; a repeated field or ``key [ ... ]`` → list; scalars → int / str."""
    tokens = [m.group(2) or m.group(3) or m.group(4) for m in _TOKEN.finditer(text) if not m.group(1)]
    tokens = [t for t in tokens if t]
    pos = 0

    def value() -> Any:
        nonlocal pos
        tok = tokens[pos]
        pos += 1
        if tok == "{":
            return message("}")
        if tok == "[":
            items = []
            while tokens[pos] != "]":
                items.append(value())
                if tokens[pos] == ",":
                    pos += 1
            pos += 1
            return items
        if tok.startswith('"'):
            return tok[1:-1]
        return int(tok) if re.fullmatch(r"-?\d+", tok) else tok

    def message(end: str | None) -> dict[str, Any]:
        nonlocal pos
        out: dict[str, Any] = {}
        while pos < len(tokens) and tokens[pos] != end:
            key = tokens[pos]
            pos += 1
            if tokens[pos] == ":":
                pos += 1
            item = value()
            if key in out:
                out[key] = (out[key] if isinstance(out[key], list) else [out[key]]) + [item]
            else:
                out[key] = item
        pos += 1
        return out

    return message(None)


def _run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


# -- ONNX ---------------------------------------------------------------------------------------------
def test_onnx_export_with_verify(checkpoint: Path, card: ModelCard, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out" / "model.onnx"
    code, stdout, _ = _run(capsys, checkpoint, "--onnx", out, "--verify")
    assert code == EXIT_OK
    assert "verification against torch" in stdout and "random" in stdout and "real" in stdout
    assert "pass" in stdout and "FAIL" not in stdout
    proto = onnx.load(str(out))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (inputs, outputs) = io_signature(proto)
    assert [n for n, _ in inputs] == ["dis"] and [n for n, _ in outputs] == ["probs"]
    assert isinstance(inputs[0][1][0], str)  # dynamic batch dimension
    assert inputs[0][1][1:] == list(card.input_shape) and outputs[0][1][1:] == [len(LABELS)]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert ModelCard.from_json(meta["mer_card"]) == card
    assert meta["mer_card_sha256"] == card.sha256() and meta["mer_precision"] == "fp32"
    assert ModelCard.load(out.with_name("model.card.json")) == card
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        probs = session.run(None, {"dis": np.zeros((batch, *card.input_shape), np.float32)})[0]
        assert probs.shape == (batch, len(LABELS))
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)  # softmax inside the graph


def test_fp16_export_verifies_with_the_looser_tolerance(checkpoint: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "model16.onnx"
    code, stdout, _ = _run(capsys, checkpoint, "--onnx", out, "--fp16", "--verify", "--samples", "4")
    assert code == EXIT_OK and "1e-02" in stdout
    proto = onnx.load(str(out))
    assert {p.key: p.value for p in proto.metadata_props}["mer_precision"] == "fp16"
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # float32 I/O kept


def test_verification_failure_exits_non_zero(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export_cli, "FP32_TOLERANCE", -1.0)  # nothing can pass
    code, stdout, _ = _run(capsys, checkpoint, "--onnx", tmp_path / "m.onnx", "--verify", "--samples", "2")
    assert code == EXIT_VERIFY and "FAIL" in stdout and "verification failed" in stdout


def test_compare_counts_real_flips_not_near_ties() -> None:
    ref = np.array([[0.6, 0.4], [0.5001, 0.4999]])
    cand = np.array([[0.4, 0.6], [0.4999, 0.5001]])
    result = verify.compare(ref, cand, artefact="x", backend="b", inputs="random", tolerance=1e-2)
    assert result.flips == 1 and result.top1_agreement == 0.0 and not result.ok
    near = verify.compare(ref[1:], cand[1:], artefact="x", backend="b", inputs="random", tolerance=1e-2)
    assert near.ok and near.flips == 0


def test_unsupported_operation_is_a_clear_export_error(card: ModelCard, tmp_path: Path) -> None:
    class FFTNet(torch.nn.Module):
        card: ModelCard

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            spectrum = torch.fft.rfft(x.flatten(1), dim=1).abs()
            return spectrum[:, : len(LABELS)]

    net = FFTNet()
    net.card = card
    with pytest.raises(ExportError, match="ONNX unsupported operation.*fft"):
        export_onnx(net, tmp_path / "fft.onnx")
    assert not (tmp_path / "fft.onnx").exists()


# -- Triton -------------------------------------------------------------------------------------------
def test_triton_repository_for_onnx(checkpoint: Path, card: ModelCard, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "triton"
    code, stdout, _ = _run(capsys, checkpoint, "--triton", repo, "--max-batch", "16", "--verify", "--samples", "2")
    assert code == EXIT_OK and "pass" in stdout
    model_dir = repo / "dual-phase"
    config = parse_pbtxt((model_dir / "config.pbtxt").read_text())
    assert config["name"] == "dual-phase"
    assert config["platform"] == "onnxruntime_onnx"
    assert config["max_batch_size"] == 16
    (inp,) = config["input"]
    assert inp == {"name": "dis", "data_type": "TYPE_FP32", "dims": list(card.input_shape)}  # no batch dim
    (out,) = config["output"]
    assert out["name"] == "probs" and out["data_type"] == "TYPE_FP32" and out["dims"] == [len(LABELS)]
    assert (model_dir / out["label_filename"]).read_text().split() == list(LABELS)
    assert config["dynamic_batching"]["preferred_batch_size"] == [1, 2, 4, 8, 16]
    assert "max_queue_delay_microseconds" in config["dynamic_batching"]
    (group,) = config["instance_group"]
    assert group == {"count": 1, "kind": "KIND_CPU"}
    params = {p["key"]: p["value"]["string_value"] for p in config["parameters"]}
    assert params["mer_card_sha256"] == card.sha256()
    assert ModelCard.load(model_dir / "model.card.json") == card
    session = ort.InferenceSession(str(model_dir / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["dis"]


def test_triton_repository_for_a_plan(card: ModelCard, tmp_path: Path) -> None:
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"plan bytes")
    model_dir = write_triton_repository(tmp_path / "repo", card, plan, TritonOptions(max_batch=4), name="mer")
    config = parse_pbtxt((model_dir / "config.pbtxt").read_text())
    assert config["platform"] == "tensorrt_plan" and config["name"] == "mer"
    assert config["max_batch_size"] == 4 and config["dynamic_batching"]["preferred_batch_size"] == [1, 2, 4]
    assert config["instance_group"][0]["kind"] == "KIND_GPU"
    assert (model_dir / "1" / "model.plan").read_bytes() == b"plan bytes"
    with pytest.raises(TritonError, match="GPU"):
        config_pbtxt(card, "plan", TritonOptions(instance_kind="KIND_CPU"))
    gpu_onnx = parse_pbtxt(config_pbtxt(card, "onnx", TritonOptions(instance_kind="KIND_GPU")))
    assert gpu_onnx["instance_group"][0]["kind"] == "KIND_GPU"
    with pytest.raises(TritonError, match=r"\.plan or an \.onnx"):
        write_triton_repository(tmp_path / "repo", card, tmp_path / "x.pt")


def test_pbtxt_parser_handles_nesting() -> None:
    parsed = parse_pbtxt('a: 1\nb { c: "x" d: [ 1, 2 ] }\nb { c: "y" }\n# comment\ne [ { f: K } ]')
    assert parsed == {"a": 1, "b": [{"c": "x", "d": [1, 2]}, {"c": "y"}], "e": [{"f": "K"}]}


# -- errors: one line, non-zero, no traceback -------------------------------------------------------
def _assert_one_line_error(code: int, err: str, pattern: str) -> None:
    assert code == EXIT_ERROR
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mer-export: error:"), err
    assert re.search(pattern, lines[0]), lines[0]


def test_missing_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, tmp_path / "nope.pt", "--onnx", tmp_path / "x.onnx")
    _assert_one_line_error(code, err, "checkpoint not found")


def test_a_model_folder_exports_its_checkpoint(checkpoint: Path, card: ModelCard, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """``mer-export engines/default`` said "checkpoint not found": --model takes a folder everywhere else."""
    folder = tmp_path / "mymodel"
    folder.mkdir()
    (folder / "model.pt").write_bytes(checkpoint.read_bytes())
    card.save(folder / "model.card.json")
    out = tmp_path / "out.onnx"
    code, stdout, err = _run(capsys, folder, "--onnx", out)
    assert code == EXIT_OK, err
    assert ModelCard.load(out.with_name("out.card.json")) == card
    (folder / "model.pt").unlink()
    code, _, err = _run(capsys, folder, "--onnx", tmp_path / "x.onnx")
    _assert_one_line_error(code, err, r"no checkpoint in the folder .*mymodel: mer-export starts from its model\.pt "
                           r"\(found: model\.card\.json\)")


def test_corrupt_checkpoint(tmp_path: Path, card: ModelCard, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage" * 100)
    card.save(tmp_path / "bad.card.json")
    code, _, err = _run(capsys, bad, "--onnx", tmp_path / "x.onnx")
    _assert_one_line_error(code, err, "corrupt|not a mer-live checkpoint")


def test_wrong_checkpoint_card(checkpoint: Path, card: ModelCard, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "dual.pt"
    copy.write_bytes(checkpoint.read_bytes())
    ModelCard.from_dict({**card.to_dict(), "labels": ["a", "b"]}).save(tmp_path / "dual.card.json")
    code, _, err = _run(capsys, copy, "--onnx", tmp_path / "x.onnx")
    _assert_one_line_error(code, err, "does not belong|does not match")


def test_not_a_checkpoint_and_nothing_to_do(checkpoint: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, checkpoint.with_name("dual.card.json"), "--onnx", tmp_path / "x.onnx")
    _assert_one_line_error(code, err, "not a .pt checkpoint")
    code, _, err = _run(capsys, checkpoint)
    _assert_one_line_error(code, err, "nothing to do")
    code, _, err = _run(capsys, checkpoint, "--onnx", tmp_path / "x.onnx", "--opset", "13")
    _assert_one_line_error(code, err, "opset 13 is too old")


def test_tensorrt_without_tensorrt_or_gpu(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = probe_environment()
    if env.has_tensorrt and env.has_cuda and env.has_cuda_python:
        pytest.skip("TensorRT and a GPU are present here")
    code, _, err = _run(capsys, checkpoint, "--tensorrt", tmp_path / "m.plan")
    _assert_one_line_error(code, err, "TensorRT is not installed|no CUDA GPU|cuda-python")
    assert not (tmp_path / "m.plan").exists()


def test_tensorrt_export_end_to_end(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tensorrt", reason="TensorRT not installed (pip install -e '.[tensorrt]' on a GPU machine)")
    pytest.importorskip("cuda.bindings", reason="cuda-python not installed")
    if not probe_environment().has_cuda:
        pytest.skip("no CUDA GPU: TensorRT plans need one")
    plan, cache = tmp_path / "m.plan", tmp_path / "timing.cache"
    code, stdout, err = _run(capsys, checkpoint, "--tensorrt", plan, "--timing-cache", cache, "--max-batch", "4",
                             "--triton", tmp_path / "triton", "--verify", "--samples", "4")
    assert code == EXIT_OK, err
    assert plan.is_file() and cache.is_file() and plan.with_name("m.plan.meta.json").is_file()
    config = parse_pbtxt((tmp_path / "triton" / "dual-phase" / "config.pbtxt").read_text())
    assert config["platform"] == "tensorrt_plan" and config["instance_group"][0]["kind"] == "KIND_GPU"
    assert "tensorrt" in stdout and "FAIL" not in stdout


def test_tensorrt_export_with_fake_tensorrt(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The --tensorrt / --triton / --verify flow on any machine: a fake TensorRT runs the ONNX it was given."""
    import dataclasses
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import fake_tensorrt

    fake_tensorrt.install(monkeypatch)
    gpu = dataclasses.replace(probe_environment(), has_tensorrt=True, tensorrt_version=fake_tensorrt.VERSION,
                              has_cuda_python=True, has_cuda=True, gpu_name="NVIDIA L4", compute_capability=(8, 9))
    monkeypatch.setattr(export_cli, "probe_environment", lambda device_index=0: gpu)
    plan, cache = tmp_path / "m.plan", tmp_path / "timing.cache"
    code, stdout, err = _run(capsys, checkpoint, "--tensorrt", plan, "--timing-cache", cache, "--max-batch", "4",
                             "--hardware-compatible", "--triton", tmp_path / "triton", "--verify", "--samples", "6")
    assert code == EXIT_OK, err
    assert plan.is_file() and cache.is_file() and plan.with_name("m.plan.meta.json").is_file()
    assert "tensorrt" in stdout and "m.plan" in stdout and "FAIL" not in stdout
    config = parse_pbtxt((tmp_path / "triton" / "dual-phase" / "config.pbtxt").read_text())
    assert config["platform"] == "tensorrt_plan" and config["instance_group"][0]["kind"] == "KIND_GPU"
    assert config["max_batch_size"] == 4
    assert (tmp_path / "triton" / "dual-phase" / "1" / "model.plan").read_bytes() == plan.read_bytes()


def test_an_output_with_the_wrong_extension_is_refused(checkpoint: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """`--onnx model.pt` replaced the checkpoint with an ONNX file; mer-live picks backends by extension."""
    before = checkpoint.read_bytes()
    assert main([str(checkpoint), "--onnx", str(checkpoint)]) == EXIT_ERROR
    assert "--onnx" in capsys.readouterr().err and checkpoint.read_bytes() == before
    assert main([str(checkpoint), "--tensorrt", str(tmp_path / "m.onnx")]) == EXIT_ERROR
    assert "must end in .plan or .engine" in capsys.readouterr().err

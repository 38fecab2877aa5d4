"""Model registry, architectures, checkpoints and ONNX export, parametrised over every registered model."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from engines.card import CardError, ModelCard
from engines.checkpoint import card_path, load_checkpoint, save_checkpoint
from engines.fusion import AdaptiveFusion
from engines.network import MERModel, ModelError
from engines.registry import build_from_card, build_model, default_card, list_models, register_model

LABELS = ("negative", "positive", "surprise")
BACKBONES = ("fast", "resnet18")
# small inputs and a thin ResNet keep the whole file to seconds
SMALL = {"fast": {"input_size": 32}, "resnet18": {"input_size": 32, "width": 8}}
CASES = [
    pytest.param(name, backbone, id=f"{name}-{backbone}") for name in list_models() for backbone in BACKBONES
]


def _build(name: str, backbone: str, **extra: Any) -> MERModel:
    torch.manual_seed(0)
    return build_model(name, labels=LABELS, backbone=backbone, **SMALL[backbone], **extra)


def test_builtin_models_registered() -> None:
    assert {"single", "dual-phase", "dual-phase-concat", "afn", "afn-concat", "flow", "apex-flow",
            "phase-flow"} <= set(
        list_models())
    assert list_models() == sorted(list_models())


@pytest.mark.parametrize(("name", "backbone"), CASES)
def test_forward_shape_and_card(name: str, backbone: str) -> None:
    model = _build(name, backbone).eval()
    card = model.card
    assert isinstance(card, ModelCard)
    assert card.architecture == name and card.backbone == backbone
    assert card.labels == LABELS
    x = model.example_input(2)
    assert x.shape[1] == len(card.streams) and tuple(x.shape[1:]) == card.input_shape
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (2, len(card.labels))
    assert torch.isfinite(logits).all()
    assert default_card(name, labels=LABELS, backbone=backbone, **SMALL[backbone]) == card
    assert ModelCard.from_json(card.to_json()) == card


@pytest.mark.parametrize(("name", "backbone"), CASES)
def test_gradient_reaches_every_parameter_and_stream(name: str, backbone: str) -> None:
    model = _build(name, backbone).train()
    x = model.example_input(2).requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 2]))
    loss.backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, f"{pname} gets no gradient"
        assert torch.isfinite(param.grad).all(), pname
    assert x.grad is not None
    for s in range(x.shape[1]):
        assert x.grad[:, s].abs().sum() > 0, f"stream {model.card.streams[s]} does not reach the output"


@pytest.mark.parametrize(("name", "backbone"), CASES)
def test_checkpoint_round_trip_is_exact(name: str, backbone: str, tmp_path) -> None:
    model = _build(name, backbone).eval()
    with torch.no_grad():  # make BN running stats non-trivial so they must round-trip too
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
    path = save_checkpoint(model, tmp_path / "m.pt", extra={"epoch": 3, "uf1": 0.5, "history": [1.0, 2.0]})
    assert path == tmp_path / "m.pt" and card_path(path) == tmp_path / "m.card.json"
    assert json.loads(card_path(path).read_text())["architecture"] == name

    payload = torch.load(path, weights_only=True)
    assert payload["extra"]["epoch"] == 3 and payload["card"]["architecture"] == name

    loaded = load_checkpoint(path)
    assert not loaded.training
    assert loaded.card == model.card
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    x = model.example_input(3)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


@pytest.mark.parametrize(("name", "backbone"), CASES)
def test_onnx_export_matches_torch(name: str, backbone: str, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    model = _build(name, backbone).eval()
    onnx_path = tmp_path / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter warns it is legacy
        torch.onnx.export(
            model,
            (model.example_input(2),),
            onnx_path,
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x = model.example_input(3)  # another batch size than at export: the batch axis is dynamic
    onnx_logits = session.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        torch_probs = torch.softmax(model(x), dim=1).numpy()
    onnx_probs = torch.softmax(torch.from_numpy(onnx_logits), dim=1).numpy()
    assert onnx_probs.shape == (3, len(LABELS))
    assert np.abs(onnx_probs - torch_probs).max() <= 1e-4


def test_unknown_model_is_keyerror_listing_known_names() -> None:
    with pytest.raises(KeyError, match="dual-phase"):
        build_model("no-such-model", labels=LABELS)


def test_duplicate_registration_is_an_error() -> None:
    def single(*, labels, **settings):  # same name as the built-in baseline
        raise AssertionError("never called")

    with pytest.raises(ValueError, match="already registered"):
        register_model(single)


@pytest.mark.parametrize(
    "settings",
    [{"backbone": "vgg"}, {"no_such_setting": 1}, {"dropout": 1.5}, {"channels": 2}, {"width": 0}],
)
def test_bad_settings_are_model_errors(settings: dict) -> None:
    with pytest.raises(ModelError):
        build_model("single", labels=LABELS, **settings)


def test_bad_labels_are_model_errors() -> None:
    with pytest.raises(ModelError, match="unique"):
        build_model("single", labels=["a", "a"])
    with pytest.raises(ModelError, match="string"):
        build_model("single", labels="ab")


def test_wrong_input_shape_says_what_is_expected() -> None:
    model = build_model("afn", labels=LABELS, input_size=32).eval()
    with pytest.raises(ValueError, match="trdi"):
        model(torch.zeros(1, 1, 1, 32, 32))


def test_shared_backbone_has_one_encoder_and_same_outputs_shape() -> None:
    separate = build_model("dual-phase", labels=LABELS, input_size=32)
    shared = build_model("dual-phase", labels=LABELS, input_size=32, shared_backbone=True).eval()
    assert len(shared.encoders) == 1 and len(separate.encoders) == 2
    assert shared.card.settings["shared_backbone"] is True
    n_shared = sum(p.numel() for p in shared.parameters())
    assert n_shared < sum(p.numel() for p in separate.parameters())
    x = shared.example_input(2)
    with torch.no_grad():
        out = shared(x)
        # the batched shared pass equals running the one encoder per stream
        per_stream = shared.head(shared.fusion([shared.encoders[0](x[:, i]) for i in range(2)]))
    assert torch.allclose(out, per_stream, atol=1e-5)


def test_adaptive_fusion_weights_are_a_distribution() -> None:
    fusion = AdaptiveFusion(channels=8, n_streams=2, hidden=4)
    weights = fusion.weights(torch.randn(5, 2, 8))
    assert weights.shape == (5, 2)
    assert torch.allclose(weights.sum(dim=1), torch.ones(5))


def test_build_from_card_rejects_foreign_streams() -> None:
    card = default_card("afn", labels=LABELS)
    forged = ModelCard.from_dict({**card.to_dict(), "streams": ["onset_apex", "apex_offset"]})
    with pytest.raises(CardError, match="streams"):
        build_from_card(forged)
    with pytest.raises(CardError, match="unknown model"):
        build_from_card(ModelCard.from_dict({**card.to_dict(), "architecture": "nope"}))
    with pytest.raises(CardError, match="cannot be built"):
        build_from_card(ModelCard.from_dict({**card.to_dict(), "settings": {"bogus": 1}}))


def test_card_json_can_be_renamed_and_evaluated_after_saving(tmp_path) -> None:
    model = build_model("single", labels=LABELS, input_size=32)
    path = save_checkpoint(model, tmp_path / "m.pt")
    card = ModelCard.load(card_path(path))
    updated = ModelCard.from_dict({**card.to_dict(), "name": "mer-default", "evaluation": {"uf1": 0.7}})
    updated.save(card_path(path))
    loaded = load_checkpoint(path)
    assert loaded.card.name == "mer-default" and loaded.card.evaluation == {"uf1": 0.7}


class TestBadCheckpoints:
    @pytest.fixture()
    def saved(self, tmp_path):
        model = build_model("single", labels=LABELS, input_size=32)
        return model, save_checkpoint(model, tmp_path / "m.pt")

    def test_corrupt_file(self, saved) -> None:
        _, path = saved
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(CardError, match="corrupt"):
            load_checkpoint(path)
        path.write_bytes(b"not a checkpoint at all")
        with pytest.raises(CardError, match="corrupt"):
            load_checkpoint(path)

    def test_missing_files(self, saved, tmp_path) -> None:
        _, path = saved
        card_path(path).unlink()
        with pytest.raises(CardError, match="card.json not found"):
            load_checkpoint(path)
        with pytest.raises(CardError, match="not found"):
            load_checkpoint(tmp_path / "absent.pt")

    def test_foreign_card(self, saved, tmp_path) -> None:
        _, path = saved
        other = build_model("afn", labels=LABELS, input_size=32)
        other_path = save_checkpoint(other, tmp_path / "other.pt")
        card_path(path).write_text(card_path(other_path).read_text())
        with pytest.raises(CardError, match="does not belong"):
            load_checkpoint(path)

    def test_corrupt_card(self, saved) -> None:
        _, path = saved
        card_path(path).write_text("{ not json")
        with pytest.raises(CardError, match="JSON"):
            load_checkpoint(path)

    def test_weights_of_another_shape(self, saved) -> None:
        model, path = saved
        payload = torch.load(path, weights_only=True)
        head_weight = next(k for k in payload["state_dict"] if k.startswith("head.") and k.endswith("weight"))
        payload["state_dict"][head_weight] = torch.zeros(7, 3)
        del payload["state_dict"][next(iter(payload["state_dict"]))]
        torch.save(payload, path)
        with pytest.raises(CardError, match="wrong shape") as info:
            load_checkpoint(path)
        assert "missing" in str(info.value)

    def test_plain_torch_file(self, saved) -> None:
        _, path = saved
        torch.save({"weights": torch.zeros(3)}, path)
        with pytest.raises(CardError, match="mer-checkpoint/1"):
            load_checkpoint(path)

    def test_extra_must_be_plain(self, saved, tmp_path) -> None:
        model, _ = saved
        with pytest.raises(TypeError, match="weights_only"):
            save_checkpoint(model, tmp_path / "x.pt", extra={"bad": object()})
        assert not (tmp_path / "x.pt").exists()


def test_flip_average_is_mirror_invariant_in_eval_and_plain_in_training() -> None:
    model = build_model("dual-phase", labels=LABELS, input_size=32, flip_average=True).eval()
    assert model.card.settings["flip_average"] is True
    x = model.example_input(3)
    with torch.no_grad():
        out = model(x)
        mirrored = model(torch.flip(x, dims=[-1]))
        plain = model.head(model.fusion(model.features(x)))
        flipped = model.head(model.fusion(model.features(torch.flip(x, dims=[-1]))))
    assert out.shape == (3, len(LABELS))
    assert torch.allclose(out, mirrored, atol=1e-5)  # a mirrored face gets the same answer
    assert torch.allclose(out, (plain + flipped) / 2, atol=1e-5)
    model.train()
    torch.manual_seed(0)
    a = model(x)
    torch.manual_seed(0)
    b = model.head(model.fusion(model.features(x)))
    assert torch.allclose(a, b)  # training sees each sample once; flips come from augmentation


def test_flip_average_setting_must_be_a_bool() -> None:
    with pytest.raises(ModelError, match="flip_average"):
        build_model("single", labels=LABELS, flip_average="yes")


def test_an_ensemble_trains_each_member_and_answers_their_mean() -> None:
    model = build_model("flow", labels=LABELS, input_size=32, members=3, flip_average=True)
    assert model.members == 3 and model.card.settings["members"] == 3
    x = model.example_input(4)
    model.train()
    assert model(x).shape == (4, 3, len(LABELS))  # each member's logits: each learns on its own
    model.eval()
    with torch.no_grad():
        members = [model.head(model.fusion(model.features(v))) for v in (x, model.mirror(x))]
        members = [torch.stack([m, *(other(v) for other in model.others)], 1)
                   for m, v in zip(members, (x, model.mirror(x)), strict=True)]
        expected = 0.5 * (members[0].mean(1) + members[1].mean(1))
        assert torch.allclose(model(x), expected, atol=1e-5)
        # members start apart: their answers differ
        assert not torch.allclose(members[0][:, 0], members[0][:, 1])


@pytest.mark.parametrize(("name", "streams"), [("flow", ("flow_u", "flow_v")),
                                               ("apex-flow", ("apex_flow_u", "apex_flow_v"))])
def test_a_flow_model_mirrors_its_horizontal_component(name: str, streams: tuple[str, str]) -> None:
    model = build_model(name, labels=LABELS, input_size=32)
    assert model.card.streams == streams
    x = model.example_input(2)
    mirrored = model.mirror(x)
    assert torch.equal(mirrored[:, 0], -torch.flip(x[:, 0], dims=[-1]))  # u points the other way
    assert torch.equal(mirrored[:, 1], torch.flip(x[:, 1], dims=[-1]))


def test_a_one_member_model_keeps_its_checkpoint_keys() -> None:
    keys = set(build_model("flow", labels=LABELS, input_size=32).state_dict())
    assert not any(k.startswith("others.") for k in keys) and any(k.startswith("encoders.") for k in keys)
    three = set(build_model("flow", labels=LABELS, input_size=32, members=3).state_dict())
    assert keys < three and any(k.startswith("others.1.encoders.") for k in three)


def test_an_ensemble_round_trips_and_exports_to_onnx(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    from engines.onnx_io import export_onnx

    model = _build("flow", "fast", members=2, flip_average=True).eval()
    save_checkpoint(model, tmp_path / "m.pt")
    loaded = load_checkpoint(tmp_path / "m.pt").eval()
    assert loaded.members == 2
    x = model.example_input(3)
    with torch.no_grad():
        expected = model(x)
        assert torch.equal(loaded(x), expected)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = export_onnx(loaded, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]  # the exported graph ends in softmax
    assert np.abs(got - torch.softmax(expected, dim=1).numpy()).max() < 1e-4


def test_members_must_be_a_positive_integer() -> None:
    with pytest.raises(ModelError, match="members"):
        build_model("flow", labels=LABELS, members=0)

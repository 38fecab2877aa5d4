"""ONNX export and reading: one graph layout for every backend, with the model card inside.

Exported graphs have one input ``dis`` (B, S, C, H, W) float32 with a dynamic batch, and one output
``probs`` (B, n_classes) float32 — the softmax is inside the graph, so ONNX Runtime, TensorRT and Triton
all return probabilities (of the logits divided by the card's ``temperature``, a constant of the graph).
The card JSON is stored in ``metadata_props`` (key ``mer_card``) with its hash (``mer_card_sha256``), so
an ONNX file moved alone still says what it expects. ``--fp16`` graphs keep
float32 I/O and cast inside, so callers never change; TensorRT 11 (strongly typed) takes its precision
from these casts. torch is imported only by the export functions.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engines.card import CardError, ModelCard
from engines.errors import ModelFileError
from mer_core.paths import atomic_write, file_sha256, user_cache_dir

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

INPUT_NAME = "dis"
OUTPUT_NAME = "probs"
DEFAULT_OPSET = 17
META_CARD = "mer_card"
META_CARD_SHA = "mer_card_sha256"
META_PRECISION = "mer_precision"


class ExportError(RuntimeError):
    """A model cannot be exported (unsupported operation, unwritable path, ...)."""


# -- export -----------------------------------------------------------------------------------------
def export_onnx(model: Any, path: str | Path, *, card: ModelCard | None = None, opset: int = DEFAULT_OPSET,
                fp16: bool = False) -> Path:
    """Export ``model`` (an ``nn.Module`` returning logits, ``.card`` attached) to one ONNX file at ``path``.

    The file is written atomically (temporary file, then rename) and checked with ``onnx.checker``.
    """
    import onnx
    import torch

    card = card or getattr(model, "card", None)
    if not isinstance(card, ModelCard):
        raise ExportError("the model has no model card (.card); load it with engines.checkpoint.load_checkpoint")
    if opset < 17:
        raise ExportError(f"opset {opset} is too old: mer-live needs opset >= 17")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    net = copy.deepcopy(model).float().eval().cpu()
    if fp16:
        net = net.half()

    class _WithProbs(torch.nn.Module):
        """float32 DIs in → (cast) → model → float32 softmax out."""

        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, dis: torch.Tensor) -> torch.Tensor:
            x = dis.half() if fp16 else dis
            return torch.softmax(self.inner(x).float(), dim=-1)

    wrapped = _WithProbs(net).eval()
    example = torch.randn(2, *card.input_shape, dtype=torch.float32)
    chatter = io.StringIO()
    with tempfile.TemporaryDirectory(prefix="mer-onnx-") as tmp:
        raw = Path(tmp) / "raw.onnx"
        try:
            with warnings.catch_warnings(), torch.inference_mode(), _quiet_exporter(), \
                    contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
                warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice, tracer warnings
                torch.onnx.export(
                    wrapped, (example,), str(raw), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                    opset_version=opset, dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                    do_constant_folding=True, dynamo=False,
                )
        except Exception as exc:  # noqa: BLE001 - exporter errors are many types; report one line
            text = str(exc).strip()
            first = text.splitlines()[0] if text else type(exc).__name__
            unsupported = "not supported" in text or "unsupported" in text.lower()
            kind = "unsupported operation" if unsupported else "export failed"
            log.debug("torch.onnx.export output:\n%s", chatter.getvalue())
            raise ExportError(f"ONNX {kind} for model '{card.name}' (opset {opset}): {first}") from None
        proto = onnx.load(str(raw))
    proto.doc_string = f"mer-live model '{card.name}' ({card.architecture}); card in metadata '{META_CARD}'"
    proto.producer_name = "mer-live"
    set_card_metadata(proto, card, precision="fp16" if fp16 else "fp32")
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"exported ONNX does not validate: {str(exc).splitlines()[0]}") from None
    atomic_write(path, proto.SerializeToString())
    log.info("exported %s (%s, opset %d) to %s", card.name, "fp16" if fp16 else "fp32", opset, path)
    return path


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Keep the legacy (TorchScript) exporter's C++ log off.

    torch >= 2.9 switches it on unconditionally (``setup_onnx_logging`` tests the function object, not its
    result), so a failing export prints the whole IR graph on stdout, around our one-line error.
    """
    try:
        from torch.onnx._internal.torchscript_exporter import utils as ts_utils
    except ImportError:  # other torch versions: nothing to fix
        yield
        return
    original = getattr(ts_utils, "setup_onnx_logging", None)
    if original is None:
        yield
        return
    ts_utils.setup_onnx_logging = lambda verbose: contextlib.nullcontext()  # type: ignore[assignment,return-value]
    try:
        yield
    finally:
        ts_utils.setup_onnx_logging = original


def set_card_metadata(proto: onnx.ModelProto, card: ModelCard, *, precision: str | None = None) -> None:
    """Write (replace) the card, its hash and the precision into ``proto.metadata_props``."""
    values = {META_CARD: card.to_json(), META_CARD_SHA: card.sha256()}
    if precision is not None:
        values[META_PRECISION] = precision
    keep = [p for p in proto.metadata_props if p.key not in values]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for key, value in values.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


# -- reading and checking ---------------------------------------------------------------------------
def read_onnx(path: str | Path) -> onnx.ModelProto:
    """The ONNX model at ``path``, or a :class:`ModelFileError` (never a protobuf traceback)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"ONNX file not found: {path}")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - DecodeError and friends
        log.debug("onnx.load(%s) failed: %r", path, exc)
        raise ModelFileError(f"{path} is not a valid ONNX file (corrupt or truncated); re-export it with "
                             "mer-export") from None
    if not proto.graph.node and not proto.graph.input:
        raise ModelFileError(f"{path} is not a valid ONNX file (empty graph); re-export it with mer-export")
    return proto


def metadata(proto: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in proto.metadata_props}


def card_from_onnx(proto: onnx.ModelProto) -> ModelCard | None:
    """The card stored in the ONNX metadata (None when absent); a stored hash must match it."""
    meta = metadata(proto)
    if META_CARD not in meta:
        return None
    card = ModelCard.from_json(meta[META_CARD])
    stored = meta.get(META_CARD_SHA)
    if stored and stored != card.sha256():
        raise CardError("the model card in the ONNX metadata does not match its stored hash (edited by hand?); "
                        "re-export with mer-export")
    return card


def _dims(value_info: Any) -> list[int | str]:
    dims: list[int | str] = []
    for d in value_info.type.tensor_type.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?"))
    return dims


def io_signature(proto: onnx.ModelProto) -> tuple[list[tuple[str, list[int | str]]], list[tuple[str, list[int | str]]]]:
    """([(input name, dims)], [(output name, dims)]), initialisers excluded."""
    initialisers = {t.name for t in proto.graph.initializer}
    inputs = [(v.name, _dims(v)) for v in proto.graph.input if v.name not in initialisers]
    outputs = [(v.name, _dims(v)) for v in proto.graph.output]
    return inputs, outputs


def check_onnx_matches_card(proto: onnx.ModelProto, card: ModelCard, *, source: str = "ONNX file") -> None:
    """Refuse (CardError) an ONNX graph whose input shape or class count differs from ``card``."""
    inputs, outputs = io_signature(proto)
    if len(inputs) != 1 or len(outputs) != 1:
        raise CardError(f"{source} has {len(inputs)} inputs and {len(outputs)} outputs; mer-live models have "
                        "one of each (re-export with mer-export)")
    (in_name, in_dims), (_, out_dims) = inputs[0], outputs[0]
    if len(in_dims) != 5 or tuple(in_dims[1:]) != card.input_shape:
        raise CardError(f"{source} input '{in_name}' has shape {in_dims}, but model card '{card.name}' says "
                        f"(batch, {', '.join(map(str, card.input_shape))}): card and artefact do not match")
    if len(out_dims) != 2 or out_dims[1] != len(card.labels):
        raise CardError(f"{source} output has shape {out_dims}, but model card '{card.name}' lists "
                        f"{len(card.labels)} labels: card and artefact do not match")


def onnx_card(path: str | Path, beside: ModelCard | None = None) -> ModelCard:
    """The card for the ONNX file at ``path``, checked against the graph and against a card found beside it."""
    path = Path(path)
    proto = read_onnx(path)
    inside = card_from_onnx(proto)
    if inside is not None and beside is not None and inside.sha256() != beside.sha256():
        raise CardError(f"the model card beside {path.name} differs from the one inside it "
                        f"('{beside.name}' vs '{inside.name}'): card and artefact do not match")
    card = beside or inside
    if card is None:
        raise CardError(f"{path.name} carries no model card (metadata '{META_CARD}') and none is beside it "
                        f"({path.stem}.card.json); export it with mer-export")
    check_onnx_matches_card(proto, card, source=path.name)
    return card


def cached_onnx(checkpoint: str | Path, *, cache_dir: Path | None = None, fp16: bool = False) -> Path:
    """An ONNX export of ``checkpoint`` in the user cache, keyed by the checkpoint's SHA-256 (made once)."""
    checkpoint = Path(checkpoint)
    key = file_sha256(checkpoint)[:32]
    target = (cache_dir or user_cache_dir()) / "onnx" / key / ("model-fp16.onnx" if fp16 else "model.onnx")
    if target.is_file():
        log.debug("using cached ONNX %s", target)
        return target
    from engines.checkpoint import load_checkpoint  # torch (the optional 'train' extra): only to export

    model = load_checkpoint(checkpoint)
    log.info("exporting %s to the ONNX cache %s", checkpoint.name, target)
    return export_onnx(model, target, fp16=fp16)

"""A Triton Inference Server model repository for one exported model.

Layout: ``DIR/<name>/config.pbtxt``, ``DIR/<name>/1/model.plan`` (platform ``tensorrt_plan``, GPU
instances) or ``DIR/<name>/1/model.onnx`` (platform ``onnxruntime_onnx``, CPU or GPU instances),
``labels.txt`` (Triton's classification extension) and the model card beside the config. Triton dims
exclude the batch dimension; ``max_batch_size`` carries it.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from engines.card import ModelCard
from engines.onnx_io import INPUT_NAME, OUTPUT_NAME

PLATFORMS = {"plan": "tensorrt_plan", "onnx": "onnxruntime_onnx"}


class TritonError(ValueError):
    """A Triton repository cannot be written as asked."""


@dataclass(frozen=True)
class TritonOptions:
    """What goes into ``config.pbtxt`` besides the model's own shapes."""

    max_batch: int = 8
    instance_kind: str | None = None  # "KIND_GPU" | "KIND_CPU"; None = GPU for plans, CPU for ONNX
    instance_count: int = 1
    max_queue_delay_us: int = 500  # dynamic batching: how long a request may wait for company
    version: int = 1


def model_name(card: ModelCard) -> str:
    """A Triton-safe model name from the card (letters, digits, ``-``, ``_``)."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", card.name).strip("-")
    return name or "mer-model"


def config_pbtxt(card: ModelCard, kind: str, options: TritonOptions = TritonOptions(), *, name: str | None = None) -> str:
    """The text of ``config.pbtxt`` for ``card`` served from a ``kind`` ("plan" | "onnx") artefact."""
    if kind not in PLATFORMS:
        raise TritonError(f"unknown Triton artefact kind {kind!r}; use 'plan' or 'onnx'")
    instance_kind = options.instance_kind or ("KIND_GPU" if kind == "plan" else "KIND_CPU")
    if instance_kind not in ("KIND_GPU", "KIND_CPU"):
        raise TritonError(f"instance kind must be KIND_GPU or KIND_CPU, got {instance_kind!r}")
    if kind == "plan" and instance_kind != "KIND_GPU":
        raise TritonError("a TensorRT plan runs only on GPU instances (KIND_GPU)")
    if options.max_batch < 1:
        raise TritonError(f"max_batch must be >= 1, got {options.max_batch}")
    dims = ", ".join(str(d) for d in card.input_shape)
    preferred = sorted({b for b in (1, 2, 4, 8, options.max_batch) if b <= options.max_batch})
    return f"""name: "{name or model_name(card)}"
platform: "{PLATFORMS[kind]}"
max_batch_size: {options.max_batch}
input [
  {{
    name: "{INPUT_NAME}"
    data_type: TYPE_FP32
    dims: [ {dims} ]
  }}
]
output [
  {{
    name: "{OUTPUT_NAME}"
    data_type: TYPE_FP32
    dims: [ {len(card.labels)} ]
    label_filename: "labels.txt"
  }}
]
dynamic_batching {{
  preferred_batch_size: [ {", ".join(map(str, preferred))} ]
  max_queue_delay_microseconds: {options.max_queue_delay_us}
}}
instance_group [
  {{
    count: {options.instance_count}
    kind: {instance_kind}
  }}
]
parameters {{
  key: "mer_card_sha256"
  value: {{ string_value: "{card.sha256()}" }}
}}
parameters {{
  key: "mer_streams"
  value: {{ string_value: "{",".join(card.streams)}" }}
}}
"""


def write_triton_repository(root: str | Path, card: ModelCard, artefact: str | Path,
                            options: TritonOptions = TritonOptions(), *, name: str | None = None) -> Path:
    """Write the model directory for ``artefact`` (a ``.plan`` or ``.onnx``) under ``root``; returns it."""
    artefact = Path(artefact)
    kind = {".plan": "plan", ".engine": "plan", ".onnx": "onnx"}.get(artefact.suffix.lower())
    if kind is None:
        raise TritonError(f"Triton serves a .plan or an .onnx file, not {artefact.name}")
    if not artefact.is_file():
        raise TritonError(f"artefact not found: {artefact}")
    text = config_pbtxt(card, kind, options, name=name)
    model_dir = Path(root) / (name or model_name(card))
    version_dir = model_dir / str(options.version)
    version_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(artefact, version_dir / f"model.{kind}")
    (model_dir / "config.pbtxt").write_text(text, encoding="utf-8")
    (model_dir / "labels.txt").write_text("\n".join(card.labels) + "\n", encoding="utf-8")
    card.save(model_dir / "model.card.json")
    return model_dir

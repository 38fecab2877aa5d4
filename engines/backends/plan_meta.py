"""The metadata file that travels with every TensorRT plan, and the check that refuses a stale plan.

A plan is only valid for the TensorRT version, GPU, ONNX file and model card it was built from, and
TensorRT's own failure on a mismatch is an opaque deserialisation error. ``<plan>.meta.json`` records
all four, so a mismatch is reported in words, with the command that rebuilds it.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engines.backends.base import ModelFileError, PlanMismatchError
from engines.backends.select import Environment

PLAN_SCHEMA = "mer-plan/1"
AMPERE_PLUS = (8, 0)  # HardwareCompatibilityLevel.AMPERE_PLUS: sm_80 and newer


def meta_path(plan: str | Path) -> Path:
    """``model.plan`` → ``model.plan.meta.json``."""
    plan = Path(plan)
    return plan.with_name(plan.name + ".meta.json")


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


@dataclass(frozen=True)
class PlanMeta:
    """What a plan was built for and from."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]
    onnx_sha256: str
    card_sha256: str
    max_batch: int = 8
    precision: str = "fp32"  # of the ONNX the plan was built from ("fp16" = fp16 ONNX, strongly typed)
    version_compatible: bool = False
    hardware_compatible: bool = False  # HardwareCompatibilityLevel.AMPERE_PLUS
    built_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    card: dict[str, Any] = field(default_factory=dict)  # the model card itself, for plans moved alone

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["compute_capability"] = list(self.compute_capability)
        return {"schema": PLAN_SCHEMA, **data}

    def save(self, plan: str | Path) -> Path:
        path = meta_path(plan)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlanMeta:
        if data.get("schema") != PLAN_SCHEMA:
            raise ModelFileError(f"plan metadata schema {data.get('schema')!r} is not {PLAN_SCHEMA!r}")
        try:
            cc = tuple(int(v) for v in data["compute_capability"])
            known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
            known["compute_capability"] = (cc[0], cc[1])
            return cls(**known)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ModelFileError(f"plan metadata is malformed ({exc}); rebuild the plan with mer-export") from None

    @classmethod
    def load(cls, plan: str | Path) -> PlanMeta:
        """The metadata beside ``plan``; a plan without one is refused (its origin is unknown)."""
        path = meta_path(plan)
        if not path.is_file():
            raise PlanMismatchError(
                f"TensorRT plan {Path(plan).name} has no {path.name}: its TensorRT version, GPU and model are "
                f"unknown; rebuild it with `mer-export CHECKPOINT --tensorrt {Path(plan).name}`"
            )
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelFileError(f"cannot read plan metadata {path}: {exc}") from None


def plan_problems(meta: PlanMeta, env: Environment, *, card_sha256: str,
                  onnx_sha256: str | None = None) -> list[str]:
    """Every reason ``meta``'s plan cannot run here for this card (empty list: it can)."""
    problems: list[str] = []
    if meta.card_sha256 != card_sha256:
        problems.append("it was built for a different model card")
    if onnx_sha256 is not None and meta.onnx_sha256 != onnx_sha256:
        problems.append("it was built from a different ONNX file than the one beside it")
    if env.has_tensorrt and env.tensorrt_version:
        built, here = _version_tuple(meta.tensorrt_version), _version_tuple(env.tensorrt_version)
        if meta.version_compatible:
            if here < built:
                problems.append(f"it needs TensorRT >= {meta.tensorrt_version}, this machine has {env.tensorrt_version}")
        elif built != here:
            problems.append(f"it was built with TensorRT {meta.tensorrt_version}, this machine has "
                            f"{env.tensorrt_version} (build with --version-compatible to allow newer runtimes)")
    if env.has_cuda:
        cc = tuple(env.compute_capability)
        if meta.hardware_compatible:
            if cc < AMPERE_PLUS:
                problems.append(f"hardware-compatible plans need an Ampere or newer GPU (sm_80+), this is "
                                f"{env.gpu_name} ({env.sm})")
        elif cc != tuple(meta.compute_capability) or env.gpu_name != meta.gpu_name:
            major, minor = meta.compute_capability
            problems.append(f"it was built for {meta.gpu_name} (sm_{major}{minor}), this GPU is {env.gpu_name} "
                            f"({env.sm}) (build with --hardware-compatible for any Ampere+ GPU)")
    return problems


def check_plan(plan: str | Path, meta: PlanMeta, env: Environment, *, card_sha256: str,
               onnx_sha256: str | None = None) -> None:
    """Raise :class:`PlanMismatchError` (with the rebuild command) unless the plan fits."""
    problems = plan_problems(meta, env, card_sha256=card_sha256, onnx_sha256=onnx_sha256)
    if problems:
        name = Path(plan).name
        raise PlanMismatchError(
            f"TensorRT plan {name} cannot be used: {'; '.join(problems)}. Rebuild it on this machine: "
            f"`mer-export CHECKPOINT --tensorrt {name}`"
        )

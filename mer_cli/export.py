"""``mer-export``: a checkpoint to ONNX, a TensorRT plan and/or a Triton model repository, verified.

    mer-export runs/afn/model.pt --onnx out/model.onnx --verify
    mer-export engines/default --onnx out/model.onnx     (a model folder: its model.pt)
    mer-export model.pt --fp16 --tensorrt out/model.plan --max-batch 8 --timing-cache out/timing.cache
    mer-export model.pt --triton out/triton --verify

Every artefact carries the model card (ONNX metadata ``mer_card``; ``<stem>.card.json`` beside files;
``<plan>.meta.json`` for plans). ``--verify`` runs each artefact against the torch model on random and on
real-face DIs and fails (exit 3) when probabilities differ by more than 1e-4 (fp32) / 1e-2 (fp16) or the
top-1 class changes. Errors are one line on stderr and exit 1; argument errors exit 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from engines.backends.artefacts import ONNX, PLAN, SUFFIXES, card_beside, load_card, load_checkpoint_checked
from engines.backends.base import EngineError, require_torch
from engines.backends.onnx_backend import OnnxRuntimeEngine
from engines.backends.plan_meta import PlanMeta
from engines.backends.select import probe_environment, tensorrt_blocker
from engines.backends.tensorrt_backend import TensorRTEngine
from engines.backends.tensorrt_build import PlanBuildOptions, build_plan
from engines.backends.torch_backend import TorchEngine
from engines.card import CardError
from engines.onnx_io import DEFAULT_OPSET, ExportError, export_onnx
from engines.triton import TritonError, TritonOptions, write_triton_repository
from engines.verify import FP16_TOLERANCE, FP32_TOLERANCE, compare, random_inputs, real_inputs
from mer_cli.options import add_log_arguments, configure_logging, positive_integer

log = logging.getLogger(__name__)

EXIT_OK, EXIT_ERROR, EXIT_VERIFY = 0, 2, 3  # 2 = bad input or missing tool, as in every mer-* command


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mer-export",
        description="Export a mer-live checkpoint to ONNX / TensorRT / Triton, with the model card inside.",
        epilog="exit codes: 0 done; 2 bad input or a missing tool (no such checkpoint, card mismatch, TensorRT "
        "or GPU not available, unsupported operation); 3 --verify found an artefact that disagrees with torch; "
        "130 interrupted",
    )
    p.add_argument("checkpoint", type=Path,
                   help="a .pt checkpoint (its .card.json beside it), or a model folder holding model.pt")
    p.add_argument("--onnx", type=Path, metavar="OUT.onnx", help="write one ONNX file (dynamic batch, softmax inside)")
    p.add_argument("--fp16", action="store_true",
                   help="export an fp16 graph (float32 I/O, casts inside); plans built from it are fp16")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (>= 17, default {DEFAULT_OPSET})")
    p.add_argument("--tensorrt", type=Path, metavar="OUT.plan", help="build a TensorRT plan (+ OUT.plan.meta.json)")
    p.add_argument("--max-batch", type=int, default=8, help="largest batch of the plan / Triton (default 8)")
    p.add_argument("--timing-cache", type=Path, metavar="FILE", help="TensorRT timing cache, reused across builds")
    p.add_argument("--workspace-mib", type=positive_integer, default=1024, help="TensorRT builder workspace (MiB)")
    p.add_argument("--version-compatible", action="store_true",
                   help="plan runs on later TensorRT versions (BuilderFlag.VERSION_COMPATIBLE)")
    p.add_argument("--hardware-compatible", action="store_true",
                   help="plan runs on any Ampere or newer GPU (HardwareCompatibilityLevel.AMPERE_PLUS)")
    p.add_argument("--tf32", action="store_true",
                   help="allow TF32 in fp32 plans (faster on Ampere+, verified against the fp16 tolerance)")
    p.add_argument("--triton", type=Path, metavar="DIR", help="write a Triton model repository (plan if built, else ONNX)")
    p.add_argument("--triton-name", help="Triton model name (default: from the card)")
    p.add_argument("--triton-instance", choices=("gpu", "cpu"),
                   help="instance kind (default: gpu for a plan, cpu for ONNX)")
    p.add_argument("--verify", action="store_true", help="check every artefact against the torch model")
    p.add_argument("--samples", type=int, default=8, help="samples per verification input set (default 8)")
    add_log_arguments(p, verbose_alias=True)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(args.log_level)
    console = Console(width=None if sys.stdout.isatty() else 120)
    errors = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
    try:
        return _export(args, console)
    except (CardError, EngineError, ExportError, TritonError, OSError) as exc:
        message = str(exc) if not isinstance(exc, OSError) or not exc.filename else f"{exc.strerror}: {exc.filename}"
        errors.print(f"[bold red]mer-export: error:[/] {escape(message)}", highlight=False, soft_wrap=True)
        return EXIT_ERROR
    except KeyboardInterrupt:
        errors.print("mer-export: interrupted")
        return 130


def _export(args: argparse.Namespace, console: Console) -> int:
    require_torch("mer-export")
    if not (args.onnx or args.tensorrt or args.triton):
        raise ExportError("nothing to do: give --onnx OUT.onnx, --tensorrt OUT.plan and/or --triton DIR")
    if args.max_batch < 1:
        raise ExportError(f"--max-batch must be >= 1, got {args.max_batch}")
    if args.opset < 17:
        raise ExportError(f"--opset {args.opset} is too old: mer-live needs opset >= 17")
    if args.samples < 1:
        raise ExportError(f"--samples must be >= 1, got {args.samples}")
    checkpoint = _checkpoint_in(args.checkpoint)
    if checkpoint.suffix.lower() not in (".pt", ".pth"):
        raise ExportError(f"{checkpoint.name} is not a .pt checkpoint (mer-export starts from the torch checkpoint)")
    # mer-live picks the backend by the extension, and a wrong one can name the checkpoint itself
    # (--onnx model.pt replaced the checkpoint with an ONNX file)
    if args.onnx and SUFFIXES.get(args.onnx.suffix.lower()) != ONNX:
        raise ExportError(f"--onnx {args.onnx}: the file must end in .onnx")
    if args.tensorrt and SUFFIXES.get(args.tensorrt.suffix.lower()) != PLAN:
        raise ExportError(f"--tensorrt {args.tensorrt}: the file must end in .plan or .engine")
    env = None
    if args.tensorrt:
        env = _require_tensorrt()
    produced: list[tuple[str, Path, str]] = []  # (kind, path, precision)
    precision = "fp16" if args.fp16 else "fp32"

    with console.status(f"Loading {checkpoint.name}…"):
        beside = card_beside(checkpoint)
        model = load_checkpoint_checked(checkpoint, load_card(beside) if beside else None)
    card = model.card
    console.print(f"[green]✓[/] loaded [bold]{card.name}[/] ({card.architecture}, streams "
                  f"{', '.join(card.streams)}, {len(card.labels)} labels)", highlight=False)

    with tempfile.TemporaryDirectory(prefix="mer-export-") as tmp:
        onnx_path = args.onnx or Path(tmp) / "model.onnx"
        with console.status(f"Exporting {precision} ONNX (opset {args.opset})…"):
            export_onnx(model, onnx_path, card=card, opset=args.opset, fp16=args.fp16)
        if args.onnx:
            card.save(onnx_path.with_name(onnx_path.stem + ".card.json"))
            produced.append(("onnx", onnx_path, precision))
            console.print(f"[green]✓[/] ONNX  {onnx_path} ({_size(onnx_path)})", highlight=False)

        plan_path = None
        if args.tensorrt:
            plan_path = args.tensorrt
            options = PlanBuildOptions(max_batch=args.max_batch, timing_cache=args.timing_cache,
                                       workspace_mib=args.workspace_mib, version_compatible=args.version_compatible,
                                       hardware_compatible=args.hardware_compatible, tf32=args.tf32)
            with console.status(f"Building TensorRT plan (batch 1..{args.max_batch}; this can take minutes)…"):
                build_plan(onnx_path, plan_path, card, options, env=env)
            produced.append(("plan", plan_path, "fp16" if args.tf32 else precision))
            console.print(f"[green]✓[/] plan  {plan_path} ({_size(plan_path)}) + {plan_path.name}.meta.json",
                          highlight=False)

        if args.triton:
            artefact = plan_path or onnx_path
            kind = None if args.triton_instance is None else f"KIND_{args.triton_instance.upper()}"
            model_dir = write_triton_repository(args.triton, card, artefact,
                                                TritonOptions(max_batch=args.max_batch, instance_kind=kind),
                                                name=args.triton_name)
            console.print(f"[green]✓[/] Triton {model_dir} ({'tensorrt_plan' if plan_path else 'onnxruntime_onnx'})",
                          highlight=False)
            if not args.onnx and not plan_path:  # the only copy of the ONNX is the Triton one
                produced.append(("onnx", model_dir / "1" / "model.onnx", precision))

        if args.verify:
            return _verify(model, produced, args.samples, console)
    return EXIT_OK


def _checkpoint_in(given: Path) -> Path:
    """The checkpoint to start from: the file given, or ``model.pt`` in a model folder (as ``--model`` takes
    everywhere else, e.g. ``engines/default``)."""
    if given.is_dir():
        inside = given / "model.pt"
        if not inside.is_file():
            found = ", ".join(sorted(p.name for p in given.glob("model.*"))) or "no model file"
            raise ExportError(f"no checkpoint in the folder {given}: mer-export starts from its model.pt "
                              f"(found: {found})")
        return inside
    if not given.is_file():
        raise ExportError(f"checkpoint not found: {given}")
    return given


def _require_tensorrt() -> Any:
    env = probe_environment()
    blocker = tensorrt_blocker(env)
    if blocker == "TensorRT not installed":
        raise EngineError("TensorRT is not installed: pip install -e '.[tensorrt]' in the mer-live clone on a machine with an "
                          "NVIDIA GPU (ONNX and Triton/onnxruntime export work without it)")
    if blocker is not None:
        raise EngineError(f"cannot build a TensorRT plan here: {blocker}")
    return env


def _verify(model: Any, produced: list[tuple[str, Path, str]], samples: int, console: Console) -> int:
    card = model.card
    with console.status("Verifying against the torch model…"):
        inputs = {"random": random_inputs(card, samples), "real": real_inputs(card, samples)}
        with TorchEngine(model, device="cpu", max_batch=samples) as reference:
            expected = {k: reference.predict(v) for k, v in inputs.items()}
        rows = []
        for kind, path, precision in produced:
            tolerance = FP16_TOLERANCE if precision == "fp16" else FP32_TOLERANCE
            if kind == "onnx":
                engine: Any = OnnxRuntimeEngine(card, path, device="cpu", max_batch=samples)
            else:
                engine = TensorRTEngine(card, path, meta=PlanMeta.load(path))
            with engine:
                for name, batch in inputs.items():
                    rows.append(compare(expected[name], engine.predict(batch), artefact=path.name,
                                        backend=engine.name, inputs=name, tolerance=tolerance))
    table = Table(title=f"verification against torch ({card.name})")
    for column in ("artefact", "backend", "inputs", "samples", "max |Δp|", "tolerance", "top-1 agree", "result"):
        numeric = column in ("samples", "max |Δp|", "tolerance", "top-1 agree")
        table.add_column(column, justify="right" if numeric else "left", no_wrap=column != "artefact")
    for r in rows:
        table.add_row(r.artefact, r.backend, r.inputs, str(r.samples), f"{r.max_abs_diff:.2e}", f"{r.tolerance:.0e}",
                      f"{100 * r.top1_agreement:.0f}%", "[green]pass[/]" if r.ok else "[bold red]FAIL[/]")
    console.print(table)
    failed = [r for r in rows if not r.ok]
    if failed:
        console.print(f"[bold red]verification failed[/] for {', '.join(sorted({r.artefact for r in failed}))}")
        return EXIT_VERIFY
    return EXIT_OK


def _size(path: Path) -> str:
    n = path.stat().st_size
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.0f} kB"


if __name__ == "__main__":
    sys.exit(main())

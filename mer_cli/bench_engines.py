#!/usr/bin/env python
"""Latency of every available inference backend: batch 1 and batch 8, p50 / p95 in milliseconds.

    mer-bench engines                  # the bundled default model (or a random dual-phase)
    mer-bench engines runs/afn/model.pt --iters 300 --threads 2
    mer-bench engines --arch afn       # a randomly initialised registered model

Timings include the whole ``engine.predict`` call (input check, copies, backend run, softmax). On a
shared machine, numbers move with the load: the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from engines.backends import BACKEND_NAMES, EngineError, load_engine, probe_environment
from engines.backends.artefacts import DEFAULT_MODEL_DIR
from engines.backends.base import Predictor
from engines.benchmark import time_predict
from engines.card import CardError


def _random_model(arch: str, root: Path) -> Path:
    from engines.checkpoint import save_checkpoint
    from engines.onnx_io import export_onnx
    from engines.registry import build_model

    model = build_model(arch, labels=("negative", "positive", "surprise", "others"))
    save_checkpoint(model, root / "model.pt")
    export_onnx(model, root / "model.onnx")
    return root


def _time(engine: Predictor, batch: np.ndarray, iters: int, warmup: int) -> tuple[float, float, float]:
    timing = time_predict(engine, batch, iters=iters, warmup=warmup)
    return timing.p50_ms, timing.p95_ms, timing.samples_per_s


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mer-bench engines", description=__doc__.split("\n")[0])
    p.add_argument("model", nargs="?", help="a .pt / .onnx / .plan / model directory (default: bundled model)")
    p.add_argument("--arch", help="benchmark a randomly initialised registered model instead")
    p.add_argument("--backends", default=",".join(BACKEND_NAMES),
                   help="comma-separated; 'auto' adds what load_engine picks by itself (default: all three)")
    p.add_argument("--batches", default="1,8", help="batch sizes (default 1,8)")
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--threads", type=int, default=None, help="intra-op CPU threads (default: half the cores)")
    args = p.parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 140)
    batches = [int(b) for b in args.batches.split(",")]

    with tempfile.TemporaryDirectory(prefix="mer-bench-") as tmp:
        model: str | Path | None = args.model
        note = ""
        if args.arch or (model is None and not (DEFAULT_MODEL_DIR / "model.pt").is_file()
                         and not (DEFAULT_MODEL_DIR / "model.onnx").is_file()):
            arch = args.arch or "dual-phase"
            model = _random_model(arch, Path(tmp))
            note = f" (random {arch}: no bundled model)" if not args.arch else f" (random {arch})"
        env = probe_environment()
        console.print(f"machine: {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.2f}; {env.describe()}")
        table = Table(title=f"engine latency{note}, ms per predict() call")
        for column in ("backend", "device", "batch", "p50 ms", "p95 ms", "samples/s", "why"):
            table.add_column(column, justify="right" if column in ("batch", "p50 ms", "p95 ms", "samples/s") else "left")
        for backend in args.backends.split(","):
            try:
                engine = load_engine(model, backend, threads=args.threads, max_batch=max(batches),
                                     cache_dir=Path(tmp) / "cache")
            except (EngineError, CardError) as exc:
                table.add_row(backend, "-", "-", "-", "-", "-", f"skipped: {exc}")
                continue
            with engine:
                rng = np.random.default_rng(0)
                for b in batches:
                    batch = rng.standard_normal((b, *engine.card.input_shape)).astype(np.float32)
                    p50, p95, rate = _time(engine, batch, args.iters, args.warmup)
                    label = engine.name if backend != "auto" else f"auto → {engine.name}"
                    table.add_row(label, engine.device, str(b), f"{p50:.2f}", f"{p95:.2f}", f"{rate:.0f}",
                                  engine.reason if b == batches[0] else "")
        console.print(table)
        console.print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

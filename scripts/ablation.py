#!/usr/bin/env python
"""The ablation of the three papers' ideas on a synthetic benchmark, LOSO by identity.

    python scripts/ablation.py --data data/synth --out runs/ablation [--epochs 30]

Runs ``mer-train`` once per variant (same data, seed, schedule) and writes ``ablation.md`` / ``ablation.json``
in OUT with pooled accuracy / UF1 / UAR and the fold-to-fold spread of UF1, so a difference can be judged
against the noise. Folds already done are resumed, so the script can be stopped and restarted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

VARIANTS: list[tuple[str, str, list[str]]] = [
    ("single", "single (TRDI, onset→offset)", ["--model", "single", "--no-augment-phases"]),
    ("single-aug", "single + dual-phase augmentation", ["--model", "single", "--augment-phases"]),
    ("dual-phase-concat", "dual-phase, concatenation fusion", ["--model", "dual-phase-concat"]),
    ("dual-phase", "dual-phase, cross-attention fusion (DIANet)", ["--model", "dual-phase"]),
    ("afn-concat", "TRDI + MIDI, concatenation fusion", ["--model", "afn-concat"]),
    ("afn", "TRDI + MIDI, adaptive fusion (AFN)", ["--model", "afn"]),
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", help="comma-separated variant keys")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    wanted = set(args.only.split(",")) if args.only else None
    rows = []
    for key, title, extra in VARIANTS:
        if wanted and key not in wanted:
            continue
        run = args.out / key
        cmd = [sys.executable, "-m", "training.train_cli", "--data", str(args.data), "--dataset", "synth",
               "--protocol", "loso", "--epochs", str(args.epochs), "--seed", str(args.seed),
               "--threads", str(args.threads), "--out", str(run), *extra]
        if (run / "settings.json").exists():
            cmd.append("--resume")
        print("$", " ".join(cmd), flush=True)
        if subprocess.run(cmd).returncode != 0:
            print(f"{key}: mer-train failed", file=sys.stderr)
            return 1
        report = json.loads((run / "report.json").read_text())
        fold_uf1 = [f["uf1"] for f in report["folds"]]
        rows.append({
            "variant": key, "title": title, **{k: report["pooled"][k] for k in ("accuracy", "uf1", "uar")},
            "fold_uf1_mean": statistics.fmean(fold_uf1), "fold_uf1_sd": statistics.pstdev(fold_uf1),
            "fold_uf1": fold_uf1,
        })
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ablation.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["| variant | accuracy | UF1 | UAR | per-fold UF1 mean ± sd |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['title']} | {100 * r['accuracy']:.1f} % | {r['uf1']:.3f} | {r['uar']:.3f} | "
                     f"{r['fold_uf1_mean']:.3f} ± {r['fold_uf1_sd']:.3f} |")
    (args.out / "ablation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

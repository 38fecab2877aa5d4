#!/usr/bin/env python
"""Make a trained model the bundled default: checkpoint, card and a verified ONNX copy in engines/default/.

    python scripts/ship_default.py runs/ablation2/seed0/dual-phase/final/model.pt --trained-on "..."

The card is renamed (``--name``) and its ``trained_on`` says, in words, what the model has and has not seen;
the evaluation the training run recorded is kept. The ONNX file is exported and checked against torch with
``mer-export --verify``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", type=Path, help="RUN_DIR/final/model.pt from mer-train --final")
    p.add_argument("--trained-on", required=True, help="what the model was trained on, for the card")
    p.add_argument("--name", default="mer-default-synth-megc3")
    p.add_argument("--out", type=Path, default=ROOT / "engines" / "default")
    args = p.parse_args(argv)

    from cli.export import main as export_main
    from engines.card import ModelCard
    from engines.checkpoint import load_checkpoint, save_checkpoint

    model = load_checkpoint(args.checkpoint)
    if not model.card.evaluation:
        print(f"ship_default: {args.checkpoint} has no evaluation in its card; train it with mer-train --final",
              file=sys.stderr)
        return 2
    model.card = ModelCard.from_dict({**model.card.to_dict(), "name": args.name, "trained_on": args.trained_on})
    args.out.mkdir(parents=True, exist_ok=True)
    shipped = save_checkpoint(model, args.out / "model.pt")
    code = export_main([str(shipped), "--onnx", str(args.out / "model.onnx"), "--verify"])
    if code == 0:
        size = sum(f.stat().st_size for f in args.out.iterdir() if f.is_file()) / 1e6
        print(f"ship_default: {args.name} in {args.out} ({size:.1f} MB), UF1 {model.card.evaluation.get('uf1')}")
    return code


if __name__ == "__main__":
    sys.exit(main())

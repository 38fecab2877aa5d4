#!/usr/bin/env python
"""Make a trained model the bundled default: checkpoint, card and a verified ONNX copy in engines/default/.

    python scripts/ship_default.py runs/ablation2/seed0/dual-phase/final/model.pt --trained-on "..." \
        [--real-evaluation real.json]   # mer-bench recognition --json output: held-out real footage

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
    p.add_argument("--name", default="mer-default-apex-flow-megc3")
    p.add_argument("--real-evaluation", type=Path, metavar="JSON",
                   help="mer-bench recognition --json output for this recipe (leave-one-video-out on held-out "
                   "real footage), kept in the card's evaluation under 'real_footage'")
    p.add_argument("--out", type=Path, default=ROOT / "engines" / "default")
    args = p.parse_args(argv)

    from engines.card import ModelCard
    from engines.checkpoint import load_checkpoint, save_checkpoint
    from mer_cli.export import main as export_main

    model = load_checkpoint(args.checkpoint)
    if not model.card.evaluation:
        print(f"ship_default: {args.checkpoint} has no evaluation in its card; train it with mer-train --final",
              file=sys.stderr)
        return 2
    evaluation = dict(model.card.evaluation)
    if args.real_evaluation is not None:
        import json

        evaluation["real_footage"] = json.loads(args.real_evaluation.read_text(encoding="utf-8"))
    model.card = ModelCard.from_dict({**model.card.to_dict(), "name": args.name, "trained_on": args.trained_on,
                                      "evaluation": evaluation})
    args.out.mkdir(parents=True, exist_ok=True)
    shipped = save_checkpoint(model, args.out / "model.pt")
    code = export_main([str(shipped), "--onnx", str(args.out / "model.onnx"), "--verify"])
    if code == 0:
        size = sum(f.stat().st_size for f in args.out.iterdir() if f.is_file()) / 1e6
        print(f"ship_default: {args.name} in {args.out} ({size:.1f} MB), UF1 {model.card.evaluation.get('uf1')}")
    return code


if __name__ == "__main__":
    sys.exit(main())

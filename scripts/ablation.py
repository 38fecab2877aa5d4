#!/usr/bin/env python
"""The ablation of the three papers' ideas on a synthetic benchmark, LOSO by identity.

    python scripts/ablation.py --data data/synth --out runs/ablation [--epochs 30] [--seeds 0,1]
    python scripts/ablation.py --data data/synth --data data/real_train --real-subjects cap12_edit,franck \
        --calibrate --out runs/ablation_real          # with micro-expressions rendered onto real video

Runs ``mer-train`` once per variant and seed (same data, schedule and recipe for all) and writes
``ablation.md`` / ``ablation.json`` in OUT. Besides pooled accuracy / UF1 / UAR it reports what a difference
must be judged against:

- the fold-to-fold spread of UF1 (mostly how hard each held-out identity is, shared by every model);
- the *paired* per-fold difference to ``single`` (same folds, same seed): its mean, its standard deviation
  over folds x seeds, and in how many of them the variant was better — the noise of a comparison;
- with several seeds, the seed-to-seed range of the pooled UF1, and the *seed noise* of a fold's paired
  difference (how much the same fold's difference moves from seed to seed, root mean square over folds).

With ``--real-subjects`` (the subjects of ``mer-synth onto --clips`` data: one per source video), the same runs
are also scored on the folds that held out a real video (leave-one-video-out: accuracy, UF1, per-class recall,
mean confidence on wrong answers) and, apart, on the still-photo folds (synthetic LOSO). ``--calibrate`` lets
mer-train fit its temperature (the papers' models and the README's earlier figures were uncalibrated).

Runs already done are resumed, so the script can be stopped and restarted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REFERENCE = "single"
NO_PRETRAIN = ["--pretrain-epochs", "0"]  # fused models trained from scratch, as in the papers
VARIANTS: list[tuple[str, str, list[str]]] = [
    ("single", "single (TRDI, onset→offset)", ["--model", "single", "--no-augment-phases"]),
    ("single-aug", "single + dual-phase augmentation", ["--model", "single", "--augment-phases"]),
    ("dual-phase-concat", "dual-phase, concatenation fusion", ["--model", "dual-phase-concat", *NO_PRETRAIN]),
    ("dual-phase", "dual-phase, cross-attention fusion (DIANet)", ["--model", "dual-phase", *NO_PRETRAIN]),
    ("afn-concat", "TRDI + MIDI, concatenation fusion", ["--model", "afn-concat", *NO_PRETRAIN]),
    ("afn", "TRDI + MIDI, adaptive fusion (AFN)", ["--model", "afn", *NO_PRETRAIN]),
    ("dual-phase-pretrained", "dual-phase, cross-attention, streams pretrained as single + augmentation",
     ["--model", "dual-phase", "--pretrain-epochs", "{epochs}"]),
    ("flow", "optical flow onset→apex (two components, concatenation)", ["--model", "flow"]),
]
# The training recipe every variant shares: weights averaged over the last third of the cosine schedule,
# and each prediction averaged with that of the mirrored DIs (the contrast-field augmentation is on by default).
RECIPE = ["--average-epochs", "{average}", "--model-setting", "flip_average=true"]


def _run(args: argparse.Namespace, key: str, extra: list[str], seed: int) -> dict | None:
    run = args.out / f"seed{seed}" / key
    recipe = ([part.format(average=max(1, args.epochs // 3)) for part in RECIPE] if not args.plain
              else ["--average-epochs", "0", "--no-flip-average"])
    data = [part for folder in args.data for part in ("--data", str(folder))]
    cmd = [sys.executable, "-m", "mer_cli.train", *data, "--dataset", "synth", "--scheme", args.scheme,
           "--protocol", "loso", "--epochs", str(args.epochs), "--seed", str(seed),
           "--threads", str(args.threads), "--out", str(run), *recipe,
           *(["--folds", args.folds] if args.folds else []),
           # without --calibrate, as the README's first figures were made: every training identity trains
           *([] if args.calibrate else ["--no-calibration"]),
           *(["--label-smoothing", str(args.label_smoothing)] if args.label_smoothing else []),
           *(part.format(epochs=args.epochs) for part in extra)]
    if (run / "report.json").exists():
        report = json.loads((run / "report.json").read_text())
        if _complete(report, args):
            return report
    if (run / "settings.json").exists():
        cmd.append("--resume")
    print("$", " ".join(cmd), flush=True)
    if subprocess.run(cmd).returncode != 0:
        print(f"{key} (seed {seed}): mer-train failed", file=sys.stderr)
        return None
    return json.loads((run / "report.json").read_text())


def _complete(report: dict, args: argparse.Namespace) -> bool:
    """Every fold done, or with --folds as many folds as it names (mer-train runs only those)."""
    if args.folds:
        return int(report.get("folds_done", 0)) >= len(args.folds.split(","))
    return bool(report.get("folds_done") == report.get("folds_total"))


def _held_out(run: Path, subjects: set[str], *, inside: bool) -> dict | None:
    """Pooled figures of the folds whose test subjects are (``inside``) or are not among ``subjects``."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from mer_core.metrics import recognition_scores

    y_true: list[str] = []
    y_pred: list[str] = []
    wrong_conf: list[float] = []
    labels: list[str] = []
    for path in sorted((run / "folds").glob("*.json")):
        fold = json.loads(path.read_text())
        if "predictions" not in fold or (set(fold.get("test_subjects", [])) <= subjects) != inside:
            continue
        labels = fold.get("labels", labels)
        for p in fold["predictions"]:
            y_true.append(p["true"])
            y_pred.append(p["pred"])
            if p["true"] != p["pred"]:
                wrong_conf.append(max(p["probs"]))
    if not y_true:
        return None
    sc = recognition_scores(y_true, y_pred, labels=labels or None)
    return {"n": len(y_true), "accuracy": sc.accuracy, "uf1": sc.uf1, "uar": sc.uar,
            "recall": {str(k): v for k, v in sc.per_class_recall.items()},
            "wrong_confidence": statistics.fmean(wrong_conf) if wrong_conf else None}


def _summary(key: str, title: str, reports: dict[int, dict], reference: dict[int, dict]) -> dict:
    pooled = {k: statistics.fmean(r["pooled"][k] for r in reports.values()) for k in ("accuracy", "uf1", "uar")}
    fold_uf1 = [f["uf1"] for r in reports.values() for f in r["folds"]]
    row = {
        "variant": key, "title": title, **pooled, "seeds": sorted(reports),
        "uf1_by_seed": {str(s): r["pooled"]["uf1"] for s, r in reports.items()},
        "fold_uf1_mean": statistics.fmean(fold_uf1), "fold_uf1_sd": statistics.pstdev(fold_uf1),
        "fold_uf1": {str(s): [f["uf1"] for f in r["folds"]] for s, r in reports.items()},
    }
    paired = [f["uf1"] - g["uf1"] for s, r in reports.items() if s in reference
              for f, g in zip(r["folds"], reference[s]["folds"], strict=True)]
    if key != REFERENCE and paired:
        row["delta_uf1_vs_single"] = statistics.fmean(r["pooled"]["uf1"] - reference[s]["pooled"]["uf1"]
                                                      for s, r in reports.items() if s in reference)
        row["paired_fold_delta_mean"] = statistics.fmean(paired)
        row["paired_fold_delta_sd"] = statistics.stdev(paired) if len(paired) > 1 else 0.0
        row["paired_folds_better"] = sum(d > 0 for d in paired)
        row["paired_folds_worse"] = sum(d < 0 for d in paired)
        row["paired_n"] = len(paired)
        row["paired_seed_noise"] = _seed_noise(reports, reference)
    return row


def _seed_noise(reports: dict[int, dict], reference: dict[int, dict]) -> float | None:
    """How much one fold's paired difference moves between seeds: the root mean square over folds of its
    standard deviation across seeds. This is the noise a fold's comparison carries, unlike the spread of
    the differences over folds, which also holds how differently the held-out identities respond."""
    seeds = [s for s in reports if s in reference]
    if len(seeds) < 2:
        return None
    by_fold = zip(*([f["uf1"] - g["uf1"] for f, g in zip(reports[s]["folds"], reference[s]["folds"], strict=True)]
                    for s in seeds), strict=True)
    variances = [statistics.variance(deltas) for deltas in by_fold]
    return statistics.fmean(variances) ** 0.5


def _real_table(rows: list[dict]) -> str:
    lines = ["| variant | real: accuracy | real: UF1 | real: recall per class | real: confidence on wrong | "
             "still-photo LOSO UF1 |", "|---|---:|---:|---|---:|---:|"]
    for r in rows:
        real, still = r.get("real"), r.get("still")
        if not real:
            continue
        recall = ", ".join(f"{k} {v:.2f}" for k, v in real["recall"].items())
        wc = "—" if real["wrong_confidence"] is None else f"{real['wrong_confidence']:.2f}"
        lines.append(f"| {r['title']} | {100 * real['accuracy']:.1f} % | {real['uf1']:.3f} | {recall} | {wc} | "
                     f"{still['uf1']:.3f} |" if still else f"| {r['title']} | {100 * real['accuracy']:.1f} % | "
                     f"{real['uf1']:.3f} | {recall} | {wc} | — |")
    return "\n".join(lines) + "\n"


def _table(rows: list[dict]) -> str:
    lines = ["| variant | accuracy | UF1 | UAR | UF1 by seed | per-fold UF1 mean ± sd | Δ UF1 vs single | "
             "paired per-fold Δ mean ± sd | folds better / worse | seed noise of a fold's Δ |",
             "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        seeds = " / ".join(f"{v:.3f}" for v in r["uf1_by_seed"].values())
        if "paired_n" in r:
            delta = f"{r['delta_uf1_vs_single']:+.3f}"
            paired = f"{r['paired_fold_delta_mean']:+.3f} ± {r['paired_fold_delta_sd']:.3f}"
            count = f"{r['paired_folds_better']} / {r['paired_folds_worse']} of {r['paired_n']}"
            noise = "—" if r["paired_seed_noise"] is None else f"{r['paired_seed_noise']:.3f}"
        else:
            delta = paired = count = noise = "(reference)" if r["variant"] == REFERENCE else "—"
        lines.append(f"| {r['title']} | {100 * r['accuracy']:.1f} % | {r['uf1']:.3f} | {r['uar']:.3f} | {seeds} | "
                     f"{r['fold_uf1_mean']:.3f} ± {r['fold_uf1_sd']:.3f} | {delta} | {paired} | {count} | {noise} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, action="append", help="mer-synth folders (repeatable)")
    p.add_argument("--scheme", default="megc3", help="class scheme (megc3, or megc3n with none clips)")
    p.add_argument("--real-subjects", default="", help="comma-separated subjects that are real videos")
    p.add_argument("--calibrate", action="store_true", help="let mer-train fit its temperature")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="passed to mer-train (0 = off)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1 (default 0)")
    p.add_argument("--only", help="comma-separated variant keys (single is always run: it is the reference)")
    p.add_argument("--plain", action="store_true", help="without the shared recipe (last-epoch weights, no flip)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--folds", help="passed to mer-train: only these folds, e.g. the real videos 'cap12_edit,franck' "
                   "(a comma-separated list)")
    p.add_argument("--no-reference", action="store_true",
                   help="with --only: do not run single (another process is running it into the same OUT)")
    p.add_argument("--report-only", action="store_true", help="train nothing: tabulate the finished runs in OUT")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    wanted = set(args.only.split(",")) | ({REFERENCE} if not args.no_reference else set()) if args.only else None
    results: dict[str, dict[int, dict]] = {}
    for seed in seeds:
        for key, _title, extra in VARIANTS:
            if wanted and key not in wanted:
                continue
            if args.report_only:
                path = args.out / f"seed{seed}" / key / "report.json"
                report = json.loads(path.read_text()) if path.is_file() else None
                if report is None or not _complete(report, args):
                    continue
            else:
                report = _run(args, key, extra, seed)
                if report is None:
                    return 1
            results.setdefault(key, {})[seed] = report
    reference = results.get(REFERENCE, {})
    rows = [_summary(key, title, results[key], reference) for key, title, _ in VARIANTS if key in results]
    real = {s.strip() for s in args.real_subjects.split(",") if s.strip()}
    if real:
        for row in rows:  # first seed's runs (the held-out figures pool its folds)
            run = args.out / f"seed{seeds[0]}" / row["variant"]
            row["real"] = _held_out(run, real, inside=True)
            row["still"] = _held_out(run, real, inside=False)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ablation.json").write_text(json.dumps(rows, indent=2) + "\n")
    table = _table(rows) + ("\n" + _real_table(rows) if real else "")
    (args.out / "ablation.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

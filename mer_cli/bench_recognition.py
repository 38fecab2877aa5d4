#!/usr/bin/env python
"""Recognition on held-out real footage: micro-expressions rendered onto real video, true windows.

    mer-bench recognition TEST_DIR... [--model PATH | --run RUN_DIR [--run RUN_DIR ...]] [--json]

TEST_DIR is ``mer-synth onto VIDEO... --clips --amplitude 0.04 --out TEST_DIR`` output (its ``recognition/`` set:
aligned crops as the live tracker gives them, one subject per source video). With ``--model`` (default: the
bundled model) every clip is classified by that model. With ``--run`` (a ``mer-train`` run whose subjects
include the test videos' subjects), each video is classified by the fold model that never saw it — the
leave-one-video-out figure; several ``--run`` average their fold models' probabilities (an ensemble). DIs
come from the project's one builder (training.cache / mer_core.dynamic_image); the probabilities from the engines
backend (temperature included), as in live use.

Prints accuracy, UF1, per-class recall and F1, per-video accuracy, the mean confidence on wrong answers and
the expected calibration error (15 bins).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from engines.backends import load_engine
from mer_core.metrics import expected_calibration_error, recognition_scores
from training.cache import DICache, DIOptions
from training.datasets import load_dataset
from training.datasets.base import Sample, merge_indices
from training.datasets.frames import FrameOptions


def classify(model: str | None, samples: list[Sample], scheme_labels: tuple[str, ...]) -> list[tuple[Sample, str, np.ndarray]]:
    engine = load_engine(model, backend="onnxruntime" if model is None or str(model).endswith(".onnx") else "auto")
    card = engine.card
    settings = DIOptions(streams=card.streams, input_size=card.input_size,
                          frames=FrameOptions(alignment="none", crop_size=card.crop_size, channels=card.channels))
    batch = DICache(None).build(samples, settings)
    out = []
    with engine:
        probs = engine.predict(batch.x) if len(batch.x) else np.zeros((0, len(card.labels)))
    # the probabilities in the test set's label order, so that every fold model's columns line up
    columns = [card.labels.index(label) if label in card.labels else None for label in scheme_labels]
    for sample, p in zip(batch.samples, probs, strict=True):
        ordered = np.array([p[c] if c is not None else 0.0 for c in columns])
        out.append((sample, card.labels[int(np.argmax(p))], ordered))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mer-bench recognition", description=__doc__.split("\n")[0])
    p.add_argument("test_dirs", nargs="+", type=Path, metavar="TEST_DIR")
    p.add_argument("--model", default=None, help="model to use (default: the bundled one)")
    p.add_argument("--run", type=Path, action="append", default=[],
                   help="a mer-train run: each video by the fold that left it out; repeat to average several runs")
    p.add_argument("--scheme", default="megc3")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    index = merge_indices([load_dataset("synth", d, scheme=args.scheme) for d in args.test_dirs])
    samples = list(index.samples)
    results: list[tuple[Sample, str, np.ndarray]] = []
    if args.run:
        by_subject: dict[str, list] = defaultdict(list)
        for s in samples:
            by_subject[s.subject].append(s)
        members = []
        for run in args.run:
            folds = {}
            for path in sorted((run / "folds").glob("*.json")):
                info = json.loads(path.read_text(encoding="utf-8"))
                for subject in info.get("test_subjects", []):
                    folds[subject] = info
            answers: list[tuple[Sample, str, np.ndarray]] = []
            for subject, group in sorted(by_subject.items()):
                info = folds.get(subject)
                if info is None or "checkpoint" not in info:
                    print(f"no fold with a checkpoint left out {subject!r} in {run}", file=sys.stderr)
                    return 2
                answers += classify(str(run / info["checkpoint"]), group, index.labels)
            members.append(answers)
        for i, (sample, _, _) in enumerate(members[0]):
            mean = np.mean([m[i][2] for m in members], axis=0)
            results.append((sample, index.labels[int(np.argmax(mean))], mean))
    else:  # one model (default: the bundled one) for every clip
        results = [(sample, index.labels[int(np.argmax(p))], p)
                   for sample, _, p in classify(args.model, samples, index.labels)]
    labels = index.labels
    y_true = [s.label for s, _, _ in results]
    y_pred = [pred for _, pred, _ in results]
    scores = recognition_scores(y_true, y_pred, labels=labels)
    confidence = np.array([float(pr.max()) for _, _, pr in results])
    correct = np.array([t == q for t, q in zip(y_true, y_pred, strict=True)])
    per_video: dict[str, list[bool]] = defaultdict(list)
    for (s, _, _), ok in zip(results, correct, strict=True):
        per_video[s.subject].append(bool(ok))
    report = {
        "clips": len(results),
        "accuracy": round(scores.accuracy, 3),
        "uf1": round(scores.uf1, 3),
        "uar": round(scores.uar, 3),
        "recall": {k: round(v, 3) for k, v in scores.per_class_recall.items()},
        "f1": {k: round(v, 3) for k, v in scores.per_class_f1.items()},
        "per_video_accuracy": {k: round(float(np.mean(v)), 3) for k, v in sorted(per_video.items())},
        "per_video_clips": {k: len(v) for k, v in sorted(per_video.items())},
        "mean_confidence_wrong": round(float(confidence[~correct].mean()), 3) if (~correct).any() else None,
        "mean_confidence_right": round(float(confidence[correct].mean()), 3) if correct.any() else None,
        "ece": round(expected_calibration_error(np.stack([pr for _, _, pr in results]),
                                                [labels.index(t) for t in y_true]), 3),
        "confusion": {"labels": list(scores.labels), "matrix": scores.confusion.tolist()},
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for k, v in report.items():
            print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

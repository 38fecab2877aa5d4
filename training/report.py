"""Cross-validation reports: pool fold predictions into one set of figures, as JSON and Markdown.

Figures are computed from the *pooled* predictions of all folds (accuracy, UF1 = unweighted mean of
per-class F1, UAR = unweighted mean of per-class recall, confusion matrix) by
``mer_core.metrics.recognition_scores``; per-fold figures are listed beside them for reference. Folds run on
different machines are pooled with :func:`merge_runs`, which reads ``RUN_DIR/folds/*.json`` from each.

Calibration: the expected calibration error (ECE, 15 bins) and the mean confidence on wrong answers, before
(the raw logits' softmax) and after (the fold's temperature; what its saved model answers), per fold and over
the pooled predictions. Folds written before calibration existed count as uncalibrated (before = after).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mer_core.metrics import recognition_scores
from training.calibration import calibration_figures, softmax

__all__ = ["ReportError", "merge_runs", "read_fold_results", "render_markdown", "scores_dict", "write_report"]

log = logging.getLogger(__name__)

REPORT_SCHEMA = "mer-report/1"
FOLD_SCHEMA = "mer-fold/1"


class ReportError(RuntimeError):
    """Fold results are missing, unreadable or do not belong together."""


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _per_class(value: Any, labels: Sequence[str]) -> dict[str, float]:
    value = _plain(value)
    if isinstance(value, dict):
        return {str(k): float(v) for k, v in value.items()}
    return {label: float(v) for label, v in zip(labels, value, strict=True)}


def scores_dict(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """``mer_core.metrics.recognition_scores`` as a JSON-ready dict (plus sample count)."""
    scores = recognition_scores(list(y_true), list(y_pred), list(labels))
    return {
        "n": len(y_true),
        "accuracy": float(scores.accuracy),
        "uf1": float(scores.uf1),
        "uar": float(scores.uar),
        "per_class_f1": _per_class(scores.per_class_f1, labels),
        "per_class_recall": _per_class(scores.per_class_recall, labels),
        "confusion": _plain(scores.confusion),
    }


def read_fold_results(run_dirs: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Every ``folds/*.json`` of the run folders, one per fold name (the first found wins), by fold number."""
    results: dict[str, dict[str, Any]] = {}
    origin: dict[str, Path] = {}
    for run_dir in map(Path, run_dirs):
        folds_dir = run_dir / "folds"
        if not run_dir.is_dir():
            raise ReportError(f"run folder {run_dir} does not exist")
        for path in sorted(folds_dir.glob("*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise ReportError(f"fold result {path} is unreadable ({exc}); delete it and run that fold again") from None
            if not isinstance(data, dict) or data.get("schema") != FOLD_SCHEMA:
                continue
            name = str(data.get("fold"))
            if name in results:
                if data.get("predictions") != results[name].get("predictions"):
                    log.warning("fold %s is in %s and %s with different predictions; keeping the first",
                                name, origin[name], path)
                continue
            results[name] = data
            origin[name] = path
    return sorted(results.values(), key=lambda r: (int(r.get("number", 0)), str(r.get("fold"))))


def _check_compatible(results: Sequence[dict[str, Any]]) -> None:
    keys = ("settings_id", "labels", "dataset", "scheme", "protocol", "of")
    first = results[0]
    for result in results[1:]:
        diffs = [k for k in keys if result.get(k) != first.get(k)]
        if diffs:
            raise ReportError(
                f"fold {result.get('fold')} differs from fold {first.get('fold')} in {', '.join(diffs)}; "
                "only folds of one run configuration can be pooled"
            )
    subjects: dict[str, str] = {}
    for result in results:
        for subject in result.get("test_subjects", []):
            if subject in subjects:
                raise ReportError(f"subject {subject} is tested in both {subjects[subject]} and {result.get('fold')}")
            subjects[subject] = str(result.get("fold"))


def _fold_probs(result: dict[str, Any], labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probabilities before calibration, after, true class indices) of one fold's predictions."""
    index = {label: i for i, label in enumerate(labels)}
    preds = result.get("predictions", [])
    k = len(labels)
    after = np.asarray([p["probs"] for p in preds], dtype=np.float64).reshape(-1, k)
    if preds and all("logits" in p for p in preds):
        before = softmax(np.asarray([p["logits"] for p in preds], dtype=np.float64).reshape(-1, k))
    else:
        before = after
    y = np.asarray([index[p["true"]] for p in preds], dtype=np.int64)
    return before, after, y


def _calibration_summary(results: Sequence[dict[str, Any]], labels: Sequence[str]) -> tuple[dict[str, Any],
                                                                                            list[dict[str, Any]]]:
    """Pooled and per-fold calibration figures (see the module docstring)."""
    per_fold, parts = [], []
    temperatures = []
    for r in results:
        before, after, y = _fold_probs(r, labels)
        parts.append((before, after, y))
        found = r.get("calibration")
        cal: dict[str, Any] = found if isinstance(found, dict) else {}
        fitted = bool(cal.get("fitted"))
        if fitted:
            temperatures.append(float(cal["temperature"]))
        per_fold.append({"temperature": float(cal.get("temperature", 1.0)) if cal else None, "fitted": fitted,
                         "calibration_subjects": list(cal.get("subjects", [])) if cal else [],
                         **calibration_figures(before, after, y)})
    k = len(labels)
    before = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, k))
    after = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, k))
    y = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
    pooled = {
        "n": int(len(y)),
        "bins": 15,
        "folds_calibrated": len(temperatures),
        "temperature_median": round(float(np.median(temperatures)), 4) if temperatures else None,
        **calibration_figures(before, after, y),
    }
    return pooled, per_fold


def pooled_report(results: Sequence[dict[str, Any]], *, dataset: dict[str, Any] | None = None,
                  total_folds: int | None = None) -> dict[str, Any]:
    """The report dict: pooled scores, per-fold scores, dataset account, settings."""
    if not results:
        raise ReportError("no fold results to report (no folds/*.json in the run folder(s))")
    _check_compatible(results)
    labels = list(results[0]["labels"])
    y_true = [p["true"] for r in results for p in r["predictions"]]
    y_pred = [p["pred"] for r in results for p in r["predictions"]]
    pooled = scores_dict(y_true, y_pred, labels)
    total = int(total_folds or results[0].get("of") or len(results))
    calibration, fold_calibration = _calibration_summary(results, labels)
    folds = [
        {
            "fold": r["fold"],
            "number": r.get("number"),
            "test_subjects": r.get("test_subjects", []),
            "n": len(r["predictions"]),
            "accuracy": r["scores"]["accuracy"],
            "uf1": r["scores"]["uf1"],
            "uar": r["scores"]["uar"],
            "epochs_run": r.get("epochs_run"),
            "seconds": r.get("seconds"),
            "calibration": cal,
        }
        for r, cal in zip(results, fold_calibration, strict=True)
    ]
    first = results[0]
    evaluation = {
        "protocol": first.get("protocol"),
        "dataset": first.get("dataset"),
        "scheme": first.get("scheme"),
        "folds": len(results),
        "folds_total": total,
        "complete": len(results) == total,
        **{k: pooled[k] for k in ("n", "accuracy", "uf1", "uar", "per_class_f1", "per_class_recall", "confusion")},
        "labels": labels,
        "calibration": {k: calibration[k] for k in ("folds_calibrated", "temperature_median", "ece_before",
                                                    "ece_after", "wrong_confidence_before", "wrong_confidence_after")},
    }
    return {
        "schema": REPORT_SCHEMA,
        "model": first.get("model"),
        "dataset": first.get("dataset"),
        "scheme": first.get("scheme"),
        "protocol": first.get("protocol"),
        "labels": labels,
        "folds_done": len(results),
        "folds_total": total,
        "pooled": pooled,
        "calibration": calibration,
        "evaluation": evaluation,
        "folds": folds,
        "settings": first.get("settings", {}),
        "data": dataset or {},
    }


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def render_markdown(report: dict[str, Any]) -> str:
    """Human-readable report: pooled figures, per class, confusion matrix, per fold, dataset, settings."""
    labels = report["labels"]
    pooled = report["pooled"]
    protocol = {"loso": "leave-one-subject-out", "kfold": "subject-disjoint k-fold"}.get(report["protocol"],
                                                                                         report["protocol"])
    lines = [
        f"# mer-train report: {report['model']} on {report['dataset']} ({report['scheme']})",
        "",
        f"Protocol: {protocol}; folds done: {report['folds_done']} of {report['folds_total']}"
        + ("" if report["folds_done"] == report["folds_total"] else " (**partial**: merge the other folds)"),
        "",
        "## Pooled over all folds",
        "",
        "Figures from the pooled predictions of every fold (UF1/UAR: unweighted means over classes).",
        "",
        "| samples | accuracy | UF1 | UAR |",
        "|---:|---:|---:|---:|",
        f"| {pooled['n']} | {_pct(pooled['accuracy'])} | {pooled['uf1']:.4f} | {pooled['uar']:.4f} |",
        "",
        "| class | support | F1 | recall |",
        "|---|---:|---:|---:|",
    ]
    confusion = np.asarray(pooled["confusion"])
    for i, label in enumerate(labels):
        support = int(confusion[i].sum()) if confusion.ndim == 2 and i < confusion.shape[0] else 0
        lines.append(f"| {label} | {support} | {pooled['per_class_f1'].get(label, 0.0):.4f} "
                     f"| {pooled['per_class_recall'].get(label, 0.0):.4f} |")
    lines += ["", "### Confusion matrix (rows: true, columns: predicted)", "",
              "| true \\ pred | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    for i, label in enumerate(labels):
        row = confusion[i].tolist() if confusion.ndim == 2 and i < confusion.shape[0] else [0] * len(labels)
        lines.append(f"| {label} | " + " | ".join(str(int(v)) for v in row) + " |")
    lines += ["", "## Per fold", "", "| fold | test subjects | n | accuracy | UF1 | UAR | epochs |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for f in report["folds"]:
        lines.append(f"| {f['fold']} | {', '.join(map(str, f['test_subjects']))} | {f['n']} | {_pct(f['accuracy'])} "
                     f"| {f['uf1']:.4f} | {f['uar']:.4f} | {f.get('epochs_run', '')} |")
    lines += _calibration_markdown(report)
    data = report.get("data") or {}
    if data:
        lines += ["", "## Data", "",
                  f"- {data.get('samples', '?')} samples from {data.get('subjects', '?')} subjects "
                  f"({data.get('root', '')}); classes: {data.get('class_counts', {})}"]
        if data.get("di_fps"):
            lines.append(f"- DIs formed at {data['di_fps']:g} fps; streams {', '.join(data.get('streams', []))}")
        for kind, count in (data.get("skipped") or {}).items():
            lines.append(f"- skipped {count} annotation row(s): {kind}")
        for emotion, count in (data.get("dropped") or {}).items():
            lines.append(f"- dropped {count} sample(s) of emotion '{emotion}' (not in scheme {data.get('scheme')})")
        for note, count in (data.get("notes") or {}).items():
            lines.append(f"- {count} sample(s): {note}")
        if data.get("di_failed"):
            lines.append(f"- {len(data['di_failed'])} sample(s) left out: frames unusable (e.g. no face found)")
    settings = report.get("settings") or {}
    if settings:
        lines += ["", "## Settings", "", "| setting | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in sorted(settings.items())]
    return "\n".join(lines) + "\n"


def _calibration_markdown(report: dict[str, Any]) -> list[str]:
    cal = report.get("calibration")
    if not cal:
        return []
    median = cal.get("temperature_median")
    lines = [
        "", "## Calibration", "",
        "Each fold's softmax temperature T is fitted on clips its model did not train on and never on its own "
        "test clips: training subjects held out of training (the default), calibration data, or, out of fold, "
        "the other folds' answers for their test subjects (each fold's JSON says which, `calibration.source`); "
        "*before* = T 1, *after* = the fold's T. ECE: expected calibration error "
        f"over {cal.get('bins', 15)} equal-width confidence bins (0 = confidence matches accuracy).",
        "",
        f"Folds calibrated: {cal.get('folds_calibrated', 0)} of {report['folds_done']}"
        + (f"; median T {median:g}" if median is not None else "") + ".",
        "",
        "| pooled | ECE | NLL | mean confidence | mean confidence on wrong answers |",
        "|---|---:|---:|---:|---:|",
    ]
    for when in ("before", "after"):
        lines.append(f"| {when} | {cal[f'ece_{when}']:.4f} | {cal[f'nll_{when}']:.4f} "
                     f"| {cal[f'mean_confidence_{when}']:.3f} | {cal[f'wrong_confidence_{when}']:.3f} |")
    lines += ["", "| fold | T | calibration subjects | ECE before | ECE after | wrong conf. before | wrong conf. after |",
              "|---|---:|---|---:|---:|---:|---:|"]
    for f in report["folds"]:
        c = f.get("calibration") or {}
        if not c:
            continue
        t = f"{c['temperature']:g}" if c.get("fitted") else "1 (not fitted)"
        lines.append(f"| {f['fold']} | {t} | {', '.join(map(str, c.get('calibration_subjects', []))) or '-'} "
                     f"| {c['ece_before']:.4f} | {c['ece_after']:.4f} | {c['wrong_confidence_before']:.3f} "
                     f"| {c['wrong_confidence_after']:.3f} |")
    return lines


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_report(out_dir: str | Path, results: Sequence[dict[str, Any]], *, dataset: dict[str, Any] | None = None,
                 total_folds: int | None = None) -> tuple[dict[str, Any], tuple[Path, Path]]:
    """Write ``report.json`` and ``report.md`` into ``out_dir``; returns the report and both paths."""
    out_dir = Path(out_dir)
    report = pooled_report(results, dataset=dataset, total_folds=total_folds)
    json_path, md_path = out_dir / "report.json", out_dir / "report.md"
    _write(json_path, json.dumps(_plain(report), indent=2) + "\n")
    _write(md_path, render_markdown(report))
    return report, (json_path, md_path)


def merge_runs(run_dirs: Sequence[str | Path], out: str | Path | None = None) -> tuple[dict[str, Any], tuple[Path, Path]]:
    """Pool the fold results of several run folders (e.g. folds spread over machines) into one report,
    written to ``out`` (default: the first run folder)."""
    if not run_dirs:
        raise ReportError("merge needs at least one run folder")
    results = read_fold_results(run_dirs)
    dataset = None
    for run_dir in map(Path, run_dirs):
        path = run_dir / "dataset.json"
        if path.is_file():
            try:
                dataset = json.loads(path.read_text(encoding="utf-8"))
                break
            except (OSError, json.JSONDecodeError):
                continue
    return write_report(Path(out) if out else Path(run_dirs[0]), results, dataset=dataset)

"""Writing the synthetic sets: recognition clips (PNG crops) and spotting videos, in parallel, with their
annotation CSVs, a README and a manifest (the file formats of ``mer-synth``)."""

from __future__ import annotations

import csv
import json
import logging
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from training.aus import format_aus
from training.synth import SynthGenerator
from training.synth_options import SynthError
from training.synth_plans import ClipPlan, VideoPlan

log = logging.getLogger(__name__)


RECOGNITION_COLUMNS = ("subject", "clip", "onset", "apex", "offset", "label", "aus", "fps", "n_frames")


SPOTTING_COLUMNS = ("video", "subject", "onset", "apex", "offset", "kind", "label", "aus", "fps", "n_frames")


DISTRACTOR_COLUMNS = ("video", "subject", "kind", "onset", "apex", "offset", "fps", "n_frames")


SETS = ("recognition", "spotting")

Progress = Callable[[int], None]
_WORKER: SynthGenerator | None = None
_CONTAINERS: dict[str, tuple[str, str]] = {}



def _init_worker(gen: SynthGenerator) -> None:
    global _WORKER
    _WORKER = gen
    cv2.setNumThreads(1)


def _write_clip(gen: SynthGenerator, plan: ClipPlan, root: Path) -> dict[str, object]:
    clip = gen.render_clip(plan)
    folder = root / plan.clip
    folder.mkdir(parents=True, exist_ok=True)
    for k, img in enumerate(clip.frames):
        if not cv2.imwrite(str(folder / f"{k:06d}.png"), img):
            raise SynthError(f"cannot write {folder / f'{k:06d}.png'}")
    return plan.row()


def _clip_job(args: tuple[ClipPlan, Path]) -> dict[str, object]:
    assert _WORKER is not None
    return _write_clip(_WORKER, *args)


def video_container(codec: str = "mp4v") -> tuple[str, str]:
    """(fourcc, suffix) that this OpenCV can write *and* read back: ``codec``/.mp4, else MJPG/.avi."""
    found = _CONTAINERS.get(codec)
    if found is not None:
        return found
    frame = np.full((64, 64, 3), 128, np.uint8)
    with tempfile.TemporaryDirectory(prefix="mer-synth-") as tmp:
        for fourcc, suffix in ((codec, ".mp4"), ("MJPG", ".avi")):
            path = os.path.join(tmp, "probe" + suffix)
            writer = cv2.VideoWriter(path, cv2.VideoWriter.fourcc(*fourcc), 30.0, (64, 64))
            ok = writer.isOpened()
            if ok:
                for _ in range(3):
                    writer.write(frame)
            writer.release()
            if not ok:
                continue
            cap = cv2.VideoCapture(path)
            n = 0
            while cap.read()[0]:
                n += 1
            cap.release()
            if n == 3:
                if fourcc != codec:
                    log.warning("this OpenCV cannot write and read back %s .mp4; writing MJPG .avi instead", codec)
                _CONTAINERS[codec] = (fourcc, suffix)
                return fourcc, suffix
    raise SynthError("this OpenCV build can write neither mp4 nor MJPG avi video")


def _write_video(gen: SynthGenerator, plan: VideoPlan, root: Path, progress: Progress | None = None
                 ) -> tuple[list[dict[str, object]], list[dict[str, object]], str]:
    fourcc, suffix = video_container(gen.settings.codec)
    path = root / f"{plan.video}{suffix}"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), float(plan.fps), plan.size)
    if not writer.isOpened():
        raise SynthError(f"cannot open a video writer for {path}")
    try:
        done = 0
        for frame in gen.render_video(plan):
            writer.write(frame.image)
            done += 1
            if progress is not None and done % 30 == 0:
                progress(30)
        if progress is not None and done % 30:
            progress(done % 30)
    finally:
        writer.release()
    return plan.rows(), plan.distractor_rows(), path.name


def _video_job(args: tuple[VideoPlan, Path]) -> tuple[list[dict[str, object]], list[dict[str, object]], str]:
    assert _WORKER is not None
    return _write_video(_WORKER, *args)


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[dict[str, object]]) -> None:
    """One annotations table (UTF-8, ``\\n`` line ends), the format every reader of these sets expects."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _prepare_dir(path: Path, force: bool) -> None:
    if path.exists() and any(path.iterdir()):
        if not force:
            raise SynthError(f"{path} exists and is not empty; pass --force to replace it")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)


def _run(gen: SynthGenerator, jobs: list[tuple[Any, Path]], job: Callable[[Any], Any], direct: Callable[..., Any],
         workers: int, progress: Progress | None, units: Callable[[Any], int]) -> list[Any]:
    """Run ``direct(*job)`` for each job here, or ``job(job)`` in worker processes (same results)."""
    if workers <= 1 or len(jobs) <= 1:
        return [direct(*j) for j in jobs]
    results = []
    # spawn, not fork: the parent holds MediaPipe and OpenCV thread pools whose locks a fork would copy.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(gen,)) as pool:
        for j, res in zip(jobs, pool.map(job, jobs), strict=True):
            results.append(res)
            if progress is not None:
                progress(units(j))
    return results


@dataclass
class SetSummary:
    """What one call of :func:`write_dataset` wrote."""

    recognition_clips: int = 0
    recognition_frames: int = 0
    videos: int = 0
    video_frames: int = 0
    micro: int = 0
    macro: int = 0
    distractors: dict[str, int] = field(default_factory=dict)
    container: str = ""


def write_dataset(
    gen: SynthGenerator,
    out: str | Path,
    *,
    sets: Sequence[str] = SETS,
    workers: int = 1,
    force: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> SetSummary:
    """Write the chosen sets under ``out`` plus README.md and manifest.json.

    ``progress(set_name, advance, total)`` is called as work completes (units: clips for recognition,
    frames for spotting; the first call of each set has advance 0 and gives the total).
    """
    root = Path(out)
    unknown = [s for s in sets if s not in SETS]
    if unknown:
        raise SynthError(f"unknown set(s) {unknown}; choose from {SETS}")
    root.mkdir(parents=True, exist_ok=True)
    summary = SetSummary()
    if "recognition" in sets:
        rec = root / "recognition"
        _prepare_dir(rec, force)
        plans = gen.clip_plans()
        total = len(plans)
        if progress:
            progress("recognition", 0, total)

        def one(plan: ClipPlan, folder: Path) -> dict[str, object]:
            row = _write_clip(gen, plan, folder)
            if progress:
                progress("recognition", 1, total)
            return row

        rows = _run(gen, [(p, rec) for p in plans], _clip_job, one, workers,
                    (lambda n: progress("recognition", n, total)) if progress else None, lambda j: 1)
        write_csv(rec / "annotations.csv", RECOGNITION_COLUMNS, rows)
        summary.recognition_clips = len(rows)
        summary.recognition_frames = sum(p.n_frames for p in plans)
    if "spotting" in sets:
        spot = root / "spotting"
        _prepare_dir(spot, force)
        vplans = gen.video_plans()
        total = sum(p.n_frames for p in vplans)
        if progress:
            progress("spotting", 0, total)
        cb = (lambda n: progress("spotting", n, total)) if progress else None
        results = _run(gen, [(p, spot) for p in vplans], _video_job,
                       lambda p, folder: _write_video(gen, p, folder, cb), workers, cb, lambda j: j[0].n_frames)
        rows = [r for res in results for r in res[0]]
        drows = [r for res in results for r in res[1]]
        write_csv(spot / "annotations.csv", SPOTTING_COLUMNS, rows)
        write_csv(spot / "distractors.csv", DISTRACTOR_COLUMNS, drows)
        summary.videos = len(vplans)
        summary.video_frames = total
        summary.micro = sum(1 for r in rows if r["kind"] == "micro")
        summary.macro = sum(1 for r in rows if r["kind"] == "macro")
        for r in drows:
            summary.distractors[str(r["kind"])] = summary.distractors.get(str(r["kind"]), 0) + 1
        summary.container = ",".join(sorted({res[2].rsplit(".", 1)[-1] for res in results}))
    _write_manifest(gen, root, sets, summary)
    return summary


def _write_manifest(gen: SynthGenerator, root: Path, sets: Sequence[str], summary: SetSummary) -> None:
    path = root / "manifest.json"
    manifest: dict[str, Any] = {}
    if path.is_file():
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            manifest = {}
    settings = asdict(gen.settings)
    written = dict(manifest.get("sets", {})) if isinstance(manifest.get("sets"), dict) else {}
    for name in sets:
        entry: dict[str, object] = {"settings": settings}
        if name == "recognition":
            entry["counts"] = {"clips": summary.recognition_clips, "frames": summary.recognition_frames}
        else:
            entry["counts"] = {"videos": summary.videos, "frames": summary.video_frames, "micro": summary.micro,
                               "macro": summary.macro, "distractors": dict(sorted(summary.distractors.items()))}
            entry["container"] = summary.container
        written[name] = entry
    manifest = {
        "generator": "mer-synth",
        "format": 1,
        "seed": gen.settings.seed,
        "classes": list(gen.scheme.labels),
        "scheme": gen.scheme.name,
        "class_recipes": {c.name: [[format_aus(a), w] for a, w in c.recipes] for c in gen.scheme.classes},
        "subjects": [{"subject": i.subject, "source": i.source} for i in gen.identities],
        "sets": written,
    }
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    (root / "README.md").write_text(_readme(manifest), encoding="utf-8")


def _readme(manifest: dict[str, Any]) -> str:
    subjects = "\n".join(f"| {s['subject']} | {s['source']} |" for s in manifest["subjects"])
    sets = manifest["sets"]
    parts = [
        "# Synthetic micro-expressions (mer-synth)\n",
        "Generated by `mer-synth` from real face photos: micro-expressions (MEs) are Action-Unit-driven, smooth",
        "local deformations of the face with known onset, apex and offset. All settings and counts are in",
        f"`manifest.json`; the same seed ({manifest['seed']}) and settings give the same data.\n",
        f"Classes ({manifest['scheme']}): {', '.join(manifest['classes'])}. AU recipes per class (AUs, weight):\n",
        *[f"- {k}: " + ", ".join(f"{a} ({w:g})" for a, w in v) for k, v in manifest["class_recipes"].items()],
        "",
        "## Subjects\n",
        "One subject = one real person. Augmented variants (mirroring, skin tone, lighting, alignment jitter)",
        "of the same photo share the subject id, so leave-one-subject-out splits never test on a seen face.\n",
        "| subject | source photo |", "|---|---|", subjects, "",
    ]
    if "recognition" in sets:
        c = sets["recognition"]["counts"]
        s = sets["recognition"]["settings"]
        parts += [
            "## recognition/\n",
            f"{c['clips']} clips, {c['frames']} frames at {s['fps']:g} fps. One ME per clip with "
            f"{s['context_s'][0]:g}-{s['context_s'][1]:g} s of neutral face before onset and after offset.",
            f"Frames: aligned face crops ({s['crop_size']} px, BGR PNG) made by `mer_core.alignment.align_face`",
            "from the generator's known landmarks (eyes and nose tip) with a little per-frame alignment jitter",
            "and sensor noise — like CASME-II \"Cropped\".\n",
            "Layout: `recognition/<subject>/<clip_id>/000000.png ...` and `recognition/annotations.csv`:\n",
            "| column | meaning |", "|---|---|",
            "| subject | subject id (one real person) |",
            "| clip | clip folder relative to recognition/, e.g. `s01/s01_0003` |",
            "| onset, apex, offset | 0-based frame indices within the clip, inclusive |",
            "| label | class name |", "| aus | Action Units, e.g. `12+6` |",
            "| fps | frame rate |", "| n_frames | frames in the clip |", "",
        ]
    if "spotting" in sets:
        c = sets["spotting"]["counts"]
        s = sets["spotting"]["settings"]
        w, h = s["video_size"]
        parts += [
            "## spotting/\n",
            f"{c['videos']} videos ({sets['spotting']['container']}), {w}x{h}, {s['fps']:g} fps, "
            f"{s['video_seconds']:g} s each: {c['micro']} micro- and {c['macro']} macro-expressions",
            f"(annotated intervals at least {s['me_gap_s']:g} s apart), plus distractors: "
            + ", ".join(f"{k} {v}" for k, v in c["distractors"].items())
            + "; and throughout: slow head drift and roll, brightness drift, sensor noise, compression.\n",
            "`spotting/annotations.csv` (micro and macro expressions only):\n",
            "| column | meaning |", "|---|---|",
            "| video | file name without suffix |", "| subject | subject id |",
            "| onset, apex, offset | 0-based frame indices in the video, inclusive |",
            "| kind | `micro` (<= 0.5 s) or `macro` (> 0.5 s) |",
            "| label | expression class (macro rows too) |", "| aus | Action Units |",
            "| fps | frame rate |", "| n_frames | frames in the video |", "",
            "`spotting/distractors.csv` (not expressions; for analysing false positives): `video, subject, kind,",
            "onset, apex, offset, fps, n_frames` with kind `blink` (eyelids close), `talk` (jaw/lip oscillation),",
            "`head` (a quicker head move on top of the drift) or `flicker` (brightness oscillation).\n",
        ]
    return "\n".join(parts) + "\n"

"""MMEW reader: ``MMEW_Micro_Exp.xlsx`` + ``Micro_Expression/<emotion>/<Filename>/<N>.jpg`` (90 fps).

The emotion folder is matched case-insensitively to the annotated emotion; when it does not exist every
emotion folder is searched for ``<Filename>``. Faces are cropped but not aligned to our template.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from training.datasets.base import (
    DatasetIndex,
    RowError,
    Sample,
    Skipped,
    find_annotation,
    find_frames_root,
    finish_index,
    make_sample,
    read_sheet,
)
from training.datasets.classes import ClassScheme, normalize_emotion

__all__ = ["MMEW_FPS", "read_mmew"]

log = logging.getLogger(__name__)

MMEW_FPS = 90.0
_FRAME_FOLDERS = ("Micro_Expression", "MMEW/Micro_Expression", "micro_expression")


def _clip_dir(frames_root: Path, emotion: object, filename: str) -> Path | None:
    if not filename or not frames_root.is_dir():
        return None
    wanted = normalize_emotion(emotion)
    folders = sorted(p for p in frames_root.iterdir() if p.is_dir())
    for folder in folders:
        if normalize_emotion(folder.name) == wanted and (folder / filename).is_dir():
            return folder / filename
    for folder in folders:
        if (folder / filename).is_dir():
            return folder / filename
    return frames_root / str(emotion or "?") / filename  # does not exist: reported as missing frames


def read_mmew(
    root: str | Path,
    *,
    scheme: str | ClassScheme | None = None,
    frames_dir: str | Path | None = None,
    annotation: str | Path | None = None,
    fps: float = MMEW_FPS,
) -> DatasetIndex:
    """Read MMEW from ``root`` (the folder holding ``MMEW_Micro_Exp.xlsx`` and ``Micro_Expression/``)."""
    root = Path(root)
    sheet = Path(annotation) if annotation else find_annotation(root, ("MMEW_Micro_Exp*.xlsx", "MMEW*.xlsx"), what="MMEW")
    base = sheet.parent if root.is_file() else root
    frames_root = Path(frames_dir) if frames_dir else find_frames_root(base, _FRAME_FOLDERS)
    samples: list[Sample] = []
    skipped: list[Skipped] = []
    notes: Counter[str] = Counter()
    for row, cells in read_sheet(sheet):
        filename = str(cells.get("filename") or "").strip()
        subject = cells.get("subject")
        if isinstance(subject, float) and subject.is_integer():
            subject = int(subject)
        subject_text = str(subject).strip() if subject is not None else ""
        if not subject_text and filename:
            subject_text = filename.split("_")[0]
        try:
            samples.append(
                make_sample(
                    dataset="mmew",
                    row=row,
                    subject=subject_text,
                    clip=filename,
                    emotion=cells.get("emotion"),
                    onset=cells.get("onset"),
                    apex=cells.get("apex"),
                    offset=cells.get("offset"),
                    fps=fps,
                    clip_dir=_clip_dir(frames_root, cells.get("emotion"), filename),
                    aus=cells.get("aus"),
                    notes=notes,
                )
            )
        except RowError as exc:
            skipped.append(Skipped(row, filename, exc.kind, exc.detail))
    return finish_index("mmew", base, samples, skipped, scheme=scheme, notes=notes)

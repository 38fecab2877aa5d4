"""SAMM reader: ``SAMM_Micro_FACS_Codes_v2.xlsx`` + ``<subject>/<Filename>/<subject>_<NNNNN>.jpg`` (200 fps).

The sheet starts with preamble rows; the header is found by content. Frame numbers are the trailing digits
of the file names (``006_1_2/006_05562.jpg`` → 5562). Faces are cropped but not aligned to our template.
"""

from __future__ import annotations

import logging
import re
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
from training.datasets.classes import ClassScheme

__all__ = ["SAMM_FPS", "read_samm"]

log = logging.getLogger(__name__)

SAMM_FPS = 200.0
_FRAME_FOLDERS = ("SAMM", "SAMM_CROP", "samm")


def _subject_id(value: object, filename: str) -> str:
    """6, '6', '006' → '006'; blank → the filename's prefix ('006_1_2' → '006')."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip() if value is not None else ""
    if re.fullmatch(r"\d+", text):
        return f"{int(text):03d}"
    if not text and filename:
        return filename.split("_")[0]
    return text


def read_samm(
    root: str | Path,
    *,
    scheme: str | ClassScheme | None = None,
    frames_dir: str | Path | None = None,
    annotation: str | Path | None = None,
    fps: float = SAMM_FPS,
) -> DatasetIndex:
    """Read SAMM from ``root`` (the folder holding the FACS codes sheet and the subject folders)."""
    root = Path(root)
    sheet = Path(annotation) if annotation else find_annotation(root, ("SAMM_Micro_FACS_Codes*.xlsx", "SAMM*.xlsx"), what="SAMM")
    base = sheet.parent if root.is_file() else root
    frames_root = Path(frames_dir) if frames_dir else find_frames_root(base, _FRAME_FOLDERS)
    samples: list[Sample] = []
    skipped: list[Skipped] = []
    notes: Counter[str] = Counter()
    for row, cells in read_sheet(sheet):
        filename = str(cells.get("filename") or "").strip()
        subject = _subject_id(cells.get("subject"), filename)
        clip_dir = None
        if filename:
            clip_dir = frames_root / subject / filename
            if not clip_dir.is_dir() and (frames_root / filename).is_dir():
                clip_dir = frames_root / filename
        try:
            samples.append(
                make_sample(
                    dataset="samm",
                    row=row,
                    subject=subject,
                    clip=filename,
                    emotion=cells.get("emotion"),
                    onset=cells.get("onset"),
                    apex=cells.get("apex"),
                    offset=cells.get("offset"),
                    fps=fps,
                    clip_dir=clip_dir,
                    aus=cells.get("aus"),
                    notes=notes,
                )
            )
        except RowError as exc:
            skipped.append(Skipped(row, filename, exc.kind, exc.detail))
    return finish_index("samm", base, samples, skipped, scheme=scheme, notes=notes)

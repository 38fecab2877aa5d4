"""CASME-II reader: ``CASME2-coding-*.xlsx`` + ``Cropped/subXX/<Filename>/reg_img<N>.jpg`` (200 fps).

``N`` is the annotated frame number. The cropped faces are not aligned to our template: alignment is done
when DIs are built (see :mod:`training.datasets.frames`). The RAW release (``CASME2_RAW_selected``,
``img<N>.jpg``) is found the same way, since frame numbers come from the trailing digits of each file name.
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

__all__ = ["CASME2_FPS", "read_casme2"]

log = logging.getLogger(__name__)

CASME2_FPS = 200.0
_FRAME_FOLDERS = ("Cropped", "CASME2-Cropped/Cropped", "CASME2_Cropped", "CASME2_RAW_selected", "CASME2-RAW")


def _subject_folder(value: object) -> str:
    """1, 1.0, '01', 'sub01' → 'sub01'."""
    text = str(value).strip() if value is not None else ""
    if isinstance(value, float) and value.is_integer():
        text = str(int(value))
    match = re.fullmatch(r"(?:sub)?\s*0*(\d+)", text, flags=re.IGNORECASE)
    return f"sub{int(match.group(1)):02d}" if match else text


def read_casme2(
    root: str | Path,
    *,
    scheme: str | ClassScheme | None = None,
    frames_dir: str | Path | None = None,
    annotation: str | Path | None = None,
    fps: float = CASME2_FPS,
) -> DatasetIndex:
    """Read CASME-II from ``root`` (the folder holding the coding sheet and ``Cropped/``)."""
    root = Path(root)
    sheet = Path(annotation) if annotation else find_annotation(root, ("CASME2-coding-*.xlsx", "CASME2*coding*.xlsx"), what="CASME-II")
    base = sheet.parent if root.is_file() else root
    frames_root = Path(frames_dir) if frames_dir else find_frames_root(base, _FRAME_FOLDERS)
    samples: list[Sample] = []
    skipped: list[Skipped] = []
    notes: Counter[str] = Counter()
    for row, cells in read_sheet(sheet):
        subject = _subject_folder(cells.get("subject"))
        filename = str(cells.get("filename") or "").strip()
        clip = f"{subject}/{filename}"
        try:
            samples.append(
                make_sample(
                    dataset="casme2",
                    row=row,
                    subject=subject,
                    clip=clip if filename else "",
                    emotion=cells.get("emotion"),
                    onset=cells.get("onset"),
                    apex=cells.get("apex"),
                    offset=cells.get("offset"),
                    fps=fps,
                    clip_dir=frames_root / subject / filename if filename else None,
                    aus=cells.get("aus"),
                    notes=notes,
                )
            )
        except RowError as exc:
            skipped.append(Skipped(row, clip, exc.kind, exc.detail))
    return finish_index("casme2", base, samples, skipped, scheme=scheme, notes=notes)

"""MMEW reader: ``MMEW_Micro_Exp.xlsx`` + ``Micro_Expression/<emotion>/<Filename>/<N>.jpg`` (90 fps).

The emotion folder is matched case-insensitively to the annotated emotion; when it does not exist every
emotion folder is searched for ``<Filename>``. Faces are cropped but not aligned to our template.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from training.datasets.base import DatasetIndex, read_annotated, subject_text
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


def _locate(cells: Mapping[str, Any], frames_root: Path) -> tuple[str, str, Path | None]:
    filename = str(cells.get("filename") or "").strip()
    subject = subject_text(cells.get("subject"), filename)
    return subject, filename, _clip_dir(frames_root, cells.get("emotion"), filename)


def read_mmew(
    root: str | Path,
    *,
    scheme: str | ClassScheme | None = None,
    frames_dir: str | Path | None = None,
    annotation: str | Path | None = None,
    fps: float = MMEW_FPS,
) -> DatasetIndex:
    """Read MMEW from ``root`` (the folder holding ``MMEW_Micro_Exp.xlsx`` and ``Micro_Expression/``)."""
    return read_annotated("mmew", root, what="MMEW", sheet_patterns=("MMEW_Micro_Exp*.xlsx", "MMEW*.xlsx"),
                          frame_folders=_FRAME_FOLDERS, locate=_locate, fps=fps, scheme=scheme,
                          frames_dir=frames_dir, annotation=annotation)

"""SAMM reader: ``SAMM_Micro_FACS_Codes_v2.xlsx`` + ``<subject>/<Filename>/<subject>_<NNNNN>.jpg`` (200 fps).

The sheet starts with preamble rows; the header is found by content. Frame numbers are the trailing digits
of the file names (``006_1_2/006_05562.jpg`` → 5562). Faces are cropped but not aligned to our template.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from training.datasets.base import DatasetIndex, read_annotated, subject_text
from training.datasets.classes import ClassScheme

__all__ = ["SAMM_FPS", "read_samm"]

log = logging.getLogger(__name__)

SAMM_FPS = 200.0
_FRAME_FOLDERS = ("SAMM", "SAMM_CROP", "samm")


def _subject_id(value: object, filename: str) -> str:
    """6, '6', '006' → '006'; blank → the filename's prefix ('006_1_2' → '006')."""
    text = subject_text(value, filename)
    return f"{int(text):03d}" if re.fullmatch(r"\d+", text) else text


def _locate(cells: Mapping[str, Any], frames_root: Path) -> tuple[str, str, Path | None]:
    filename = str(cells.get("filename") or "").strip()
    subject = _subject_id(cells.get("subject"), filename)
    if not filename:
        return subject, "", None
    clip_dir = frames_root / subject / filename
    if not clip_dir.is_dir() and (frames_root / filename).is_dir():
        clip_dir = frames_root / filename
    return subject, filename, clip_dir


def read_samm(
    root: str | Path,
    *,
    scheme: str | ClassScheme | None = None,
    frames_dir: str | Path | None = None,
    annotation: str | Path | None = None,
    fps: float = SAMM_FPS,
) -> DatasetIndex:
    """Read SAMM from ``root`` (the folder holding the FACS codes sheet and the subject folders)."""
    return read_annotated("samm", root, what="SAMM", sheet_patterns=("SAMM_Micro_FACS_Codes*.xlsx", "SAMM*.xlsx"),
                          frame_folders=_FRAME_FOLDERS, locate=_locate, fps=fps, scheme=scheme,
                          frames_dir=frames_dir, annotation=annotation)

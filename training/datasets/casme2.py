"""CASME-II reader: ``CASME2-coding-*.xlsx`` + ``Cropped/subXX/<Filename>/reg_img<N>.jpg`` (200 fps).

``N`` is the annotated frame number. The cropped faces are not aligned to our template: alignment is done
when DIs are built (see :mod:`training.datasets.frames`). The RAW release (``CASME2_RAW_selected``,
``img<N>.jpg``) is found the same way, since frame numbers come from the trailing digits of each file name.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from training.datasets.base import DatasetIndex, read_annotated
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


def _locate(cells: Mapping[str, Any], frames_root: Path) -> tuple[str, str, Path | None]:
    subject = _subject_folder(cells.get("subject"))
    filename = str(cells.get("filename") or "").strip()
    if not filename:
        return subject, "", None
    return subject, f"{subject}/{filename}", frames_root / subject / filename


def read_casme2(
    root: str | Path,
    *,
    scheme: str | ClassScheme | None = None,
    frames_dir: str | Path | None = None,
    annotation: str | Path | None = None,
    fps: float = CASME2_FPS,
) -> DatasetIndex:
    """Read CASME-II from ``root`` (the folder holding the coding sheet and ``Cropped/``)."""
    return read_annotated("casme2", root, what="CASME-II", sheet_patterns=("CASME2-coding-*.xlsx", "CASME2*coding*.xlsx"),
                          frame_folders=_FRAME_FOLDERS, locate=_locate, fps=fps, scheme=scheme,
                          frames_dir=frames_dir, annotation=annotation)

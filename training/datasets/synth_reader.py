"""Reader for the synthetic recognition set written by ``mer-synth``.

Layout: ``ROOT/recognition/annotations.csv`` (``subject,clip,onset,apex,offset,label,aus,fps,n_frames``)
and frames ``ROOT/recognition/<clip>/000000.png ...``; indices are 0-based and inclusive. Frames are
already-aligned crops, so no face detection is needed (samples are marked ``aligned``).
"""

from __future__ import annotations

import csv
import logging
import math
from collections import Counter
from pathlib import Path

from training.datasets.base import (
    DatasetError,
    DatasetIndex,
    RowError,
    Sample,
    Skipped,
    finish_index,
    make_sample,
)
from training.datasets.classes import ClassScheme

__all__ = ["read_synth", "synth_recognition_dir"]

log = logging.getLogger(__name__)

_REQUIRED = ("subject", "clip", "onset", "offset", "label")


def synth_recognition_dir(root: str | Path) -> Path:
    """``ROOT/recognition`` when it holds the annotations, else ``ROOT`` itself (ROOT/recognition given)."""
    root = Path(root)
    for candidate in (root / "recognition", root):
        if (candidate / "annotations.csv").is_file():
            return candidate
    raise DatasetError(f"synthetic set: no recognition/annotations.csv under {root} (run mer-synth first)")


def read_synth(
    root: str | Path,
    *,
    scheme: str | ClassScheme | None = None,
    default_fps: float = 30.0,
) -> DatasetIndex:
    """Read the synthetic recognition set from ``ROOT`` or ``ROOT/recognition``."""
    base = synth_recognition_dir(root)
    path = base / "annotations.csv"
    samples: list[Sample] = []
    skipped: list[Skipped] = []
    notes: Counter[str] = Counter()
    # errors="replace": a row saved in another encoding is skipped or dropped like any bad row, not a crash
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in _REQUIRED if c not in header]
        if missing:
            raise DatasetError(f"{path}: header lacks column(s) {missing}")
        for line, raw in enumerate(reader, start=2):
            cells = {(k or "").strip(): (v.strip() if isinstance(v, str) else v) for k, v in raw.items()}
            clip = cells.get("clip") or ""
            try:
                fps_text = cells.get("fps") or ""
                try:
                    fps = float(fps_text) if fps_text else default_fps
                except ValueError:
                    raise RowError("bad fps", f"fps is {fps_text!r}") from None
                if not (math.isfinite(fps) and fps > 0):
                    raise RowError("bad fps", f"fps is {fps_text!r}")
                samples.append(
                    make_sample(
                        dataset="synth",
                        row=line,
                        subject=cells.get("subject"),
                        clip=clip,
                        emotion=cells.get("label"),
                        onset=cells.get("onset"),
                        apex=cells.get("apex"),
                        offset=cells.get("offset"),
                        fps=fps,
                        clip_dir=base / clip if clip else None,
                        aus=cells.get("aus"),
                        aligned=True,
                        notes=notes,
                    )
                )
            except RowError as exc:
                skipped.append(Skipped(line, clip, exc.kind, exc.detail))
    return finish_index("synth", base.parent if base.name == "recognition" else base, samples, skipped,
                        scheme=scheme, notes=notes)

"""The dashboard capture in docs/usage.md is what the running program draws (item: captures that drift)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from training.demo import demo_dashboard

DOC = Path(__file__).resolve().parents[1] / "docs" / "usage.md"
BARS = "▁▂▃▄▅▆▇█▏▎▍▌▋▊▉"
VOLATILE = ("│  face ", "│  motion ", "│  spotting ", "│  di ", "│  classify ", "│  publish ", "│  windows ")


def documented() -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index("```text\n╭─ mer-live") + len("```text\n")
    return text[start:text.index("```", start)]


def shape(capture: str) -> list[str]:
    """What must not drift: panels, rows, model, event kinds and labels. Numbers (rates, times, counts), the
    sparkline, the stage timings (which stages ran in the last second) and which reasons were counted vary from
    run to run, so they are masked."""
    out = []
    for line in capture.splitlines():
        inner = line.strip("│ ")
        if inner and all(c in BARS + "┄ │" for c in inner):
            continue  # a sparkline row
        if any(v in line for v in VOLATILE):
            continue
        line = re.sub(r"candidates:.*?│", "candidates: …│", line)
        line = re.sub(r"\d+(\.\d+)?", "9", line)
        line = re.sub(f"[{BARS}]+", "#", line)
        out.append(re.sub(r"\s+", " ", line).strip())
    return out


def test_the_documented_capture_is_what_the_dashboard_draws(face_model_path: Path) -> None:
    if not DOC.is_file():
        pytest.skip("docs/usage.md not found")
    live = demo_dashboard(seconds=17.0, width=110, face_model=face_model_path)
    assert shape(live) == shape(documented()), (
        "docs/usage.md's dashboard capture has drifted from what mer-live draws: replace it with the output of "
        "python scripts/dashboard_capture.py")

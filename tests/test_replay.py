"""One chain: the benchmark's replay of a rendered real video spots exactly what ``mer-live --video X --fast`` does."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from mer_analysis.chain import AnalyzerOptions
from mer_cli.live import main as live_main
from mer_core.events import EventRecord, parse_record
from training.replay import live_tracker_options, replay, track_faces
from training.synth_onto import OntoOptions, write_onto

SHARED_REAL = Path(__file__).resolve().parents[1].parent / "shared" / "real"
SOURCE = "franck.mp4"  # a face that talks a little, at 24 fps (the chain works in seconds)
SECONDS = 12.0


@pytest.fixture(scope="module")
def rendered(face_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = SHARED_REAL / SOURCE
    if not source.is_file():
        pytest.skip(f"../shared/real/{SOURCE} not found beside the repository")
    root = tmp_path_factory.mktemp("one_chain")
    cut = root / "cut.avi"  # the first seconds, so the test stays short
    cap = cv2.VideoCapture(str(source))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    writer = None
    for _ in range(int(SECONDS * fps)):
        ok, frame = cap.read()
        if not ok:
            break
        if writer is None:
            h, w = frame.shape[:2]
            writer = cv2.VideoWriter(str(cut), cv2.VideoWriter.fourcc(*"MJPG"), fps, (w, h))
        writer.write(frame)
    cap.release()
    assert writer is not None
    writer.release()
    settings = OntoOptions(seed=3, amplitude=(0.08, 0.08), micro_per_minute=20.0, macro_per_minute=5.0,
                           lead_s=1.0, gap_s=1.0, single_au=0.0, one_sided=0.0)
    write_onto([cut], root / "onto", settings, tracker=live_tracker_options(face_model_path))
    videos = sorted((root / "onto").rglob("*.avi"))
    assert videos, "mer-synth onto wrote no video"
    return videos[0]


def test_the_benchmark_replay_spots_what_mer_live_publishes(rendered: Path, face_model_path: Path,
                                                             tmp_path: Path) -> None:
    record = tmp_path / "live.jsonl"
    assert live_main(["--video", str(rendered), "--fast", "--zmq", "none", "--no-dashboard", "--record",
                      str(record), "--face-model", str(face_model_path)]) == 0
    events = [r for r in map(parse_record, record.read_text(encoding="utf-8").splitlines())
              if isinstance(r, EventRecord)]
    live = sorted((e.onset.frame, e.apex.frame, e.offset.frame, e.kind) for e in events)

    track = track_faces(rendered, live_tracker_options(face_model_path))
    windows = replay(track, AnalyzerOptions(spotting="rules")).windows
    bench = sorted((w.onset.frame, w.apex.frame, w.offset.frame, w.kind) for w in windows)
    assert live, "the rendered expressions should give mer-live something to spot"
    assert bench == live

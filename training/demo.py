"""The demo clip: a synthetic video with known micro-expressions, made once by the generator and cached.

Uses scikit-image's astronaut photo (a real face that ships with a dependency), so ``mer-live --demo`` and
``mer-bench`` work on any machine without a camera or data set. The generator lives in ``training``; it is
imported only here, only when a demo is asked for.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from mer_core.errors import UserError
from mer_core.paths import user_cache_dir
from realtime.face_model import FaceModelError, resolve_face_model
from realtime.publisher import DEFAULT_ENDPOINT
from training.synth import SynthGenerator
from training.synth_faces import load_identities
from training.synth_options import SynthOptions
from training.synth_writer import write_dataset

log = logging.getLogger(__name__)

DEMO_VERSION = 1  # bump when the generator's output for the same settings changes

# progress(done, total) in frames while a clip is made: (0, total) first, (total, total) last; never when cached
Progress = Callable[[int, int], None]


def synthetic_video(
    *,
    seconds: float = 30.0,
    fps: float = 30.0,
    seed: int = 7,
    face_model: str | Path | None = None,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
) -> tuple[Path, Path]:
    """A cached synthetic spotting video and its ``annotations.csv`` (generated on first use, seconds of work:
    ``progress`` hears how far it is)."""
    settings = {"seconds": seconds, "fps": fps, "seed": seed, "version": DEMO_VERSION}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    root = (cache_dir or user_cache_dir() / "demo") / key
    annotations = root / "spotting" / "annotations.csv"
    videos = sorted((root / "spotting").glob("*.mp4")) + sorted((root / "spotting").glob("*.avi"))
    if annotations.is_file() and videos:
        return videos[0], annotations
    _generate(root, seconds=seconds, fps=fps, seed=seed, face_model=face_model, progress=progress)
    videos = sorted((root / "spotting").glob("*.mp4")) + sorted((root / "spotting").glob("*.avi"))
    if not videos:
        raise UserError(f"the demo video could not be written under {root}")
    return videos[0], annotations


def demo_video(face_model: str | Path | None = None, progress: Progress | None = None) -> Path:
    """The clip ``mer-live --demo`` plays (made on first use: see :func:`synthetic_video`)."""
    return synthetic_video(face_model=face_model, progress=progress)[0]


def _generate(root: Path, *, seconds: float, fps: float, seed: int, face_model: str | Path | None,
              progress: Progress | None = None) -> None:
    import cv2

    done = 0

    def frames(set_name: str, advance: int, total: int) -> None:  # write_dataset's callback, as running totals
        nonlocal done
        done = min(total, done + advance)
        if progress is not None:
            progress(done, total)

    if progress is not None:
        progress(0, round(seconds * fps))  # at once: finding the face in the photo takes a moment too
    try:
        model = resolve_face_model(face_model)
    except FaceModelError as exc:
        raise UserError(str(exc)) from None
    from skimage import data

    log.info("generating the demo clip (%g s at %g fps) into %s", seconds, fps, root)
    tmp_root = Path(tempfile.mkdtemp(prefix=".demo-", dir=_ensure(root.parent)))
    try:
        faces = tmp_root / "faces"
        faces.mkdir()
        cv2.imwrite(str(faces / "astronaut.png"), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
        identities = load_identities(builtin=False, user_faces=faces, model_path=model)
        settings = SynthOptions(seed=seed, fps=fps, videos=1, video_seconds=seconds, subjects=1)
        with SynthGenerator(settings, identities) as gen:
            write_dataset(gen, tmp_root / "out", sets=("spotting",), progress=frames)
        if root.exists():
            shutil.rmtree(root)
        (tmp_root / "out").rename(root)  # atomic: a half-written demo is never picked up
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def demo_dashboard(*, seconds: float = 17.0, width: int = 110, face_model: str | Path | None = None,
                   model: str | Path | None = None, endpoint: str = DEFAULT_ENDPOINT) -> str:
    """The dashboard ``mer-live --demo`` draws ``seconds`` into the demo clip, as plain text: the clip runs through
    the real pipeline in process (``--fast``) and the snapshot is rendered as the live dashboard renders it. The
    docs' capture is this text (``tests/test_dashboard_capture.py`` fails when they drift apart)."""
    import time

    from engines.backends import load_engine
    from mer_analysis.chain import AnalyzerOptions
    from realtime.dashboard import render_text
    from realtime.face import FaceTracker, FaceTrackerOptions
    from realtime.pipeline import Pipeline, PipelineOptions
    from realtime.sources import open_source

    video = demo_video(face_model=face_model)
    engine = load_engine(model)
    try:
        card = engine.card
        source = open_source(str(video))
        source.name = "demo:" + video.name
        with FaceTracker(FaceTrackerOptions(model_path=face_model, crop_size=card.crop_size)) as tracker:
            options = PipelineOptions(fast=True, duration_s=seconds, analyzer=AnalyzerOptions.for_card(card))
            pipeline = Pipeline(source, tracker, engine, lambda record: None, options, engine_reason=engine.reason,
                                endpoint=endpoint)
            pipeline.start()
            # snapshots while it runs, as the dashboard thread takes them (rates come from successive ones)
            frames = int(seconds * (source.fps or 30.0)) - 5
            while pipeline.analyzer.frames < frames and pipeline.analysing:
                if pipeline.analyzer.frames % 15 == 0:
                    pipeline.snapshot()
                time.sleep(0.005)
            snapshot = pipeline.snapshot()
            pipeline.stop()
        return render_text(snapshot, width=width)
    finally:
        engine.close()

"""Real footage with rendered micro-expressions, tracked once and cached: what the spotting benchmark and the
learned spotter's training read.

For each source video (by default ``../shared/real/*.mp4``) and each :class:`RenderSpec` (render family,
placement, amplitude range, seed), micro-expressions are planned and rendered onto the video
(:mod:`training.synth_onto`), and the rendered video is tracked as ``mer-live`` tracks it
(:func:`training.replay.cached_track`). The un-injected original is tracked the same way: every window the
chain finds there is a false one. Everything is cached under ``work`` by the source file and the settings, so
a second run reads it back. ``people.csv`` beside the videos (``file,person,...``) says whose face each video
shows: folds hold out a person, never a file.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mer_core.paths import cache_key
from realtime.face import FaceTrackerOptions
from training.replay import FaceTrack, cached_track
from training.synth_onto import OntoOptions, SourceTrack, plan_onto, render_onto, track_video, video_suffix

__all__ = ["ORIGINAL", "RenderSpec", "Variant", "VideoSet", "default_videos", "people_of", "prepare"]

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
ORIGINAL = "original"
_CACHE_VERSION = 1


@dataclass(frozen=True)
class RenderSpec:
    """One rendering of a video: which renderer, where, how large (IOD), which draw."""

    family: str = "warp"
    placement: str = "calm"  # "calm": where the face is calm; "anywhere": anywhere it is visible
    amplitude: tuple[float, float] = (0.04, 0.04)
    seed: int = 7
    micro_per_minute: float = 10.0
    macro_per_minute: float = 1.0
    calm_quantile: float = 0.25  # "calm": the face's activity around the expression is in the video's calmest quarter

    @property
    def amplitude_text(self) -> str:
        """The amplitude as written in tags and folder names: ``0.04``, or ``0.015-0.06`` for a range."""
        lo, hi = self.amplitude
        return f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}"

    @property
    def tag(self) -> str:
        return f"{self.family}/{self.placement}@{self.amplitude_text}#{self.seed}"

    def onto(self) -> OntoOptions:
        base = OntoOptions(seed=self.seed, amplitude=self.amplitude, micro_per_minute=self.micro_per_minute,
                           macro_per_minute=self.macro_per_minute, calm=self.placement == "calm")
        if self.placement == "calm":  # (elsewhere the setting is unused: the default keeps cached renders valid)
            base = replace(base, calm_quantile=self.calm_quantile)
        return replace(base, family=self.family)


@dataclass
class Variant:
    """A video as the chain sees it: its tracked faces, and the rendered expressions (empty for the original)."""

    track: FaceTrack
    truth: list[dict[str, Any]] = field(default_factory=list)
    spec: RenderSpec | None = None


@dataclass
class VideoSet:
    """One source video: its person, and its original and renderings by tag."""

    path: Path
    person: str
    variants: dict[str, Variant]

    @property
    def original(self) -> Variant:
        return self.variants[ORIGINAL]


def default_videos(repo: Path) -> list[Path]:
    """The shared real videos beside the repository (``../shared/real/*.mp4``), if any."""
    folder = repo.parent / "shared" / "real"
    return sorted(folder.glob("*.mp4")) if folder.is_dir() else []


def people_of(videos: Sequence[Path]) -> dict[Path, str]:
    """Each video's person: from a ``people.csv`` (``file``, ``person`` columns) in its folder, else its stem."""
    out: dict[Path, str] = {}
    tables: dict[Path, dict[str, str]] = {}
    for video in videos:
        folder = video.parent
        if folder not in tables:
            table: dict[str, str] = {}
            sheet = folder / "people.csv"
            if sheet.is_file():
                with sheet.open(newline="", encoding="utf-8") as fh:
                    for row in csv.DictReader(fh):
                        if row.get("file") and row.get("person"):
                            table[row["file"].strip()] = row["person"].strip()
            tables[folder] = table
        out[video] = tables[folder].get(video.name, video.stem)
    return out


def _source_track(path: Path, tracker: FaceTrackerOptions, work: Path, progress: Progress | None) -> SourceTrack:
    """The per-frame landmarks the renderer anchors expressions on (cached)."""
    file = work / f"source-{cache_key(path, {'tracker': 'render'}, _CACHE_VERSION)}.npz"
    if file.is_file():
        with np.load(file, allow_pickle=False) as z:
            return SourceTrack(path, float(z["fps"]), (int(z["size"][0]), int(z["size"][1])), z["landmarks"])
    track = track_video(path, tracker=replace(tracker, follow_one_face=False, landmark_every=1, blendshapes=False),
                        progress=progress)
    tmp = file.with_name(file.name + ".tmp.npz")
    np.savez(tmp, fps=np.array(track.fps), size=np.array(track.size), landmarks=track.landmarks)
    tmp.replace(file)
    return track


def prepare(videos: Sequence[Path], specs: Sequence[RenderSpec], work: Path, *, tracker: FaceTrackerOptions,
            progress: Progress | None = None, originals: bool = True) -> dict[str, VideoSet]:
    """Every video's original (with ``originals``) and renderings, tracked (cached), by video stem."""
    work.mkdir(parents=True, exist_ok=True)
    people = people_of(videos)
    out: dict[str, VideoSet] = {}
    for path in videos:
        stem = path.stem
        variants: dict[str, Variant] = {}
        if originals:
            variants[ORIGINAL] = Variant(cached_track(path, tracker, work, name=stem, progress=progress))
        source: SourceTrack | None = None
        for spec in specs:
            onto = spec.onto()
            settings = asdict(onto)
            if onto.family == "warp":  # the mesh family's settings do not change a warp rendering
                del settings["family"], settings["mesh"]
            render_id = {"onto": settings, "video": stem}
            key = cache_key(path, render_id, _CACHE_VERSION)
            rendered = work / f"render-{key}{video_suffix(onto)}"
            truth_file = work / f"render-{key}.json"
            if not (rendered.is_file() and truth_file.is_file()):
                if source is None:
                    source = _source_track(path, tracker, work, progress)
                # the draw depends on the video and the spec, not on their order in the lists
                index = int(hashlib.sha256(f"{stem}|{spec.tag}".encode()).hexdigest()[:8], 16)
                plan = plan_onto(source, onto, video=f"{stem}_{spec.tag}", index=index)
                render_onto(source, plan, rendered, onto, progress=progress)
                truth_file.write_text(json.dumps(plan.rows()), encoding="utf-8")
            track = cached_track(rendered, tracker, work, name=f"{stem} {spec.tag}", progress=progress)
            variants[spec.tag] = Variant(track, json.loads(truth_file.read_text(encoding="utf-8")), spec)
        out[stem] = VideoSet(path, people[path], variants)
    return out

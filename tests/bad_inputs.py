#!/usr/bin/env python
"""The bad-input corpus: broken videos, models, model cards and annotation files that ``mer-live`` and
``mer-train`` must survive with one clear line (never a traceback) and, once publishing began, an intact
JSONL recording ending in a summary.

    python tests/bad_inputs.py OUT_DIR                      # synthetic clip + random model, made here
    python tests/bad_inputs.py OUT_DIR --video clip.mp4 --model runs/a/final --face-model F.task

Importable (the reliability tests run every case): ``make_bad_inputs(out_dir, *, good_video, face_model)``
returns ``{name: path}``; :data:`CASES` says what each one is and what should happen. Everything is written
under ``OUT_DIR``, except the synthetic clip and the face model download, which use the user cache.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

__all__ = ["CASES", "make_bad_inputs"]

# name → what it is; what must happen (the reliability tests check exactly this)
CASES: dict[str, str] = {
    "empty_video": "a 0-byte .mp4; mer-live exits 2 with one line naming the file",
    "truncated_mp4": "the first 45 % of the good clip (its index is lost); exit 2, 'cannot be read as a video'",
    "truncated_avi": "an MJPG .avi cut in half (header intact); frames up to the cut, a warning, summary",
    "corrupt_video": "the good clip with byte runs inverted in its middle; damaged frames are decoded or "
    "skipped, summary",
    "noface_video": "a moving grey texture, no face anywhere; 0 face frames, 0 events, summary",
    "face_leaves_video": "the good clip with grey frames in the middle of its first micro-expression; the "
    "open window is dropped, summary",
    "dark_video": "the good clip dimmed from 25 % to 2 % brightness with 0.5 s of black; the face comes and "
    "goes, intensities stay finite, summary",
    "bright_video": "the good clip washed out from 75 % to 98 % white with 0.5 s of white; the face comes "
    "and goes, intensities stay finite, summary",
    "still_face": "one frame of the good clip (PNG), for constant-frame input: intensities finite, no NaN",
    "truncated_checkpoint": "folder: model.pt cut in half + its card; exit 2, 'corrupt'",
    "truncated_onnx": "folder: model.onnx cut at 60 % + its card; exit 2, 'not a valid ONNX file'",
    "nan_weights_onnx": "folder: model.onnx whose largest weight tensor is NaN (still parses); events are "
    "published unlabelled, every record valid JSON",
    "card_labels_onnx": "folder: model.onnx without its embedded card + a card with 4 labels (graph has 3 "
    "outputs); exit 2, 'card and artefact do not match'",
    "card_streams_onnx": "folder: model.onnx + a card beside it whose streams differ from the embedded card; "
    "exit 2, 'card and artefact do not match'",
    "card_labels_checkpoint": "folder: model.pt + a card with 4 labels; exit 2, 'does not belong'",
    "pickled_checkpoint": "folder: model.pt whose extra holds a pickled call to os.mkdir (marker "
    "CODE_RAN_IF_THIS_EXISTS); refused by weights_only=True, the marker never appears",
    "bad_annotations": "synth-layout root: 6 good clips (2 subjects x 3 classes) + garbage rows; rows "
    "skipped with counts by kind, mer-train runs",
    "binary_annotations": "synth-layout root whose annotations.csv is binary junk; mer-train exits 2 with "
    "one line",
    "corrupt_xlsx": "CASME-II root whose coding sheet has bytes inverted (broken zip); one-line DatasetError",
    "xlsx_bad_cells": "CASME-II root: one good row + rows with inf, NaN, 1e400, dates, booleans, formulas; "
    "bad rows skipped with counts",
}

SYNTH_HEADER = ["subject", "clip", "onset", "apex", "offset", "label", "aus", "fps", "n_frames"]
MARKER = "CODE_RAN_IF_THIS_EXISTS"
_CLIP_S = 3.0  # derived clips (no face, dark, bright) keep this much of the good clip


# --- videos ------------------------------------------------------------------------------------------


def _frames(video: Path, limit: int | None = None) -> Iterator[np.ndarray]:
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise SystemExit(f"make_bad_inputs: cannot read the good video {video}")
    try:
        n = 0
        while limit is None or n < limit:
            ok, frame = cap.read()
            if not ok:
                break
            yield frame
            n += 1
    finally:
        cap.release()


def _fps(video: Path) -> float:
    cap = cv2.VideoCapture(str(video))
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    cap.release()
    return fps if 0 < fps <= 1000 else 30.0


class _Writer:
    """cv2.VideoWriter in the container this OpenCV writes and reads back (mp4v .mp4, else MJPG .avi)."""

    def __init__(self, stem: Path, fps: float, size: tuple[int, int], *, fourcc: str | None = None,
                 suffix: str | None = None) -> None:
        if fourcc is None or suffix is None:
            from training.synth_writer import video_container

            fourcc, suffix = video_container("mp4v")
        self.path = stem.with_suffix(suffix)
        self._w = cv2.VideoWriter(str(self.path), cv2.VideoWriter.fourcc(*fourcc), fps, size)
        if not self._w.isOpened():
            raise SystemExit(f"make_bad_inputs: cannot write {self.path} ({fourcc})")

    def write(self, frame: np.ndarray) -> None:
        self._w.write(frame)

    def close(self) -> Path:
        self._w.release()
        return self.path


def _first_micro(annotations: Path | None) -> tuple[int, int] | None:
    """(onset, offset) of the first micro-expression in a synthetic ``annotations.csv``."""
    if annotations is None or not annotations.is_file():
        return None
    with annotations.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row.get("kind", "micro") == "micro":
                return int(row["onset"]), int(row["offset"])
    return None


def _invert_runs(data: bytes, *, start: float, stop: float, runs: int, length: int) -> bytes:
    """``data`` with ``runs`` byte runs of ``length`` inverted, spread over [start, stop) of its length."""
    out = bytearray(data)
    for at in np.linspace(len(out) * start, len(out) * stop, runs).astype(int):
        for i in range(at, min(at + length, len(out))):
            out[i] ^= 0xFF
    return bytes(out)


def _videos(out: Path, good: Path, annotations: Path | None) -> dict[str, Path]:
    fps = _fps(good)
    first = next(_frames(good, 1), None)
    if first is None:
        raise SystemExit(f"make_bad_inputs: the good video {good} has no frames")
    h, w = first.shape[:2]
    made: dict[str, Path] = {}

    (out / "empty.mp4").write_bytes(b"")
    made["empty_video"] = out / "empty.mp4"
    data = good.read_bytes()
    (out / f"truncated{good.suffix}").write_bytes(data[: len(data) * 45 // 100])
    made["truncated_mp4"] = out / f"truncated{good.suffix}"
    (out / f"corrupt{good.suffix}").write_bytes(_invert_runs(data, start=0.35, stop=0.65, runs=12, length=256))
    made["corrupt_video"] = out / f"corrupt{good.suffix}"
    cv2.imwrite(str(out / "still_face.png"), first)
    made["still_face"] = out / "still_face.png"

    micro = _first_micro(annotations)
    total = int(cv2.VideoCapture(str(good)).get(cv2.CAP_PROP_FRAME_COUNT)) or 0
    if micro is None:  # no annotations: blank the middle of the clip
        micro = (max(0, total // 2 - 4), total // 2 + 4)
    onset, offset = micro
    blank_from, blank_to = onset + (offset - onset) // 3, offset - (offset - onset) // 3
    keep = min(total or 10**9, offset + int(fps))  # a second after the event is enough
    clip_n = int(round(_CLIP_S * fps))
    dark_from, dark_to = int(1.0 * fps), int(1.5 * fps)

    avi = _Writer(out / "_good_mjpg", fps, (w, h), fourcc="MJPG", suffix=".avi")
    leaves = _Writer(out / "face_leaves", fps, (w, h))
    dark = _Writer(out / "dark", fps, (w, h))
    bright = _Writer(out / "bright", fps, (w, h))
    gray = np.full_like(first, 128)
    for i, frame in enumerate(_frames(good, max(keep, clip_n))):
        if i < clip_n:
            avi.write(frame)
            f = frame.astype(np.float32)
            gain = 0.25 + (0.02 - 0.25) * i / max(clip_n - 1, 1)  # contrast fading out
            dark.write(np.zeros_like(frame) if dark_from <= i < dark_to else (f * gain).astype(np.uint8))
            bright.write(np.full_like(frame, 255) if dark_from <= i < dark_to
                         else (255.0 - (255.0 - f) * gain).astype(np.uint8))
        if i < keep:
            leaves.write(gray if blank_from <= i <= blank_to else frame)
    made["face_leaves_video"] = leaves.close()
    made["dark_video"] = dark.close()
    made["bright_video"] = bright.close()
    full_avi = avi.close()
    avi_bytes = full_avi.read_bytes()
    (out / "truncated.avi").write_bytes(avi_bytes[: len(avi_bytes) // 2])
    full_avi.unlink()
    made["truncated_avi"] = out / "truncated.avi"

    noface = _Writer(out / "noface", fps, (320, 240))
    rng = np.random.default_rng(0)
    texture = cv2.resize(rng.integers(40, 215, (24, 32), dtype=np.uint8), (640, 480), interpolation=cv2.INTER_CUBIC)
    for i in range(clip_n):
        dx, dy = int(40 + 30 * np.sin(i / 15)), int(40 + 20 * np.cos(i / 20))
        noface.write(cv2.cvtColor(texture[dy : dy + 240, dx : dx + 320], cv2.COLOR_GRAY2BGR))
    made["noface_video"] = noface.close()
    return made


def _check_faces(made: dict[str, Path], face_model: Path) -> None:
    """The corpus promises a face in ``still_face`` and none in ``noface_video``: check both."""
    from training.still_faces import detect_faces

    still = cv2.imread(str(made["still_face"]))
    if still is None or not detect_faces(still, model_path=face_model, min_face_size=None):
        raise SystemExit(f"make_bad_inputs: no face found in {made['still_face']}; give a video with a face")
    noface = next(_frames(made["noface_video"], 1))
    if detect_faces(noface, model_path=face_model, min_face_size=None):
        raise SystemExit("make_bad_inputs: the no-face texture contains something MediaPipe calls a face")


# --- models ------------------------------------------------------------------------------------------


def _source_model(out: Path, model: Path | None) -> Path:
    """A folder with model.pt, model.onnx and model.card.json: ``model`` or a random dual-phase made here."""
    if model is not None:
        missing = [n for n in ("model.pt", "model.onnx", "model.card.json") if not (model / n).is_file()]
        if missing:
            raise SystemExit(f"make_bad_inputs: {model} lacks {missing}")
        return model
    from engines.checkpoint import save_checkpoint
    from engines.onnx_io import export_onnx
    from engines.registry import build_model

    root = out / "_source_model"
    root.mkdir(exist_ok=True)
    net = build_model("dual-phase", labels=("negative", "positive", "surprise"))
    save_checkpoint(net, root / "model.pt")
    export_onnx(net, root / "model.onnx")
    return root


def _folder(out: Path, name: str, src: Path, files: tuple[str, ...]) -> Path:
    folder = out / name
    folder.mkdir(exist_ok=True)
    for f in files:
        shutil.copyfile(src / f, folder / f)
    return folder


def _card_with(card_file: Path, dest: Path, **changes: object) -> None:
    from engines.card import ModelCard

    data = ModelCard.load(card_file).to_dict()
    data.update(changes)
    ModelCard.from_dict(data).save(dest)


def _models(out: Path, src: Path) -> dict[str, Path]:
    import onnx

    from engines.onnx_io import META_CARD, META_CARD_SHA

    made: dict[str, Path] = {}
    card = src / "model.card.json"
    both = ("model.pt", "model.card.json")
    onnx_files = ("model.onnx", "model.card.json")

    f = _folder(out, "truncated_checkpoint", src, both)
    data = (f / "model.pt").read_bytes()
    (f / "model.pt").write_bytes(data[: len(data) // 2])
    made["truncated_checkpoint"] = f

    f = _folder(out, "truncated_onnx", src, onnx_files)
    data = (f / "model.onnx").read_bytes()
    (f / "model.onnx").write_bytes(data[: len(data) * 6 // 10])
    made["truncated_onnx"] = f

    f = _folder(out, "nan_weights_onnx", src, onnx_files)
    proto = onnx.load(str(f / "model.onnx"))
    biggest = max(proto.graph.initializer, key=lambda t: len(t.raw_data))
    biggest.raw_data = b"\xff" * len(biggest.raw_data)  # float32 0xFFFFFFFF is NaN
    onnx.save(proto, str(f / "model.onnx"))
    made["nan_weights_onnx"] = f

    f = _folder(out, "card_labels_onnx", src, ("model.onnx",))
    proto = onnx.load(str(f / "model.onnx"))
    keep = [p for p in proto.metadata_props if p.key not in (META_CARD, META_CARD_SHA)]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    onnx.save(proto, str(f / "model.onnx"))
    _card_with(card, f / "model.card.json", labels=["negative", "positive", "surprise", "others"])
    made["card_labels_onnx"] = f

    f = _folder(out, "card_streams_onnx", src, ("model.onnx",))
    _card_with(card, f / "model.card.json", streams=["trdi", "midi"])
    made["card_streams_onnx"] = f

    f = _folder(out, "card_labels_checkpoint", src, ("model.pt",))
    _card_with(card, f / "model.card.json", labels=["negative", "positive", "surprise", "others"])
    made["card_labels_checkpoint"] = f

    made["pickled_checkpoint"] = _pickled_checkpoint(out / "pickled_checkpoint", src)
    return made


class _Mkdir:
    """Pickles as a call to ``os.mkdir(path)``: harmless, and visible if a loader ever runs pickled code."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (self.path,))


def _pickled_checkpoint(folder: Path, src: Path) -> Path:
    import torch

    folder.mkdir(exist_ok=True)
    payload = torch.load(src / "model.pt", map_location="cpu", weights_only=True)
    payload["extra"] = {"note": _Mkdir(folder / MARKER)}
    torch.save(payload, folder / "model.pt")
    shutil.copyfile(src / "model.card.json", folder / "model.card.json")
    return folder


# --- annotations -------------------------------------------------------------------------------------


def _synth_clip(folder: Path, rng: np.random.Generator, direction: tuple[int, int], n: int = 7) -> None:
    """Seven 32-px aligned-crop frames: a blob moving out and back (apex in the middle)."""
    folder.mkdir(parents=True, exist_ok=True)
    base = cv2.resize(rng.integers(40, 200, (6, 6), dtype=np.uint8), (32, 32), interpolation=cv2.INTER_CUBIC)
    for i in range(n):
        img = base.copy()
        step = min(i, n - 1 - i) * 2
        cv2.circle(img, (16 + direction[0] * step, 16 + direction[1] * step), 4, 255, -1)
        cv2.imwrite(str(folder / f"{i:06d}.png"), img)


def _annotations(out: Path) -> dict[str, Path]:
    made: dict[str, Path] = {}
    root = out / "bad_annotations"
    rec = root / "recognition"
    rng = np.random.default_rng(1)
    good: list[str] = []
    for subject in ("s01", "s02"):
        for label, direction in (("happiness", (1, 0)), ("surprise", (0, -1)), ("disgust", (-1, 1))):
            clip = f"{subject}/{subject}_{label}"
            _synth_clip(rec / clip, rng, direction)
            good.append(f"{subject},{clip},0,3,6,{label},4+L7,30,7")
    garbage = [
        "s01,s01/s01_happiness,abc,3,6,happiness,,30,7",  # non-numeric onset
        "s01,s01/s01_happiness,6,3,0,happiness,,30,7",  # onset after offset
        "s01,s01/s01_surprise,inf,3,6,surprise,,30,7",  # infinite onset
        "s01,s01/s01_surprise,1e400,3,6,surprise,,30,7",  # overflows to inf
        "s02,s02/s02_surprise,0,3,6,surprise,,-5,7",  # negative fps
        "s02,s02/s02_surprise,0,3,6,surprise,,nan,7",  # NaN fps
        "s02,s02/s02_disgust,0,3,6,disgust,,inf,7",  # infinite fps
        "s02,s02/nowhere,0,3,6,disgust,,30,7",  # clip folder missing
        "s02,s02/s02_disgust,0,3,60,disgust,,30,7",  # offset frame missing
        ",,,,,,,,",  # all blank
        "just some text without commas",
        "s01,s01/s01_disgust,0,3,6,,,30,7",  # no emotion
        "s01,s01/s01_disgust,0,3,6,disgust,,30,7,extra,cells,here",  # too many cells (duplicate of a good clip)
        "s01,s01/s01_happiness,0,3",  # too few cells
        "s02,s02/s02_happiness,0,3,6,happiness\x00,,30,7",  # NUL byte
    ]
    rec.mkdir(parents=True, exist_ok=True)
    text = "\n".join([",".join(SYNTH_HEADER), *good, *garbage]) + "\n"
    latin1 = "s02,s02/s02_surprise,0,3,6,surprisé,,30,7\n".encode("latin-1")  # not UTF-8
    (rec / "annotations.csv").write_bytes(text.encode("utf-8") + latin1)
    made["bad_annotations"] = root

    root = out / "binary_annotations"
    (root / "recognition").mkdir(parents=True, exist_ok=True)
    junk = np.random.default_rng(2).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    (root / "recognition" / "annotations.csv").write_bytes(junk)
    made["binary_annotations"] = root

    made.update(_sheets(out))
    return made


def _sheets(out: Path) -> dict[str, Path]:
    import datetime

    from openpyxl import Workbook

    header: list[object] = ["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Action Units",
                            "Estimated Emotion"]
    rows: list[list[object]] = [
        header,
        [1, "EP01_01", 10, 13, 16, "4+L7", "disgust"],  # the good row
        [1, "EP01_02", float("inf"), 13, 16, "4", "disgust"],
        [1, "EP01_03", float("nan"), 13, 16, "4", "disgust"],
        [1, "EP01_04", 10, 13, "1e400", "4", "disgust"],
        [1, "EP01_05", datetime.datetime(2014, 5, 8), 13, 16, "4", "disgust"],
        [1, "EP01_06", True, 13, 16, "4", "disgust"],
        [1, "EP01_07", "=A1+1", 13, 16, "4", "disgust"],
        [1, "EP01_08", 10, 13, 10**30, "4", "disgust"],
        [1, "EP01_09", -10, 13, 16, "4", "disgust"],
        [None, None, None, None, None, None, "disgust"],
        ["sub", "EP01_10", 10, 13, 16, float("nan"), 42],
    ]
    made: dict[str, Path] = {}
    root = out / "xlsx_bad_cells"
    (root / "Cropped" / "sub01").mkdir(parents=True, exist_ok=True)
    clip = root / "Cropped" / "sub01" / "EP01_01"
    clip.mkdir(exist_ok=True)
    base = np.random.default_rng(3).integers(60, 200, (48, 48, 3), dtype=np.uint8)
    for n in range(10, 17):
        cv2.imwrite(str(clip / f"reg_img{n}.jpg"), base)
    wb = Workbook()
    ws = wb.active
    for row in rows:
        ws.append(row)
    sheet = root / "CASME2-coding-20140508.xlsx"
    wb.save(sheet)
    made["xlsx_bad_cells"] = root

    root = out / "corrupt_xlsx"
    root.mkdir(exist_ok=True)
    (root / sheet.name).write_bytes(_invert_runs(sheet.read_bytes(), start=0.3, stop=0.7, runs=6, length=64))
    made["corrupt_xlsx"] = root
    return made


# --- the corpus --------------------------------------------------------------------------------------


def make_bad_inputs(
    out_dir: str | Path,
    *,
    good_video: str | Path | None = None,
    face_model: str | Path | None = None,
    annotations: str | Path | None = None,
    model: str | Path | None = None,
) -> dict[str, Path]:
    """Write every case of :data:`CASES` under ``out_dir``; returns ``{name: path}``.

    ``good_video``: a clip with one face (default: the cached synthetic clip, made with ``face_model``);
    ``annotations``: its ``annotations.csv`` (default: beside it) to place the face-leaves gap inside a
    micro-expression; ``model``: a folder with model.pt / model.onnx / model.card.json (default: a random
    dual-phase model made here, which needs torch). ``face_model`` also checks the face / no-face cases.
    """
    from realtime.face_model import resolve_face_model

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    face = resolve_face_model(face_model)
    if good_video is None:
        from training.demo import synthetic_video

        video, notes = synthetic_video(seconds=6.0, fps=30.0, seed=3, face_model=face)
        good_video, annotations = video, annotations or notes
    good = Path(good_video)
    notes_path = Path(annotations) if annotations is not None else good.parent / "annotations.csv"
    made = _videos(out, good, notes_path)
    _check_faces(made, face)
    made.update(_models(out, _source_model(out, Path(model) if model is not None else None)))
    made.update(_annotations(out))
    assert set(made) == set(CASES), set(made) ^ set(CASES)
    return {name: made[name] for name in CASES}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("out_dir", type=Path, help="folder to write the corpus into (created)")
    p.add_argument("--video", type=Path, help="a good clip with one face (default: the synthetic demo clip)")
    p.add_argument("--annotations", type=Path, help="its annotations.csv (default: beside the clip)")
    p.add_argument("--model", type=Path, help="folder with model.pt, model.onnx, model.card.json "
                   "(default: a random dual-phase model made here)")
    p.add_argument("--face-model", type=Path, help="face_landmarker.task (default: $MER_FACE_MODEL, user cache)")
    args = p.parse_args(argv)
    from realtime.face_model import FaceModelError

    try:
        made = make_bad_inputs(args.out_dir, good_video=args.video, face_model=args.face_model,
                               annotations=args.annotations, model=args.model)
    except FaceModelError as exc:
        print(f"make_bad_inputs: error: {exc}", file=sys.stderr)
        return 2
    width = max(map(len, made))
    for name, path in made.items():
        print(f"{name:<{width}}  {path}\n{'':<{width}}  {CASES[name]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

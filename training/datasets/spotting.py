"""Long videos annotated for spotting: CAS(ME)^2, SAMM long videos and the project's own ``annotations.csv``.

:func:`read_spotting_dataset` gives one :class:`LongVideo` per video — where its frames are (a video file or a
folder of numbered images), its fps, its person and its annotated intervals — so the spotter trainer needs
no per-dataset code. Intervals are always 0-based frame indices from the video's first frame, inclusive.

Conventions of the releases (checked against public loaders of both workbooks, e.g. the MEGC spotting code):

- **CAS(ME)^2** (``CAS(ME)^2code_final.xlsx``, 30 fps). First sheet, no header: participant number, video
  name + expression number (``disgust1_1``), onset, apex, offset, AUs, estimated emotion, type
  (``micro-expression`` / ``macro-expression``), self-reported emotion. Sheet "naming rule1" maps the
  participant (3rd column) to the folder number (1st: 1 → 15, i.e. ``s15``), "naming rule2" the video name
  (2nd column) to its code (1st: ``disgust1`` → ``0101``); without them (a CSV export) the release's own
  mappings are used. Frames: ``rawpic/s15/15_0101disgustingteeth/img1.jpg …`` or videos
  ``rawvideo/s15/15_0101disgustingteeth.avi``. Sheet frame numbers are 1-based (``img1`` = frame 1).
- **SAMM long videos** (``SAMM_LongVideos_V3_Release.xlsx``, 200 fps): preamble rows, then a header found by
  content (Subject, Filename, Inducement Code, Onset, Apex, Offset, Duration, Type, Action Units, Notes).
  ``Filename`` ``006_1_2`` is the 2nd expression of video ``006_1``, whose frames are
  ``SAMM_longvideos/006_1/006_1_0001.jpg …``; sheet numbers are the numbers in the file names.
- **csv**: ``annotations.csv`` (as ``mer-synth`` and ``mer-synth onto`` write it): ``video, subject, onset,
  apex, offset, kind`` + optional ``fps, label, aus, path, n_frames``; 0-based indices; the video is
  ``path`` (relative to the CSV) or ``<video>.<ext>`` / a frame folder ``<video>/`` beside it.

For frame folders, ``first_frame`` is the lowest number in the file names (1 for ``img1.jpg``); for video
files it is the sheet's numbering (1 for CAS(ME)^2, 0 for csv). A 0 (in a 1-based sheet), ``-1``, ``/`` or
blank apex becomes the interval's midpoint (counted in ``notes``); such an offset skips the row.
"""

from __future__ import annotations

import csv
import fnmatch
import logging
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.datasets.base import DatasetError, RowError, Skipped, index_frames, parse_frame
from training.datasets.classes import normalize_emotion

__all__ = [
    "CASME2_LONG_FPS",
    "SAMM_LONG_FPS",
    "SPOT_KINDS",
    "VIDEO_EXTENSIONS",
    "LongVideo",
    "SpotDataset",
    "SpotInterval",
    "read_spotting_dataset",
]

log = logging.getLogger(__name__)

CASME2_LONG_FPS = 30.0
SAMM_LONG_FPS = 200.0
CSV_DEFAULT_FPS = 30.0  # a csv row without fps, on a frame folder (a video file's own rate is used otherwise)
SPOT_KINDS = ("auto", "casme2-long", "samm-long", "csv")
VIDEO_EXTENSIONS = (".avi", ".mp4", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv")

# The CAS(ME)^2 release's naming sheets, used when the workbook lacks them (e.g. the annotations as CSV).
_CASME2_PARTICIPANT_FOLDER = {1: 15, 2: 16, 3: 19, 4: 20, 5: 21, 6: 22, 7: 23, 8: 24, 9: 25, 10: 26, 11: 27,
                              12: 29, 13: 30, 14: 31, 15: 32, 16: 33, 17: 34, 18: 35, 19: 36, 20: 37, 21: 38,
                              22: 40}
_CASME2_VIDEO_CODES = {"disgust1": "0101", "disgust2": "0102", "anger1": "0401", "anger2": "0402",
                       "happy1": "0502", "happy2": "0503", "happy3": "0505", "happy4": "0507", "happy5": "0508"}
_CASME2_FOLDERS = ("rawpic", "rawvideo", "cropped", ".")  # searched in this order: full frames first
_SAMM_FOLDERS = ("SAMM_longvideos", "SAMM_LongVideos", "SAMM_longvideos_crop", ".")

_PATTERNS: dict[str, tuple[str, ...]] = {
    "csv": ("annotations.csv", "spotting/annotations.csv"),  # exact paths: recognition/annotations.csv is not one
    "casme2-long": ("*code_final*.xlsx", "*code_final*.csv"),
    "samm-long": ("*longvideos*.xlsx", "*longvideos*.csv"),
}
_WHAT = {"csv": "annotations.csv", "casme2-long": "CAS(ME)^2 (*code_final*.xlsx)",
         "samm-long": "SAMM long videos (*LongVideos*.xlsx)"}
_HINTS = {
    "csv": "each row's video must be <video>.avi/.mp4 or a frame folder <video>/ beside the csv (or set `path`)",
    "casme2-long": "videos are looked for as rawpic/s15/15_0101*/img1.jpg or rawvideo/s15/15_0101*.avi",
    "samm-long": "videos are looked for as SAMM_longvideos/006_1/006_1_0001.jpg …",
}


@dataclass(frozen=True)
class SpotInterval:
    """One annotated expression: 0-based inclusive frame indices from the video's first frame."""

    onset: int
    apex: int  # the midpoint when the sheet has none
    offset: int
    kind: str  # "micro" | "macro"
    label: str = ""  # emotion, if given
    aus: str = ""  # action units as written, if given


@dataclass(frozen=True)
class LongVideo:
    """A long video and its annotated intervals (sorted by onset)."""

    video: str  # unique within the dataset, e.g. "s15/15_0101" or "006_1"
    subject: str  # person id for leave-one-person-out folds
    path: Path  # a video file or a folder of numbered frame images
    fps: float
    intervals: tuple[SpotInterval, ...]
    first_frame: int = 0  # the dataset's number for the first frame: 0-based index = number - first_frame
    n_frames: int | None = None  # frames in the video when known without decoding (frame folders, csv n_frames)

    @property
    def is_frame_folder(self) -> bool:
        return self.path.is_dir()


@dataclass
class SpotDataset:
    """A read spotting dataset: usable videos, skipped rows (with reasons) and counted notes."""

    name: str  # "casme2-long" | "samm-long" | "csv"
    root: Path
    videos: list[LongVideo]
    skipped: list[Skipped]
    notes: dict[str, int] = field(default_factory=dict)  # e.g. "apex missing (midpoint used)": 3
    annotation: Path | None = None

    @property
    def subjects(self) -> tuple[str, ...]:
        return tuple(sorted({v.subject for v in self.videos}))

    def skipped_counts(self) -> dict[str, int]:
        return dict(Counter(s.kind for s in self.skipped))

    def summary(self) -> dict[str, Any]:
        """JSON-ready account for reports."""
        intervals = [i for v in self.videos for i in v.intervals]
        return {
            "dataset": self.name,
            "root": str(self.root),
            "annotation": str(self.annotation) if self.annotation else None,
            "videos": len(self.videos),
            "subjects": len(self.subjects),
            "intervals": dict(Counter(i.kind for i in intervals)),
            "skipped": self.skipped_counts(),
            "skipped_rows": [{"row": s.row, "video": s.clip, "kind": s.kind, "detail": s.detail}
                             for s in self.skipped],
            "notes": dict(self.notes),
        }


# --- one row → one interval ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Place:
    """Where a row's video is and how it numbers its frames."""

    video: str
    subject: str
    path: Path
    fps: float
    first_frame: int
    last_frame: int | None  # highest valid number, when known
    n_frames: int | None
    gaps: bool = False  # a frame folder whose numbers are not contiguous


def _text(value: object) -> str:
    """A cell as text: 4.0 → '4', None → ''."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _kind(value: object) -> str:
    text = _text(value).lower()
    if text.startswith("micro"):  # "micro", "micro-expression", SAMM's "Micro - 1/2"
        return "micro"
    if text.startswith("macro"):
        return "macro"
    raise RowError("unknown type", f"type is {value!r} (expected micro or macro)")


def _interval(cells: Mapping[str, Any], place: _Place) -> tuple[SpotInterval, bool]:
    """Validate one row's frames against the video's numbering: (interval, apex was missing), or raises
    :class:`RowError` with the reason."""
    kind = _kind(cells.get("type"))
    first = place.first_frame
    on = parse_frame(cells.get("onset"), what="onset")
    off = parse_frame(cells.get("offset"), what="offset", optional=True)
    assert on is not None
    if off is None or off < first:  # blank, '/', -1, or 0 in a 1-based sheet
        raise RowError("missing offset", f"offset is {cells.get('offset')!r}")
    if on < first:
        raise RowError("frame before the first", f"onset {on} < the first frame's number {first}")
    if on > off:
        raise RowError("onset after offset", f"onset {on} > offset {off}")
    if place.last_frame is not None and off > place.last_frame:
        raise RowError("beyond the video's end", f"offset {off} > last frame {place.last_frame} of {place.path}")
    ap = parse_frame(cells.get("apex"), what="apex", optional=True)
    missing = ap is None or ap < first
    if ap is None or missing:
        ap = (on + off) // 2
    elif not on <= ap <= off:
        raise RowError("apex outside onset..offset", f"apex {ap} not in {on}..{off}")
    label = normalize_emotion(cells.get("emotion")) if _text(cells.get("emotion")) else ""
    return SpotInterval(on - first, ap - first, off - first, kind, label, _text(cells.get("aus"))), missing


class _Collector:
    """Groups validated intervals by video; rows are skipped, never fatal."""

    def __init__(self) -> None:
        self.places: dict[str, _Place] = {}
        self.intervals: dict[str, list[SpotInterval]] = {}
        self.skipped: list[Skipped] = []
        self.notes: Counter[str] = Counter()

    def skip(self, row: int, video: str, exc: RowError) -> None:
        self.skipped.append(Skipped(row, video, exc.kind, exc.detail))

    def add(self, row: int, cells: Mapping[str, Any], place: _Place, *, name: str = "") -> None:
        """Validate and keep one row; ``name`` is what a skip reports (default: the video id)."""
        try:
            known = self.places.get(place.video)
            if known is not None and (known.path, known.fps, known.subject) != (place.path, place.fps, place.subject):
                raise RowError("conflicting video", f"{place.video} was {known.path} at {known.fps:g} fps "
                                                    f"(subject {known.subject}); this row says {place.path} at "
                                                    f"{place.fps:g} fps (subject {place.subject})")
            interval, apex_missing = _interval(cells, place)
            if interval in self.intervals.get(place.video, []):
                raise RowError("duplicate interval", f"{interval.onset}..{interval.offset} listed twice")
        except RowError as exc:
            self.skip(row, name or place.video, exc)
            return
        if known is None:
            self.places[place.video] = place
            self.intervals[place.video] = []
            if place.gaps:
                self.notes["frame folders with gaps in their numbering"] += 1
        self.intervals[place.video].append(interval)
        if apex_missing:
            self.notes["apex missing (midpoint used)"] += 1

    def finish(self, name: str, root: Path, annotation: Path) -> SpotDataset:
        videos = [
            LongVideo(video=p.video, subject=p.subject, path=p.path, fps=p.fps,
                      intervals=tuple(sorted(self.intervals[v], key=lambda i: (i.onset, i.offset, i.kind))),
                      first_frame=p.first_frame, n_frames=p.n_frames)
            for v, p in sorted(self.places.items())
        ]
        dataset = SpotDataset(name, root, videos, self.skipped, dict(self.notes), annotation)
        if not videos:
            counts = ", ".join(f"{k} {n}" for k, n in dataset.skipped_counts().items()) or "the sheet has no rows"
            raise DatasetError(f"{name}: no usable annotation row in {annotation} ({counts}); {_HINTS[name]}")
        n = sum(len(v.intervals) for v in videos)
        log.info("%s: %d intervals in %d videos of %d subjects (%s)", name, n, len(videos),
                 len(dataset.subjects), annotation)
        for kind, count in dataset.skipped_counts().items():
            log.warning("%s: skipped %d row(s): %s", name, count, kind)
        for note, count in dataset.notes.items():
            log.info("%s: %d: %s", name, count, note)
        return dataset


# --- where the videos are -----------------------------------------------------------------------------


def _frame_place(folder: Path, *, video: str, subject: str, fps: float) -> _Place | None:
    """A place for a folder of numbered frames, None when ``folder`` holds none."""
    numbers = index_frames(folder)
    if not numbers:
        return None
    lo, hi = min(numbers), max(numbers)
    return _Place(video, subject, folder, fps, lo, hi, len(numbers), gaps=hi - lo + 1 != len(numbers))


def _is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS and path.is_file()


def _children(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError:
        return []


# --- reading tables -----------------------------------------------------------------------------------

Rows = list[tuple[int, tuple[Any, ...]]]  # (1-based row number, cells)


def _blank(values: Sequence[Any]) -> bool:
    return all(v is None or str(v).strip() == "" for v in values)


def _read_tables(path: Path) -> list[tuple[str, Rows]]:
    """(sheet name, non-blank rows) for every sheet of a workbook, or the one table of a CSV file."""
    if path.suffix.lower() == ".csv":
        try:
            with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
                rows = [(n, tuple(r)) for n, r in enumerate(csv.reader(handle), start=1) if not _blank(r)]
        except OSError as exc:
            raise DatasetError(f"cannot read annotation file {path}: {exc.strerror or exc}") from None
        return [(path.stem, rows)]
    try:
        from openpyxl import load_workbook
    except ImportError as exc:  # pragma: no cover - dependency of the project
        raise DatasetError("reading .xlsx annotation files needs openpyxl (pip install openpyxl)") from exc
    try:
        workbook = load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many types for a broken file
        raise DatasetError(f"cannot open annotation workbook {path}: {exc}") from None
    try:
        return [(sheet.title, [(n, tuple(r)) for n, r in enumerate(sheet.iter_rows(values_only=True), start=1)
                               if r is not None and not _blank(r)])
                for sheet in workbook.worksheets]
    finally:
        workbook.close()


def _norm(value: object) -> str:
    return re.sub(r"[^a-z0-9]", "", _text(value).lower())


# canonical column → accepted header spellings (lower-case, letters and digits only), earliest first
_ALIASES: dict[str, tuple[str, ...]] = {
    "video": ("video", "videoname", "videocode", "filename", "clip", "name"),
    "subject": ("subject", "participant", "sub", "subjectid", "participantnumber", "person"),
    "onset": ("onset", "onsetframe", "startframe", "start"),
    "apex": ("apex", "apexframe", "apexframe1"),
    "offset": ("offset", "offsetframe", "endframe", "end"),
    "type": ("type", "kind", "expressiontype"),
    "aus": ("aus", "au", "actionunits", "actionunit"),
    "emotion": ("label", "emotion", "estimatedemotion", "extractedemotion", "emotions"),
    "fps": ("fps", "framerate"),
    "path": ("path",),
    "n_frames": ("nframes", "frames", "framecount"),
}


def _find_header(rows: Rows, required: Sequence[str], *, search: int = 30) -> tuple[int, dict[str, int]] | None:
    """(index in ``rows``, canonical column → position) of the first row naming every ``required`` column."""
    for h, (_, values) in enumerate(rows[:search]):
        names = [_norm(v) for v in values]
        columns: dict[str, int] = {}
        for canon, aliases in _ALIASES.items():
            for alias in aliases:
                if alias in names:
                    columns[canon] = names.index(alias)
                    break
        if all(c in columns for c in required):
            return h, columns
    return None


def _cells(values: Sequence[Any], columns: Mapping[str, int]) -> dict[str, Any]:
    return {c: (values[i] if i < len(values) else None) for c, i in columns.items()}


# --- CAS(ME)^2 ----------------------------------------------------------------------------------------

_CASME2_POSITIONS = {"subject": 0, "video": 1, "onset": 2, "apex": 3, "offset": 4, "aus": 5, "emotion": 6,
                     "type": 7}


def _int_like(value: object) -> int | None:
    text = _text(value)
    return int(text) if re.fullmatch(r"\d+", text) else None


def _casme2_naming(tables: Sequence[tuple[str, Rows]]) -> tuple[dict[int, int], dict[str, str]]:
    """(participant → folder number, video name → code) from the naming sheets, recognised by content."""
    participants: dict[int, int] = {}
    codes: dict[str, str] = {}
    for _, rows in tables:
        for _, values in rows:
            cells = list(values) + [None] * 3
            c0, c1, c2 = _int_like(cells[0]), _text(cells[1]), _int_like(cells[2])
            if c0 is not None and re.fullmatch(r"[A-Za-z]{2,}\d*", c1):  # naming rule2: 0101 | disgust1 | …
                codes[c1.lower()] = f"{c0:04d}"
            elif c2 is not None:  # naming rule1: 15 | s15 | 1 (folder number, folder, participant)
                match = re.fullmatch(r"[sS]\s*(\d+)", c1) or re.fullmatch(r"[sS]?\s*(\d+)", _text(cells[0]))
                if match:
                    participants[c2] = int(match.group(1))
    return participants, codes


def _casme2_subject(value: object, participants: Mapping[int, int]) -> tuple[str, str]:
    """(folder 's15', number '15') from a participant number (via the naming sheet) or an 's15' id."""
    text = _text(value)
    match = re.fullmatch(r"[sS]\s*0*(\d+)", text)
    if match:
        number = int(match.group(1))
    elif re.fullmatch(r"\d+", text):
        if int(text) not in participants:
            raise RowError("unknown subject", f"participant {text} is not in the naming sheet")
        number = participants[int(text)]
    else:
        raise RowError("unknown subject", f"participant is {value!r}")
    return f"s{number:02d}", f"{number:02d}"


def _casme2_code(value: object, codes: Mapping[str, str]) -> str:
    """The 4-digit video code from ``disgust1_1`` (via the naming sheet), ``0101``, ``101`` or ``0101_2``."""
    head = _text(value).split("_")[0].strip()
    if re.fullmatch(r"\d{1,4}", head):
        return f"{int(head):04d}"
    if head.lower() in codes:
        return codes[head.lower()]
    raise RowError("unknown video", f"video {_text(value)!r} is not in the naming sheet")


def _casme2_locate(bases: Sequence[Path], folder: str, number: str, code: str) -> _Place:
    video = f"{folder}/{number}_{code}"
    prefix = re.compile(rf"{re.escape(number)}_{re.escape(code)}(?!\d)")
    for base in bases:
        for sub in (base / name for name in _CASME2_FOLDERS):
            for subject_dir in (sub / folder, sub / folder.upper(), sub / number):
                for entry in _children(subject_dir):
                    if not prefix.match(entry.name):
                        continue
                    if entry.is_dir():
                        place = _frame_place(entry, video=video, subject=folder, fps=CASME2_LONG_FPS)
                        if place is not None:
                            return place
                    elif _is_video(entry):
                        return _Place(video, folder, entry, CASME2_LONG_FPS, 1, None, None)
    raise RowError("missing video", f"no frame folder or video {folder}/{number}_{code}* under "
                                    f"{', '.join(str(b / n) for b in bases for n in _CASME2_FOLDERS[:2])}")


def _read_casme2(annotation: Path, bases: Sequence[Path], out: _Collector) -> None:
    tables = _read_tables(annotation)
    # the codes are the first sheet not named like "naming rule1/2"; the naming sheets are recognised by content
    code_sheet = next((t for t in tables if not re.search(r"nam|rule", t[0], re.IGNORECASE)), tables[0])
    rows = code_sheet[1]
    participants, codes = _casme2_naming([t for t in tables if t is not code_sheet])
    participants = participants or dict(_CASME2_PARTICIPANT_FOLDER)
    codes = codes or dict(_CASME2_VIDEO_CODES)
    header = _find_header(rows, ("onset", "offset"), search=10)
    if header is not None:
        h, columns = header
        missing = [c for c in ("subject", "video", "type") if c not in columns]
        if missing:
            raise DatasetError(f"{annotation}: header row {rows[h][0]} lacks column(s) {missing}")
        rows = rows[h + 1 :]
    else:
        columns = _CASME2_POSITIONS
        if rows and max(len(v) for _, v in rows) < 8:
            raise DatasetError(f"{annotation}: expected 8+ columns (participant, video, onset, apex, offset, AUs, "
                               "emotion, type) or a header row naming them")
    places: dict[tuple[str, str], _Place | RowError] = {}
    for row, values in rows:
        cells = _cells(values, columns)
        video = _text(cells.get("video"))
        try:
            folder, number = _casme2_subject(cells.get("subject"), participants)
            code = _casme2_code(cells.get("video"), codes)
            video = f"{folder}/{number}_{code}"
            if (folder, code) not in places:
                try:
                    places[folder, code] = _casme2_locate(bases, folder, number, code)
                except RowError as exc:
                    places[folder, code] = exc
            place = places[folder, code]
            if isinstance(place, RowError):
                raise place
        except RowError as exc:
            out.skip(row, video, exc)
            continue
        out.add(row, cells, place)


# --- SAMM long videos ---------------------------------------------------------------------------------


def _samm_locate(bases: Sequence[Path], subject: str, video: str) -> _Place:
    for base in bases:
        for sub in (base / name for name in _SAMM_FOLDERS):
            for folder in (sub / video, sub / subject / video):
                place = _frame_place(folder, video=video, subject=subject, fps=SAMM_LONG_FPS)
                if place is not None:
                    return place
            for ext in VIDEO_EXTENSIONS:
                if _is_video(sub / f"{video}{ext}"):
                    return _Place(video, subject, sub / f"{video}{ext}", SAMM_LONG_FPS, 1, None, None)
    raise RowError("missing video", f"no frame folder {video}/ under "
                                    f"{', '.join(str(b / _SAMM_FOLDERS[0]) for b in bases)}")


def _read_samm(annotation: Path, bases: Sequence[Path], out: _Collector) -> None:
    required = ("video", "onset", "offset", "type")
    found = None
    for _, rows in _read_tables(annotation):
        found = _find_header(rows, required)
        if found is not None:
            break
    if found is None:
        raise DatasetError(f"{annotation}: no header row with Filename, Onset, Offset and Type in the first 30 rows "
                           "of any sheet")
    h, columns = found
    places: dict[str, _Place | RowError] = {}
    for row, values in rows[h + 1 :]:
        cells = _cells(values, columns)
        filename = _text(cells.get("video"))
        parts = filename.split("_")
        try:
            if len(parts) < 2 or not all(parts[:2]):
                raise RowError("bad filename", f"Filename {filename!r} is not <subject>_<video>_<n>")
            video = "_".join(parts[:2])
            subject = _text(cells.get("subject")) or parts[0]
            subject = f"{int(subject):03d}" if re.fullmatch(r"\d+", subject) else subject
            if video not in places:
                try:
                    places[video] = _samm_locate(bases, subject, video)
                except RowError as exc:
                    places[video] = exc
            place = places[video]
            if isinstance(place, RowError):
                raise place
        except RowError as exc:
            out.skip(row, filename, exc)
            continue
        out.add(row, cells, place, name=filename)


# --- the project's csv --------------------------------------------------------------------------------


def _video_fps(path: Path) -> float | None:
    """A video file's own frame rate, None when it reports none."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0) if cap.isOpened() else 0.0
    finally:
        cap.release()
    return fps if math.isfinite(fps) and 0 < fps <= 1000 else None


def _csv_locate(folder: Path, video: str, subject: str, cells: Mapping[str, Any], notes: Counter[str],
                probed: dict[Path, float | None]) -> _Place:
    given = _text(cells.get("path"))
    candidates = [folder / given] if given else [folder / f"{video}{ext}" for ext in VIDEO_EXTENSIONS] + [folder / video]
    path = next((p for p in candidates if p.exists()), None)
    if path is None:
        raise RowError("missing video", f"{candidates[0]} not found" if given else
                       f"no {video}.avi/.mp4/… or frame folder {video}/ in {folder}")
    fps_text = _text(cells.get("fps"))
    fps: float | None = None
    if fps_text:
        try:
            fps = float(fps_text)
        except ValueError:
            fps = -1.0
        if not (math.isfinite(fps) and fps > 0):
            raise RowError("bad fps", f"fps is {fps_text!r}")
    n_text = _text(cells.get("n_frames"))
    n_frames = int(n_text) if re.fullmatch(r"\d+", n_text) and int(n_text) > 0 else None
    if path.is_dir():
        numbers = index_frames(path)
        if not numbers:
            raise RowError("missing video", f"{path} holds no numbered frame images")
        n_frames = len(numbers)
    elif not _is_video(path):
        raise RowError("missing video", f"{path} is not a video file ({', '.join(VIDEO_EXTENSIONS)}) or a folder")
    if fps is None:
        if path not in probed:
            probed[path] = _video_fps(path) if path.is_file() else None
            if probed[path] is None:
                notes[f"videos without fps (assumed {CSV_DEFAULT_FPS:g})"] += 1
        fps = probed[path] or CSV_DEFAULT_FPS
    return _Place(video, subject, path, fps, 0, n_frames - 1 if n_frames else None, n_frames)


def _read_csv(annotation: Path, out: _Collector) -> None:
    _, rows = _read_tables(annotation)[0]
    if not rows:
        raise DatasetError(f"{annotation} is empty: expected a header video, subject, onset, apex, offset, kind")
    names = [_norm(v) for v in rows[0][1]]
    needed = {"video": "video", "onset": "onset", "offset": "offset", "type": "kind"}
    found = _find_header(rows, tuple(needed), search=1)
    if found is None:
        missing = [shown for canon, shown in needed.items() if not set(_ALIASES[canon]) & set(names)]
        raise DatasetError(f"{annotation}: header lacks column(s) {missing} (needs video, subject, onset, apex, "
                           "offset, kind; optional fps, label, aus, path, n_frames)")
    _, columns = found
    probed: dict[Path, float | None] = {}
    for row, values in rows[1:]:
        cells = _cells(values, columns)
        video = _text(cells.get("video"))
        try:
            if not video:
                raise RowError("missing video", "the video cell is blank")
            place = _csv_locate(annotation.parent, video, _text(cells.get("subject")) or video, cells, out.notes,
                                probed)
        except RowError as exc:
            out.skip(row, video, exc)
            continue
        out.add(row, cells, place)


# --- entry point --------------------------------------------------------------------------------------


def _matches(root: Path, kind: str) -> list[Path]:
    """Annotation files of ``kind`` in ``root`` (csv: exact paths; others: root or one folder below)."""
    if kind == "csv":
        return [root / p for p in _PATTERNS["csv"] if (root / p).is_file()]
    found: list[Path] = []
    for folder in [root, *(p for p in _children(root) if p.is_dir())]:
        for entry in _children(folder):
            name = entry.name.lower()
            if name.startswith("~$") or not entry.is_file():  # Excel lock files
                continue
            if any(fnmatch.fnmatch(name, pattern) for pattern in _PATTERNS[kind]):
                found.append(entry)
    # prefer a workbook to a CSV export, an "(Updated)" release to the original, then the last name
    return sorted(found, key=lambda p: (p.suffix.lower() == ".xlsx", "updated" in p.name.lower(), p.name))[::-1]


def _kind_of_file(path: Path) -> str:
    name = path.name.lower()
    for kind in ("samm-long", "casme2-long"):
        if any(fnmatch.fnmatch(name, pattern) for pattern in _PATTERNS[kind]):
            return kind
    if path.suffix.lower() == ".csv":
        return "csv"
    raise DatasetError(f"cannot tell which dataset {path} is: pass kind='casme2-long', 'samm-long' or 'csv'")


def _annotation(root: Path, kind: str) -> tuple[str, Path]:
    if root.is_file():
        return (_kind_of_file(root) if kind == "auto" else kind), root
    kinds = [k for k in _PATTERNS if k == kind or kind == "auto"]
    found = {k: files for k in kinds if (files := _matches(root, k))}
    if not found:
        expected = " or ".join(_WHAT[k] for k in kinds)
        raise DatasetError(f"no spotting annotation in {root}: expected {expected} (in the folder or one below)")
    if len(found) > 1:
        shown = "; ".join(f"{k}: {files[0]}" for k, files in found.items())
        raise DatasetError(f"{root} holds annotations of several datasets ({shown}); pass kind= or point at one")
    (chosen, files), = found.items()
    if len(files) > 1:
        log.info("%s: several annotation files, reading %s (others: %s)", chosen, files[0],
                 ", ".join(p.name for p in files[1:]))
    return chosen, files[0]


def read_spotting_dataset(root: str | Path, kind: str = "auto") -> SpotDataset:
    """Read a spotting dataset from ``root`` (its folder or its annotation file); ``kind`` is one of
    :data:`SPOT_KINDS` ("auto" tells by the annotation file found). Raises :class:`DatasetError` when nothing
    usable is there; bad rows are skipped with a reason (``SpotDataset.skipped``)."""
    if kind not in SPOT_KINDS:
        raise DatasetError(f"unknown spotting dataset kind {kind!r}; choose one of {list(SPOT_KINDS)}")
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(f"spotting data folder {root} does not exist")
    chosen, annotation = _annotation(root, kind)
    base = root if root.is_dir() else annotation.parent
    bases = list(dict.fromkeys([base, annotation.parent]))  # the sheet may sit one folder below the root
    out = _Collector()
    if chosen == "csv":
        _read_csv(annotation, out)
    elif chosen == "casme2-long":
        _read_casme2(annotation, bases, out)
    else:
        _read_samm(annotation, bases, out)
    return out.finish(chosen, base, annotation)


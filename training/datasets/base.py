"""What every dataset reader returns — annotated samples plus an honest account of what was left out.

Real annotation sheets are messy (missing apex, ``/`` cells, non-numeric frames, rows pointing at frames
that are not on disk). Readers never crash on a bad row: they skip it with a kind and a reason, and class
schemes drop emotions they do not cover with a count. Both end up in :class:`DatasetIndex` and the report.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from training.datasets.classes import ClassScheme, get_scheme, normalize_emotion

__all__ = [
    "FRAME_EXTENSIONS",
    "DatasetError",
    "DatasetIndex",
    "RowError",
    "Sample",
    "Skipped",
    "find_annotation",
    "find_frames_root",
    "finish_index",
    "index_frames",
    "make_sample",
    "parse_aus",
    "parse_frame",
    "read_annotated",
    "read_sheet",
    "subject_text",
]

log = logging.getLogger(__name__)

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


class DatasetError(RuntimeError):
    """A dataset cannot be read at all (no annotation file, no header, no frames folder)."""


class RowError(ValueError):
    """One annotation row is unusable; ``kind`` groups reasons for the report."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True)
class Sample:
    """One annotated micro-expression clip.

    ``onset/apex/offset`` are in the dataset's own frame numbering; ``frames`` are the files for the
    frame numbers ``frame_numbers`` (onset..offset, in order). ``apex`` is None when the sheet has none
    (it is then estimated from motion when the DIs are built). ``label`` is the class in ``scheme``.
    """

    dataset: str
    subject: str
    clip: str  # unique within the dataset, e.g. "sub01/EP02_01f"
    emotion: str  # normalised annotated emotion
    onset: int
    apex: int | None
    offset: int
    fps: float
    frames: tuple[Path, ...]
    frame_numbers: tuple[int, ...]
    aus: tuple[str, ...] = ()
    label: str | None = None
    row: int = 0  # source row (1-based sheet/CSV line) for messages
    aligned: bool = False  # frames are already aligned crops (synthetic set)

    @property
    def key(self) -> str:
        return f"{self.dataset}:{self.clip}"


@dataclass(frozen=True)
class Skipped:
    """A row a reader could not use."""

    row: int
    clip: str
    kind: str
    detail: str


@dataclass(frozen=True)
class DatasetIndex:
    """A read dataset: usable samples, skipped rows, emotions dropped by the scheme and notes."""

    name: str
    root: Path
    samples: tuple[Sample, ...]
    skipped: tuple[Skipped, ...] = ()
    dropped: Mapping[str, int] = field(default_factory=dict)  # emotion → samples dropped by the scheme
    scheme: str | None = None
    labels: tuple[str, ...] = ()
    notes: Mapping[str, int] = field(default_factory=dict)  # e.g. "apex missing (estimated from motion)"

    @property
    def subjects(self) -> tuple[str, ...]:
        return tuple(sorted({s.subject for s in self.samples}))

    def skipped_counts(self) -> dict[str, int]:
        return dict(Counter(s.kind for s in self.skipped))

    def summary(self) -> dict[str, Any]:
        """JSON-ready account for reports."""
        return {
            "dataset": self.name,
            "root": str(self.root),
            "scheme": self.scheme,
            "labels": list(self.labels),
            "samples": len(self.samples),
            "subjects": len(self.subjects),
            "class_counts": dict(Counter(s.label or s.emotion for s in self.samples)),
            "skipped": self.skipped_counts(),
            "skipped_rows": [
                {"row": s.row, "clip": s.clip, "kind": s.kind, "detail": s.detail} for s in self.skipped
            ],
            "dropped": dict(self.dropped),
            "notes": dict(self.notes),
        }


# --- cell parsing -------------------------------------------------------------------------------------

_MISSING = {"", "/", "-", "?", "none", "nan", "n/a", "na"}


def parse_frame(value: object, *, what: str, optional: bool = False) -> int | None:
    """A frame number from a sheet cell (int, float like 46.0, or text). Missing markers (blank, ``/``,
    ``-``; negative numbers) give None when ``optional``; anything else unusable raises :class:`RowError`."""
    if value is None or (isinstance(value, str) and value.strip().lower() in _MISSING):
        if optional:
            return None
        raise RowError("non-numeric frame", f"{what} is blank or {value!r}")
    number: float
    if isinstance(value, bool):
        raise RowError("non-numeric frame", f"{what} is {value!r}")
    if isinstance(value, int | float):
        number = float(value)
    else:
        text = str(value).strip()
        try:
            number = float(text)
        except ValueError:
            raise RowError("non-numeric frame", f"{what} is {text!r}") from None
    if not math.isfinite(number) or number != int(number):  # NaN, infinite (1e400) or fractional
        raise RowError("non-numeric frame", f"{what} is {value!r}")
    if number < 0:
        if optional:
            return None
        raise RowError("non-numeric frame", f"{what} is negative ({int(number)})")
    return int(number)


_AU_TOKEN = re.compile(r"^(?:AU)?\s*([LRBTU])?\s*(?:AU)?\s*(\d+)\s*([A-E])?$", re.IGNORECASE)


def parse_aus(value: object) -> tuple[str, ...]:
    """Normalise an AU cell: ``'4+L7'`` → ``('AU4', 'AU7-L')``, ``'R10'`` → ``('AU10-R')``, ``'AU12B'`` → ``('AU12',)``.

    Side prefixes (L/R; B/T/U kept as-is) become a suffix, intensity letters are dropped, order is by AU
    number, duplicates removed. Unparseable tokens are ignored (AUs are metadata, never a reason to skip).
    """
    if value is None:
        return ()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    out: list[tuple[int, str]] = []
    for token in re.split(r"[+,;/&\s]+", str(value)):
        token = token.strip()
        if not token:
            continue
        match = _AU_TOKEN.match(token)
        if not match:
            continue
        side, number = match.group(1), int(match.group(2))
        name = f"AU{number}" + (f"-{side.upper()}" if side else "")
        if (number, name) not in out:
            out.append((number, name))
    return tuple(name for _, name in sorted(out))


# --- sheets -------------------------------------------------------------------------------------------

# canonical column → accepted header spellings (lower-case, letters and digits only)
_COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "subject": ("subject", "sub", "subjectid"),
    "filename": ("filename", "file", "clip", "name"),
    "onset": ("onsetframe", "onset"),
    "apex": ("apexframe", "apex", "apexframe1"),
    "offset": ("offsetframe", "offset"),
    "aus": ("actionunits", "actionunit", "aus", "au"),
    "emotion": ("estimatedemotion", "emotion", "emotions"),
}


def _norm_header(value: object) -> str:
    return re.sub(r"[^a-z0-9]", "", str(value if value is not None else "").lower())


def read_sheet(path: Path, *, header_search_rows: int = 50) -> list[tuple[int, dict[str, Any]]]:
    """Rows of the first worksheet that has a header row (one holding "Subject" and "Filename",
    found by content so preamble rows are skipped), as (sheet row number, canonical column → cell)."""
    try:
        from openpyxl import load_workbook
    except ImportError as exc:  # pragma: no cover - dependency of the project
        raise DatasetError("reading .xlsx annotation files needs openpyxl (pip install openpyxl)") from exc
    try:
        workbook = load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many types for a broken file
        raise DatasetError(f"cannot open annotation workbook {path}: {exc}") from None
    try:
        for sheet in workbook.worksheets:
            rows = list(sheet.iter_rows(values_only=True))
            for h, row in enumerate(rows[:header_search_rows]):
                names = [_norm_header(c) for c in row]
                if "subject" in names and "filename" in names:
                    columns: dict[str, int] = {}
                    for canon, aliases in _COLUMN_ALIASES.items():
                        for alias in aliases:  # earliest alias wins, then leftmost column
                            if alias in names:
                                columns[canon] = names.index(alias)
                                break
                    missing = [c for c in ("onset", "offset", "emotion") if c not in columns]
                    if missing:
                        raise DatasetError(f"{path}: header row {h + 1} lacks column(s) {missing}")
                    out = []
                    for r, values in enumerate(rows[h + 1 :], start=h + 2):
                        if values is None or all(v is None or str(v).strip() == "" for v in values):
                            continue
                        cells = {c: (values[i] if i < len(values) else None) for c, i in columns.items()}
                        out.append((r, cells))
                    return out
        raise DatasetError(f"{path}: no header row with 'Subject' and 'Filename' in the first {header_search_rows} rows")
    finally:
        workbook.close()


# --- frames on disk -----------------------------------------------------------------------------------

_TRAILING_DIGITS = re.compile(r"(\d+)$")


@lru_cache(maxsize=4096)
def _index_frames_cached(directory: str, mtime_ns: int) -> dict[int, Path]:
    frames: dict[int, Path] = {}
    for entry in Path(directory).iterdir():
        if entry.suffix.lower() not in FRAME_EXTENSIONS:
            continue
        match = _TRAILING_DIGITS.search(entry.stem)
        if match:
            frames.setdefault(int(match.group(1)), entry)
    return frames


def index_frames(directory: Path) -> dict[int, Path]:
    """Frame number → file for a clip folder; the number is the trailing digits of the file name
    (``reg_img46.jpg`` → 46, ``006_05562.jpg`` → 5562, ``000012.png`` → 12). Empty if no folder."""
    try:
        stat = directory.stat()
    except OSError:
        return {}
    if not directory.is_dir():
        return {}
    return dict(_index_frames_cached(str(directory), stat.st_mtime_ns))


def make_sample(
    *,
    dataset: str,
    row: int,
    subject: object,
    clip: str,
    emotion: object,
    onset: object,
    apex: object,
    offset: object,
    fps: float,
    clip_dir: Path | None,
    aus: object = None,
    aligned: bool = False,
    notes: Counter[str] | None = None,
) -> Sample:
    """Validate one annotation row against the frames on disk; raises :class:`RowError` with the reason.

    A missing apex (blank, ``/``, negative) or one outside onset..offset becomes None (estimated later
    from motion) and is noted; apex equal to onset or offset is kept as-is.
    """
    subject_text = "" if subject is None else str(subject).strip()
    if isinstance(subject, float) and subject.is_integer():
        subject_text = str(int(subject))
    if not subject_text or not clip:
        raise RowError("missing subject/filename", f"subject={subject!r} clip={clip!r}")
    emotion_text = normalize_emotion(emotion)
    if not emotion_text:
        raise RowError("missing emotion", "the emotion cell is blank")
    on = parse_frame(onset, what="onset")
    off = parse_frame(offset, what="offset")
    assert on is not None and off is not None
    if on > off:
        raise RowError("onset after offset", f"onset {on} > offset {off}")
    if on == off:
        raise RowError("empty window", f"onset == offset == {on}")
    ap = parse_frame(apex, what="apex", optional=True)
    if notes is not None and ap is None:
        notes["apex missing (estimated from motion)"] += 1
    if ap is not None and not on <= ap <= off:
        if notes is not None:
            notes["apex outside onset..offset (estimated from motion)"] += 1
        ap = None
    if clip_dir is None or not clip_dir.is_dir():
        raise RowError("missing frames", f"clip folder {clip_dir} not found")
    available = index_frames(clip_dir)
    numbers = tuple(n for n in sorted(available) if on <= n <= off)
    for needed, what in ((on, "onset"), (off, "offset")):
        if needed not in available:
            raise RowError("missing frames", f"{what} frame {needed} not in {clip_dir}")
    expected = off - on + 1
    if len(numbers) < expected and notes is not None:
        notes["clips with gaps in onset..offset frames"] += 1
    return Sample(
        dataset=dataset,
        subject=subject_text,
        clip=clip,
        emotion=emotion_text,
        onset=on,
        apex=ap,
        offset=off,
        fps=float(fps),
        frames=tuple(available[n] for n in numbers),
        frame_numbers=numbers,
        aus=parse_aus(aus),
        row=row,
        aligned=aligned,
    )


def merge_indices(indices: Sequence[DatasetIndex]) -> DatasetIndex:
    """Several read folders of one kind as one index: samples, skips and counts together. A subject that
    appears in two folders is one subject (its clips stay in the same fold); a clip listed in two folders is
    an error, since it would be trained and tested twice."""
    if not indices:
        raise DatasetError("no dataset folder given")
    if len(indices) == 1:
        return indices[0]
    first = indices[0]
    for other in indices[1:]:
        if other.labels != first.labels:
            raise DatasetError(f"{other.root}: classes {other.labels} differ from {first.root}'s {first.labels}")
    samples = [s for index in indices for s in index.samples]
    seen: dict[str, Path] = {}
    for index in indices:
        for s in index.samples:
            if s.clip in seen and seen[s.clip] != index.root:
                raise DatasetError(f"clip {s.clip} is in both {seen[s.clip]} and {index.root}; rename one set")
            seen[s.clip] = index.root
    dropped: Counter[str] = Counter()
    notes: Counter[str] = Counter()
    for index in indices:
        dropped.update(index.dropped)
        notes.update(index.notes)
    return DatasetIndex(
        name="+".join(dict.fromkeys(i.name for i in indices)),
        root=first.root,
        samples=tuple(samples),
        skipped=tuple(s for index in indices for s in index.skipped),
        dropped=dict(dropped),
        scheme=first.scheme,
        labels=first.labels,
        notes=dict(notes),
    )


def finish_index(
    name: str,
    root: Path,
    samples: Iterable[Sample],
    skipped: Sequence[Skipped],
    *,
    scheme: str | ClassScheme | None,
    notes: Mapping[str, int] | None = None,
) -> DatasetIndex:
    """Apply the class scheme (label kept samples, count dropped emotions), log a summary, and index."""
    kept: list[Sample] = []
    dropped: Counter[str] = Counter()
    labels: tuple[str, ...] = ()
    scheme_name = None
    if scheme is None:
        kept = list(samples)
    else:
        cls = get_scheme(scheme)
        scheme_name, labels = cls.name, cls.labels
        for sample in samples:
            label = cls.classify(sample.emotion)
            if label is None:
                dropped[sample.emotion] += 1
            else:
                kept.append(replace(sample, label=label))
    seen: set[str] = set()
    unique: list[Sample] = []
    duplicates: list[Skipped] = []
    for sample in kept:
        if sample.clip in seen:
            duplicates.append(Skipped(sample.row, sample.clip, "duplicate clip", "clip listed twice; first kept"))
            continue
        seen.add(sample.clip)
        unique.append(sample)
    index = DatasetIndex(
        name=name,
        root=root,
        samples=tuple(unique),
        skipped=tuple(skipped) + tuple(duplicates),
        dropped=dict(dropped),
        scheme=scheme_name,
        labels=labels,
        notes=dict(notes or {}),
    )
    log.info("%s: %d samples from %d subjects (%s)", name, len(index.samples), len(index.subjects), root)
    for kind, count in index.skipped_counts().items():
        log.warning("%s: skipped %d row(s): %s", name, count, kind)
    for emotion, count in sorted(index.dropped.items()):
        log.info("%s: dropped %d sample(s) of emotion %r (not in scheme %s)", name, count, emotion, scheme_name)
    for note, count in index.notes.items():
        log.info("%s: %d sample(s): %s", name, count, note)
    return index


def find_annotation(root: Path, patterns: Sequence[str], *, what: str) -> Path:
    """The annotation file under ``root`` (or one folder below) matching the first pattern that matches;
    ``root`` may also be the file itself. The newest name (sorted last) wins when several match."""
    if root.is_file():
        return root
    if not root.is_dir():
        raise DatasetError(f"{what}: data folder {root} does not exist")
    for pattern in patterns:
        found = sorted(root.glob(pattern)) or sorted(root.glob(f"*/{pattern}"))
        found = [p for p in found if not p.name.startswith("~$")]  # Excel lock files
        if found:
            return found[-1]
    raise DatasetError(f"{what}: no annotation file matching {list(patterns)} in {root} (or one folder below)")


def find_frames_root(base: Path, candidates: Sequence[str]) -> Path:
    """The first existing folder among ``base/<candidate>`` (checked in order), else ``base``."""
    for name in candidates:
        path = base / name
        if path.is_dir():
            return path
    return base


def subject_text(value: object, filename: str) -> str:
    """A subject cell as text (6.0 → '6'); blank → the clip name's prefix ('006_1_2' → '006')."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip() if value is not None else ""
    if not text and filename:
        return filename.split("_")[0]
    return text


# (cells of one row, frames root) -> (subject, clip id, clip folder); clip "" when the row names no clip.
ClipLocator = Callable[[Mapping[str, Any], Path], tuple[str, str, Path | None]]


def read_annotated(
    dataset: str,
    root: str | Path,
    *,
    what: str,
    sheet_patterns: Sequence[str],
    frame_folders: Sequence[str],
    locate: ClipLocator,
    fps: float,
    scheme: str | ClassScheme | None = None,
    frames_dir: str | Path | None = None,
    annotation: str | Path | None = None,
) -> DatasetIndex:
    """The reader loop every spreadsheet-annotated dataset shares: find the sheet and the frames, turn each
    row into a :class:`Sample` (``locate`` says where its frames are) or a :class:`Skipped`, then index."""
    root = Path(root)
    sheet = Path(annotation) if annotation else find_annotation(root, sheet_patterns, what=what)
    base = sheet.parent if root.is_file() else root
    frames_root = Path(frames_dir) if frames_dir else find_frames_root(base, frame_folders)
    samples: list[Sample] = []
    skipped: list[Skipped] = []
    notes: Counter[str] = Counter()
    for row, cells in read_sheet(sheet):
        subject, clip, clip_dir = locate(cells, frames_root)
        try:
            samples.append(
                make_sample(
                    dataset=dataset, row=row, subject=subject, clip=clip, emotion=cells.get("emotion"),
                    onset=cells.get("onset"), apex=cells.get("apex"), offset=cells.get("offset"), fps=fps,
                    clip_dir=clip_dir, aus=cells.get("aus"), notes=notes,
                )
            )
        except RowError as exc:
            skipped.append(Skipped(row, clip, exc.kind, exc.detail))
    return finish_index(dataset, base, samples, skipped, scheme=scheme, notes=notes)

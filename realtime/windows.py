"""``mer-live --windows FILE.csv``: classify given windows of a recorded video instead of spotting them.

A lab with annotated clips (CASME-style onset / apex / offset frames) asks what the model says about each
annotated movement. :func:`read_windows` reads and checks the file before anything slow is loaded; every
mistake is one :class:`WindowsFileError` naming the file and the line. :class:`WindowPlan` runs on the
pipeline's analyser thread: when a window's last frame has been analysed, its network input is built from
the held crops by the analyser's own builder (:meth:`mer_analysis.chain.Analyzer.build_inputs`, the one used
for spotted windows), and the windows go to the classifier in the order of the file.
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mer_analysis.chain import FrameResult, WindowJob
from mer_analysis.spotting import SpottedWindow
from mer_core.errors import UserError
from mer_core.events import EventRecord, TimePoint
from mer_core.metrics import recognition_scores

log = logging.getLogger(__name__)

__all__ = [
    "MAX_WINDOW_FRAMES",
    "GivenWindow",
    "WindowPlan",
    "WindowScores",
    "WindowsFile",
    "WindowsFileError",
    "read_windows",
]

REQUIRED = ("onset", "apex", "offset")
# A window's crops are held until its last frame is analysed, and its DIs are built from all of them at once:
# 2,048 frames (68 s at 30 fps, 10 s at 200 fps) keep that under about 0.5 GB. Longer is no expression.
MAX_WINDOW_FRAMES = 2048
_INTEGER = re.compile(r"[+-]?\d+")
_NO_LABEL = "\x00no label"  # a window left unlabelled, in the scores (never a class of its own in UF1)


class WindowsFileError(UserError):
    """A windows file that cannot be used; the message names the file and, where there is one, the line."""


@dataclass(frozen=True, slots=True)
class GivenWindow:
    """One row of the file: 0-based, inclusive source frames, the row's line and its label (None: none)."""

    line: int
    onset: int
    apex: int
    offset: int
    label: str | None = None

    @property
    def frames(self) -> int:
        return self.offset - self.onset + 1


@dataclass(frozen=True)
class WindowsFile:
    path: Path
    windows: tuple[GivenWindow, ...]
    labelled: bool  # the file has a label column

    @property
    def longest(self) -> int:
        """The most frames of one window (the crop history must hold that many)."""
        return max(w.frames for w in self.windows)

    def check_length(self, frame_count: int | None) -> None:
        """Refuse, before any analysis, a window past the end of a video whose container says its length.

        The count is an estimate in some containers, so a window within the source's own tolerance (1 %, at
        least 2 frames) past it is tried; if the video really is shorter, the run names it at the end.
        """
        if frame_count is None:
            return
        limit = frame_count + max(2, frame_count // 100)
        for w in self.windows:
            if w.offset >= limit:
                raise WindowsFileError(f"{self.path} line {w.line}: offset frame {w.offset} is past the end of "
                                       f"the video ({frame_count} frames, 0..{frame_count - 1})")


def read_windows(path: str | Path) -> WindowsFile:
    """Read and check a windows CSV: a header with ``onset``, ``apex``, ``offset`` (any case, any order) and
    optionally ``label``; other columns are ignored; blank lines are skipped. UTF-8 (a BOM is allowed) or
    UTF-16 with a BOM; comma, semicolon or tab separated (whichever the header uses)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise WindowsFileError(f"cannot read the windows file {path}: {exc.strerror or exc}") from None
    text = _decode(path, data)
    if not text.strip():
        raise WindowsFileError(f"{path} line 1: the windows file is empty; it needs a header line "
                               f"'onset,apex,offset' (and optionally 'label') and one row per window")
    header_line = next(i for i, ln in enumerate(text.splitlines(), 1) if ln.strip())
    header_text = text.splitlines()[header_line - 1]
    delimiter = next((d for d in (",", ";", "\t") if d in header_text), ",")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    columns: dict[str, int] | None = None
    windows: list[GivenWindow] = []
    try:
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if columns is None:
                columns = _header(path, line, row)
                continue
            windows.append(_row(path, line, row, columns))
    except csv.Error as exc:
        raise WindowsFileError(f"{path} line {reader.line_num}: not readable as CSV ({exc})") from None
    assert columns is not None  # the text is not blank, so a header was read
    if not windows:
        raise WindowsFileError(f"{path} line {header_line}: the file has a header but no windows")
    return WindowsFile(path=path, windows=tuple(windows), labelled="label" in columns)


def _decode(path: Path, data: bytes) -> str:
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        encoding = "utf-32"
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    else:
        encoding = "utf-8-sig"
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1 if encoding == "utf-8-sig" else 1
        raise WindowsFileError(f"{path} line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); save the "
                               f"windows file as UTF-8 CSV") from None
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise WindowsFileError(f"{path} line {line}: not a text file (NUL character); the windows file is a "
                               f"UTF-8 CSV")
    return text


def _header(path: Path, line: int, row: list[str]) -> dict[str, int]:
    names = [cell.strip().lower() for cell in row]
    columns: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in (*REQUIRED, "label"):
            if name in columns:
                raise WindowsFileError(f"{path} line {line}: column '{name}' appears twice in the header")
            columns[name] = i
    missing = [name for name in REQUIRED if name not in columns]
    if missing:
        found = ", ".join(repr(c.strip()) for c in row if c.strip())
        raise WindowsFileError(f"{path} line {line}: missing column{'s' if len(missing) > 1 else ''} "
                               f"{', '.join(missing)} in the header (found {found}); expected onset,apex,offset "
                               f"and optionally label")
    return columns


def _row(path: Path, line: int, row: list[str], columns: dict[str, int]) -> GivenWindow:
    values: dict[str, int] = {}
    for name in REQUIRED:
        i = columns[name]
        cell = row[i].strip() if i < len(row) else ""
        if not cell:
            raise WindowsFileError(f"{path} line {line}: column '{name}' is empty")
        if not _INTEGER.fullmatch(cell):
            raise WindowsFileError(f"{path} line {line}: column '{name}' is not a whole frame number: {cell!r}")
        values[name] = int(cell)
        if values[name] < 0:
            raise WindowsFileError(f"{path} line {line}: column '{name}' is negative ({values[name]}); frames "
                                   f"are 0-based indices")
    onset, apex, offset = values["onset"], values["apex"], values["offset"]
    if onset > offset:
        raise WindowsFileError(f"{path} line {line}: onset {onset} is after offset {offset}")
    if not onset <= apex <= offset:
        raise WindowsFileError(f"{path} line {line}: apex {apex} is outside onset..offset ({onset}..{offset})")
    if offset - onset + 1 > MAX_WINDOW_FRAMES:
        raise WindowsFileError(f"{path} line {line}: the window has {offset - onset + 1} frames; at most "
                               f"{MAX_WINDOW_FRAMES} are held for one window")
    label = None
    if "label" in columns and columns["label"] < len(row):
        label = row[columns["label"]].strip() or None
    return GivenWindow(line=line, onset=onset, apex=apex, offset=offset, label=label)


@dataclass(frozen=True)
class WindowScores:
    """How the predicted labels compare with the file's (rows with a label that got an event)."""

    scored: int
    accuracy: float | None
    uf1: float | None
    foreign: dict[str, int]  # file labels that are not among the model's labels → rows (counted as wrong)


@dataclass
class _Open:
    """A window whose frames are passing: what was seen of them so far."""

    position: int  # in the file
    window: GivenWindow
    seen: int = 0
    faces: int = 0
    peak: float = 0.0


class WindowPlan:
    """Turns analysed frames into the jobs of the given windows, in file order (analyser thread), and pairs
    the published events with their rows (classifier thread) for the summary's scores.

    A window is decided on the first analysed frame at or after its offset: its DIs are built from the crop
    history right then (``build``; a window with a frame without a face, or a frame not analysed, gets no
    input and its event no label, with the reason logged). Decided windows wait for every earlier row, so the
    events come in file order. Memory: one small record per window, and the DIs of decided windows waiting
    for an earlier row.
    """

    def __init__(
        self,
        file: WindowsFile,
        *,
        build: Callable[[SpottedWindow], np.ndarray | None],
        job: Callable[[SpottedWindow, np.ndarray | None], WindowJob] = WindowJob,
        fps: float,
        micro_max_s: float,
        record_stage: Callable[[str, float], None] | None = None,
    ) -> None:
        self.file = file
        self._build = build
        self._make_job = job  # Analyzer.job: the window with its inputs and capture times
        self._fps = fps
        self._micro_max_s = micro_max_s
        self._record = record_stage or (lambda stage, ms: None)
        self._by_onset = sorted(range(len(file.windows)), key=lambda k: file.windows[k].onset)
        self._next_onset = 0  # into _by_onset: windows before it have opened
        self._open: list[_Open] = []
        self._decided: dict[int, WindowJob] = {}
        self._next_out = 0  # the next row to hand out
        self._sent: deque[GivenWindow] = deque()  # handed out, event not yet published
        self.outcomes: list[tuple[GivenWindow, str | None]] = []  # (row, predicted label), published order
        self.missing: tuple[GivenWindow, ...] = ()  # rows whose frames never came (set by finish)

    def on_frame(self, result: FrameResult) -> tuple[WindowJob, ...]:
        """The jobs released by this frame (after the analyser has held its crop)."""
        index = result.index
        windows = self.file.windows
        while self._next_onset < len(self._by_onset) and windows[self._by_onset[self._next_onset]].onset <= index:
            k = self._by_onset[self._next_onset]
            self._open.append(_Open(k, windows[k]))
            self._next_onset += 1
        if not self._open:
            return ()
        still: list[_Open] = []
        t0 = time.perf_counter()
        built = False
        for item in self._open:
            w = item.window
            if index <= w.offset:
                item.seen += 1
                item.faces += int(result.face)
                if result.score is not None:
                    item.peak = max(item.peak, float(result.score))
            if index < w.offset:
                still.append(item)
                continue
            self._decided[item.position] = self._job(item, index, result.t)
            built = True
        self._open = still
        if built:
            self._record("di", (time.perf_counter() - t0) * 1e3)
        return self._release()

    def finish(self) -> tuple[WindowJob, ...]:
        """End of the source: rows never reached are ``missing``; the decided rows behind them go out."""
        rows = range(self._next_out, len(self.file.windows))
        self.missing = tuple(self.file.windows[k] for k in rows if k not in self._decided)
        jobs: list[WindowJob] = []
        for k in rows:
            if k in self._decided:
                jobs.append(self._decided.pop(k))
                self._sent.append(self.file.windows[k])
        self._next_out = len(self.file.windows)
        self._open = []
        return tuple(jobs)

    def published(self, record: EventRecord) -> None:
        """An event went out (classifier thread; one per job, in the order handed out)."""
        try:
            window = self._sent.popleft()
        except IndexError:
            log.error("event %d-%d published for no given window", record.onset.frame, record.offset.frame)
            return
        if (record.onset.frame, record.offset.frame) != (window.onset, window.offset):
            log.error("event %d-%d paired with line %d (%d-%d)", record.onset.frame, record.offset.frame,
                      window.line, window.onset, window.offset)
        self.outcomes.append((window, record.label))

    def scores(self, labels: Sequence[str]) -> WindowScores | None:
        """Accuracy and UF1 (``mer_core.metrics.recognition_scores``) of the predicted labels against the
        file's; None without a label column. File labels match the model's ignoring case; one that matches
        none counts as wrong, and a window left unlabelled counts as wrong without becoming a class."""
        if not self.file.labelled:
            return None

        known = {name.casefold(): name for name in labels}
        y_true: list[str] = []
        y_pred: list[str] = []
        foreign: dict[str, int] = {}
        for window, predicted in self.outcomes:
            if window.label is None:
                continue
            true = known.get(window.label.casefold())
            if true is None:
                foreign[window.label] = foreign.get(window.label, 0) + 1
                true = window.label
            y_true.append(true)
            y_pred.append(predicted if predicted is not None else _NO_LABEL)
        if not y_true:
            return WindowScores(scored=0, accuracy=None, uf1=None, foreign=foreign)
        s = recognition_scores(y_true, y_pred)
        present = set(y_true) | set(y_pred)
        classes = [c for c in s.labels if c != _NO_LABEL and c in present]
        uf1 = float(np.mean([s.per_class_f1[c] for c in classes])) if classes else 0.0
        return WindowScores(scored=len(y_true), accuracy=s.accuracy, uf1=uf1, foreign=foreign)

    def _job(self, item: _Open, index: int, t: float) -> WindowJob:
        w = item.window
        onset, apex, offset = (TimePoint(f, f / self._fps) for f in (w.onset, w.apex, w.offset))
        kind = "micro" if offset.t - onset.t <= self._micro_max_s else "macro"
        window = SpottedWindow(onset=onset, apex=apex, offset=offset, kind=kind, peak=item.peak,
                               decided_at=TimePoint(index, t), region="")
        inputs = self._build(window)
        if inputs is None:
            log.warning("%s line %d (frames %d-%d): published without a label: %s", self.file.path, w.line,
                        w.onset, w.offset, self._why(item))
        return self._make_job(window, inputs)

    @staticmethod
    def _why(item: _Open) -> str:
        n = item.window.frames
        if item.faces < item.seen:
            return f"no face on {item.seen - item.faces} of its {n} frames"
        if item.seen < n:
            return f"{n - item.seen} of its {n} frames were not analysed (dropped: use --fast)"
        return "its crops were no longer held"

    def _release(self) -> tuple[WindowJob, ...]:
        jobs: list[WindowJob] = []
        while self._next_out in self._decided:
            jobs.append(self._decided.pop(self._next_out))
            self._sent.append(self.file.windows[self._next_out])
            self._next_out += 1
        return tuple(jobs)

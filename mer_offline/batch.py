"""A batch of recorded videos: which to analyse, where each goes, what to skip, running them, the summary.

- Inputs: video files, folders (searched recursively for :data:`VIDEO_EXTENSIONS`) and list files (a
  ``.txt`` / ``.lst`` file: one path per line, ``#`` comments, relative paths taken from the list's folder).
  The batch is ordered by absolute path, so every run and every shard agrees on it.
- Names: each video gets ``OUT/<stem>/``; clashing stems add the extension or parent folder names until they
  differ (``EP02.avi``, ``sub01__EP02``), decided over the whole batch so that shards agree.
- Shards: ``K/N`` (1-based) takes the videos at positions K, K+N, K+2N, ... of the ordered batch.
- Skipping: a video whose ``analysis.json`` carries the same key (model card and weights hashes, engine,
  settings, and the file's path, size and mtime) is not analysed again.
- Running: in this process (``jobs=1``) or in ``jobs`` spawned worker processes, each loading its own engine.
- Output folder: :func:`prepare_output` creates it and checks that it takes files before any video starts.
- Summary: ``summary.csv`` has one row per video, ordered by path; :func:`merge` builds the same table from
  the video folders of one or more output folders (e.g. the shards of a cluster job).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import multiprocessing
import os
import queue
import re
import signal
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from engines.backends import load_engine
from mer_core.events import KINDS, utc_now_iso
from mer_core.paths import atomic_write
from mer_offline.analyze import (
    AnalyzeOptions,
    ProgressSink,
    VideoJob,
    VideoResult,
    analyze_video,
    load_result,
    save_result,
)
from mer_offline.analyze_types import DONE_STATUSES, FAILED, INTERRUPTED
from realtime.native_stderr import StderrHandler, native_stderr_silenced

log = logging.getLogger(__name__)

__all__ = [
    "LIST_SUFFIXES",
    "SUMMARY_COLUMNS",
    "VIDEO_EXTENSIONS",
    "BatchError",
    "Inputs",
    "ModelIdentity",
    "assign_names",
    "collect_inputs",
    "make_jobs",
    "merge",
    "parse_shard",
    "prepare_output",
    "read_summary",
    "run_jobs",
    "select_shard",
    "summary_rows",
    "write_summary",
]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
LIST_SUFFIXES = (".txt", ".lst")
KEY_VERSION = 2  # bump when the outputs for the same inputs and settings change (2: rejected.csv)
SUMMARY_COLUMNS: tuple[str, ...] = (
    "path", "name", "status", "frames", "face_frames", "duration_s", *(f"{k}_events" for k in KINDS),
    "model", "engine", "error",
)


class BatchError(Exception):
    """A batch cannot start (bad shard, unwritable output folder, nothing to merge); one line for the user."""


# --- inputs --------------------------------------------------------------------------------------------


@dataclass
class Inputs:
    """What the command-line paths stood for: videos (absolute, ordered, unique) and problems found."""

    videos: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def _walk(folder: Path) -> list[Path]:
    """Video files under ``folder`` (recursive; hidden folders and files skipped; links to folders not
    followed)."""
    found: list[Path] = []
    for root, dirs, files in os.walk(folder, onerror=None, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / f for f in sorted(files) if not f.startswith(".") and _is_video(Path(f))]
    return found


def _read_list(path: Path, problems: list[str]) -> list[Path]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"cannot read list file {path}: {exc}")
        return []
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        entry = Path(line).expanduser()
        entries.append(entry if entry.is_absolute() else path.parent / entry)
    if not entries:
        problems.append(f"list file {path} names no video")
    return entries


def collect_inputs(paths: Iterable[str | Path]) -> Inputs:
    """Expand files, folders and list files into the ordered list of videos.

    A named file is taken as a video whatever its extension (only folder searches filter by extension); a
    path that does not exist is kept, so it fails as a video with its own summary row. A folder without
    videos, or an unreadable list file, is a problem (one line each).
    """
    out = Inputs()
    seen: set[Path] = set()

    def add(path: Path) -> None:
        absolute = Path(os.path.abspath(path))
        key = absolute.resolve() if absolute.exists() else absolute
        if key not in seen:
            seen.add(key)
            out.videos.append(absolute)

    def expand(path: Path, from_list: bool) -> None:
        if path.is_dir():
            videos = _walk(path)
            if not videos:
                out.problems.append(f"no video files ({', '.join(e[1:] for e in VIDEO_EXTENSIONS)}) under {path}")
            for video in videos:
                add(video)
        elif path.suffix.lower() in LIST_SUFFIXES and not from_list:
            if not path.is_file():
                out.problems.append(f"list file not found: {path}")
                return
            for entry in _read_list(path, out.problems):
                expand(entry, True)
        else:
            add(path)

    for raw in paths:
        expand(Path(raw).expanduser(), False)
    out.videos.sort(key=str)
    return out


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe(text: str) -> str:
    cleaned = _UNSAFE.sub("_", text).strip("._") or "video"
    return cleaned[:120]


def assign_names(videos: Sequence[Path]) -> list[str]:
    """A folder name per video, unique in the batch (case-insensitively), the same for every shard.

    The stem alone when it is unique. Videos whose names clash try, in turn, the file name with its
    extension, then one parent folder more and the stem, the same with the extension, and so on
    (``x.avi``, ``sub01__EP02``); a short hash of the path is the last resort.
    """
    def candidate(path: Path, level: int) -> str:
        depth, with_ext = divmod(level, 2)
        parents = [p for p in path.parent.parts if p not in ("/", "\\")]
        chosen = parents[len(parents) - depth:] if depth else []
        return _safe("__".join([*chosen, path.name if with_ext else path.stem]))

    levels = [0] * len(videos)
    names = [candidate(p, 0) for p in videos]
    limit = 2 * (max((len(p.parts) for p in videos), default=0) + 1)
    while True:
        counts: dict[str, int] = {}
        for n in names:
            counts[n.lower()] = counts.get(n.lower(), 0) + 1
        clashing = [i for i, n in enumerate(names) if counts[n.lower()] > 1]
        if not clashing or all(levels[i] >= limit for i in clashing):
            break
        for i in clashing:
            levels[i] += 1
            names[i] = candidate(videos[i], levels[i])
    return [n if counts[n.lower()] == 1 else f"{n}-{hashlib.sha1(str(p).encode()).hexdigest()[:8]}"
            for n, p in zip(names, videos, strict=True)]


def parse_shard(text: str) -> tuple[int, int]:
    """``K/N`` with 1 <= K <= N (1-based, like ``sbatch --array=1-N``)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None:
        raise BatchError(f"--shard {text!r}: expected K/N, e.g. 1/4 (K counts from 1)")
    k, n = int(match[1]), int(match[2])
    if n < 1 or not 1 <= k <= n:
        raise BatchError(f"--shard {text}: K must be 1..N (K counts from 1; got K={k}, N={n})")
    return k, n


def select_shard(items: Sequence[Any], shard: tuple[int, int] | None) -> list[Any]:
    """Every Nth item, starting with the Kth (1-based); all of them without a shard."""
    if shard is None:
        return list(items)
    k, n = shard
    return [item for i, item in enumerate(items) if i % n == k - 1]


# --- the output folder ---------------------------------------------------------------------------------


def prepare_output(out: Path) -> None:
    """Create the output folder if needed and check that files can be made in it, before anything is
    analysed: a folder that cannot be written fails every video, then the summary with a traceback.
    Raises :class:`BatchError` with what to do."""
    blocking = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocking == out:
        raise BatchError(f"the output folder {out} is a file, not a folder: give a folder for --out (it is "
                         "created if needed)")
    if blocking is not None:
        raise BatchError(f"cannot create the output folder {out}: {blocking} is a file, not a folder; give a "
                         "folder for --out (it is created if needed)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BatchError(f"cannot create the output folder {out}: {exc.strerror or exc}; give a folder you can "
                         "write for --out") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".mer-analyze-", suffix=".probe", dir=out)
    except OSError as exc:
        raise BatchError(f"cannot write into the output folder {out}: {exc.strerror or exc}; give a folder you "
                         "can write for --out (or make this one writable)") from None
    os.close(fd)
    Path(probe).unlink(missing_ok=True)


# --- keys and jobs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelIdentity:
    """What identifies the model an engine runs: card name and hash, weights hash, engine name."""

    name: str
    card_sha256: str
    weights_sha256: str
    engine: str

    @classmethod
    def of(cls, engine: Any) -> ModelIdentity:
        artefact = getattr(engine, "artefact", None)
        weights = _file_sha256(Path(artefact)) if artefact is not None else ""
        return cls(name=str(engine.card.name), card_sha256=engine.card.sha256(), weights_sha256=weights,
                   engine=str(engine.name))


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        return ""
    return digest.hexdigest()


def make_jobs(videos: Sequence[Path], names: Sequence[str], out: Path, model: ModelIdentity,
              settings: AnalyzeOptions) -> list[VideoJob]:
    """One job per video with its output folder and re-run key."""
    jobs = []
    common = {"version": KEY_VERSION, "model": asdict(model), "settings": settings.identity()}
    for path, name in zip(videos, names, strict=True):
        try:
            st = path.stat()
            parts = {**common, "file": {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}}
            key = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
        except OSError:
            parts, key = {**common, "file": {"path": str(path)}}, ""
        jobs.append(VideoJob(path=path, name=name, folder=out / name, key=key, key_parts=parts))
    return jobs


def already_done(job: VideoJob) -> VideoResult | None:
    """The stored result when ``job`` was analysed before with the same key and finished; else None."""
    if not job.key:
        return None
    stored = load_result(job.folder)
    if stored is None or stored.key != job.key or stored.status not in DONE_STATUSES:
        return None
    return replace(stored, skipped=True)


# --- running -------------------------------------------------------------------------------------------

Report = Callable[[VideoResult], None]


def _crashed(job: VideoJob, error: str, model: ModelIdentity) -> VideoResult:
    return VideoResult(path=str(job.path), name=job.name, status=FAILED, error=error, model=model.name,
                       engine=model.engine, key=job.key, finished=utc_now_iso())


def _saved(result: VideoResult, job: VideoJob) -> VideoResult:
    """Store a result the worker could not store itself, so that merge sees it too."""
    with contextlib.suppress(OSError):
        job.folder.mkdir(parents=True, exist_ok=True)
        save_result(job.folder, result, job.key_parts)
    return result


def _analyze_safely(job: VideoJob, settings: AnalyzeOptions, engine: Any, progress: ProgressSink | None,
                    model: ModelIdentity) -> VideoResult:
    """analyze_video, with an unexpected error turned into a failed result (KeyboardInterrupt passes)."""
    try:
        return analyze_video(job, settings, engine, progress=progress)
    except Exception as exc:
        log.debug("analysis of %s failed", job.path, exc_info=True)
        return _saved(_crashed(job, f"{type(exc).__name__}: {exc}", model), job)


def run_jobs(jobs: Sequence[VideoJob], settings: AnalyzeOptions, *, engine: Any, model: ModelIdentity,
             workers: int = 1, progress: ProgressSink | None = None, report: Report | None = None) -> list[VideoResult]:
    """Analyse ``jobs`` (in this process with ``engine``, or in ``workers`` processes); results in job order.

    ``report`` is called once per finished video, in the order they finish. KeyboardInterrupt stops the
    batch: running videos are interrupted (their recordings still end with a summary) and it is re-raised.
    """
    if workers <= 1 or len(jobs) <= 1:
        results = []
        for job in jobs:
            result = _analyze_safely(job, settings, engine, progress, model)
            results.append(result)
            if report is not None:
                report(result)
        return results
    return _run_parallel(jobs, settings, model=model, workers=workers, progress=progress, report=report)


_INTERRUPT_GRACE_S = 10.0  # how long interrupted videos get to write their summary before workers are killed

# Worker processes: one engine each (loaded on the first video), progress through a queue.
_WORKER: dict[str, Any] = {}


def _worker_init(settings: AnalyzeOptions, messages: Any, log_level: int) -> None:
    """A worker process's start, set up like the command: signals, logging, native stderr lines hidden."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # idle workers ignore Ctrl-C; a running video handles it
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    handler = StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(log_level)
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")
    quiet = contextlib.ExitStack()  # held for the life of the process
    quiet.enter_context(native_stderr_silenced(settings.quiet_native, keep_python=True))
    _WORKER.update(settings=settings, messages=messages, engine=None, quiet=quiet)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


class _QueueProgress:
    """ProgressSink of a worker: sends (what, name, value) to the parent, frames at most 5 times a second."""

    def __init__(self, messages: Any) -> None:
        self._messages = messages
        self._last = 0.0

    def start(self, name: str, total: int | None) -> None:
        self._messages.put(("start", name, total))

    def frames(self, name: str, done: int) -> None:
        now = time.monotonic()
        if now - self._last >= 0.2:
            self._last = now
            self._messages.put(("frames", name, done))

    def stop(self, name: str) -> None:
        self._messages.put(("stop", name, None))


def _worker_run(job: VideoJob, model: ModelIdentity) -> VideoResult:
    settings: AnalyzeOptions = _WORKER["settings"]
    messages = _WORKER["messages"]
    messages.put(("begin", job.name, None))
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        if _WORKER["engine"] is None:
            _WORKER["engine"] = load_engine(settings.model, backend=settings.engine)
        return _analyze_safely(job, settings, _WORKER["engine"], _QueueProgress(messages), model)
    except KeyboardInterrupt:
        return replace(_crashed(job, "interrupted", model), status=INTERRUPTED)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _size(job: VideoJob) -> int:
    try:
        return job.path.stat().st_size
    except OSError:
        return 0


def _drain(messages: Any, progress: ProgressSink | None, begun: set[str]) -> None:
    """Pass the workers' messages on to ``progress``; note which videos have begun."""
    while True:
        try:
            what, name, value = messages.get_nowait()
        except queue.Empty:
            return
        if what == "begin":
            begun.add(name)
        elif progress is not None:
            if what == "start":
                progress.start(name, value)
            elif what == "frames":
                progress.frames(name, value)
            elif what == "stop":
                progress.stop(name)


def _run_parallel(jobs: Sequence[VideoJob], settings: AnalyzeOptions, *, model: ModelIdentity, workers: int,
                  progress: ProgressSink | None, report: Report | None) -> list[VideoResult]:
    """Run the jobs in worker processes. A worker that dies (a crash in native code) breaks the whole pool:
    the videos that had not started go on in a new pool; those that were running are analysed again one at a
    time, so that only the video that crashes a worker on its own is reported as failed."""
    # spawn, not fork: the parent holds MediaPipe, OpenCV and ONNX Runtime thread pools a fork would copy.
    ctx = multiprocessing.get_context("spawn")
    messages = ctx.Queue()
    results: dict[str, VideoResult] = {}
    todo = list(jobs)
    suspects: list[VideoJob] = []
    rounds: dict[str, int] = {}
    while todo or suspects:
        if suspects:
            batch, size = [suspects.pop(0)], 1
        else:
            batch, size, todo = todo, workers, []
        for job in batch:
            rounds[job.name] = rounds.get(job.name, 0) + 1
        done, running, waiting = _pool_round(ctx, messages, batch, size, settings, model, progress, report)
        results.update(done)
        for job in running:
            if size == 1 or rounds[job.name] > 2:  # alone in its worker, it crashed it: its own fault
                result = _saved(_crashed(job, "the worker process died while analysing it (a crash in native "
                                              "code?)", model), job)
                results[job.name] = result
                if report is not None:
                    report(result)
            else:
                suspects.append(job)
        todo += [job for job in waiting if rounds[job.name] <= 2]
        for job in waiting:
            if rounds[job.name] > 2:  # pragma: no cover - only when workers keep dying before starting anything
                results[job.name] = _saved(_crashed(job, "worker processes keep dying", model), job)
        if size > 1 and (running or waiting):
            log.warning("a worker process died; the %d video(s) being analysed then are analysed again one at a "
                        "time, to find the one that crashes it", len(running))
    return [results[job.name] for job in jobs if job.name in results]


def _pool_round(ctx: Any, messages: Any, batch: list[VideoJob], size: int, settings: AnalyzeOptions,
                model: ModelIdentity, progress: ProgressSink | None,
                report: Report | None) -> tuple[dict[str, VideoResult], list[VideoJob], list[VideoJob]]:
    """One pool over ``batch``: (results, jobs running when the pool broke, jobs not started then)."""
    pool = ProcessPoolExecutor(max_workers=min(size, len(batch)), mp_context=ctx, initializer=_worker_init,
                               initargs=(settings, messages, logging.getLogger().getEffectiveLevel()))
    # longest first (by file size), so that one long video does not start last and keep the others waiting
    pending: dict[Future[VideoResult], VideoJob] = {
        pool.submit(_worker_run, job, model): job for job in sorted(batch, key=_size, reverse=True)}
    results: dict[str, VideoResult] = {}
    running: list[VideoJob] = []
    waiting: list[VideoJob] = []
    begun: set[str] = set()
    broken = False
    try:
        while pending:
            done, _ = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
            _drain(messages, progress, begun)
            for future in done:
                job = pending.pop(future)
                try:
                    result = future.result()
                except BrokenProcessPool:
                    broken = True
                    (running if job.name in begun else waiting).append(job)
                    if progress is not None and job.name in begun:
                        progress.stop(job.name)
                    continue
                except Exception as exc:  # e.g. the worker could not load the engine
                    result = _saved(_crashed(job, f"{type(exc).__name__}: {exc}", model), job)
                results[job.name] = result
                if report is not None:
                    report(result)
    except KeyboardInterrupt:
        _interrupt_workers(pool, pending)
        raise
    finally:
        pool.shutdown(wait=not broken, cancel_futures=True)  # a no-op after an interrupt
        _drain(messages, progress, begun)
    return results, running, waiting


def _interrupt_workers(pool: ProcessPoolExecutor, pending: dict[Future[VideoResult], VideoJob]) -> None:
    """Ctrl-C: cancel what has not started, interrupt running videos (their recordings get a summary),
    let the workers end, and kill any still alive after a few seconds."""
    for future in pending:
        future.cancel()
    children = multiprocessing.active_children()
    for child in children:  # a terminal sent them SIGINT already; SIGTERM or kill on the parent alone did not
        if child.pid is not None:
            with contextlib.suppress(OSError):
                os.kill(child.pid, signal.SIGINT)
    wait([f for f in pending if not f.cancelled()], timeout=_INTERRUPT_GRACE_S)
    pool.shutdown(wait=False, cancel_futures=True)  # idle workers get their stop message
    deadline = time.monotonic() + 2.0
    for child in children:
        child.join(timeout=max(0.0, deadline - time.monotonic()))
        if child.is_alive():
            with contextlib.suppress(OSError, ValueError):
                child.kill()


# --- summary -------------------------------------------------------------------------------------------


def _cell(value: object) -> str:
    return "" if value is None else str(value)


def summary_rows(results: Iterable[VideoResult]) -> list[dict[str, str]]:
    """One row per video (by path; the last result of a path wins), ordered by path."""
    by_path: dict[str, VideoResult] = {}
    for r in results:
        by_path[r.path] = r
    rows = []
    for path in sorted(by_path):
        r = by_path[path]
        row = {"path": r.path, "name": r.name, "status": r.status, "frames": _cell(r.frames),
               "face_frames": _cell(r.face_frames), "duration_s": _cell(r.duration_s)}
        for k in KINDS:
            row[f"{k}_events"] = _cell(r.events.get(k)) if r.frames is not None else ""
        row.update(model=r.model, engine=r.engine, error=r.error)
        rows.append(row)
    return rows


def write_summary(path: Path, results: Iterable[VideoResult]) -> list[dict[str, str]]:
    """Write ``summary.csv`` (atomically) and return its rows."""
    rows = summary_rows(results)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(SUMMARY_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, buf.getvalue().encode("utf-8"))
    return rows


def read_summary(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def merge(folders: Sequence[Path], out: Path) -> list[VideoResult]:
    """Collect the analysed videos of output folders (their ``*/analysis.json``) into one ``summary.csv``.

    Where two folders hold the same video, the result that finished last wins.
    """
    results: list[VideoResult] = []
    for folder in folders:
        if not folder.is_dir():
            raise BatchError(f"{folder} is not a folder (give the --out folders of mer-analyze runs)")
        found = [r for sub in sorted(folder.iterdir()) if sub.is_dir() and (r := load_result(sub)) is not None]
        if not found:
            raise BatchError(f"{folder} holds no analysed video (no */analysis.json)")
        results += found
    results.sort(key=lambda r: r.finished)  # summary_rows keeps the last per path
    latest = {r.path: r for r in results}
    ordered = [latest[p] for p in sorted(latest)]
    write_summary(out, ordered)
    return ordered

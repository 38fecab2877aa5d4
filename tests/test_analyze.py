"""``mer-analyze``: inputs, names, shards and merge (no face model needed), the report page, and end to end on a
short synthetic clip plus a garbage file and a faceless video: outputs, agreement with ``events.jsonl``, skipping
on re-run, ``--force`` with worker processes, shards merged into the same summary."""

from __future__ import annotations

import base64
import csv
import errno
import io
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from engines.backends.artefacts import DEFAULT_MODEL_DIR
from mer_analysis.spotting import REJECT_REASONS, Rejection, SpotterOptions
from mer_cli.analyze import build_parser, main
from mer_core.events import EventRecord, SummaryRecord, TimePoint, parse_record
from mer_offline.analyze import (
    BLENDSHAPE_NAMES,
    OUTPUT_FILES,
    REJECTED_COLUMNS,
    AnalyzeOptions,
    VideoResult,
    WindowImages,
    event_columns,
    save_result,
)
from mer_offline.batch import (
    SUMMARY_COLUMNS,
    BatchError,
    assign_names,
    collect_inputs,
    merge,
    parse_shard,
    read_summary,
    select_shard,
)
from mer_offline.report import REJECT_STYLES, ReportInputs, flow_key, render_report

PNG_URI = re.compile(r'data:image/png;base64,([A-Za-z0-9+/=]+)"')


def _run(*args: str | Path) -> tuple[int, str]:
    """main() in this process; (exit code, what reached file descriptor 2: the command, its worker processes).

    Captured at the descriptor, not ``sys.stderr``: the command keeps its own messages on a copy of fd 2 while
    it points fd 2 itself at /dev/null to hide MediaPipe's native lines.
    """
    with tempfile.TemporaryFile() as tmp:
        sys.stderr.flush()
        saved_fd, saved_stderr = os.dup(2), sys.stderr
        os.dup2(tmp.fileno(), 2)
        sys.stderr = io.TextIOWrapper(os.fdopen(os.dup(2), "wb"), encoding="utf-8", write_through=True)
        try:
            code = main([str(a) for a in args])
        finally:
            sys.stderr.close()
            sys.stderr = saved_stderr
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
        tmp.seek(0)
        return code, tmp.read().decode("utf-8", errors="replace")


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# --- inputs, names, shards (no video is read) -------------------------------------------------------------


def test_folders_are_searched_recursively_and_list_files_are_read(tmp_path: Path) -> None:
    a = _touch(tmp_path / "corpus" / "s1" / "a.mp4")
    b = _touch(tmp_path / "corpus" / "s2" / "deep" / "B.MOV")
    _touch(tmp_path / "corpus" / "s2" / "notes.csv")
    _touch(tmp_path / "corpus" / ".hidden" / "c.mp4")
    (tmp_path / "empty").mkdir()
    extra = _touch(tmp_path / "extra" / "clip.webm")
    odd = _touch(tmp_path / "extra" / "recording.ts")  # named explicitly: taken whatever its extension
    listed = tmp_path / "lists" / "videos.lst"
    listed.parent.mkdir()
    listed.write_text("# my corpus\n\n../extra/clip.webm\n" + f"{odd}\n../missing.mp4\n")
    inputs = collect_inputs([tmp_path / "corpus", listed, a, tmp_path / "empty"])
    missing = Path(os.path.abspath(tmp_path / "lists" / "../missing.mp4"))
    assert inputs.videos == sorted([a, b, extra, odd, missing], key=str)  # ordered by path, each once
    assert len(inputs.problems) == 1 and "empty" in inputs.problems[0]


def test_an_unreadable_or_empty_list_is_a_problem(tmp_path: Path) -> None:
    empty = tmp_path / "none.txt"
    empty.write_text("# nothing here\n")
    inputs = collect_inputs([empty, tmp_path / "typo.txt"])
    assert inputs.videos == [] and "names no video" in inputs.problems[0]
    assert "list file not found" in inputs.problems[1]


def test_names_are_unique_and_the_same_whatever_the_shard(tmp_path: Path) -> None:
    videos = [tmp_path / "sub01" / "EP02.mp4", tmp_path / "sub02" / "EP02.mp4", tmp_path / "sub02" / "ep02.avi",
              tmp_path / "x" / "a b.mp4", tmp_path / "y" / "solo.mp4"]
    names = assign_names(videos)
    assert len({n.lower() for n in names}) == len(names)
    assert names[:3] == ["sub01__EP02", "sub02__EP02", "ep02.avi"]
    assert names[3] == "a_b" and names[4] == "solo"
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", n) for n in names)


def test_shards_partition_the_batch() -> None:
    assert parse_shard("2/3") == (2, 3)
    items = list(range(10))
    parts = [select_shard(items, (k, 3)) for k in (1, 2, 3)]
    assert sorted(sum(parts, [])) == items and parts[0] == [0, 3, 6, 9]
    for bad in ("0/3", "4/3", "1/0", "x", "1-3"):
        with pytest.raises(BatchError):
            parse_shard(bad)


def test_the_rerun_key_keeps_the_spotter_gate_under_its_stored_name() -> None:
    """Results stored before SpotterOptions.min_score became .threshold carry the old name in their key; a
    re-run with the same settings must still find them."""
    spotter = AnalyzeOptions().identity()["spotter"]
    assert spotter["min_score"] == AnalyzeOptions().spotter.threshold and "threshold" not in spotter


def _result(path: str, status: str = "ok", finished: str = "2026-01-01T00:00:00.000Z", micro: int = 1) -> VideoResult:
    return VideoResult(path=path, name=Path(path).stem, status=status, frames=10, face_frames=10, duration_s=1.0,
                       events={"micro": micro, "macro": 0}, model="m", engine="e", key="k", finished=finished)


def test_merge_orders_by_path_and_keeps_the_latest_analysis(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    save_result(one / "b", _result("/v/b.mp4"), {})
    save_result(one / "a", _result("/v/a.mp4", finished="2026-01-01T00:00:00.000Z", micro=1), {})
    save_result(two / "a", _result("/v/a.mp4", finished="2026-01-02T00:00:00.000Z", micro=5), {})
    save_result(two / "c", _result("/v/c.mp4", status="failed"), {})
    merged = merge([one, two], tmp_path / "all.csv")
    rows = read_summary(tmp_path / "all.csv")
    assert [r["path"] for r in rows] == ["/v/a.mp4", "/v/b.mp4", "/v/c.mp4"]
    assert rows[0]["micro_events"] == "5" and list(rows[0]) == list(SUMMARY_COLUMNS)
    assert [r.ok for r in merged] == [True, True, False]
    assert _run("merge", one, two, "--out", tmp_path / "all2.csv")[0] == 2  # one video failed
    (tmp_path / "nothing").mkdir()
    code, err = _run("merge", tmp_path / "nothing")
    assert code == 2 and err.count("\n") == 1 and "no analysed video" in err


# --- the command line: user mistakes are one line ---------------------------------------------------------


def test_help_explains_every_option() -> None:
    parser = build_parser()
    text = parser.format_help()
    for action in parser._actions:
        for option in action.option_strings:
            assert option in text
        assert action.help, f"{action.dest} has no help"
    for needle in ("exit codes", ".txt", ".lst", "summary.csv", "events.csv", "frames.csv", "report.html", "K/N"):
        assert needle in text


@pytest.mark.parametrize("args, needle", [
    (["--shard", "0/2"], "K must be 1..N"),
    (["--shard", "half"], "expected K/N"),
])
def test_bad_options_are_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    code, err = _run(_touch(tmp_path / "v.mp4"), "--out", tmp_path / "out", *args)
    assert code == 2 and needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_nothing_to_analyze_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    code, err = _run(tmp_path / "empty", "--out", tmp_path / "out")
    assert code == 2 and "no video to analyse" in err and "Traceback" not in err


def test_a_bad_model_is_one_line(tmp_path: Path) -> None:
    code, err = _run(_touch(tmp_path / "v.mp4"), "--out", tmp_path / "out", "--model", tmp_path / "nope.onnx")
    assert code == 2 and err.startswith("mer-analyze: error:") and err.count("\n") == 1


def _refuse_writes_under(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``folder`` takes no new file or folder, as a read-only one: chmod 555, and where that does not stop
    writes (root), os.open / os.mkdir refuse what would be created under it (as EACCES does)."""
    folder.chmod(0o555)
    probe = folder / ".probe"
    try:
        probe.touch()
    except PermissionError:
        return
    probe.unlink()
    inside = folder.resolve()
    real_open, real_mkdir = os.open, os.mkdir

    def refused(path: Any) -> bool:
        return Path(os.path.abspath(os.fspath(path))).is_relative_to(inside)

    def no_create(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_CREAT and refused(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    def no_mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
        if refused(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_create)
    monkeypatch.setattr(os, "mkdir", no_mkdir)


def test_an_output_folder_that_cannot_be_written_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An existing --out that takes no files (read-only, immutable) used to fail each video with PermissionError
    and then the summary with a traceback (exit 1); like a folder that cannot be created: one line, exit 2."""
    out = tmp_path / "locked"
    out.mkdir()
    _refuse_writes_under(out, monkeypatch)
    try:
        code, err = _run(_touch(tmp_path / "v.mp4"), "--out", out)
    finally:
        out.chmod(0o755)
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith(f"mer-analyze: error: cannot write into the output folder {out}: Permission denied; ")
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("under", [False, True], ids=["a-file", "under-a-file"])
def test_an_output_folder_that_is_a_file_is_named_as_one(tmp_path: Path, under: bool) -> None:
    """``--out notes.txt`` said "cannot create the output folder notes.txt: File exists"."""
    existing = _touch(tmp_path / "notes.txt", b"my notes")
    out = existing / "results" if under else existing
    code, err = _run(_touch(tmp_path / "v.mp4"), "--out", out)
    assert code == 2 and err.count("\n") == 1 and "File exists" not in err, err
    assert f"{existing} is a file, not a folder" in err and "give a folder for --out" in err
    assert existing.read_bytes() == b"my notes"


# --- the report page (no face model needed) ---------------------------------------------------------------


def _event(onset: int, apex: int, offset: int, kind: str = "micro", label: str | None = "positive") -> EventRecord:
    probs = {"negative": 0.1, "positive": 0.8, "surprise": 0.1} if label else {}
    return EventRecord(onset=TimePoint(onset, onset / 30), apex=TimePoint(apex, apex / 30),
                       offset=TimePoint(offset, offset / 30), duration_ms=(offset - onset) / 30 * 1e3, kind=kind,
                       intensity=7.5, label=label, confidence=0.8 if label else None, probs=probs)


def test_report_is_one_self_contained_page_with_a_card_per_event() -> None:
    n = 300
    t = np.arange(n) / 30.0
    rng = np.random.default_rng(0)
    score = np.abs(rng.normal(1.0, 0.3, n))
    score[:20] = np.nan
    face = np.ones(n, dtype=bool)
    face[100:110] = False
    events = [_event(40, 43, 47), _event(150, 170, 200, "macro", None), _event(250, 252, 255, label="<b>")]
    crop = np.full((128, 128), 100, np.uint8)
    flow = np.zeros((128, 128, 3), np.uint8)
    images = WindowImages(onset=crop, apex=crop, offset=crop, rise=crop, fall=crop, flow=flow)
    result = VideoResult(path="/v/<clip>.mp4", name="clip", status="ok", frames=n, face_frames=290, duration_s=10.0,
                         fps=30.0, events={"micro": 2, "macro": 1}, model="m", engine="onnxruntime")
    page = render_report(ReportInputs(
        result=result, labels=("negative", "positive", "surprise"), engine_reason="test", settings=AnalyzeOptions(),
        t=t, score=score, threshold=np.where(t > 1.0, 2.0, np.nan), face=face, events=events,
        windows={(40, 43, 47): images, (150, 170, 200): None},
    ))
    assert page.count('<section class="event"') == len(events)
    assert 'class="curve"' in page and "<b>" not in page and "&lt;clip&gt;" in page
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing loaded from elsewhere
    pngs = PNG_URI.findall(page)
    # the curve, the six images (crops, DIs, flow) of the one card whose crops are held, the flow's colour key
    assert len(pngs) == 1 + 6 + 1
    assert "flow to the apex" in page and "flow colour key" in page
    for data in pngs:
        assert base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n")
    assert page.count("not held") == 2 * 5
    assert "not been validated on real, spontaneous micro-expressions" in page  # the bundled model
    assert f"max_context {SpotterOptions().max_context}" in page  # the settings table


def test_report_marks_the_dropped_candidates_by_reason() -> None:
    n = 300
    t = np.arange(n) / 30.0
    score = np.abs(np.random.default_rng(1).normal(1.0, 0.5, n))
    rejected = [Rejection(60, 2.0, "brow_inner_l", 3.1, "context", 2.25),
                Rejection(120, 4.0, "cheek_r", 2.2, "too_small", 4.25),
                Rejection(121, 4.033, "cheek_l", 2.4, "too_small", 4.283),
                Rejection(200, 6.667, "lid_upper_l", 9.0, "blink", 6.917)]
    counts = {**dict.fromkeys(REJECT_REASONS, 0), "context": 1, "too_small": 2, "blink": 1}
    result = VideoResult(path="/v/clip.mp4", name="clip", status="ok", frames=n, face_frames=n, duration_s=10.0,
                         fps=30.0, events={"micro": 0, "macro": 0}, model="m", engine="onnxruntime")
    page = render_report(ReportInputs(
        result=result, labels=("negative", "positive"), engine_reason="test", settings=AnalyzeOptions(model="m.onnx"),
        t=t, score=score, threshold=np.full(n, 2.0), face=np.ones(n, dtype=bool), events=[], windows={},
        rejected=rejected, rejected_counts=counts))
    assert "only a candidate" in page and f"max_context = {SpotterOptions().max_context}" in page
    assert "4 candidates were dropped" in page
    hover = re.findall(r'<span class="rej" style="left:([\d.]+)%;top:([\d.]+)%" title="([^"]*)"', page)
    assert len(hover) == len(rejected)
    assert all(0 < float(x) < 100 and 0 < float(y) < 100 for x, y, _ in hover)
    assert [float(x) for x, _, _ in hover] == sorted(float(x) for x, _, _ in hover)  # in time order
    assert "apex frame 60 (2.000 s) · brow_inner_l · score 3.10 · dropped: context" in hover[0][2]
    for reason, n_dropped in counts.items():  # the legend: every reason, its symbol, count and meaning
        colour, _, glyph = REJECT_STYLES[reason]
        assert re.search(f'<td style="color:{colour}">{glyph}</td><td>{reason}</td><td class="n">{n_dropped}</td>',
                         page), reason
    assert "not been validated" not in page  # a model of the user's own
    assert "flow colour key" not in page  # no card shows a flow
    unknown = render_report(ReportInputs(
        result=result, labels=(), engine_reason="test", settings=AnalyzeOptions(spotting="learned"), t=t,
        score=score, threshold=np.full(n, 2.0), face=np.ones(n, dtype=bool), events=[], windows={}))
    assert "does not report" in unknown and '<span class="rej"' not in unknown


def test_every_reason_has_a_marker_and_the_flow_key_reads_as_described() -> None:
    assert set(REJECT_STYLES) == set(REJECT_REASONS)
    assert len({(colour, marker) for colour, marker, _ in REJECT_STYLES.values()}) == len(REJECT_STYLES)
    key = cv2.cvtColor(flow_key(96), cv2.COLOR_BGR2HSV).astype(int)
    centre = 48
    assert key[centre, centre, 2] < 20  # still: black
    hue = {"right": key[centre, 90, 0], "down": key[90, centre, 0], "left": key[centre, 5, 0], "up": key[5, centre, 0]}
    assert hue["right"] in (0, 1, 178, 179)  # red
    assert 35 <= hue["down"] <= 55  # yellow-green (OpenCV hue is degrees / 2)
    assert 85 <= hue["left"] <= 95  # cyan
    assert 130 <= hue["up"] <= 140  # violet
    assert key[centre, 90, 2] > 200 and (key[0, 0] == [0, 0, 255]).all()  # bright at the rim, white outside


# --- end to end: a synthetic clip, a garbage file, a video without a face ----------------------------------


@pytest.fixture(scope="module")
def corpus(face_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """in/clips/clip.mp4 (8 s synthetic, one micro-expression), in/bad.txt naming bad/broken.mp4 (random bytes)
    and bad/noface.avi (grey noise); the user cache in tmp."""
    from training.demo import synthetic_video

    root = tmp_path_factory.mktemp("analyze")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MER_FACE_MODEL", str(face_model_path))
        mp.setenv("MER_CACHE_DIR", str(root / "cache"))
        clip, _ = synthetic_video(seconds=8.0, fps=30.0, seed=3, face_model=face_model_path,
                                  cache_dir=root / "cache" / "videos")
        (root / "in" / "clips").mkdir(parents=True)
        shutil.copy(clip, root / "in" / "clips" / "clip.mp4")
        _touch(root / "in" / "bad" / "broken.mp4", np.random.default_rng(1).bytes(40_000))
        writer = cv2.VideoWriter(str(root / "in" / "bad" / "noface.avi"), cv2.VideoWriter.fourcc(*"MJPG"), 30.0,
                                 (160, 120))
        for i in range(20):
            writer.write(np.random.default_rng(i).integers(90, 160, (120, 160, 3), dtype=np.uint8))
        writer.release()
        (root / "in" / "bad.txt").write_text("bad/broken.mp4\nbad/noface.avi\n")
        yield {"root": root, "clips": root / "in" / "clips", "list": root / "in" / "bad.txt"}


@pytest.fixture(scope="module")
def first_run(corpus: dict[str, Path]) -> tuple[int, str, Path, str]:
    """The clip folder and the list of bad files, with blendshapes: (exit code, stderr, out, summary.csv)."""
    out = corpus["root"] / "out1"
    code, err = _run(corpus["clips"], corpus["list"], "--out", out, "--blendshapes")
    return code, err, out, (out / "summary.csv").read_text()


def _events(path: Path) -> list[EventRecord]:
    return [r for r in map(parse_record, path.read_text().splitlines()) if isinstance(r, EventRecord)]


def test_every_output_is_written_and_bad_files_are_one_line_each(first_run: tuple[int, str, Path, str]) -> None:
    code, err, out, _ = first_run
    assert code == 2, err  # two bad files
    assert "Traceback" not in err
    assert len([line for line in err.splitlines() if "broken" in line]) == 1
    assert re.search(r"^FAILED +broken: .*cannot be read", err, re.M)
    assert re.search(r"^no face +noface: no face found", err, re.M)
    assert re.search(r"^ok +clip: 240 frames", err, re.M)
    for name in (*OUTPUT_FILES, "analysis.json"):
        assert (out / "clip" / name).is_file(), name
    rows = {r["name"]: r for r in read_summary(out / "summary.csv")}
    assert [r["status"] for r in read_summary(out / "summary.csv")] == ["failed", "no_face", "ok"]  # by path
    assert rows["clip"]["frames"] == "240" and rows["clip"]["face_frames"] == "240"
    assert rows["broken"]["error"] and rows["noface"]["frames"] == "20"


def test_recording_is_what_mer_live_records(first_run: tuple[int, str, Path, str]) -> None:
    out = first_run[2] / "clip"
    records = [parse_record(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert [r.seq for r in records] == list(range(len(records)))
    assert isinstance(records[-1], SummaryRecord) and records[-1].frames == 240 and records[-1].reason == "end"
    events = _events(out / "events.jsonl")
    assert events, "the synthetic clip has a micro-expression; no event was spotted"
    assert all(r.source == "file:clip.mp4" for r in records)
    bundled = json.loads((DEFAULT_MODEL_DIR / "model.card.json").read_text(encoding="utf-8"))["name"]
    assert all(e.model == bundled and e.engine for e in events)
    assert all(e.label is not None for e in events if e.kind == "micro")  # classified through the engine


def test_csv_tables_agree_with_the_recording(first_run: tuple[int, str, Path, str]) -> None:
    out = first_run[2] / "clip"
    events = _events(out / "events.jsonl")
    with (out / "events.csv").open(newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    labels = tuple(events[0].probs) if events and events[0].probs else ("negative", "positive", "surprise")
    assert reader.fieldnames == event_columns(labels)
    assert len(rows) == len(events)
    for row, e in zip(rows, events, strict=True):
        assert (int(row["onset_frame"]), int(row["apex_frame"]), int(row["offset_frame"])) == \
            (e.onset.frame, e.apex.frame, e.offset.frame)
        assert float(row["onset_s"]) == pytest.approx(e.onset.t, abs=1e-6)
        assert float(row["offset_s"]) == pytest.approx(e.offset.t, abs=1e-6)
        assert row["kind"] == e.kind and row["label"] == (e.label or "") and row["video"] == "clip"
        assert float(row["duration_ms"]) == e.duration_ms
        for label, p in e.probs.items():
            assert float(row[f"prob_{label}"]) == p
        if e.confidence is not None:
            assert float(row["confidence"]) == e.confidence
    with (out / "frames.csv").open(newline="") as fh:
        reader = csv.DictReader(fh)
        frames = list(reader)
    assert len(frames) == 240 and [int(f["frame"]) for f in frames] == list(range(240))
    assert reader.fieldnames is not None and reader.fieldnames[:5] == ["frame", "t_s", "face", "score", "threshold"]
    assert any(name.startswith("disp_") for name in reader.fieldnames)
    assert all(f["face"] == "1" for f in frames)
    assert all(f[name] != "" for f in frames for name in BLENDSHAPE_NAMES)  # MediaPipe's names, every frame
    assert any(f["threshold"] != "" for f in frames)
    for e in events:  # the curve is the highest region's score: at the event's peak it reaches the event's score
        scores = [float(f["score"]) for f in frames[e.onset.frame:e.offset.frame + 15] if f["score"]]
        assert max(scores) >= e.intensity - 1e-4


def test_rejected_csv_agrees_with_the_summarys_counts(first_run: tuple[int, str, Path, str]) -> None:
    out = first_run[2] / "clip"
    summary = [r for r in map(parse_record, (out / "events.jsonl").read_text().splitlines())
               if isinstance(r, SummaryRecord)][-1]
    with (out / "rejected.csv").open(newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert reader.fieldnames == list(REJECTED_COLUMNS)
    assert summary.rejected is not None and set(summary.rejected) == set(REJECT_REASONS)  # the rule spotter
    assert {reason: sum(1 for r in rows if r["reason"] == reason) for reason in REJECT_REASONS} == summary.rejected
    page = (out / "report.html").read_text()
    assert page.count('<span class="rej"') == len(rows)


def test_report_has_the_curve_and_one_card_per_event(first_run: tuple[int, str, Path, str]) -> None:
    out = first_run[2] / "clip"
    page = (out / "report.html").read_text()
    events = _events(out / "events.jsonl")
    assert page.count('<section class="event"') == len(events)
    assert 'class="curve"' in page and not re.search(r'(src|href)="(?!data:)', page)
    pngs = PNG_URI.findall(page)
    assert len(pngs) >= 1 + 6 * len(events)  # the curve; crops, DIs and flow of each event
    assert all(base64.b64decode(d).startswith(b"\x89PNG") for d in pngs)
    for e in events:
        assert f"(frame {e.onset.frame})" in page and f"(frame {e.offset.frame})" in page


def test_rerun_skips_force_redoes_in_worker_processes(corpus: dict[str, Path],
                                                      first_run: tuple[int, str, Path, str]) -> None:
    out = first_run[2]
    recording = out / "clip" / "events.jsonl"
    stamp = recording.stat().st_mtime_ns
    summary = first_run[3]
    code, err = _run(corpus["clips"], corpus["list"], "--out", out, "--blendshapes")
    assert code == 2 and re.search(r"^skipped +clip", err, re.M) and re.search(r"^skipped +noface", err, re.M)
    assert re.search(r"^FAILED +broken", err, re.M)  # a failed video is tried again
    assert recording.stat().st_mtime_ns == stamp and (out / "summary.csv").read_text() == summary
    code, err = _run(corpus["clips"], corpus["list"], "--out", out, "--blendshapes", "--force", "--jobs", "2")
    assert code == 2 and "skipped" not in err and re.search(r"^ok +clip", err, re.M), err
    assert recording.stat().st_mtime_ns != stamp
    assert (out / "summary.csv").read_text() == summary  # the same results from worker processes
    code, err = _run(corpus["clips"], "--out", out)  # other settings: analysed again
    assert code == 0 and re.search(r"^ok +clip", err, re.M)
    assert json.loads((out / "clip" / "analysis.json").read_text())["key_parts"]["settings"]["blendshapes"] is False


def test_shards_merge_into_the_summary_of_one_run(corpus: dict[str, Path], first_run: tuple[int, str, Path, str]) -> None:
    full = first_run[3]
    out = corpus["root"] / "sharded"
    for k in (1, 2):
        code, _ = _run(corpus["clips"], corpus["list"], "--out", out, "--blendshapes", "--shard", f"{k}/2")
        assert code == 2  # each shard holds a bad file
        assert (out / f"summary.shard-{k}-of-2.csv").is_file()
    assert not (out / "summary.csv").exists()
    assert _run("merge", out)[0] == 2
    assert (out / "summary.csv").read_text() == full


def test_interrupted_batch_exits_130_and_keeps_no_half_result(corpus: dict[str, Path],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import mer_offline.batch

    def interrupted(*args: object, **kwargs: object) -> VideoResult:
        raise KeyboardInterrupt

    monkeypatch.setattr(mer_offline.batch, "analyze_video", interrupted)
    out = corpus["root"] / "interrupted"
    code, err = _run(corpus["clips"], "--out", out)
    assert code == 130 and "interrupted" in err and "Traceback" not in err
    assert not (out / "summary.csv").exists() and not (out / "clip" / "analysis.json").exists()

"""``mer-live --windows FILE.csv``: given windows classified instead of spotted — the file's checks, the plan
in the pipeline (file order, DIs from the one builder, long windows, faceless frames, the end), and the CLI."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from fakes import fake_card, tracked_face
from in_process import Ran, run_main
from ports import free_port, subscribed

from mer_analysis.chain import AnalyzerOptions
from mer_core.dynamic_image import build_streams
from mer_core.events import EventRecord, Record, SummaryRecord, parse_record
from realtime.face import TrackedFace
from realtime.pipeline import Pipeline, PipelineOptions
from realtime.sources import ArraySource
from realtime.windows import MAX_WINDOW_FRAMES, WindowsFileError, read_windows

REPO = Path(__file__).resolve().parents[1]
FPS = 30.0
LABELS = ("negative", "positive", "surprise")


def _write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8", newline="")
    else:
        path.write_bytes(text)
    return path


# --- the file ---------------------------------------------------------------------------------------------


def test_a_good_file_is_read_in_order_whatever_its_layout(tmp_path: Path) -> None:
    """Header names in any case and order, other columns ignored, BOM, CRLF, blank lines, empty labels."""
    text = ("\ufeffSubject,Label, Offset ,Apex,Onset,notes\r\n"
            "s01,surprise,40,35,30,first\r\n"
            "\r\n"
            "s01,,12,11,10,\r\n"
            "s02, Positive ,5,5,5,one frame\r\n")
    wf = read_windows(_write(tmp_path / "w.csv", text))
    assert wf.labelled
    assert [(w.line, w.onset, w.apex, w.offset, w.label) for w in wf.windows] == [
        (2, 30, 35, 40, "surprise"), (4, 10, 11, 12, None), (5, 5, 5, 5, "Positive")]
    assert wf.longest == 11


def test_semicolons_tabs_and_utf16_are_read(tmp_path: Path) -> None:
    semi = read_windows(_write(tmp_path / "semi.csv", "onset;apex;offset\n1;2;3\n"))
    tab = read_windows(_write(tmp_path / "tab.csv", "onset\tapex\toffset\n1\t2\t3\n"))
    utf16 = read_windows(_write(tmp_path / "u16.csv", "onset,apex,offset,label\n1,2,3,é\n".encode("utf-16")))
    for wf in (semi, tab, utf16):
        assert [(w.onset, w.apex, w.offset) for w in wf.windows] == [(1, 2, 3)]
    assert not semi.labelled and utf16.windows[0].label == "é"


BAD_FILES: dict[str, tuple[str | bytes, int, str]] = {
    "missing column": ("onset,offset,label\n1,3,x\n", 1, "apex"),
    "non-integer cell": ("onset,apex,offset\n1,2,3\n4,5.5,6\n", 3, "5.5"),
    "text cell": ("onset,apex,offset\n1,two,3\n", 2, "two"),
    "empty cell": ("onset,apex,offset\n1,2,3\n\n4,,6\n", 4, "apex"),
    "short row": ("onset,apex,offset\n1,2\n", 2, "offset"),
    "apex outside": ("onset,apex,offset\n1,2,3\n10,20,15\n", 3, "apex 20"),
    "onset after offset": ("onset,apex,offset\n9,5,3\n", 2, "onset 9"),
    "negative index": ("onset,apex,offset\n-1,0,3\n", 2, "negative"),
    "empty file": ("", 1, "empty"),
    "blank file": ("\n \n", 1, "empty"),
    "header only": ("onset,apex,offset\n", 1, "no windows"),
    "duplicate column": ("onset,apex,offset,Apex\n1,2,3,4\n", 1, "twice"),
    "window too long": (f"onset,apex,offset\n0,1,{MAX_WINDOW_FRAMES}\n", 2, str(MAX_WINDOW_FRAMES)),
    "not utf-8": (b"onset,apex,offset,label\n1,2,3,ok\n4,5,6,caf\xe9\n", 3, "UTF-8"),
    "binary": (b"onset,apex,offset\n1,2,3\n\x00\x01\x02", 3, "NUL"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_file_names_the_file_and_the_line(case: str, tmp_path: Path) -> None:
    text, line, needle = BAD_FILES[case]
    path = _write(tmp_path / "bad.csv", text)
    with pytest.raises(WindowsFileError) as err:
        read_windows(path)
    message = str(err.value)
    assert message.startswith(f"{path} line {line}:"), message
    assert needle.lower() in message.lower(), message
    assert "\n" not in message


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(WindowsFileError, match="nope.csv"):
        read_windows(tmp_path / "nope.csv")
    with pytest.raises(WindowsFileError, match="cannot read"):
        read_windows(tmp_path)  # a folder


def test_the_frame_count_refuses_windows_past_the_end(tmp_path: Path) -> None:
    wf = read_windows(_write(tmp_path / "w.csv", "onset,apex,offset\n0,1,2\n230,235,239\n238,240,241\n"
                                                 "300,301,302\n"))
    with pytest.raises(WindowsFileError, match=r"line 5: offset frame 302 is past the end .*240 frames"):
        wf.check_length(240)
    ok = read_windows(_write(tmp_path / "ok.csv", "onset,apex,offset\n0,1,2\n238,240,241\n"))
    ok.check_length(240)  # within the count's own tolerance: tried, named at the end if really past it
    ok.check_length(None)  # no count: named at the end


# --- the plan inside the pipeline (no face model: a stand-in tracker, a stand-in engine) -------------------


class _CropTracker:
    """The frame's centre is the aligned crop; no face on the frames listed in ``faceless``."""

    landmarks = np.random.default_rng(0).uniform(20, 108, (478, 2)).astype(np.float32)

    def __init__(self, faceless: frozenset[int] = frozenset()) -> None:
        self.faceless = faceless
        self.calls = 0

    def process(self, frame_bgr: np.ndarray, t: float) -> TrackedFace | None:
        index, self.calls = self.calls, self.calls + 1
        if index in self.faceless:
            return None
        return tracked_face(np.ascontiguousarray(_crop(frame_bgr)), self.landmarks)


def _crop(frame: np.ndarray) -> np.ndarray:
    gray = frame[..., 0]
    h, w = gray.shape
    return gray[(h - 128) // 2:(h + 128) // 2, (w - 128) // 2:(w + 128) // 2]


class _Engine:
    """Keeps what it was fed; answers "positive" for every window."""

    name = "fake"

    def __init__(self) -> None:
        self.card = fake_card(LABELS, "fake-model")
        self.inputs: list[np.ndarray] = []

    def predict(self, batch: np.ndarray) -> np.ndarray:
        self.inputs.extend(batch)
        out = np.full((len(batch), 3), 0.1, np.float32)
        out[:, 1] = 0.8
        return out


def _frames(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    base = cv2.resize(rng.integers(40, 215, (16, 16), dtype=np.uint8), (160, 160), interpolation=cv2.INTER_CUBIC)
    frames = []
    for i in range(n):
        img = np.roll(base, i % 7, axis=1).copy()
        img[70:80, 60:100] = np.uint8(100 + 3 * (i % 20))  # something that changes from frame to frame
        frames.append(cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
    return frames


def _pipeline_run(tmp_path: Path, rows: str, *, n: int = 90, faceless: frozenset[int] = frozenset(),
                  duration_s: float | None = None) -> tuple[list[Record], Pipeline, _Engine, list[np.ndarray]]:
    windows = read_windows(_write(tmp_path / "w.csv", rows))
    frames = _frames(n)
    engine = _Engine()
    records: list[Record] = []
    # a crop history of 12 frames (0.05 s × 240 fps): every window below is longer than that
    analyzer = AnalyzerOptions(history_s=0.05)
    options = PipelineOptions(fast=True, analyzer=analyzer, windows=windows, duration_s=duration_s)
    pipeline = Pipeline(ArraySource(frames, fps=FPS, name="file:test.mp4"), _CropTracker(faceless), engine,
                        records.append, options)
    pipeline.run()
    return records, pipeline, engine, frames


def _events(records: list[Record]) -> list[EventRecord]:
    return [r for r in records if isinstance(r, EventRecord)]


@pytest.mark.usefixtures("no_thread_left_behind")
def test_one_event_per_window_in_file_order_with_dis_from_the_shared_builder(tmp_path: Path) -> None:
    rows = ("onset,apex,offset,label\n"
            "50,60,80,positive\n"    # ends last but comes first: the others wait for it
            "5,8,12,Negative\n"      # case does not matter
            "20,25,34,happiness\n"   # not a label of the model: counted as wrong
            "5,6,7,\n")              # no label: not scored
    records, pipeline, engine, frames = _pipeline_run(tmp_path, rows)
    events = _events(records)
    assert [(e.onset.frame, e.apex.frame, e.offset.frame) for e in events] == [
        (50, 60, 80), (5, 8, 12), (20, 25, 34), (5, 6, 7)]
    for e in events:
        assert e.onset.t == pytest.approx(e.onset.frame / FPS) and e.offset.t == pytest.approx(e.offset.frame / FPS)
        assert e.label == "positive" and e.model == "fake-model" and e.engine == "fake"
    assert [e.kind for e in events] == ["macro", "micro", "micro", "micro"]  # 1 s is longer than micro_max 0.5 s
    # exactly what the DI builder makes from the window's crops, though 31 and 15 frames > the 12-frame history
    streams = pipeline.options.analyzer.streams
    for e, fed in zip(events, engine.inputs, strict=True):
        crops = np.stack([_crop(f) for f in frames[e.onset.frame:e.offset.frame + 1]])
        want = build_streams(crops, 0, e.apex.frame - e.onset.frame, e.offset.frame - e.onset.frame, streams,
                             size=pipeline.options.analyzer.input_size)
        np.testing.assert_array_equal(fed, want)
    summary = records[-1]
    assert isinstance(summary, SummaryRecord) and summary.events == {"micro": 3, "macro": 1}
    # true (positive, negative, happiness) vs predicted positive ×3: accuracy 1/3; F1 positive 2/(1+3) = 0.5,
    # negative 0, happiness 0 → UF1 1/6
    assert summary.scored == 3
    assert summary.accuracy == pytest.approx(1 / 3, abs=1e-6) and summary.uf1 == pytest.approx(1 / 6, abs=1e-6)
    assert pipeline.windows is not None
    scores = pipeline.windows.scores(LABELS)
    assert scores is not None and scores.foreign == {"happiness": 1}
    assert parse_record(summary.to_json()) == summary


@pytest.mark.usefixtures("no_thread_left_behind")
def test_a_window_with_faceless_frames_gets_no_label_and_a_reason(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    rows = "onset,apex,offset,label\n10,12,20,positive\n30,35,40,positive\n"
    with caplog.at_level(logging.WARNING, logger="realtime.windows"):
        records, _, engine, _ = _pipeline_run(tmp_path, rows, faceless=frozenset({15}))
    events = _events(records)
    assert [(e.onset.frame, e.label) for e in events] == [(10, None), (30, "positive")]
    assert events[0].probs == {} and events[0].confidence is None
    assert len(engine.inputs) == 1
    assert any("line 2" in m and "no face on 1 of its 11 frames" in m for m in caplog.messages), caplog.messages
    summary = records[-1]
    assert isinstance(summary, SummaryRecord) and summary.accuracy == pytest.approx(0.5)
    assert summary.uf1 == pytest.approx(2 / 3, abs=1e-6)  # positive: F1 2·1/(2+1); no class for "no label"


@pytest.mark.usefixtures("no_thread_left_behind")
def test_windows_past_the_end_are_missing_and_the_others_still_go_out(tmp_path: Path) -> None:
    rows = "onset,apex,offset\n70,75,95\n10,12,20\n85,88,89\n200,201,202\n"
    records, pipeline, _, _ = _pipeline_run(tmp_path, rows, n=90)
    assert [(e.onset.frame, e.offset.frame) for e in _events(records)] == [(10, 20), (85, 89)]
    assert pipeline.windows is not None and [w.line for w in pipeline.windows.missing] == [2, 5]
    assert not pipeline.stopped_by_duration
    summary = records[-1]
    assert isinstance(summary, SummaryRecord) and summary.accuracy is None and "accuracy" not in summary.to_dict()


@pytest.mark.usefixtures("no_thread_left_behind")
def test_duration_leaves_later_windows_missing(tmp_path: Path) -> None:
    rows = "onset,apex,offset\n10,12,20\n60,62,70\n"
    records, pipeline, _, _ = _pipeline_run(tmp_path, rows, duration_s=1.0)
    assert [(e.onset.frame, e.offset.frame) for e in _events(records)] == [(10, 20)]
    assert pipeline.windows is not None and [w.line for w in pipeline.windows.missing] == [3]
    assert pipeline.stopped_by_duration


# --- mer-live --windows ------------------------------------------------------------------------------------


def _mer_live(*args: str, env: dict[str, str]) -> Ran:
    """``mer-live ARGS`` in this process (:func:`in_process.run_main`), with ``env`` as its environment."""
    from mer_cli.live import main

    return run_main(main, args, env=env)


def _one_line_error(proc: Ran, *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("mer-live: error:")]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle.lower() in lines[0].lower(), lines[0]
    return lines[0]


def _records(path: Path) -> list[Record]:
    records = [parse_record(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [r.seq for r in records] == list(range(len(records)))
    assert isinstance(records[-1], SummaryRecord) and sum(isinstance(r, SummaryRecord) for r in records) == 1
    return records


@pytest.fixture(scope="module")
def faceless_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 60-frame clip with no face: enough for every check made before the face model is loaded."""
    path = tmp_path_factory.mktemp("clip") / "plain.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), FPS, (160, 160))
    for frame in _frames(60):
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture
def no_models_env(tmp_path: Path) -> dict[str, str]:
    """Neither the face model nor the model exists: a check that passes would fail on them next."""
    return {**os.environ, "MER_CACHE_DIR": str(tmp_path / "cache"), "MER_FACE_MODEL": str(tmp_path / "no.task"),
            "PYTHONUNBUFFERED": "1"}


@pytest.mark.parametrize("case", ["missing column", "non-integer cell", "apex outside", "onset after offset",
                                  "negative index", "empty file", "not utf-8"])
def test_a_bad_file_is_one_line_and_exit_2_before_anything_is_loaded(
    case: str, faceless_video: Path, no_models_env: dict[str, str], tmp_path: Path
) -> None:
    text, line, needle = BAD_FILES[case]
    path = _write(tmp_path / "bad.csv", text)
    proc = _mer_live("--video", str(faceless_video), "--windows", str(path), "--model", str(tmp_path / "none"),
                     "--zmq", "none", "--no-dashboard", env=no_models_env)
    _one_line_error(proc, f"{path} line {line}:", needle)


def test_a_missing_file_is_one_line(faceless_video: Path, no_models_env: dict[str, str], tmp_path: Path) -> None:
    proc = _mer_live("--video", str(faceless_video), "--windows", str(tmp_path / "absent.csv"), "--zmq", "none",
                     env=no_models_env)
    _one_line_error(proc, "absent.csv")


def test_a_window_past_the_reported_length_is_refused_before_loading(
    faceless_video: Path, no_models_env: dict[str, str], tmp_path: Path
) -> None:
    path = _write(tmp_path / "w.csv", "onset,apex,offset\n1,2,3\n50,55,100\n")
    proc = _mer_live("--video", str(faceless_video), "--windows", str(path), "--zmq", "none",
                     env=no_models_env)
    _one_line_error(proc, f"{path} line 3:", "past the end", "60 frames")


@pytest.mark.parametrize("source", [["--camera", "0"], ["--demo"]], ids=["camera", "demo"])
def test_windows_need_a_video(source: list[str], no_models_env: dict[str, str], tmp_path: Path) -> None:
    path = _write(tmp_path / "w.csv", "onset,apex,offset\n1,2,3\n")
    _one_line_error(_mer_live(*source, "--windows", str(path), env=no_models_env), "--windows needs --video")


@pytest.fixture(scope="module")
def env(face_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    cache = tmp_path_factory.mktemp("cache")
    return {**os.environ, "MER_FACE_MODEL": str(face_model_path), "MER_CACHE_DIR": str(cache),
            "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def clip(env: dict[str, str]) -> tuple[Path, list[dict[str, str]]]:
    """An 8 s synthetic clip (240 frames) and the rows of its annotations.csv."""
    from training.demo import synthetic_video

    video, annotations = synthetic_video(seconds=8.0, fps=FPS, seed=7, face_model=env["MER_FACE_MODEL"],
                                         cache_dir=Path(env["MER_CACHE_DIR"]) / "videos")
    with annotations.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows
    return video, rows


def test_mer_live_classifies_the_annotated_windows_in_file_order(
    clip: tuple[Path, list[dict[str, str]]], env: dict[str, str], tmp_path: Path
) -> None:
    """The clip's annotations (reversed, so not sorted by onset) plus a window with a label the model lacks:
    one event per row, in file order, on ZMQ and in the recording; accuracy and UF1 in the summary."""

    video, rows = clip
    wanted = [(int(r["onset"]), int(r["apex"]), int(r["offset"]), r["label"]) for r in reversed(rows)]
    wanted.append((100, 105, 110, "happiness"))
    path = tmp_path / "windows.csv"
    path.write_text("label,offset,apex,onset\n" + "".join(f"{lab},{off},{ap},{on}\n" for on, ap, off, lab in wanted))

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    record = tmp_path / "out.jsonl"
    with subscribed(endpoint, timeout_s=180) as received:
        proc = _mer_live("--video", str(video), "--fast", "--no-dashboard", "--windows", str(path), "--record",
                         str(record), "--zmq", endpoint, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    records = _records(record)
    events = [r for r in records if isinstance(r, EventRecord)]
    assert [(e.onset.frame, e.apex.frame, e.offset.frame) for e in events] == [w[:3] for w in wanted]
    for e, (on, _, off, _) in zip(events, wanted, strict=True):
        assert e.kind == ("micro" if (off - on) / FPS <= 0.5 else "macro")
        assert e.label in LABELS and abs(sum(e.probs.values()) - 1) < 1e-3
        assert e.model and e.engine
    summary = records[-1]
    assert isinstance(summary, SummaryRecord) and summary.scored == len(wanted)
    right = sum(e.label == w[3] for e, w in zip(events, wanted, strict=True))  # "happiness" never is
    assert summary.accuracy == pytest.approx(right / len(wanted), abs=1e-6)
    assert summary.uf1 is not None and 0.0 <= summary.uf1 <= 1.0
    end = [ln for ln in proc.stderr.splitlines() if ln.startswith("mer-live: end:")]
    assert len(end) == 1 and f"accuracy {summary.accuracy:.1%}, UF1 {summary.uf1:.3f}" in end[0], proc.stderr
    warnings = [ln for ln in proc.stderr.splitlines() if "happiness" in ln]
    assert len(warnings) == 1 and warnings[0].startswith("mer-live: warning:"), proc.stderr
    got = [r for r in received if isinstance(r, EventRecord)]
    assert [r.to_json() for r in got] == [e.to_json() for e in events]


def test_a_window_past_the_end_found_at_the_end_keeps_the_recording_whole(
    clip: tuple[Path, list[dict[str, str]]], env: dict[str, str], tmp_path: Path
) -> None:
    """240 frames; the container's count is trusted within its tolerance, so frame 241 is only found missing
    at the end: the other windows are published, the summary written, and one line names the row."""
    video, _ = clip
    path = _write(tmp_path / "w.csv", "onset,apex,offset\n230,235,241\n10,12,18\n")
    record = tmp_path / "out.jsonl"
    proc = _mer_live("--video", str(video), "--fast", "--no-dashboard", "--windows", str(path), "--record",
                     str(record), "--zmq", "none", env=env)
    _one_line_error(proc, f"{path} line 2:", "frame 241", "past the end", "240 frames read")
    records = _records(record)
    assert [(e.onset.frame, e.offset.frame) for e in records if isinstance(e, EventRecord)] == [(10, 18)]
    assert isinstance(records[-1], SummaryRecord) and records[-1].reason == "end"

"""Spotting readers (CAS(ME)^2, SAMM long videos, csv) and the frame-folder source, on tiny fixtures built in
tmp_path in the real layouts: headerless CAS(ME)^2 workbook with naming sheets, SAMM workbook with a preamble,
jpg frame folders, an MJPG .avi, and a folder written the way ``mer-synth onto`` writes it."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest

openpyxl = pytest.importorskip("openpyxl")

from realtime.sources import DEFAULT_FPS, FrameFolderSource, FrameSource, SourceError, open_source  # noqa: E402
from training.datasets.base import DatasetError  # noqa: E402
from training.datasets.spotting import (  # noqa: E402
    CASME2_LONG_FPS,
    SAMM_LONG_FPS,
    LongVideo,
    SpotDataset,
    SpotInterval,
    read_spotting_dataset,
)

SIZE = 16


def _frame(value: int) -> np.ndarray:
    """A flat grey image whose level encodes ``value`` (survives JPEG)."""
    return np.full((SIZE, SIZE, 3), value, dtype=np.uint8)


def _frames(folder: Path, numbers: range, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for n in numbers:
        cv2.imwrite(str(folder / name.format(n)), _frame(min(10 * n, 250)))
    return folder


def _avi(path: Path, n: int, fps: float = 30.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (SIZE, SIZE))
    assert writer.isOpened()
    for i in range(n):
        writer.write(_frame(20 + 5 * i))
    writer.release()
    return path


def _workbook(path: Path, sheets: Sequence[tuple[str, Sequence[Sequence[object]]]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    wb = openpyxl.Workbook()
    wb.remove(wb.active)
    for title, rows in sheets:
        ws = wb.create_sheet(title)
        for row in rows:
            ws.append(list(row))
    wb.save(path)
    return path


def _csv(path: Path, rows: Sequence[Sequence[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    return path


def _video(dataset: SpotDataset, name: str) -> LongVideo:
    return next(v for v in dataset.videos if v.video == name)


def _skips(dataset: SpotDataset) -> dict[str, str]:
    """video/filename → kind of the (last) skip recorded for it."""
    return {s.clip: s.kind for s in dataset.skipped}


# --- CAS(ME)^2 ----------------------------------------------------------------------------------------

_CASME2_CODES = [
    [1, "disgust1_1", 5, 8, 12, "4+L7", "negative", "micro-expression", "disgust"],
    [1, "disgust1_2", 20, 0, 30, "12", "Positive", "macro-expression", "happy"],  # no apex: midpoint
    [2, "anger1_1", 3, 5, 9, "4", "negative", "micro-expression", "anger"],  # a .avi in rawvideo
    [1, "disgust1_3", "abc", 3, 9, "", "", "micro-expression", ""],  # non-numeric frame
    [1, "disgust1_4", 30, 31, 25, "", "", "micro-expression", ""],  # onset after offset
    [1, "disgust1_5", 10, 30, 20, "", "", "micro-expression", ""],  # apex outside
    [1, "disgust1_6", 10, 12, 0, "", "", "micro-expression", ""],  # no offset
    [1, "disgust1_7", 10, 12, 14, "", "", "blink", ""],  # unknown type
    [1, "disgust1_8", 10, 12, 99, "", "", "macro-expression", ""],  # beyond the 40 frames
    [3, "happy1_1", 2, 3, 4, "", "", "micro-expression", ""],  # s19 has no video on disk
    [99, "disgust1_1", 2, 3, 4, "", "", "micro-expression", ""],  # not in naming rule1
    [1, "sleepy1_1", 2, 3, 4, "", "", "micro-expression", ""],  # not in naming rule2
]


def _casme2(root: Path, codes: Sequence[Sequence[object]] = _CASME2_CODES) -> Path:
    _workbook(root / "CAS(ME)^2code_final.xlsx", [
        ("CASFEcode_final", codes),
        ("naming rule1", [[15, "s15", 1], [16, "s16", 2], [19, "s19", 3]]),
        ("naming rule2", [["0101", "disgust1"], ["0401", "anger1"], ["0502", "happy1"]]),
    ])
    _frames(root / "rawpic" / "s15" / "15_0101disgustingteeth", range(1, 41), "img{}.jpg")
    _avi(root / "rawvideo" / "s16" / "16_0401eatingworms.avi", 20)
    (root / "rawvideo" / "s19").mkdir(parents=True)
    return root


def test_casme2_long_intervals_are_0_based_and_rows_map_to_videos(tmp_path: Path) -> None:
    data = read_spotting_dataset(_casme2(tmp_path), "casme2-long")
    assert data.name == "casme2-long" and data.root == tmp_path
    assert [v.video for v in data.videos] == ["s15/15_0101", "s16/16_0401"]
    assert data.subjects == ("s15", "s16")
    frames = _video(data, "s15/15_0101")
    assert frames.path == tmp_path / "rawpic" / "s15" / "15_0101disgustingteeth" and frames.path.is_dir()
    assert frames.fps == CASME2_LONG_FPS and frames.first_frame == 1 and frames.n_frames == 40
    assert frames.intervals == (
        SpotInterval(4, 7, 11, "micro", "negative", "4+L7"),  # sheet 5/8/12, img1 = frame 1
        SpotInterval(19, 24, 29, "macro", "positive", "12"),  # apex 0 → midpoint of 20..30 = 25
    )
    video = _video(data, "s16/16_0401")
    assert video.path.suffix == ".avi" and video.first_frame == 1 and video.n_frames is None
    assert video.intervals == (SpotInterval(2, 4, 8, "micro", "negative", "4"),)
    assert data.notes == {"apex missing (midpoint used)": 1}


def test_casme2_long_bad_rows_are_skipped_with_reasons(tmp_path: Path) -> None:
    data = read_spotting_dataset(_casme2(tmp_path), "casme2-long")
    kinds = [(s.row, s.kind) for s in data.skipped]
    assert kinds == [
        (4, "non-numeric frame"), (5, "onset after offset"), (6, "apex outside onset..offset"),
        (7, "missing offset"), (8, "unknown type"), (9, "beyond the video's end"), (10, "missing video"),
        (11, "unknown subject"), (12, "unknown video"),
    ]
    missing = next(s for s in data.skipped if s.kind == "missing video")
    assert missing.clip == "s19/19_0502" and "rawpic" in missing.detail
    assert data.skipped_counts()["missing video"] == 1
    summary = data.summary()
    assert summary["videos"] == 2 and summary["intervals"] == {"micro": 2, "macro": 1}
    assert len(summary["skipped_rows"]) == 9


def test_casme2_long_csv_export_without_naming_sheets_uses_the_release_names(tmp_path: Path) -> None:
    _frames(tmp_path / "rawpic" / "s15" / "15_0101disgustingteeth", range(1, 21), "img{}.jpg")
    _frames(tmp_path / "rawpic" / "s32" / "32_0502happy", range(1, 21), "img{}.jpg")
    _csv(tmp_path / "CAS(ME)^2code_final.csv", [
        ["s15", "disgust1_1", 5, 8, 12, "4", "negative", "micro-expression", "disgust"],  # 's15' id
        [15, "happy1_1", 2, "/", 6, "12", "positive", "micro-expression", "happy"],  # participant 15 → s32
        [1, "0101_2", 14, 15, 16, "", "", "macro-expression", ""],  # code given directly
    ])
    data = read_spotting_dataset(tmp_path)  # auto
    assert data.name == "casme2-long" and not data.skipped
    assert [v.video for v in data.videos] == ["s15/15_0101", "s32/32_0502"]
    assert _video(data, "s15/15_0101").intervals == (
        SpotInterval(4, 7, 11, "micro", "negative", "4"), SpotInterval(13, 14, 15, "macro"),
    )
    assert _video(data, "s32/32_0502").intervals[0].apex == 3  # '/' → midpoint of 2..6 = 4 → index 3


def test_casme2_long_header_row_is_found_by_content(tmp_path: Path) -> None:
    _frames(tmp_path / "rawpic" / "s15" / "15_0101x", range(1, 21), "img{}.jpg")
    _workbook(tmp_path / "code_final_relabelled.xlsx", [("Sheet1", [
        ["Participant", "Video name", "Onset frame", "Apex frame", "Offset frame", "AUs", "Estimated emotion",
         "Expression type", "Self-reported emotion"],
        [1, "disgust1_1", 5, 8, 12, "4", "others", "micro-expression", "x"],
    ])])
    data = read_spotting_dataset(tmp_path)
    assert data.videos[0].intervals == (SpotInterval(4, 7, 11, "micro", "others", "4"),)


# --- SAMM long videos ---------------------------------------------------------------------------------

_SAMM_HEADER = ["Subject", "Filename", "Inducement Code", "Onset", "Apex", "Offset", "Duration", "Type",
                "Action Units", "Notes"]


def _samm(root: Path, rows: Sequence[Sequence[object]], header: Sequence[object] = _SAMM_HEADER) -> Path:
    preamble: list[Sequence[object]] = [["SAMM Long Videos - micro and macro-movements"], ["Release V3"], [None],
                ["Frame numbers are those of the image files"], [None]]
    _workbook(root / "SAMM_LongVideos_V3_Release.xlsx", [("FACS_Movement_Only", [*preamble, header, *rows])])
    _frames(root / "SAMM_longvideos" / "006_1", range(1, 61), "006_1_{:04d}.jpg")
    _frames(root / "SAMM_longvideos" / "007_3", range(1, 31), "007_3_{:05d}.jpg")
    return root


def test_samm_long_intervals_and_skips(tmp_path: Path) -> None:
    data = read_spotting_dataset(_samm(tmp_path, [
        [6, "006_1_1", 1, 10, 15, 20, 11, "Micro - 1/2", "R12", None],
        [6, "006_1_2", 1, 30, -1, 45, 16, "Macro", "12+6", "blink before"],  # apex -1: midpoint
        [7, "007_3_1", 2, 5, 6, 8, 4, "Micro", 4.0, None],
        [6, "006_1_3", 1, 50, 55, 99, 50, "Micro", "", None],  # beyond frame 60
        [6, "006_2_1", 1, 5, 6, 8, 4, "Micro", "", None],  # no folder 006_2
        [6, "006_1_4", 1, 40, 42, 44, 5, "Blink", "", None],  # unknown type
        [6, "006_1_5", 1, 40, "", "", 5, "Macro", "", None],  # no offset
        [6, "006", 1, 40, 42, 44, 5, "Micro", "", None],  # filename without a video part
    ]), "samm-long")
    assert data.name == "samm-long"
    assert [v.video for v in data.videos] == ["006_1", "007_3"]
    assert data.subjects == ("006", "007")
    video = _video(data, "006_1")
    assert video.fps == SAMM_LONG_FPS and video.first_frame == 1 and video.n_frames == 60
    assert video.path == tmp_path / "SAMM_longvideos" / "006_1"
    assert video.intervals == (SpotInterval(9, 14, 19, "micro", "", "R12"), SpotInterval(29, 36, 44, "macro", "", "12+6"))
    assert _video(data, "007_3").intervals == (SpotInterval(4, 5, 7, "micro", "", "4"),)  # 00001.jpg naming
    assert _skips(data) == {"006_1_3": "beyond the video's end", "006_2_1": "missing video",
                            "006_1_4": "unknown type", "006_1_5": "missing offset", "006": "bad filename"}
    assert data.notes["apex missing (midpoint used)"] == 1


def test_samm_long_header_without_type_is_an_error(tmp_path: Path) -> None:
    header = [c for c in _SAMM_HEADER if c != "Type"]
    with pytest.raises(DatasetError, match="no header row with Filename, Onset, Offset and Type") as info:
        read_spotting_dataset(_samm(tmp_path, [], header=header), "samm-long")
    assert "\n" not in str(info.value)


# --- csv and mer-synth onto ---------------------------------------------------------------------------


def test_csv_paths_fps_and_0_based_indices(tmp_path: Path) -> None:
    _avi(tmp_path / "talk.avi", 30, fps=25.0)
    _frames(tmp_path / "frames" / "clipA", range(0, 20), "{:06d}.png")
    _csv(tmp_path / "annotations.csv", [
        ["video", "subject", "onset", "apex", "offset", "kind", "label", "aus", "fps", "path"],
        ["talk", "ann", 0, 2, 4, "micro", "happiness", "12", "", ""],  # fps from the file itself
        ["talk", "ann", 10, "", 20, "macro", "", "", "", ""],  # blank apex: midpoint
        ["a", "bob", 3, 4, 5, "micro", "", "", 60, "frames/clipA"],
        ["a", "bob", 3, 4, 25, "micro", "", "", 60, "frames/clipA"],  # past the 20 frames
        ["a", "bob", 1, 1, 2, "blink", "", "", 60, "frames/clipA"],
        ["a", "bob", 3, 4, 5, "micro", "", "", 30, "frames/clipA"],  # another fps for the same video
        ["ghost", "bob", 1, 2, 3, "micro", "", "", "", ""],
        ["talk", "ann", "x", 2, 4, "micro", "", "", "", ""],
    ])
    data = read_spotting_dataset(tmp_path)
    assert data.name == "csv"
    talk = _video(data, "talk")
    assert talk.fps == pytest.approx(25.0) and talk.first_frame == 0 and talk.subject == "ann"
    assert talk.intervals == (SpotInterval(0, 2, 4, "micro", "happiness", "12"), SpotInterval(10, 15, 20, "macro"))
    a = _video(data, "a")
    assert a.path == tmp_path / "frames" / "clipA" and a.fps == 60.0 and a.n_frames == 20
    assert [s.kind for s in data.skipped] == ["beyond the video's end", "unknown type", "conflicting video",
                                               "missing video", "non-numeric frame"]


def test_csv_header_lacking_columns_is_an_error(tmp_path: Path) -> None:
    _csv(tmp_path / "annotations.csv", [["video", "subject", "onset", "apex", "offset"], ["v", "s", 1, 2, 3]])
    with pytest.raises(DatasetError, match=r"header lacks column\(s\) \['kind'\]"):
        read_spotting_dataset(tmp_path, "csv")


def test_reads_a_folder_as_mer_synth_onto_writes_it(tmp_path: Path) -> None:
    from training.synth_onto import ONTO_COLUMNS, OntoPlan
    from training.synth_timing import Expression

    fps, n = 30.0, 45
    out = tmp_path / "onto"
    _avi(out / "desk.avi", n, fps=fps)
    _avi(out / "desk_2.avi", n, fps=fps)
    micro = Expression(kind="micro", label="happiness", aus=(6, 12), intensities=(0.8, 1.0), amplitude=0.2,
                       onset_s=0.3, rise_s=0.1, hold_s=0.05, fall_s=0.1)
    macro = Expression(kind="macro", label="surprise", aus=(1, 2), intensities=(1.0, 1.0), amplitude=0.6,
                       onset_s=0.9, rise_s=0.15, hold_s=0.1, fall_s=0.2)
    rows: list[dict[str, object]] = []
    for video in ("desk", "desk_2"):
        rows += OntoPlan(video, "desk.mp4", fps, n, (micro, macro), (0,)).rows()
    with (out / "annotations.csv").open("w", newline="", encoding="utf-8") as fh:  # as write_onto does
        writer = csv.DictWriter(fh, fieldnames=list(ONTO_COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    _csv(out / "recognition" / "annotations.csv", [["subject", "clip", "onset", "apex", "offset", "label"]])
    (out / "manifest.json").write_text("{}\n", encoding="utf-8")
    for kind in ("auto", "csv"):
        data = read_spotting_dataset(out, kind)
        assert data.name == "csv" and not data.skipped
        assert [v.video for v in data.videos] == ["desk", "desk_2"]
        desk = _video(data, "desk")
        assert desk.path == out / "desk.avi" and desk.fps == fps and desk.n_frames == n and desk.subject == "desk"
        expected = [(int(str(r["onset"])), int(str(r["apex"])), int(str(r["offset"])), r["kind"], r["label"])
                    for r in rows if r["video"] == "desk"]
        assert [(i.onset, i.apex, i.offset, i.kind, i.label) for i in desk.intervals] == expected
        assert desk.intervals[0].aus == "6+12"


# --- auto-detection and dataset errors ----------------------------------------------------------------


def test_auto_detection_by_the_annotation_file(tmp_path: Path) -> None:
    casme = _casme2(tmp_path / "casme")
    samm = _samm(tmp_path / "samm", [[6, "006_1_1", 1, 10, 15, 20, 11, "Micro - 1/2", "R12", None]])
    assert read_spotting_dataset(casme).name == "casme2-long"
    assert read_spotting_dataset(samm).name == "samm-long"
    assert read_spotting_dataset(samm / "SAMM_LongVideos_V3_Release.xlsx").name == "samm-long"  # the file itself
    nested = tmp_path / "dataset_new"  # the sheet one folder below the given root
    nested.mkdir()
    casme.rename(nested / "CAS(ME)^2")
    assert read_spotting_dataset(nested).videos[0].video == "s15/15_0101"
    samm.rename(nested / "SAMM")
    with pytest.raises(DatasetError, match="several datasets"):
        read_spotting_dataset(nested)
    assert read_spotting_dataset(nested, "samm-long").name == "samm-long"


@pytest.mark.parametrize(
    ("make", "kind", "message"),
    [
        (lambda d: d / "nope", "auto", "does not exist"),
        (lambda d: d, "auto", "no spotting annotation in"),
        (lambda d: d, "samm-long", r"expected SAMM long videos \(\*LongVideos\*\.xlsx\)"),
        (lambda d: d, "casme3", "unknown spotting dataset kind"),
        (lambda d: _csv(d / "notes.csv", [["a", "b"]]).parent / "notes.csv", "auto", "header lacks column"),
        (lambda d: _casme2(d, [[3, "happy1_1", 2, 3, 4, "", "", "micro-expression", ""]]), "auto",
         r"no usable annotation row .*missing video 1.*rawpic/s15"),
        (lambda d: _csv(d / "annotations.csv", [["video", "onset", "offset", "kind"]]).parent, "auto",
         "no usable annotation row .*the sheet has no rows"),
    ],
)
def test_dataset_errors_are_one_actionable_line(tmp_path: Path, make: object, kind: str, message: str) -> None:
    assert callable(make)
    with pytest.raises(DatasetError, match=message) as info:
        read_spotting_dataset(make(tmp_path), kind)
    assert "\n" not in str(info.value)


# --- frame-folder source ------------------------------------------------------------------------------


def _levels(source: FrameSource) -> list[int]:
    return [round(float(frame.mean()) / 10) for frame in source.frames()]


def test_frame_folder_source_reads_in_number_order(tmp_path: Path) -> None:
    folder = _frames(tmp_path / "15_0101x", range(1, 13), "img{}.jpg")  # img1 … img12, not zero-padded
    (folder / "notes.txt").write_text("not a frame", encoding="utf-8")
    with open_source(folder) as source:
        assert isinstance(source, FrameFolderSource)
        assert source.name == "frames:15_0101x" and not source.is_live
        assert source.frame_count == 12 and source.fps == DEFAULT_FPS and (source.width, source.height) == (SIZE, SIZE)
        assert _levels(source) == list(range(1, 13))  # img2 before img10
        assert source.error is None and source.frames_read == 12 and source.read() is None
    assert source.closed
    with open_source(str(folder), fps=SAMM_LONG_FPS) as fast:
        assert fast.fps == SAMM_LONG_FPS and fast.frame_count == 12
    with open_source(_avi(tmp_path / "clip.avi", 5), fps=99.0) as video:  # fps is for folders only
        assert video.name == "file:clip.avi" and video.fps == pytest.approx(30.0)


def test_frame_folder_source_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="is a directory with no files") as info:
        open_source(empty)
    assert "\n" not in str(info.value)
    unnumbered = tmp_path / "stills"
    unnumbered.mkdir()
    cv2.imwrite(str(unnumbered / "cover.jpg"), _frame(50))
    (unnumbered / "readme.txt").write_text("x", encoding="utf-8")
    with pytest.raises(SourceError, match="no numbered images among its 2 entries"):
        open_source(unnumbered)
    with pytest.raises(SourceError, match="positive"):
        open_source(_frames(tmp_path / "ok", range(1, 3), "f{}.png"), fps=0.0)
    broken_first = _frames(tmp_path / "broken_first", range(1, 4), "img{}.jpg")
    (broken_first / "img1.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(SourceError, match=r"cannot read img1\.jpg"):
        open_source(broken_first)


def test_frame_folder_source_ends_with_an_error_on_a_bad_image(tmp_path: Path) -> None:
    folder = _frames(tmp_path / "clip", range(1, 6), "img{}.jpg")
    (folder / "img3.jpg").write_bytes(b"truncated")
    with open_source(folder) as source:
        assert _levels(source) == [1, 2]
        assert source.error is not None and "img3.jpg" in source.error and "frame 3 of 5" in source.error
        assert source.read() is None
    resized = _frames(tmp_path / "resized", range(1, 4), "img{}.jpg")
    cv2.imwrite(str(resized / "img2.jpg"), np.zeros((8, 8, 3), np.uint8))
    with open_source(resized) as source:
        assert len(list(source.frames())) == 1
        assert source.error is not None and "img2.jpg is 8x8" in source.error

"""Dataset readers on tiny fixtures in the real layouts (xlsx with quirky rows, generated jpg frames)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest

openpyxl = pytest.importorskip("openpyxl")

from training.cache import DICache, DIOptions  # noqa: E402
from training.datasets import SCHEMES, load_dataset, normalize_emotion  # noqa: E402
from training.datasets.base import DatasetError, parse_aus, parse_frame  # noqa: E402
from training.datasets.frames import FrameOptions, estimate_apex, load_clip, resample_numbers  # noqa: E402

SIZE = 48


def _texture(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(60, 200, (8, 8), dtype=np.uint8), (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)
    return cv2.cvtColor(base, cv2.COLOR_GRAY2BGR)


def _write_clip(folder: Path, numbers: range, name: str, *, seed: int = 0, ext: str = ".jpg") -> None:
    """A textured face-sized image with a bright blob moving right (peak displacement mid-clip)."""
    folder.mkdir(parents=True, exist_ok=True)
    base = _texture(seed)
    n = len(numbers)
    for i, number in enumerate(numbers):
        img = base.copy()
        shift = int(round(8 * np.sin(np.pi * i / max(n - 1, 1))))
        cv2.circle(img, (16 + shift, 24), 5, (255, 255, 255), -1)
        cv2.imwrite(str(folder / name.format(number)), img)


def _xlsx(path: Path, rows: Sequence[Sequence[object]]) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    for row in rows:
        ws.append(row)
    wb.save(path)


# --- cell parsing ---------------------------------------------------------------------------------------


def test_parse_aus_normalises_quirky_strings() -> None:
    assert parse_aus("R10") == ("AU10-R",)
    assert parse_aus("4+L7") == ("AU4", "AU7-L")
    assert parse_aus("AU12B+AU4") == ("AU4", "AU12")
    assert parse_aus(14.0) == ("AU14",)
    assert parse_aus(None) == () and parse_aus("") == () and parse_aus("?") == ()


def test_parse_frame() -> None:
    assert parse_frame(46.0, what="onset") == 46
    assert parse_frame(" 12 ", what="onset") == 12
    assert parse_frame("/", what="apex", optional=True) is None
    assert parse_frame(None, what="apex", optional=True) is None
    assert parse_frame(-1, what="apex", optional=True) is None


def test_emotion_names_and_schemes() -> None:
    assert normalize_emotion(" Happiness ") == "happiness"
    assert normalize_emotion("Other") == "others"
    megc = SCHEMES["megc3"]
    assert [megc.classify(e) for e in ("repression", "Anger", "contempt", "happy", "surprise", "others")] == [
        "negative", "negative", "negative", "positive", "surprise", None]
    casme = SCHEMES["casme5"]
    assert casme.classify("fear") is None and casme.classify("others") == "others"


# --- CASME-II -------------------------------------------------------------------------------------------


@pytest.fixture()
def casme_root(tmp_path: Path) -> Path:
    root = tmp_path / "CASME2"
    root.mkdir()
    header = ["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Action Units", "Estimated Emotion"]
    rows: list[Sequence[object]] = [
        header,
        [1, "EP01_01", 10, 13, 16, "4+L7", "disgust"],
        [1, "EP01_02", 10, "/", 16, "R10", "happiness"],  # "/" apex
        [2, "EP02_01", 20, None, 25, "12", "surprise"],  # blank apex
        [2, "EP02_02", 20, 20, 25, None, "repression"],  # apex == onset
        [3, "EP03_01", 5, 9, 9, "1+2", "others"],  # apex == offset; dropped by megc3
        [3, "EP03_02", 5, 7, 9, "", "fear"],  # dropped by casme5
        [3, "EP03_03", "abc", 7, 9, "", "disgust"],  # non-numeric onset
        [3, "EP03_04", 12, 13, 9, "", "disgust"],  # onset > offset
        [4, "EP04_01", 5, 6, 9, "", "disgust"],  # no folder
        [4, "EP04_02", 5, 6, 30, "", "disgust"],  # offset frame missing
    ]
    _xlsx(root / "CASME2-coding-20140508.xlsx", rows)
    cropped = root / "Cropped"
    _write_clip(cropped / "sub01" / "EP01_01", range(8, 19), "reg_img{}.jpg", seed=1)
    _write_clip(cropped / "sub01" / "EP01_02", range(10, 17), "reg_img{}.jpg", seed=2)
    _write_clip(cropped / "sub02" / "EP02_01", range(20, 26), "reg_img{}.jpg", seed=3)
    _write_clip(cropped / "sub02" / "EP02_02", range(20, 26), "reg_img{}.jpg", seed=4)
    _write_clip(cropped / "sub03" / "EP03_01", range(5, 10), "reg_img{}.jpg", seed=5)
    _write_clip(cropped / "sub03" / "EP03_02", range(5, 10), "reg_img{}.jpg", seed=6)
    _write_clip(cropped / "sub03" / "EP03_03", range(5, 10), "reg_img{}.jpg", seed=7)
    _write_clip(cropped / "sub04" / "EP04_02", range(5, 10), "reg_img{}.jpg", seed=8)
    return root


def test_casme2_megc3(casme_root: Path) -> None:
    index = load_dataset("casme2", casme_root, scheme="megc3")
    by_clip = {s.clip: s for s in index.samples}
    assert sorted(by_clip) == ["sub01/EP01_01", "sub01/EP01_02", "sub02/EP02_01", "sub02/EP02_02", "sub03/EP03_02"]
    assert index.labels == ("negative", "positive", "surprise")
    assert by_clip["sub01/EP01_01"].label == "negative" and by_clip["sub01/EP01_02"].label == "positive"
    assert by_clip["sub03/EP03_02"].label == "negative"  # fear → negative
    assert by_clip["sub01/EP01_01"].aus == ("AU4", "AU7-L")
    assert by_clip["sub01/EP01_02"].aus == ("AU10-R",)
    assert by_clip["sub01/EP01_02"].apex is None and by_clip["sub02/EP02_01"].apex is None
    assert by_clip["sub02/EP02_02"].apex == 20
    first = by_clip["sub01/EP01_01"]
    assert first.frame_numbers == tuple(range(10, 17)) and first.frames[0].name == "reg_img10.jpg"
    assert first.subject == "sub01" and first.fps == 200.0
    assert index.dropped == {"others": 1}
    assert index.skipped_counts() == {"non-numeric frame": 1, "onset after offset": 1, "missing frames": 2}
    assert index.notes["apex missing (estimated from motion)"] == 2
    assert index.subjects == ("sub01", "sub02", "sub03")


def test_casme2_casme5(casme_root: Path) -> None:
    index = load_dataset("casme2", casme_root, scheme="casme5")
    labels = {s.clip: s.label for s in index.samples}
    assert labels["sub03/EP03_01"] == "others" and labels["sub02/EP02_02"] == "repression"
    assert "sub03/EP03_02" not in labels
    assert index.dropped == {"fear": 1}
    summary = index.summary()
    assert summary["samples"] == 5 and summary["dropped"] == {"fear": 1}


def test_missing_annotation_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no annotation file"):
        load_dataset("casme2", tmp_path)


# --- SAMM -----------------------------------------------------------------------------------------------


def test_samm_preamble_and_frame_numbers(tmp_path: Path) -> None:
    root = tmp_path / "SAMM"
    root.mkdir()
    header = ["Subject", "Filename", "Inducement Code", "Onset Frame", "Apex Frame", "Offset Frame", "Duration",
              "Type", "Action Units", "Notes", "Estimated Emotion"]
    rows: list[Sequence[object]] = [
        ["Spontaneous Micro-Facial Movement Dataset (SAMM)"],
        [None],
        ["Micro-movements coded with FACS", None, "v2"],
        header,
        [6, "006_1_2", 1, 5562, 5566, 5570, 9, "Micro - 1/2", "R14A", None, "Contempt"],
        [6, "006_1_3", 1, 5600, -1, 5606, 7, "Micro - 1/2", "4+L7", None, "Happiness"],  # -1 apex
        ["007", "007_3_1", 3, 100, 103, 106, 7, "Micro - 1/2", "12", None, "Other"],  # dropped
        [7, "007_3_2", 3, "x", 103, 106, 7, "Micro - 1/2", "12", None, "Anger"],  # non-numeric
        [7, "007_5_1", 3, 200, 203, 206, 7, "Micro - 1/2", "12", None, "Surprise"],  # no frames
    ]
    _xlsx(root / "SAMM_Micro_FACS_Codes_v2.xlsx", rows)
    _write_clip(root / "006" / "006_1_2", range(5560, 5573), "006_{:05d}.jpg", seed=1)
    _write_clip(root / "006" / "006_1_3", range(5600, 5607), "006_{:05d}.jpg", seed=2)
    _write_clip(root / "007" / "007_3_1", range(100, 107), "007_{:05d}.jpg", seed=3)
    index = load_dataset("samm", root, scheme="megc3")
    by_clip = {s.clip: s for s in index.samples}
    assert sorted(by_clip) == ["006_1_2", "006_1_3"]
    assert by_clip["006_1_2"].subject == "006" and by_clip["006_1_2"].label == "negative"
    assert by_clip["006_1_2"].frame_numbers == tuple(range(5562, 5571)) and by_clip["006_1_2"].aus == ("AU14-R",)
    assert by_clip["006_1_3"].apex is None and by_clip["006_1_3"].label == "positive"
    assert index.dropped == {"others": 1}
    assert index.skipped_counts() == {"non-numeric frame": 1, "missing frames": 1}


# --- MMEW -----------------------------------------------------------------------------------------------


def test_mmew_emotion_folders(tmp_path: Path) -> None:
    root = tmp_path / "MMEW"
    root.mkdir()
    header = ["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "AU", "Estimated Emotion"]
    rows: list[Sequence[object]] = [
        header,
        ["S01", "S01_01", 1, 4, 7, "AU12", "happiness"],
        ["S01", "S01_02", 1, None, 7, "4+7", "disgust"],
        ["S02", "S02_01", 1, 3, 7, "1+2", "Surprise"],  # folder named "surprise"
        ["S02", "S02_02", 1, 3, 7, "", "others"],  # dropped by megc3
        ["S02", "S02_03", 3, 2, 1, "", "fear"],  # onset > offset
    ]
    _xlsx(root / "MMEW_Micro_Exp.xlsx", rows)
    micro = root / "Micro_Expression"
    _write_clip(micro / "happiness" / "S01_01", range(1, 8), "{}.jpg", seed=1)
    _write_clip(micro / "disgust" / "S01_02", range(1, 8), "{}.jpg", seed=2)
    _write_clip(micro / "surprise" / "S02_01", range(1, 8), "{}.jpg", seed=3)
    _write_clip(micro / "others" / "S02_02", range(1, 8), "{}.jpg", seed=4)
    index = load_dataset("mmew", root, scheme="megc3")
    labels = {s.clip: s.label for s in index.samples}
    assert labels == {"S01_01": "positive", "S01_02": "negative", "S02_01": "surprise"}
    assert index.dropped == {"others": 1}
    assert index.skipped_counts() == {"onset after offset": 1}
    assert all(s.fps == 90.0 for s in index.samples)


# --- frames and DIs -------------------------------------------------------------------------------------


def test_resample_200_to_50_fps() -> None:
    numbers = tuple(range(100, 141))  # 41 frames at 200 fps = 0.2 s
    selected, on, ap, off, rate = resample_numbers(numbers, 100, 122, 140, 200.0, 50.0)
    assert selected == [100, 104, 108, 112, 116, 120, 124, 128, 132, 136, 140]
    assert (on, off, rate) == (0, 10, 50.0)
    assert ap is not None and selected[ap] in (120, 124)
    same = resample_numbers(numbers, 100, None, 140, 200.0, None)
    assert same[0] == list(numbers) and same[2] is None and same[4] == 200.0


def test_estimate_apex_picks_the_peak() -> None:
    assert estimate_apex(np.array([0, 1, 5, 2, 0.0]), 0, 4) == 2
    assert estimate_apex(np.array([0.0, 0.0]), 0, 1) == 0


def test_load_clip_and_cached_dis(casme_root: Path, tmp_path: Path) -> None:
    index = load_dataset("casme2", casme_root, scheme="megc3")
    sample = next(s for s in index.samples if s.clip == "sub01/EP01_02")  # apex "/" → estimated
    options = FrameOptions(alignment="none", crop_size=64, channels=1, target_fps=100.0)
    clip = load_clip(sample, options)
    assert clip.frames.shape == (4, 64, 64) and clip.frames.dtype == np.uint8
    assert clip.apex_estimated and clip.onset < clip.apex < clip.offset
    assert clip.fps == 100.0 and clip.intensity.shape == (4,)

    cache = DICache(tmp_path / "cache")
    settings = DIOptions(streams=("onset_apex", "apex_offset", "trdi", "midi"), input_size=32, frames=options)
    batch = cache.build(index.samples, settings)
    assert batch.x.shape == (5, 4, 1, 32, 32) and np.isfinite(batch.x).all()
    assert batch.computed == 5
    files = sorted((tmp_path / "cache").rglob("*.npy"))
    assert len(files) == 20
    again = cache.build(index.samples, settings)
    assert again.computed == 0 and np.array_equal(again.x, batch.x)
    # another setting → another key; touching a frame file invalidates that sample
    other = DIOptions(streams=("trdi",), input_size=32, frames=FrameOptions(alignment="none", crop_size=64))
    assert cache.key(sample, "trdi", other) != cache.key(sample, "trdi", settings)
    before = cache.key(sample, "trdi", settings)
    import os

    st = sample.frames[0].stat()
    os.utime(sample.frames[0], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert cache.key(sample, "trdi", settings) != before


def test_onset_alignment_with_face_model(face_model_path: Path, shared_faces: Path, tmp_path: Path) -> None:
    """With a face model, frames are aligned by the onset frame's landmarks (real face image)."""
    from training.datasets.base import Sample

    face = cv2.imread(str(shared_faces / "single_face.jpg"))
    assert face is not None
    folder = tmp_path / "clip"
    folder.mkdir()
    paths = []
    for i in range(4):
        path = folder / f"img{i}.jpg"
        cv2.imwrite(str(path), np.roll(face, i, axis=1))
        paths.append(path)
    sample = Sample(dataset="t", subject="s", clip="c", emotion="happiness", onset=0, apex=2, offset=3, fps=30.0,
                    frames=tuple(paths), frame_numbers=(0, 1, 2, 3))
    clip = load_clip(sample, FrameOptions(alignment="onset", crop_size=64, face_model=str(face_model_path)))
    assert clip.frames.shape == (4, 64, 64)


def _synth_set(root: Path, subject: str, labels: list[str]) -> Path:
    rows = ["subject,clip,onset,apex,offset,label,aus,fps,n_frames"]
    for k, label in enumerate(labels):
        clip = f"{subject}/{subject}_{k:04d}"
        _write_clip(root / "recognition" / clip, range(6), "{:06d}.png", seed=k)
        rows.append(f"{subject},{clip},0,2,5,{label},12,30,6")
    (root / "recognition" / "annotations.csv").write_text("\n".join(rows) + "\n")
    return root


def test_several_data_folders_merge_into_one_index(tmp_path: Path) -> None:
    from training.datasets.base import merge_indices

    stills = load_dataset("synth", _synth_set(tmp_path / "a", "s01", ["negative", "positive"]), scheme="megc3n")
    video = load_dataset("synth", _synth_set(tmp_path / "b", "franck", ["surprise", "none", "none"]),
                         scheme="megc3n")
    merged = merge_indices([stills, video])
    assert len(merged.samples) == 5 and merged.subjects == ("franck", "s01")
    assert merged.labels == ("negative", "positive", "surprise", "none")
    with pytest.raises(DatasetError, match="is in both"):
        merge_indices([stills, load_dataset("synth", _synth_set(tmp_path / "c", "s01", ["negative"]),
                                             scheme="megc3n")])
    with pytest.raises(DatasetError, match="differ"):
        merge_indices([stills, load_dataset("synth", tmp_path / "b", scheme="megc3")])

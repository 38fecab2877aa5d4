"""mer-synth onto: micro-expressions rendered onto real video, with truth that matches what is rendered."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from mer_cli.synth import main
from realtime.face import FaceTrackerOptions
from training.synth_onto import (
    ONTO_COLUMNS,
    OntoOptions,
    SourceTrack,
    plan_onto,
    render_frame,
    render_onto,
    track_video,
)
from training.synth_render import FaceRig


@pytest.fixture(scope="module")
def clip(shared_faces: Path) -> Path:
    path = shared_faces / "single_face.mp4"  # 72 frames of a real face moving a little, 30 fps
    if not path.is_file():
        pytest.skip("../shared/faces/single_face.mp4 not found")
    return path


@pytest.fixture(scope="module")
def track(clip: Path, face_model_path: Path) -> SourceTrack:
    return track_video(clip, tracker=FaceTrackerOptions(model_path=face_model_path))


def _frames(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(frame)
    cap.release()
    return out


# Short lead, margin and gap so that a 2.4 s clip holds several expressions.
DENSE: dict[str, Any] = {"lead_s": 0.3, "margin_s": 0.1, "gap_s": 0.25, "micro_per_minute": 60.0, "macro_per_minute": 0.0}



def _int(value: object) -> int:
    """An annotation row's frame number (rows are plain dicts of str -> object)."""
    assert isinstance(value, int | str), value
    return int(value)


def _float(value: object) -> float:
    assert isinstance(value, int | float | str), value
    return float(value)

def test_the_track_covers_every_frame(track: SourceTrack) -> None:
    assert track.n_frames == 72 and track.fps == pytest.approx(30.0)
    assert track.face.all()
    assert 20 < float(np.nanmedian(track.iod())) < 200
    assert np.isfinite(track.activity()).all()


@pytest.mark.parametrize("amplitude", [0.03, 0.06])
def test_truth_frames_and_amplitude_match_what_is_rendered(track: SourceTrack, clip: Path, amplitude: float) -> None:
    settings = OntoOptions(amplitude=(amplitude, amplitude), single_au=0.0, one_sided=0.0, **DENSE)
    plan = plan_onto(track, settings, video="v")
    rows = plan.rows()
    assert len(rows) >= 2
    frames = _frames(clip)
    touched = set()
    for k, frame in enumerate(frames):
        out = render_frame(frame, track.landmarks[k], plan.expressions, k / track.fps)
        if out is not None and np.abs(out.astype(int) - frame.astype(int)).max() > 1:
            touched.add(k)
    inside = {k for r in rows for k in range(_int(r["onset"]), _int(r["offset"]) + 1)}
    assert touched <= inside  # nothing changes outside the annotated windows ...
    for r in rows:
        on, ap, off = _int(r["onset"]), _int(r["apex"]), _int(r["offset"])
        assert ap in touched and on not in touched and off not in touched  # ... onset/offset are still frames
        # the largest landmark displacement at the apex is the annotated amplitude, in the frame's own IOD
        e = next(e for e in plan.expressions if round(e.onset_s * track.fps) == on)
        rig = FaceRig(frames[ap], track.landmarks[ap])
        weights = e.weights(ap / track.fps, rig)
        peak = rig.peak_shift(weights) / rig.frame.iod
        assert peak == pytest.approx(_float(r["amplitude"]) * e.envelope(ap / track.fps), rel=0.02)
        assert _float(r["amplitude"]) == pytest.approx(amplitude)
        # and the image really moved by about that much (optical flow source → rendered apex, face region)
        rendered = render_frame(frames[ap], track.landmarks[ap], plan.expressions, ap / track.fps)
        assert rendered is not None
        x0, y0 = np.floor(track.landmarks[ap].min(0)).astype(int)
        x1, y1 = np.ceil(track.landmarks[ap].max(0)).astype(int)
        a = cv2.cvtColor(frames[ap][y0:y1, x0:x1], cv2.COLOR_BGR2GRAY)
        b = cv2.cvtColor(rendered[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY)
        flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 2, 9, 5, 5, 1.1, 0)
        moved = float(np.percentile(np.hypot(flow[..., 0], flow[..., 1]), 99.5))
        expected = peak * rig.frame.iod
        assert 0.5 * expected < moved < 1.6 * expected, (moved, expected)


def test_one_sided_and_single_au_variants(track: SourceTrack, clip: Path) -> None:
    settings = OntoOptions(amplitude=(0.05, 0.05), single_au=1.0, one_sided=1.0, seed=3, **DENSE)
    plan = plan_onto(track, settings, video="v")
    assert plan.expressions and all(len(e.aus) == 1 and e.side in ("left", "right") for e in plan.expressions)
    frames = _frames(clip)
    for e in plan.expressions:
        ap = int(round(e.apex_s * track.fps))
        lm = track.landmarks[ap]
        out = render_frame(frames[ap], lm, [e], ap / track.fps)
        assert out is not None
        diff = np.abs(out.astype(np.float32) - frames[ap].astype(np.float32)).sum(axis=2)
        mid = float(lm[[33, 133, 263, 362]].mean(0)[0])  # between the eyes: the face's midline
        left, right = diff[:, : int(mid)].sum(), diff[:, int(mid):].sum()
        moved, still = (left, right) if e.side == "left" else (right, left)
        assert moved > 3 * still, (e.aus, e.side, left, right)


def test_calm_placement_avoids_the_busy_part(track: SourceTrack) -> None:
    busy = track.landmarks.copy()
    rng = np.random.default_rng(0)
    busy[36:] += rng.normal(0.0, 3.0, busy[36:].shape).astype(np.float32)  # the second half "talks"
    noisy = SourceTrack(track.path, track.fps, track.size, busy)
    settings = OntoOptions(calm=True, calm_quantile=0.5, **DENSE)
    for seed in range(3):
        plan = plan_onto(noisy, OntoOptions(**{**settings.__dict__, "seed": seed}), video="v")
        assert plan.expressions
        assert all(e.offset_s * track.fps < 40 for e in plan.expressions if e.kind == "micro")


def test_deterministic_for_a_seed(track: SourceTrack) -> None:
    a = plan_onto(track, OntoOptions(seed=5, **DENSE), video="v").rows()
    b = plan_onto(track, OntoOptions(seed=5, **DENSE), video="v").rows()
    c = plan_onto(track, OntoOptions(seed=6, **DENSE), video="v").rows()
    assert a == b and a != c


def test_render_writes_a_camera_like_video_of_the_same_length(track: SourceTrack, tmp_path: Path) -> None:
    settings = OntoOptions(**DENSE)
    plan = plan_onto(track, settings, video="v")
    out = render_onto(track, plan, tmp_path / "v.avi", settings)
    cap = cv2.VideoCapture(str(out))
    fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode()
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    assert fourcc == "MJPG" and n == track.n_frames


def test_cli_writes_videos_annotations_and_manifest(clip: Path, face_model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "onto"
    rc = main(["onto", str(clip), "--out", str(out), "--face-model", str(face_model_path), "--per-minute", "60",
               "--amplitude", "0.04", "--variants", "2", "--gap", "0.3"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "annotations.csv", "manifest.json",
                                                      "single_face_v1.avi", "single_face_v2.avi"]
    with (out / "annotations.csv").open(newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == ONTO_COLUMNS
        rows = list(reader)
    assert rows and {r["video"] for r in rows} <= {"single_face_v1", "single_face_v2"}
    assert all(_float(r["amplitude"]) == pytest.approx(0.04) for r in rows if r["kind"] == "micro")
    assert all(r["source"] == "single_face.mp4" for r in rows)
    assert main(["onto", str(clip), "--out", str(out)]) == 2  # not empty, no --force


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              face_model_path: Path) -> None:
    assert main(["onto", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "o1")]) == 2
    assert "no such video file" in capsys.readouterr().err
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 100)
    assert main(["onto", str(garbage), "--out", str(tmp_path / "o2"), "--face-model", str(face_model_path)]) == 2
    err = capsys.readouterr().err
    assert "garbage.mp4" in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        main(["onto", str(garbage), "--out", str(tmp_path / "o3"), "--amplitude", "0.5,0.1"])
    capsys.readouterr()
    # a displacement of 0.9 eye distances is no micro-expression: refused in one line, nothing written
    assert main(["onto", str(garbage), "--out", str(tmp_path / "o4"), "--amplitude", "0.9"]) == 2
    err = capsys.readouterr().err
    assert "amplitude" in err and "at most 0.5" in err and err.count("\n") == 1
    assert not (tmp_path / "o4").exists()
    # --force replaces outputs, never a source: rendering o5/garbage.avi into o5 would write over it
    (tmp_path / "o5").mkdir()
    source = tmp_path / "o5" / "garbage.avi"
    source.write_bytes(b"not a video at all")
    assert main(["onto", str(source), "--out", str(tmp_path / "o5"), "--force"]) == 2
    assert "one of the source videos" in capsys.readouterr().err
    assert source.read_bytes() == b"not a video at all"


def test_none_clips_come_from_the_uninjected_video(clip: Path, face_model_path: Path, tmp_path: Path) -> None:
    from training.datasets import load_dataset
    from training.synth_onto import write_none_clips

    rows = write_none_clips(clip, tmp_path / "recognition", subject="single_face",
                            tracker=FaceTrackerOptions(model_path=face_model_path), per_minute=120.0)
    assert rows and all(r["label"] == "none" and r["subject"] == "single_face" for r in rows)
    for r in rows:
        frames = sorted((tmp_path / "recognition" / str(r["clip"])).glob("*.png"))
        assert len(frames) == r["n_frames"] and 0 <= _int(r["onset"]) <= _int(r["apex"]) <= _int(r["offset"])
    with (tmp_path / "recognition" / "annotations.csv").open("w", newline="") as fh:
        from training.synth_writer import RECOGNITION_COLUMNS

        writer = csv.DictWriter(fh, fieldnames=list(RECOGNITION_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    assert len(load_dataset("synth", tmp_path, scheme="megc3n").samples) == len(rows)
    assert len(load_dataset("synth", tmp_path, scheme="megc3").samples) == 0  # dropped by the 3-class scheme

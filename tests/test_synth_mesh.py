"""mer-synth onto's "mesh" render family: truth that matches what is rendered, and a warp family left as it was."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from mer_cli.synth import main
from realtime.face import FaceTrackerOptions
from training.aus import FaceFrame
from training.synth_mesh import (
    PROFILES,
    Camera,
    MeshExpression,
    MeshOptions,
    MeshWarp,
    draw_mesh_expression,
    mesh_shift,
    render_mesh,
)
from training.synth_onto import (
    ONTO_COLUMNS,
    OntoOptions,
    SourceTrack,
    plan_onto,
    render_frame,
    render_onto,
    track_video,
)
from training.synth_options import SynthError, SynthOptions

# Short lead, margin and gap so that a 2.4 s clip holds several expressions.
DENSE: dict[str, Any] = {"lead_s": 0.3, "margin_s": 0.1, "gap_s": 0.25, "micro_per_minute": 60.0,
                         "macro_per_minute": 0.0}


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared 72-frame face clip, else the scikit-image astronaut moving a little (72 frames, 30 fps)."""
    shared = Path(__file__).resolve().parents[2] / "shared" / "faces" / "single_face.mp4"
    if shared.is_file():
        return shared
    skimage_data = pytest.importorskip("skimage.data")
    image = cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR)
    path = tmp_path_factory.mktemp("clip") / "astronaut.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 30.0, (448, 448))
    for k in range(72):
        dx, dy = 24 + round(4 * np.sin(k / 9)), 12 + round(3 * np.cos(k / 13))
        writer.write(np.ascontiguousarray(image[dy : dy + 448, dx : dx + 448]))
    writer.release()
    return path


@pytest.fixture(scope="module")
def track(clip: Path, face_model_path: Path) -> SourceTrack:
    return track_video(clip, tracker=FaceTrackerOptions(model_path=face_model_path))


@pytest.fixture(scope="module")
def frames(clip: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(clip))
    out = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(frame)
    cap.release()
    return out


def _int(value: object) -> int:
    assert isinstance(value, int | str), value
    return int(value)


def _float(value: object) -> float:
    assert isinstance(value, int | float | str), value
    return float(value)


def _mesh(e: object) -> MeshExpression:
    assert isinstance(e, MeshExpression), e
    return e


@pytest.mark.parametrize("amplitude", [0.03, 0.06])
def test_truth_frames_and_amplitude_match_what_is_rendered(track: SourceTrack, frames: list[np.ndarray],
                                                           amplitude: float) -> None:
    settings = OntoOptions(family="mesh", amplitude=(amplitude, amplitude), single_au=0.0, one_sided=0.0, **DENSE)
    plan = plan_onto(track, settings, video="v")
    rows = plan.rows()
    assert len(rows) >= 2 and all(r["family"] == "mesh" for r in rows)
    assert plan.camera is not None
    touched = set()
    for k, frame in enumerate(frames):
        out = render_frame(frame, track.landmarks[k], plan.expressions, k / track.fps)
        if out is not None and (out != frame).any():
            touched.add(k)
    for r, e in zip(rows, plan.expressions, strict=True):
        on, ap, off = _int(r["onset"]), _int(r["apex"]), _int(r["offset"])
        moved = {k for k in touched if on <= k <= off}
        # the rows mean what they mean for the warp family: the face moves right after the onset frame and
        # is still again at the offset frame; nothing moves outside (onset, offset)
        assert min(moved) == on + 1 and max(moved) == off - 1 and ap in moved
        assert e.envelope(ap / track.fps) == pytest.approx(1.0)
        assert all(e.envelope(k / track.fps) <= e.envelope(ap / track.fps) + 1e-12 for k in range(on, off + 1))
        # the largest landmark displacement at apex is the amplitude × that frame's IOD ...
        lm = track.landmarks[ap].astype(np.float64)
        iod = FaceFrame.from_landmarks(lm).iod
        shift = mesh_shift(lm, _mesh(e))
        assert float(np.hypot(*shift.T).max()) == pytest.approx(_float(r["amplitude"]) * iod, rel=1e-6)
        assert _float(r["amplitude"]) == pytest.approx(amplitude)
        # ... and the warp moves the image by that much: warp a picture of its own coordinates, read back where
        # each pixel came from
        warp = MeshWarp(lm, frames[ap].shape[:2])
        h, w = frames[ap].shape[:2]
        xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        moved_x, moved_y = xs - warp.apply(xs, shift), ys - warp.apply(ys, shift)
        measured = float(np.hypot(moved_x, moved_y).max())
        assert measured == pytest.approx(amplitude * iod, abs=0.6), (measured, amplitude * iod)
    assert touched <= {k for r in rows for k in range(_int(r["onset"]) + 1, _int(r["offset"]))}


def test_one_sided_expressions_move_their_side_only(track: SourceTrack, frames: list[np.ndarray]) -> None:
    settings = OntoOptions(family="mesh", amplitude=(0.05, 0.05), single_au=1.0, one_sided=1.0, seed=3, **DENSE)
    plan = plan_onto(track, settings, video="v")
    assert plan.expressions and all(len(e.aus) == 1 and e.side in ("left", "right") for e in plan.expressions)
    for e in plan.expressions:
        ap = int(round(e.apex_s * track.fps))
        lm = track.landmarks[ap]
        frame = FaceFrame.from_landmarks(lm)
        u = (lm.astype(np.float64) - frame.mid) @ frame.ex / frame.iod
        shift = np.hypot(*mesh_shift(lm, _mesh(e)).T)
        other = u > 0.06 if e.side == "left" else u < -0.06
        assert shift[other].max() == 0.0 and shift.max() > 0
        out = render_frame(frames[ap], lm, [e], ap / track.fps)
        assert out is not None
        diff = np.abs(out.astype(np.float32) - frames[ap].astype(np.float32)).sum(axis=2)
        mid = int(frame.mid[0])
        left, right = diff[:, :mid].sum(), diff[:, mid:].sum()
        moving, still = (left, right) if e.side == "left" else (right, left)
        assert moving > 3 * still, (e.aus, e.side, left, right)


def test_profiles_rise_faster_than_they_fall() -> None:
    settings = SynthOptions(fps=30.0, micro_duration_s=(0.17, 0.5))
    rng = np.random.default_rng(1)
    drawn = [draw_mesh_expression(rng, settings, MeshOptions(), "negative", "micro") for _ in range(400)]
    assert {e.profile for e in drawn} == set(PROFILES)
    rise = np.array([e.rise_s for e in drawn])
    fall = np.array([e.fall_s for e in drawn])
    assert rise.mean() < 0.8 * fall.mean() and (rise < fall).mean() > 0.6
    assert all(e.rise_s < e.fall_s for e in drawn if e.profile == "skewed")
    for e in drawn:
        frames = np.array([e.rise_s + e.hold_s / 2, e.duration_s]) * settings.fps  # apex and offset on frames
        assert np.allclose(frames, np.round(frames), atol=1e-6)
        assert 0.17 - 1e-9 <= e.duration_s <= 0.5 + 1e-9
        assert (e.hold_s * settings.fps >= 2 - 1e-6) == (e.profile == "hold")
        assert 0.06 <= e.extent <= 0.45 and abs(e.balance) <= MeshOptions().imbalance
    linear = next(e for e in drawn if e.profile == "linear")
    assert linear.envelope(linear.rise_s / 2) == pytest.approx(0.5)
    extents = [e.extent for e in drawn]
    assert min(extents) < 0.1 and max(extents) > 0.35  # tight to half a cheek


def test_shading_darkens_compressed_and_brightens_stretched_skin(track: SourceTrack) -> None:
    lm = track.landmarks[30].astype(np.float64)
    grey = np.full((track.size[1], track.size[0], 3), 128, np.uint8)  # moving a flat image changes nothing ...
    e = MeshExpression("micro", "positive", (12,), (1.0,), 0.06, 0.0, 0.1, 0.0, 0.2, extent=0.12, shading=0.4)
    out = render_mesh(grey, lm, [e], 0.1)
    assert out is not None
    warp = MeshWarp(lm, grey.shape[:2])
    shift = mesh_shift(lm, e)
    div = warp.divergence(shift)[: len(lm)]
    # ... so what changed is the shading, at the moved mesh points
    for i, darker in ((int(np.argmin(div)), True), (int(np.argmax(div)), False)):
        x, y = np.round(lm[i] + shift[i]).astype(int)
        value = int(out[y, x, 0])
        assert (value < 126) if darker else (value > 130), (i, div[i], value)
    assert np.abs(out.astype(int) - 128).max() <= 0.1 * 128 + 1


def test_camera_noise_is_seeded_and_as_strong_as_drawn() -> None:
    camera = Camera(2.0, 80, (1, 7, 0))
    frame = np.full((120, 160, 3), 100, np.uint8)
    a, b = camera.noise(), camera.noise()
    first, again = a(frame), b(frame)
    assert np.array_equal(first, again) and not np.array_equal(first, a(frame))
    assert float((first.astype(np.float32) - 100).std()) == pytest.approx(2.0, rel=0.05)
    drawn = [Camera.draw((s, 7, 0), MeshOptions()) for s in range(50)]
    assert all(0 <= c.noise_sigma <= 3 and 70 <= c.quality <= 95 for c in drawn)
    assert len({c.quality for c in drawn}) > 5
    assert camera.compress(frame).shape == frame.shape


def test_camera_effects_reach_every_frame(track: SourceTrack, tmp_path: Path) -> None:
    settings = OntoOptions(family="mesh", **DENSE)
    plan = plan_onto(track, settings, video="v")
    assert plan.camera is not None
    videos = []
    for sigma in (0.0, 3.0):
        camera = Camera(sigma, 90, plan.camera.seed)
        out = render_onto(track, replace(plan, camera=camera), tmp_path / f"v{sigma:g}.avi", settings)
        cap = cv2.VideoCapture(str(out))
        videos.append([cap.read()[1] for _ in range(track.n_frames)])
        cap.release()
    first = min(_int(r["onset"]) for r in plan.rows())
    for k in range(first + 1):  # frames before any expression: noisy too, so noise tells nothing
        assert float(np.abs(videos[0][k].astype(np.float32) - videos[1][k].astype(np.float32)).mean()) > 1.0


# Rows of the warp family for a fixed seed, written by the code before the mesh family existed.
_WARP_ROWS = {
    0: ((285, 313, 353, "macro", "positive", "12+25", "0.1359", "both"),
        (479, 481, 486, "micro", "surprise", "1", "0.0268", "both"),
        (736, 742, 746, "micro", "surprise", "1+2", "0.0303", "both"),
        (852, 857, 860, "micro", "negative", "15", "0.0564", "right"),
        (1015, 1019, 1024, "micro", "negative", "9", "0.0399", "right"),
        (1404, 1408, 1415, "micro", "positive", "12", "0.0462", "both"),
        (1538, 1543, 1546, "micro", "negative", "4", "0.0381", "both")),
    7: ((248, 252, 256, "micro", "negative", "10", "0.0462", "both"),
        (563, 568, 572, "micro", "negative", "14+15", "0.0372", "both"),
        (690, 696, 702, "micro", "surprise", "1+2+25", "0.0544", "both"),
        (1135, 1139, 1145, "micro", "positive", "6+12", "0.0474", "both"),
        (1296, 1310, 1327, "macro", "surprise", "1+2", "0.1925", "both"),
        (1381, 1386, 1388, "micro", "negative", "4+9", "0.0598", "both"),
        (1515, 1520, 1523, "micro", "surprise", "5", "0.0273", "both")),
}


def test_the_warp_family_plans_as_before() -> None:
    landmarks = np.repeat(np.random.default_rng(0).uniform(100, 200, (1, 478, 2)).astype(np.float32), 1800, axis=0)
    track = SourceTrack(Path("clip.mp4"), 30.0, (320, 240), landmarks)  # planning needs no pixels
    for seed, expected in _WARP_ROWS.items():
        rows = plan_onto(track, OntoOptions(seed=seed), video="v", index=seed).rows()
        assert rows == plan_onto(track, OntoOptions(seed=seed, family="warp"), video="v", index=seed).rows()
        assert tuple((r["onset"], r["apex"], r["offset"], r["kind"], r["label"], r["aus"], r["amplitude"], r["side"])
                     for r in rows) == expected
        assert all(r["family"] == "warp" for r in rows)
        assert plan_onto(track, OntoOptions(seed=seed), video="v", index=seed).camera is None
        mesh = plan_onto(track, OntoOptions(seed=seed, family="mesh"), video="v", index=seed)
        assert mesh.rows() != rows and all(isinstance(e, MeshExpression) for e in mesh.expressions)
        assert mesh.rows() == plan_onto(track, OntoOptions(seed=seed, family="mesh"), video="v", index=seed).rows()


def test_bad_family_settings_are_refused() -> None:
    with pytest.raises(SynthError, match="family"):
        OntoOptions(family="rbf")
    with pytest.raises(SynthError, match="extent_iod"):
        MeshOptions(extent_iod=(0.0, 0.3))
    with pytest.raises(SynthError, match="profiles"):
        MeshOptions(profiles=("zigzag",))
    with pytest.raises(SynthError, match="quality"):
        MeshOptions(quality=(50, 120))


def test_cli_writes_a_mesh_family_video_with_its_annotations(clip: Path, face_model_path: Path,
                                                             tmp_path: Path) -> None:
    out = tmp_path / "onto"
    rc = main(["onto", str(clip), "--out", str(out), "--face-model", str(face_model_path), "--family", "mesh",
               "--per-minute", "60", "--amplitude", "0.04", "--gap", "0.3", "--seed", "2"])
    assert rc == 0
    video = out / f"{clip.stem}.avi"
    assert sorted(p.name for p in out.iterdir()) == sorted(["README.md", "annotations.csv", "manifest.json",
                                                            video.name])
    with (out / "annotations.csv").open(newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == ONTO_COLUMNS and ONTO_COLUMNS[-1] == "family"
        rows = list(reader)
    assert rows and all(r["family"] == "mesh" for r in rows)
    assert all(_float(r["amplitude"]) == pytest.approx(0.04) for r in rows if r["kind"] == "micro")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["family"] == "mesh"
    assert "mesh" in (out / "README.md").read_text()
    cap = cv2.VideoCapture(str(video))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    assert n == int(rows[0]["n_frames"])
    with pytest.raises(SystemExit):
        main(["onto", str(clip), "--out", str(tmp_path / "o2"), "--family", "rbf"])

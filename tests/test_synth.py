"""The synthetic micro-expression generator: determinism, annotations, the CLI, and the checks that the
project's motion measures see the generated movements where the annotations put them."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from mer_analysis.motion import MotionMeter
from mer_analysis.spotting import Spotter
from mer_cli.synth import main
from mer_core.alignment import align_face
from mer_core.dynamic_image import motion_intensity
from realtime.landmarks import anchors_from_landmarks
from training.aus import ACTION_UNITS, SCHEMES, au_field, au_landmark_shift, get_scheme
from training.synth import SynthGenerator
from training.synth_faces import FaceSourceError, load_identities
from training.synth_options import SynthError, SynthOptions
from training.synth_timing import draw_expression, ease
from training.synth_writer import DISTRACTOR_COLUMNS, RECOGNITION_COLUMNS, SPOTTING_COLUMNS

# --- no faces needed ----------------------------------------------------------------------------------------



def _frames_of(row: dict[str, object]) -> tuple[int, int, int]:
    """(onset, apex, offset) of a plan's annotation row."""
    on, ap, off = row["onset"], row["apex"], row["offset"]
    assert isinstance(on, int) and isinstance(ap, int) and isinstance(off, int)
    return on, ap, off

def test_schemes_match_the_dataset_readers() -> None:
    from training.datasets.classes import SCHEMES as READER_SCHEMES

    for name, scheme in SCHEMES.items():
        assert scheme.labels == READER_SCHEMES[name].labels
        for cls in scheme.classes:
            assert len(cls.recipes) >= 3, "each class needs AU variety"
            for aus, _ in cls.recipes:
                assert all(a in ACTION_UNITS for a in aus)


@pytest.mark.parametrize("kind", ["smoothstep", "cosine", "power"])
def test_easing_goes_from_zero_to_one(kind: str) -> None:
    s = np.linspace(0, 1, 101)
    y = ease(kind, s, 2.0)
    assert y[0] == pytest.approx(0.0) and y[-1] == pytest.approx(1.0)
    assert np.all(np.diff(y) >= -1e-12)


def test_settings_are_validated() -> None:
    with pytest.raises(SynthError):
        SynthOptions(micro_duration_s=(0.15, 0.6))
    with pytest.raises(SynthError):
        SynthOptions(macro_duration_s=(0.4, 2.0))
    with pytest.raises(ValueError):
        SynthOptions(scheme="nope")
    # settings that used to start generating: a 0.9-IOD "micro"-expression, a negative gap or blink rate
    for bad in ({"micro_amplitude": (0.9, 1.0)}, {"macro_amplitude": (2.0, 3.0)}, {"me_gap_s": -1.0},
                {"blinks_per_minute": float("nan")}):
        with pytest.raises(SynthError, match="invalid setting"):
            SynthOptions(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("fps", [30.0, 200.0])
def test_no_class_shortcut_in_duration_or_amplitude(fps: float) -> None:
    """Every class draws timing and amplitude from the same distributions."""
    settings = SynthOptions(fps=fps)
    stats = {}
    for label in settings.class_scheme.labels:
        rng = np.random.default_rng(1)
        exprs = [draw_expression(rng, settings, label, "micro") for _ in range(400)]
        d = np.array([e.duration_s for e in exprs])
        a = np.array([e.amplitude for e in exprs])
        assert d.min() >= 0.15 - 1e-9 and d.max() <= 0.5 + 1e-9
        stats[label] = (d.mean(), a.mean(), np.array([e.apex_s - e.onset_s for e in exprs]).mean())
        n_recipes = len({e.aus for e in exprs})
        assert n_recipes >= 3, f"{label}: only {n_recipes} AU combinations drawn"
    values = np.array(list(stats.values()))
    spread = (values.max(0) - values.min(0)) / values.mean(0)
    assert np.all(spread < 0.1), stats


# --- with the face model ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def identities(face_model_path: Path, shared_faces: Path):
    return load_identities(shared_faces=shared_faces, model_path=face_model_path)


def test_builtin_identities(identities) -> None:
    assert len(identities) >= 7
    assert [i.subject for i in identities[:3]] == ["s01", "s02", "s03"]
    for ident in identities:
        for mirrored in (False, True):
            rig = ident.rig(mirrored)
            assert rig.landmarks.shape == (478, 2)
            assert 55 < rig.frame.iod < 73  # scenes are scaled to 64 px between the eyes


def test_field_grid_agrees_with_landmark_shift(identities) -> None:
    lm = identities[0].landmarks
    for au in (4, 12, 15):
        x0, y0 = int(lm[:, 0].min()), int(lm[:, 1].min())
        field = au_field(lm, au, origin=(x0, y0), shape=(int(lm[:, 1].max()) - y0 + 1, int(lm[:, 0].max()) - x0 + 1))
        shift = au_landmark_shift(lm, au)
        for i in (61, 291, 105, 334, 17):
            px, py = int(round(lm[i, 0])) - x0, int(round(lm[i, 1])) - y0
            assert np.allclose(field[py, px], shift[i], atol=0.05 * np.abs(shift).max() + 1e-3)


def test_deterministic_for_a_seed(identities) -> None:
    settings = SynthOptions(seed=5, subjects=2, clips_per_class=1, videos=1, video_seconds=6.0)
    a, b = SynthGenerator(settings, identities), SynthGenerator(settings, identities)
    # order does not matter: plan clip 2 first on one generator
    pb = b.clip_plan(1, 2)
    pa = a.clip_plan(1, 2)
    assert pa == pb
    ca, cb = a.render_clip(pa), b.render_clip(pb)
    assert ca.frames.tobytes() == cb.frames.tobytes()
    va = [f.image for f in a.render_video(a.video_plan(0))][::40]
    vb = [f.image for f in b.render_video(b.video_plan(0))][::40]
    assert all(np.array_equal(x, y) for x, y in zip(va, vb, strict=True))
    other = SynthGenerator(SynthOptions(seed=6, subjects=2), identities).clip_plan(1, 2)
    assert other.expression != pa.expression


@pytest.mark.parametrize("fps", [30.0, 200.0])
def test_annotations_are_consistent(identities, fps: float) -> None:
    settings = SynthOptions(fps=fps, videos=6)
    gen = SynthGenerator(settings, identities)
    for plan in gen.clip_plans():
        assert 0 < plan.onset <= plan.apex <= plan.offset < plan.n_frames - 1
        assert 0.15 - 1.0 / fps <= (plan.offset - plan.onset) / fps <= 0.5
        assert plan.onset / fps >= 0.2 - 1.0 / fps  # neutral context before onset
        assert (plan.n_frames - 1 - plan.offset) / fps >= 0.2 - 1.0 / fps  # and after offset
    for vplan in gen.video_plans():
        rows = vplan.rows()
        assert sum(r["kind"] == "micro" for r in rows) >= 3
        windows = [_frames_of(r) for r in rows]
        for r, (on, ap, off) in zip(rows, windows, strict=True):
            assert 0 <= on <= ap <= off < vplan.n_frames
            if r["kind"] == "micro":
                assert (off - on) / fps <= 0.5
            else:
                assert (off - on) / fps > 0.5
        for w1, w2 in itertools.pairwise(windows):
            assert (w2[0] - w1[2]) / fps >= settings.me_gap_s - 1.0 / fps
        for d in vplan.distractor_rows():
            d_on, _, d_off = _frames_of(d)
            assert all(d_off < on or d_on > off for on, _, off in windows)


def test_motion_intensity_peaks_at_the_apex_of_recognition_clips(identities) -> None:
    """The intensity training uses for MIDI and missing apexes (difference to the onset frame) peaks within
    ±2 frames (30 fps) of the annotated apex."""
    gen = SynthGenerator(SynthOptions(clips_per_class=2), identities)
    misses = []
    total = 0
    for s in range(len(gen.identities)):
        for c in range(2 * len(gen.scheme.labels)):
            plan = gen.clip_plan(s, c)
            frames = gen.render_clip(plan).frames
            intensity = motion_intensity(frames, plan.onset)
            peak = plan.onset + int(np.argmax(intensity[plan.onset : plan.offset + 1]))
            total += 1
            if abs(peak - plan.apex) > 2:
                misses.append((plan.clip, plan.label, plan.expression.aus, plan.apex, peak))
    # A few misses are allowed: a flat apex (hold + easing) moves the peak of a noisy difference by a frame
    # or two more, and s02's sunglasses hide brow/eye AUs (real occlusion, kept on purpose).
    assert len(misses) <= total // 10, misses


def test_the_spotter_finds_the_expressions_of_a_long_video_and_not_its_distractors(identities) -> None:
    """Known landmarks + align_face on rendered frames (a fast stand-in for FaceTracker) through the live
    motion meter and spotter: the micro-expressions are found at their annotated windows, and nothing is
    reported during blinks, talking, head moves, flicker or the macro-expression."""
    from mer_core.metrics import frame_iou

    gen = SynthGenerator(SynthOptions(mes_per_video=(4, 4), macros_per_video=(1, 1)), identities)
    plan = gen.video_plan(0, seconds=16.0)
    meter = MotionMeter()
    crops: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def displacement(a: int, b: int) -> np.ndarray:
        return meter.displacement(*crops[a], *crops[b])

    spotter = Spotter(displacement=displacement)
    windows = []
    for vf in gen.render_video(plan):
        a = align_face(vf.image, anchors_from_landmarks(vf.landmarks), crop_size=128, landmarks=vf.landmarks)
        crop = cv2.cvtColor(a.crop, cv2.COLOR_BGR2GRAY)
        crops[vf.index] = (crop, a.landmarks.astype(np.float32))
        windows += spotter.update(meter.update(crop, a.landmarks, vf.index, vf.t), index=vf.index, t=vf.t)
    windows += spotter.flush()
    micro = [(r["onset"], r["offset"]) for r in plan.rows() if r["kind"] == "micro"]
    found = [m for m in micro if any(frame_iou((w.onset.frame, w.offset.frame), m) >= 0.5 for w in windows)]
    assert len(found) >= len(micro) - 1, (windows, micro)
    for w in windows:  # every window is one of the annotated micro-expressions
        assert any(frame_iou((w.onset.frame, w.offset.frame), m) > 0 for m in micro), (w, micro)


def test_cli_writes_both_sets(face_model_path: Path, shared_faces: Path, tmp_path: Path) -> None:
    out = tmp_path / "synth"
    args = ["--out", str(out), "--subjects", "2", "--clips-per-class", "1", "--videos", "1",
            "--video-seconds", "6", "--face-model", str(face_model_path), "--shared-faces", str(shared_faces)]
    assert main(args) == 0
    rec = out / "recognition"
    with (rec / "annotations.csv").open(newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == RECOGNITION_COLUMNS
        rows = list(reader)
    assert len(rows) == 2 * len(get_scheme("megc3").labels)
    for r in rows:
        frames = sorted((rec / r["clip"]).glob("*.png"))
        assert len(frames) == int(r["n_frames"])
        first = cv2.imread(str(frames[0]))
        assert first is not None and first.shape == (128, 128, 3)
        assert int(r["onset"]) <= int(r["apex"]) <= int(r["offset"]) < int(r["n_frames"])
    spot = out / "spotting"
    with (spot / "annotations.csv").open(newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == SPOTTING_COLUMNS
        srows = list(reader)
    with (spot / "distractors.csv").open(newline="") as fh:
        assert tuple(csv.DictReader(fh).fieldnames or ()) == DISTRACTOR_COLUMNS
    videos = sorted(spot.glob("v001.*"))
    assert len(videos) == 1
    cap = cv2.VideoCapture(str(videos[0]))
    n = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape == (360, 640, 3)
        n += 1
    cap.release()
    assert n == 180
    assert all(int(r["n_frames"]) == 180 for r in srows)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 0 and set(manifest["sets"]) == {"recognition", "spotting"}
    assert "annotations.csv" in (out / "README.md").read_text()
    # a second run refuses to overwrite without --force
    assert main(args + ["--set", "recognition"]) == 2


def test_cli_reports_missing_shared_faces(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--out", str(tmp_path / "o"), "--shared-faces", str(tmp_path / "nowhere")])
    assert code == 2
    assert "single_face.jpg" in capsys.readouterr().err


def test_missing_user_faces_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FaceSourceError):
        load_identities(builtin=False, user_faces=tmp_path / "nothing")


def test_help_explains_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in ("--out", "--set", "--seed", "--fps", "--subjects", "--clips-per-class", "--videos",
                   "--video-seconds", "--crop-size", "--faces", "--shared-faces", "--face-model", "--workers"):
        assert option in text

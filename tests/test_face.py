"""realtime.face, realtime.face_model, training.still_faces: model resolution (no network), landmarks on stills,
tracking, alignment stability."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
import pytest

import realtime.face as face
import realtime.face_model as face_model
import realtime.landmarks as landmarks
from mer_core.alignment import align_face, canonical_points, transform_points
from realtime.face import FaceTracker, FaceTrackerOptions, TrackedFace
from realtime.face_model import FaceModelError, resolve_face_model
from realtime.landmarks import anchors_from_landmarks
from training.still_faces import detect_faces

# ------------------------------------------------------------------------------ model resolution (no model)

FAKE = b"not really a face model, but it has a known hash"
BAD = b"something else entirely"


@pytest.fixture
def fake_model_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Expected hash = hash of FAKE; cache under tmp_path; no env var; the network is a failing fake."""
    monkeypatch.setattr(face_model, "FACE_MODEL_SHA256", hashlib.sha256(FAKE).hexdigest())
    monkeypatch.delenv("MER_FACE_MODEL", raising=False)
    monkeypatch.delenv("MER_CACHE_DIR", raising=False)  # else the cache is there, whatever XDG_CACHE_HOME says
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the network must not be touched here")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    paths = {name: tmp_path / f"{name}.task" for name in ("explicit", "env")}
    for p in paths.values():
        p.write_bytes(FAKE)
    paths["cache"] = tmp_path / "cache" / "mer-live" / "face_landmarker.task"
    return paths


def _serve(monkeypatch: pytest.MonkeyPatch, payload: bytes | Exception) -> list[str]:
    calls: list[str] = []

    def fake_urlopen(url: str, timeout: float | None = None) -> io.BytesIO:
        calls.append(url)
        assert timeout is not None and timeout > 0
        if isinstance(payload, Exception):
            raise payload
        return io.BytesIO(payload)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    return calls


def test_cache_path_honours_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MER_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert face_model.default_cache_path() == tmp_path / "xdg" / "mer-live" / "face_landmarker.task"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert face_model.default_cache_path() == tmp_path / "home" / ".cache" / "mer-live" / "face_landmarker.task"
    monkeypatch.setenv("MER_CACHE_DIR", str(tmp_path / "mine"))  # first of all
    assert face_model.default_cache_path() == tmp_path / "mine" / "face_landmarker.task"


def test_tests_never_touch_the_users_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """conftest points the user cache of every test (and of the commands tests start) into the session's
    temporary folder, whatever MER_CACHE_DIR / XDG_CACHE_HOME the user set; the real face model is still found."""
    from mer_core.paths import user_cache_dir

    temporary = tmp_path_factory.getbasetemp().resolve()
    assert user_cache_dir().resolve().is_relative_to(temporary)
    assert Path(os.environ["XDG_CACHE_HOME"]).resolve().is_relative_to(temporary)


def test_resolution_order(fake_model_env: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    p = fake_model_env
    p["cache"].parent.mkdir(parents=True)
    p["cache"].write_bytes(FAKE)
    monkeypatch.setenv("MER_FACE_MODEL", str(p["env"]))
    assert resolve_face_model(p["explicit"]) == p["explicit"]
    assert resolve_face_model(str(p["explicit"])) == p["explicit"]
    assert resolve_face_model() == p["env"]
    monkeypatch.delenv("MER_FACE_MODEL")
    assert resolve_face_model() == p["cache"]


def test_a_relative_mer_face_model_is_resolved_when_read(
    fake_model_env: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``export MER_FACE_MODEL=../shared/...`` then a command started in another folder: the same file."""
    p = fake_model_env
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    monkeypatch.setenv("MER_FACE_MODEL", f"../{p['env'].name}")
    assert face_model.face_model_from_env() == p["env"]
    assert resolve_face_model() == p["env"] and resolve_face_model().is_absolute()
    monkeypatch.setenv("MER_FACE_MODEL", "../missing.task")
    with pytest.raises(FaceModelError, match=str(tmp_path / "missing.task")):  # the absolute path in the message
        resolve_face_model()


def test_wrong_hash_is_refused_not_skipped(
    fake_model_env: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    p = fake_model_env
    p["explicit"].write_bytes(BAD)
    monkeypatch.setenv("MER_FACE_MODEL", str(p["env"]))  # a good file that must NOT be used instead
    with pytest.raises(FaceModelError, match="SHA-256"):
        resolve_face_model(p["explicit"])
    p["env"].write_bytes(BAD)
    with pytest.raises(FaceModelError, match="MER_FACE_MODEL"):
        resolve_face_model()
    with pytest.raises(FaceModelError, match="not found"):
        resolve_face_model(p["explicit"].with_name("missing.task"))


def test_download_to_cache(fake_model_env: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _serve(monkeypatch, FAKE)
    path = resolve_face_model()
    assert path == fake_model_env["cache"] and path.read_bytes() == FAKE
    assert calls == [face_model.FACE_MODEL_URL]
    assert [f.name for f in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    assert resolve_face_model() == path and len(calls) == 1  # now served from the cache


def test_download_with_wrong_hash_leaves_nothing(
    fake_model_env: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _serve(monkeypatch, BAD)
    with pytest.raises(FaceModelError, match="SHA-256"):
        resolve_face_model()
    cache_dir = fake_model_env["cache"].parent
    assert not cache_dir.exists() or list(cache_dir.iterdir()) == []


@pytest.mark.parametrize("error", [urllib.error.URLError("no route to host"), TimeoutError("timed out")])
def test_a_corrupt_cache_offline_is_called_corrupt_not_missing(
    fake_model_env: dict[str, Path], monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    """A bogus cached model (e.g. 48 bytes a test left there) and no network: the message says the file is
    corrupt, how big it is, and what to do; it is never used, nor called "not found"."""
    cache = fake_model_env["cache"]
    cache.parent.mkdir(parents=True)
    cache.write_bytes(BAD)
    _serve(monkeypatch, error)
    with pytest.raises(FaceModelError) as info:
        resolve_face_model()
    message = str(info.value)
    assert f"cached face model {cache} is corrupt ({len(BAD)} bytes" in message
    assert "not found" not in message and "delete it" in message and "MER_FACE_MODEL" in message
    assert cache.read_bytes() == BAD  # left for the user to see; a good download would have replaced it


def test_corrupt_cache_is_downloaded_again(
    fake_model_env: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = fake_model_env["cache"]
    cache.parent.mkdir(parents=True)
    cache.write_bytes(BAD)
    with pytest.raises(FaceModelError, match="corrupt"):
        resolve_face_model(download=False)
    _serve(monkeypatch, FAKE)
    assert resolve_face_model() == cache and cache.read_bytes() == FAKE


@pytest.mark.parametrize("error", [urllib.error.URLError("no route to host"), TimeoutError("timed out")])
def test_offline_message_says_where_to_put_the_file(
    fake_model_env: dict[str, Path], monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    _serve(monkeypatch, error)
    with pytest.raises(FaceModelError) as info:
        resolve_face_model()
    message = str(info.value)
    assert "MER_FACE_MODEL" in message and str(fake_model_env["cache"]) in message
    with pytest.raises(FaceModelError, match="MER_FACE_MODEL"):
        resolve_face_model(download=False)


def test_import_is_cheap() -> None:
    code = (
        "import sys, realtime.face; assert 'mediapipe' not in sys.modules; assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_options_are_validated() -> None:
    with pytest.raises(ValueError):
        FaceTrackerOptions(max_faces=0)
    with pytest.raises(ValueError):
        FaceTrackerOptions(min_detection_confidence=1.5)
    with pytest.raises(ValueError):
        FaceTrackerOptions(landmark_every=0)


def test_anchors_need_the_full_mesh() -> None:
    with pytest.raises(ValueError, match="478"):
        anchors_from_landmarks(np.zeros((68, 2)))


# ------------------------------------------------------------------------------------ with the real model


@pytest.fixture(scope="module")
def video_frames(shared_faces: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(shared_faces / "single_face.mp4"))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert len(frames) >= 60, "single_face.mp4 should have 72 frames"
    return frames


@pytest.fixture(scope="module")
def photo(shared_faces: Path) -> np.ndarray:
    image = cv2.imread(str(shared_faces / "single_face.jpg"))
    assert image is not None
    return image


def _tracker(model: Path, **kwargs: Any) -> FaceTracker:
    return FaceTracker(FaceTrackerOptions(model_path=model, **kwargs))


def test_single_face_still(face_model_path: Path, photo: np.ndarray) -> None:
    faces = detect_faces(photo, model_path=face_model_path)
    assert len(faces) == 1
    lm = faces[0]
    assert lm.shape == (478, 2) and lm.dtype == np.float32
    h, w = photo.shape[:2]
    assert (lm[:, 0] > 0).all() and (lm[:, 0] < w).all() and (lm[:, 1] > 0).all() and (lm[:, 1] < h).all()
    anchors = anchors_from_landmarks(lm)
    assert anchors.shape == (3, 2)
    left, right, nose = anchors
    assert left[0] < nose[0] < right[0] and nose[1] > max(left[1], right[1])  # upright face


def test_multi_face_still(face_model_path: Path, shared_faces: Path) -> None:
    image = cv2.imread(str(shared_faces / "multi_face.jpg"))
    assert image is not None
    faces = detect_faces(image, model_path=face_model_path)
    assert len(faces) == 5  # the detector alone finds 2: the tiles find the other 3
    areas = [np.ptp(f[:, 0]) * np.ptp(f[:, 1]) for f in faces]
    assert areas == sorted(areas, reverse=True)
    centres = np.array([f.mean(axis=0) for f in faces])
    distances = np.linalg.norm(centres[:, None] - centres[None], axis=2) + np.eye(5) * 1e9
    assert distances.min() > 60  # five different people, no duplicates


def test_no_face(face_model_path: Path) -> None:
    assert detect_faces(np.full((240, 320, 3), 127, np.uint8), model_path=face_model_path) == []


def test_video_frames(face_model_path: Path, video_frames: list[np.ndarray]) -> None:
    with _tracker(face_model_path, color=True, blendshapes=True) as tracker:
        results = [tracker.process(frame, i / 30.0) for i, frame in enumerate(video_frames[:30])]
    assert all(isinstance(r, TrackedFace) for r in results)
    r = results[-1]
    assert r is not None
    assert r.landmarks.shape == (478, 2) and r.crop_landmarks.shape == (478, 2)
    assert r.crop.shape == (128, 128) and r.crop.dtype == np.uint8
    assert r.crop_bgr is not None and r.crop_bgr.shape == (128, 128, 3)
    assert r.matrix.shape == (2, 3) and r.anchors.shape == (3, 2)
    assert "eyeBlinkLeft" in r.blendshapes
    np.testing.assert_allclose(transform_points(r.matrix, r.landmarks), r.crop_landmarks, atol=1e-3)
    # the anchors land on the canonical template
    np.testing.assert_allclose(transform_points(r.matrix, r.anchors), canonical_points(128), atol=2.0)
    x0, y0, x1, y1 = r.bbox
    assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 360


def test_crops_do_not_alias(face_model_path: Path, video_frames: list[np.ndarray]) -> None:
    with _tracker(face_model_path, color=True) as tracker:
        first = tracker.process(video_frames[0], 0.0)
        assert first is not None and first.crop_bgr is not None
        kept, kept_bgr = first.crop.copy(), first.crop_bgr.copy()
        second = tracker.process(video_frames[40], 0.04)
        assert second is not None and second.crop_bgr is not None
    assert not np.shares_memory(first.crop, second.crop)
    assert not np.shares_memory(first.crop_bgr, second.crop_bgr)
    assert np.array_equal(first.crop, kept) and np.array_equal(first.crop_bgr, kept_bgr)


def _on_canvas(image: np.ndarray, pad: int) -> np.ndarray:
    return cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(127, 127, 127))


def test_alignment_is_stable_under_shift_rotation_scale(face_model_path: Path, photo: np.ndarray) -> None:
    """The same face moved in the image gives (almost) the same aligned landmarks: < 1 px mean in a 128 crop."""
    canvas = _on_canvas(photo, 200)
    h, w = canvas.shape[:2]
    centre = (w / 2, h / 2)
    reference = detect_faces(canvas, model_path=face_model_path, min_face_size=None)[0]
    ref_crop = align_face(canvas, anchors_from_landmarks(reference), landmarks=reference).landmarks
    transforms = {
        "shift": np.array([[1.0, 0.0, 37.0], [0.0, 1.0, -23.0]]),
        "rotate+15": cv2.getRotationMatrix2D(centre, 15, 1.0),
        "rotate-15": cv2.getRotationMatrix2D(centre, -15, 1.0),
        "scale+20%": cv2.getRotationMatrix2D(centre, 0, 1.2),
        "scale-20%": cv2.getRotationMatrix2D(centre, 0, 0.8),
    }
    errors = {}
    for name, m in transforms.items():
        moved = cv2.warpAffine(canvas, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=(127, 127, 127))
        found = detect_faces(moved, model_path=face_model_path, min_face_size=None)
        assert len(found) == 1, name
        lm = found[0]
        crop = align_face(moved, anchors_from_landmarks(lm), landmarks=lm).landmarks
        errors[name] = float(np.linalg.norm(crop - ref_crop, axis=1).mean())
    print("mean aligned-landmark error, crop px:", {k: round(v, 3) for k, v in errors.items()})
    assert max(errors.values()) < 1.0, errors


@pytest.mark.parametrize("every", [1, 3])
def test_face_loss_and_reacquisition(
    face_model_path: Path, video_frames: list[np.ndarray], every: int
) -> None:
    grey = np.full_like(video_frames[0], 127)
    with _tracker(face_model_path, landmark_every=every) as tracker:
        landmarker = tracker._landmarker
        before = [tracker.process(video_frames[i], i / 30.0) for i in range(15)]
        during = [tracker.process(grey, i / 30.0) for i in range(15, 45)]  # a second without a face
        after = [tracker.process(video_frames[i], i / 30.0) for i in range(45, 60)]
        assert tracker._landmarker is landmarker  # no restart
    assert all(r is not None for r in before)
    assert all(r is None for r in during)
    assert all(r is not None for r in after[2:]) and after[-1] is not None


@pytest.mark.parametrize("follow_one_face", [False, True], ids=["one-landmarker", "follow-one-face"])
def test_keeps_the_tracked_face_among_several(
    face_model_path: Path, video_frames: list[np.ndarray], photo: np.ndarray, follow_one_face: bool
) -> None:
    """A larger face appearing beside the tracked one is ignored; once the tracked one is gone for longer
    than reacquire_after, the remaining face is taken."""
    portrait = photo[120:460, 140:420]  # the photo's face, 182 px wide, with some margin
    small_other = cv2.resize(portrait, None, fx=0.6, fy=0.6)  # face ~110 px: smaller than the video's ~150
    big_other = portrait  # face ~182 px: larger than the video's

    def canvas(i: int | None, right: np.ndarray) -> np.ndarray:
        c = np.full((380, 580, 3), 127, np.uint8)
        if i is not None:
            c[10:370, 0:260] = video_frames[i][:, 170:430]
        c[20 : 20 + right.shape[0], 580 - right.shape[1] :] = right
        return c

    def side(r: TrackedFace | None) -> str | None:
        return None if r is None else ("left" if (r.bbox[0] + r.bbox[2]) / 2 < 290 else "right")

    def area(f: np.ndarray) -> float:
        return float(np.ptp(f[:, 0]) * np.ptp(f[:, 1]))

    for right, larger in ((small_other, "left"), (big_other, "right")):  # the premise of each step
        found = detect_faces(canvas(0, right), model_path=face_model_path, min_face_size=None)
        assert len(found) == 2
        assert side_of_points(max(found, key=area)) == larger

    with _tracker(face_model_path, reacquire_after=0.3, follow_one_face=follow_one_face) as tracker:
        assert (tracker._tracking is not tracker._landmarker) == follow_one_face
        t = 0.0
        sides = []
        for i in range(6):  # two faces, the video one is the larger: it is taken
            sides.append(side(tracker.process(canvas(i, small_other), t)))
            t += 1 / 30
        assert set(sides) == {"left"}, sides
        sides = []
        for i in range(6, 14):  # now the other face is the larger: the tracked one is kept
            sides.append(side(tracker.process(canvas(i, big_other), t)))
            t += 1 / 30
        assert set(sides) == {"left"}, sides
        sides = []
        for _ in range(20):  # tracked face gone: None, then the remaining face after 0.3 s
            sides.append(side(tracker.process(canvas(None, big_other), t)))
            t += 1 / 30
        assert sides[:8] == [None] * 8 and set(sides[12:]) == {"right"}, sides


def side_of_points(landmarks: np.ndarray) -> str:
    return "left" if float(landmarks[:, 0].mean()) < 290 else "right"


def test_landmark_every_follows_the_head_between_landmark_frames(
    face_model_path: Path, video_frames: list[np.ndarray]
) -> None:
    frames = video_frames[:30]
    with _tracker(face_model_path) as tracker:
        every_frame = [tracker.process(f, i / 30.0) for i, f in enumerate(frames)]
    with _tracker(face_model_path, landmark_every=3) as tracker:
        sparse = [tracker.process(f, i / 30.0) for i, f in enumerate(frames)]
    assert all(r is not None for r in every_frame + sparse)
    flags = [r.landmarked for r in sparse if r is not None]
    assert flags == [i % 3 == 0 for i in range(30)]
    rigid = list(face.RIGID_POINTS)  # eyelids and mouth are carried rigidly: compare the alignment only
    diffs = [
        float(np.linalg.norm(a.crop_landmarks[rigid] - b.crop_landmarks[rigid], axis=1).mean())
        for a, b in zip(sparse, every_frame, strict=True)
        if a is not None and b is not None
    ]
    print(
        f"landmark_every=3 vs every frame: rigid crop landmarks differ by {np.mean(diffs):.2f} px mean, {max(diffs):.2f} max"
    )
    assert max(diffs) < 1.5


def test_frames_of_changing_size(face_model_path: Path, video_frames: list[np.ndarray]) -> None:
    sizes = [(640, 360), (320, 180), (1280, 720), (480, 480), (640, 360)]
    with _tracker(face_model_path) as tracker:
        t = 0.0
        for k, (w, h) in enumerate(sizes):
            for i in range(3):
                frame = cv2.resize(video_frames[k * 3 + i], (w, h))
                r = tracker.process(frame, t)
                t += 1 / 30
                assert r is not None, (w, h, i)
                assert r.bbox[2] <= w + 1 and r.bbox[3] <= h + 1
                assert r.crop.shape == (128, 128)
        gray = cv2.cvtColor(video_frames[20], cv2.COLOR_BGR2GRAY)  # gray frames work too
        r = tracker.process(gray, t)
        assert r is not None and r.crop.shape == (128, 128)


def test_repeated_and_backward_times(face_model_path: Path, video_frames: list[np.ndarray]) -> None:
    with _tracker(face_model_path, crop_size=96) as tracker:
        for t in (0.0, 0.0, 0.0005, 0.5, 0.2, 0.2, 0.233):  # MediaPipe needs strictly increasing ms
            r = tracker.process(video_frames[0], t)
            assert r is not None and r.crop.shape == (96, 96)
        tracker.reset()
        assert tracker.process(video_frames[1], 0.0) is not None


def test_close_twice_and_context_manager(face_model_path: Path, video_frames: list[np.ndarray]) -> None:
    tracker = FaceTracker.create_from_options(FaceTrackerOptions(model_path=face_model_path))
    tracker.close()
    tracker.close()
    assert tracker.closed
    with pytest.raises(RuntimeError, match="closed"):
        tracker.process(video_frames[0], 0.0)
    with _tracker(face_model_path) as tracker2:
        assert not tracker2.closed
    assert tracker2.closed


# ----------------------------------------------------------------------------- throughput: auto N, raw results


@pytest.mark.parametrize(
    ("landmark_ms", "fps", "follow_ms", "expected"),
    [
        (8.0, 30.0, 1.0, 1),  # 8 ms fits in half of 33 ms: every frame
        (8.0, 120.0, 1.0, 3),  # budget 4.17 ms: (8 + 2·1)/3 = 3.3 fits, (8 + 1)/2 = 4.5 does not
        (8.0, 200.0, 1.0, 5),  # budget 2.5 ms: (8 + 4·1)/5 = 2.4
        (8.0, 1000.0, 1.0, 10),  # even followed frames alone do not fit: the largest N
    ],
)
def test_choose_landmark_every(landmark_ms: float, fps: float, follow_ms: float, expected: int) -> None:
    every = face.choose_landmark_every(landmark_ms, fps, follow_ms=follow_ms, headroom=0.5, max_every=10)
    assert every == expected
    budget = 0.5 * 1000.0 / fps
    if 1 < every < 10:  # the smallest N that fits
        assert (landmark_ms + (every - 1) * follow_ms) / every <= budget
        assert (landmark_ms + (every - 2) * follow_ms) / (every - 1) > budget


def test_choose_landmark_every_rejects_a_bad_rate() -> None:
    with pytest.raises(ValueError):
        face.choose_landmark_every(8.0, 0.0)
    with pytest.raises(ValueError):
        FaceTrackerOptions(landmark_every=cast(Any, "sometimes"))  # checked at run time too


def test_raw_results_equal_the_public_api(face_model_path: Path, video_frames: list[np.ndarray]) -> None:
    """Landmarks read straight from MediaPipe's C result are those of FaceLandmarker.detect_for_video."""
    api = face._raw_video_api()
    if api is None:
        pytest.skip("this mediapipe has no ctypes result layout that the fast path reads; the public call is used")
    mp = landmarks.mediapipe_module()
    vision = mp.tasks.vision
    options = vision.FaceLandmarkerOptions(base_options=mp.tasks.BaseOptions(model_asset_path=str(face_model_path)),
                                           running_mode=vision.RunningMode.VIDEO, num_faces=1)
    frames = video_frames[:5]
    h, w = frames[0].shape[:2]
    with vision.FaceLandmarker.create_from_options(options) as public:
        expected = [[landmarks.landmarks_px(f, w, h) for f in public.detect_for_video(
            mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(fr[:, :, ::-1])), i * 33
        ).face_landmarks] for i, fr in enumerate(frames)]
    with vision.FaceLandmarker.create_from_options(options) as raw:
        got = [face._detect_for_video_raw(api, raw, mp.Image(image_format=mp.ImageFormat.SRGB,
                                                              data=np.ascontiguousarray(fr[:, :, ::-1])), i * 33, (w, h))
               for i, fr in enumerate(frames)]
    for e, g in zip(expected, got, strict=True):
        assert g is not None and len(g) == len(e) == 1
        np.testing.assert_array_equal(g[0], e[0])


def test_landmark_every_auto_settles_on_n_for_the_frame_rate(
    face_model_path: Path, video_frames: list[np.ndarray]
) -> None:
    """At 1000 fps (1 ms between frames) no landmarker keeps up: auto ends on the largest N and then runs
    MediaPipe on every Nth frame; at 2 fps (500 ms) it keeps every frame."""
    frames = video_frames[:60]
    with _tracker(face_model_path, landmark_every="auto", auto_max_every=4) as tracker:
        assert tracker.landmark_every is None  # still timing
        results = [tracker.process(f, i / 1000.0) for i, f in enumerate(frames)]
        assert tracker.landmark_every == 4
        assert set(tracker.auto_figures) == {"landmark_ms", "follow_ms", "fps"}
        assert tracker.auto_figures["fps"] == pytest.approx(1000.0, rel=0.01)
    assert all(r is not None for r in results)
    tail = [r.landmarked for r in results[-12:] if r is not None]
    assert 2 <= sum(tail) <= 4  # every 4th frame from MediaPipe once settled
    with _tracker(face_model_path, landmark_every="auto") as tracker:
        results = [tracker.process(f, i / 2.0) for i, f in enumerate(frames[:30])]
        assert tracker.landmark_every == 1
    assert all(r is not None and r.landmarked for r in results)

"""Real faces for the synthetic generator: photos → identities (one subject each) with face scenes.

Built-in identities come from the shared faces folder (``single_face.jpg``, the five people of
``multi_face.jpg``, one of them in sunglasses) and ``skimage.data.astronaut()``: seven subjects. Every
face found in ``--faces DIR`` images adds one more. Each identity is cut from its photo as a webcam-like
scene (16 × 10 inter-ocular distances, rescaled so the eyes are ``WORK_IOD`` pixels apart) with the
background softly blurred (so a neighbour in a group photo does not steal the face tracker), and
landmarked twice with :func:`training.still_faces.detect_faces`: as is and mirrored. Mirroring, skin tone and
lighting are augmentations of the *same* subject, so leave-one-subject-out splits stay honest.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from mer_core.alignment import transform_points
from training.aus import FaceFrame
from training.still_faces import detect_faces
from training.synth_render import WORK_IOD, FaceRig

__all__ = [
    "IMAGE_SUFFIXES",
    "SHARED_FACES_ENV",
    "FaceSourceError",
    "Identity",
    "find_shared_faces",
    "load_identities",
]

log = logging.getLogger(__name__)

SHARED_FACES_ENV = "MER_SHARED_FACES"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
SCENE_SIZE_IOD = (16.0, 10.0)  # scene width, height in inter-ocular distances
MIN_PHOTO_IOD = 18.0  # faces with eyes closer than this (photo pixels) are too small to upscale
_REPO = Path(__file__).resolve().parents[1]


class FaceSourceError(RuntimeError):
    """Face photos missing, unreadable, or without a usable face."""


@dataclass
class Identity:
    """One subject: a face scene, its landmarks, and the mirrored scene's landmarks. Rigs are built lazily."""

    subject: str
    source: str  # where it came from, e.g. "multi_face.jpg#3"
    scene: np.ndarray
    landmarks: np.ndarray
    mirror_landmarks: np.ndarray
    _rigs: dict[bool, FaceRig] = field(default_factory=dict, repr=False)

    def rig(self, mirrored: bool = False) -> FaceRig:
        """The deformable face (mirrored: the horizontally flipped scene, landmarked anew)."""
        r = self._rigs.get(mirrored)
        if r is None:
            if mirrored:
                r = FaceRig(np.ascontiguousarray(self.scene[:, ::-1]), self.mirror_landmarks)
            else:
                r = FaceRig(self.scene, self.landmarks)
            self._rigs[mirrored] = r
        return r

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_rigs"] = {}  # rigs are caches: rebuilt in a worker process, never pickled
        return state


def find_shared_faces(explicit: str | Path | None = None) -> Path:
    """The shared faces folder: explicit path → ``$MER_SHARED_FACES`` → ``../shared/faces`` beside the repo."""
    candidates: list[tuple[Path, str]] = []
    if explicit:
        candidates.append((Path(explicit).expanduser(), "--shared-faces"))
    elif os.environ.get(SHARED_FACES_ENV, "").strip():
        candidates.append((Path(os.environ[SHARED_FACES_ENV]).expanduser(), f"${SHARED_FACES_ENV}"))
    else:
        candidates.append((_REPO.parent / "shared" / "faces", "default ../shared/faces"))
    path, what = candidates[0]
    missing = [n for n in ("single_face.jpg", "multi_face.jpg") if not (path / n).is_file()]
    if missing:
        raise FaceSourceError(
            f"shared faces folder {path} ({what}) lacks {', '.join(missing)}; pass --shared-faces DIR or set "
            f"{SHARED_FACES_ENV} to the folder holding single_face.jpg and multi_face.jpg"
        )
    return path


def _read(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FaceSourceError(f"cannot read image {path} (not an image, or a format OpenCV cannot decode)")
    return img


def _astronaut() -> np.ndarray:
    try:
        from skimage import data
    except ImportError as exc:  # pragma: no cover - scikit-image is a dependency
        raise FaceSourceError("scikit-image is needed for the astronaut face (pip install scikit-image)") from exc
    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def _eye_order(landmarks: np.ndarray) -> float:
    return float(FaceFrame.from_landmarks(landmarks).mid[0])


def _scene_from(photo: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cut a webcam-like scene around a face: eyes WORK_IOD apart and centred (the photo's roll is kept)."""
    frame = FaceFrame.from_landmarks(landmarks)
    w = int(round(SCENE_SIZE_IOD[0] * WORK_IOD))
    h = int(round(SCENE_SIZE_IOD[1] * WORK_IOD))
    # Eyes go to the scene's centre line, 1 IOD above the middle.
    s = WORK_IOD / frame.iod
    m = np.array([[s, 0.0, w / 2.0 - s * frame.mid[0]], [0.0, s, h / 2.0 - WORK_IOD - s * frame.mid[1]]])
    interp = cv2.INTER_AREA if s < 1.0 else cv2.INTER_CUBIC
    scene = cv2.warpAffine(photo, m, (w, h), flags=interp, borderMode=cv2.BORDER_REPLICATE)
    return scene, transform_points(m, landmarks)


def _head(frame: FaceFrame, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Face-frame coordinates (u across, v down; IOD units, origin between the eyes) of every pixel."""
    h, w = shape
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    dx, dy = gx - np.float32(frame.mid[0]), gy - np.float32(frame.mid[1])
    u = (dx * frame.ex[0] + dy * frame.ex[1]) / np.float32(frame.iod)
    v = (dx * frame.ey[0] + dy * frame.ey[1]) / np.float32(frame.iod)
    return u, v


def _erase_faces(scene: np.ndarray, others: list[np.ndarray], subject: FaceFrame) -> np.ndarray:
    """Paint other people's faces out of the scene (inpainted from around them), sparing the subject's head,
    so a face tracker on the video can only lock onto the subject."""
    h, w = scene.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    for lm in others:
        centre = lm.mean(0)
        hull = cv2.convexHull(((lm - centre) * 1.35 + centre).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 255)
    if not mask.any():
        return scene
    u, v = _head(subject, (h, w))
    mask[((u / 1.6) ** 2 + ((v - 0.25) / 2.25) ** 2) < 1.0] = 0
    step = 4  # inpaint at quarter resolution: the result is blurred background anyway
    small = cv2.resize(scene, (w // step, h // step), interpolation=cv2.INTER_AREA)
    small_mask = cv2.resize(mask, (w // step, h // step), interpolation=cv2.INTER_NEAREST)
    filled = cv2.inpaint(small, small_mask, 5, cv2.INPAINT_TELEA)
    filled = cv2.GaussianBlur(cv2.resize(filled, (w, h), interpolation=cv2.INTER_LINEAR), (0, 0), 0.1 * subject.iod)
    soft = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), 0.1 * subject.iod)[..., None]
    return (scene * (1.0 - soft) + filled * soft).astype(np.uint8)


def _blur_background(scene: np.ndarray, frame: FaceFrame) -> np.ndarray:
    """Soft depth-of-field: blur everything outside the subject's head and shoulders."""
    blurred = cv2.GaussianBlur(scene, (0, 0), 0.15 * frame.iod)
    u, v = _head(frame, scene.shape[:2])
    head = 1.0 - ((u / 1.55) ** 2 + ((v - 0.25) / 2.2) ** 2)
    body = 1.0 - ((u / 3.4) ** 2 + ((v - 4.6) / 2.4) ** 2)
    keep = np.clip(np.maximum(head, body) / 0.35 + 0.5, 0.0, 1.0).astype(np.float32)
    soft = cv2.GaussianBlur(keep, (0, 0), 0.2 * frame.iod)[..., None]
    return (scene * soft + blurred * (1.0 - soft)).astype(np.uint8)


def _nearest_face(faces: list[np.ndarray], point: np.ndarray, iod: float) -> np.ndarray | None:
    best = None
    best_d = 0.5 * iod
    for f in faces:
        d = float(np.hypot(*(FaceFrame.from_landmarks(f).mid - point)))
        if d < best_d:
            best, best_d = f, d
    return best


def _identity(photo: np.ndarray, landmarks: np.ndarray, subject: str, source: str, model_path: Path | None
              ) -> Identity | None:
    raw, lm = _scene_from(photo, landmarks)
    centre = FaceFrame.from_landmarks(lm).mid
    everyone = detect_faces(raw, model_path=model_path, min_face_size=40)
    subject_lm = _nearest_face(everyone, centre, WORK_IOD)
    if subject_lm is None:
        log.warning("face %s: not found again in its scene; skipped", source)
        return None
    others = [f for f in everyone if f is not subject_lm]
    scene = _blur_background(_erase_faces(raw, others, FaceFrame.from_landmarks(subject_lm)),
                             FaceFrame.from_landmarks(subject_lm))
    # Landmark the final scene itself (and its mirror image): the rig's geometry must be exact in its pixels.
    found = _nearest_face(detect_faces(scene, model_path=model_path), centre, WORK_IOD)
    flipped = np.ascontiguousarray(scene[:, ::-1])
    mirror_centre = np.array([scene.shape[1] - 1 - centre[0], centre[1]])
    found_m = _nearest_face(detect_faces(flipped, model_path=model_path), mirror_centre, WORK_IOD)
    if found is None or found_m is None:
        log.warning("face %s: not found again in its scene; skipped", source)
        return None
    return Identity(subject, source, scene, found.astype(np.float64), found_m.astype(np.float64))


def _photo_faces(photo: np.ndarray, name: str, model_path: Path | None) -> list[tuple[np.ndarray, str]]:
    faces = []
    for lm in detect_faces(photo, model_path=model_path, min_face_size=40):
        iod = FaceFrame.from_landmarks(lm).iod
        if iod < MIN_PHOTO_IOD:
            log.info("%s: a face with eyes %.0f px apart is too small; skipped", name, iod)
            continue
        faces.append(lm.astype(np.float64))
    faces.sort(key=_eye_order)  # left to right: a stable subject order
    if len(faces) == 1:
        return [(faces[0], name)]
    return [(f, f"{name}#{i + 1}") for i, f in enumerate(faces)]


def load_identities(
    *,
    shared_faces: str | Path | None = None,
    user_faces: str | Path | None = None,
    builtin: bool = True,
    model_path: str | Path | None = None,
    limit: int | None = None,
) -> list[Identity]:
    """Every usable face as an identity, subjects ``s01``, ``s02``, … in a fixed order: built-ins
    (single_face, multi_face left to right, astronaut), then ``user_faces`` images by file name.
    ``limit`` stops after that many identities (the first ones are the same either way)."""
    photos: list[tuple[np.ndarray, str]] = []
    if builtin:
        shared = find_shared_faces(shared_faces)
        photos += [(_read(shared / "single_face.jpg"), "single_face.jpg"),
                   (_read(shared / "multi_face.jpg"), "multi_face.jpg"),
                   (_astronaut(), "skimage.astronaut")]
    if user_faces is not None:
        folder = Path(user_faces).expanduser()
        if not folder.is_dir():
            raise FaceSourceError(f"--faces {folder}: not a folder")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FaceSourceError(f"--faces {folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
        photos += [(_read(p), p.name) for p in files]
    if not photos:
        raise FaceSourceError("no face photos: keep the built-in faces or pass --faces DIR")
    model = Path(model_path) if model_path else None
    identities: list[Identity] = []
    for photo, name in photos:
        if limit is not None and len(identities) >= limit:
            break
        faces = _photo_faces(photo, name, model)
        if not faces:
            log.warning("%s: no usable face found; skipped", name)
        for lm, source in faces:
            if limit is not None and len(identities) >= limit:
                break
            ident = _identity(photo, lm, f"s{len(identities) + 1:02d}", source, model)
            if ident is not None:
                identities.append(ident)
    if not identities:
        raise FaceSourceError("no usable face in the given photos (faces must be frontal-ish and >= 18 px eyes apart)")
    log.info("%d identities: %s", len(identities), ", ".join(f"{i.subject}={i.source}" for i in identities))
    return identities


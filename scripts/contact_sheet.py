"""Contact sheet of synthetic micro-expressions: per class, onset/apex/offset crops and their dynamic images.

Each row is one clip: the onset, apex and offset crops, then the onset→apex DI, the apex→offset DI and the
TRDI (onset→offset), each min–max scaled to 0..255 for viewing (``mer_core.dynamic_image`` builds them).

    python scripts/contact_sheet.py --data OUT/recognition --out sheet.png      # from a written set
    python scripts/contact_sheet.py --out sheet.png                             # generate clips on the fly
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import cv2
import numpy as np

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(_REPO))

from mer_core.dynamic_image import apex_offset_di, onset_apex_di, trdi  # noqa: E402

COLUMNS = ("onset", "apex", "offset", "DI onset>apex", "DI apex>offset", "TRDI")


def minmax(image: np.ndarray) -> np.ndarray:
    """Min–max scale an image (any float range) to uint8 0..255; a flat image becomes mid-grey."""
    x = np.asarray(image, dtype=np.float32)
    lo, hi = float(x.min()), float(x.max())
    if hi - lo < 1e-6:
        return np.full(x.shape, 128, np.uint8)
    return ((x - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def clip_tiles(frames: np.ndarray, onset: int, apex: int, offset: int) -> list[np.ndarray]:
    """The six tiles of one clip (BGR uint8): three crops and three min–max scaled DIs."""
    f = frames.astype(np.float32)
    dis = [onset_apex_di(f, onset, apex), apex_offset_di(f, apex, offset), trdi(f[onset : offset + 1])]
    tiles = [frames[onset], frames[apex], frames[offset]] + [minmax(d) for d in dis]
    return [t if t.ndim == 3 else cv2.cvtColor(t, cv2.COLOR_GRAY2BGR) for t in tiles]


def _caption(width: int, text: str, height: int = 18) -> np.ndarray:
    bar = np.full((height, width, 3), 40, np.uint8)
    cv2.putText(bar, text, (4, height - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return bar


def sheet(rows: list[tuple[str, np.ndarray, int, int, int]], *, tile: int = 128) -> np.ndarray:
    """Assemble rows of (caption, frames, onset, apex, offset) into one BGR image: a column header, then
    per clip a caption bar and its six tiles."""
    lines = [np.hstack([_caption(tile, c) for c in COLUMNS])]
    for caption, frames, on, ap, off in rows:
        tiles = [cv2.resize(t, (tile, tile), interpolation=cv2.INTER_AREA) for t in clip_tiles(frames, on, ap, off)]
        lines.append(_caption(tile * len(tiles), f"{caption}   frames {on} / {ap} / {off}"))
        lines.append(np.hstack(tiles))
    return np.vstack(lines)


def _from_set(folder: Path, per_class: int) -> list[tuple[str, np.ndarray, int, int, int]]:
    base = folder / "recognition" if (folder / "recognition" / "annotations.csv").is_file() else folder
    with (base / "annotations.csv").open(newline="", encoding="utf-8") as fh:
        records = list(csv.DictReader(fh))
    rows: list[tuple[str, np.ndarray, int, int, int]] = []
    seen: dict[str, int] = {}
    for r in records:
        if seen.get(r["label"], 0) >= per_class:
            continue
        seen[r["label"]] = seen.get(r["label"], 0) + 1
        images = []
        for k in range(int(r["n_frames"])):
            path = base / r["clip"] / f"{k:06d}.png"
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if img is None:
                raise OSError(f"cannot read {path}")
            images.append(img)
        frames = np.stack(images)
        rows.append((f"{r['label']} AU{r['aus']}", frames, int(r["onset"]), int(r["apex"]), int(r["offset"])))
    return sorted(rows, key=lambda x: x[0].split()[0])


def _generated(per_class: int, seed: int, face_model: Path | None, shared_faces: Path | None
               ) -> list[tuple[str, np.ndarray, int, int, int]]:
    from training.synth import SynthGenerator
    from training.synth_faces import load_identities
    from training.synth_options import SynthOptions

    identities = load_identities(shared_faces=shared_faces, model_path=face_model)  # None: $MER_FACE_MODEL, else the user cache
    settings = SynthOptions(seed=seed, clips_per_class=per_class)
    rows = []
    with SynthGenerator(settings, identities) as gen:
        labels = gen.scheme.labels
        for label_index, label in enumerate(labels):
            for k in range(per_class):
                # Spread the examples over subjects: clip index c has label labels[c % n].
                subject = (label_index + k * len(labels)) % len(gen.identities)
                plan = gen.clip_plan(subject, label_index + k * len(labels))
                clip = gen.render_clip(plan)
                rows.append((f"{label} AU{'+'.join(map(str, plan.expression.aus))}", clip.frames,
                             plan.onset, plan.apex, plan.offset))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="PNG file to write")
    p.add_argument("--data", type=Path, default=None,
                   help="a mer-synth output (DIR or DIR/recognition); default: generate clips now")
    p.add_argument("--per-class", type=int, default=2, help="clips per class")
    p.add_argument("--seed", type=int, default=0, help="seed when generating")
    p.add_argument("--tile", type=int, default=112, help="tile side in pixels")
    p.add_argument("--face-model", type=Path, default=None, help="face_landmarker.task when generating")
    p.add_argument("--shared-faces", type=Path, default=None, help="shared faces folder when generating")
    args = p.parse_args(argv)
    try:
        rows = (_from_set(args.data, args.per_class) if args.data is not None
                else _generated(args.per_class, args.seed, args.face_model, args.shared_faces))
        if not rows:
            raise RuntimeError("no clips found")
        image = sheet(rows, tile=args.tile)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(args.out), image, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
            raise OSError(f"cannot write {args.out}")
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        print(f"contact_sheet: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({image.shape[1]}x{image.shape[0]}, {len(rows)} clips)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

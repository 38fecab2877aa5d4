"""Synthetic micro-expressions on real faces, with known onset, apex and offset (the ``mer-synth`` library).

A micro-expression (ME) is a combination of Action Units (:mod:`training.aus`), each a smooth Gaussian-RBF
displacement field anchored on MediaPipe landmarks, driven by an envelope that rises onset→apex and falls
apex→offset with randomised easing; its peak landmark displacement (the amplitude) is a few per cent of
the inter-ocular distance (IOD) — 1.5 to 4 pixels on a 128-px crop. Durations, amplitudes and timing are
drawn from the *same* distributions for every class, and each class has several AU recipes, so only
*where and how* the face moves tells the classes apart.

Two sets are written (see :func:`training.synth_writer.write_dataset`):

- **recognition**: one short clip per ME with neutral context, as aligned face crops (PNG), aligned by
  :func:`mer_core.alignment.align_face` from the generator's known landmarks plus a little per-frame
  alignment jitter and sensor noise (like CASME-II "Cropped").
- **spotting**: long webcam-like videos (mp4) with several MEs, macro-expressions and distractors: blinks,
  talking, slow head drift and quicker head moves, brightness flicker, sensor noise, compression.

Everything is deterministic for a seed: each clip and each video draws from its own
``numpy.random.Generator`` seeded by (seed, set, index), so order and parallelism do not matter.

The pieces: :mod:`training.synth_options` (options, error), :mod:`training.synth_timing` (envelopes and
expression timing), :mod:`training.synth_plans` (clip and video plans), this module (the generator that
renders them) and :mod:`training.synth_writer` (the sets on disk, README and manifest).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence

import cv2
import numpy as np

from mer_core.alignment import CANONICAL_LEFT_EYE, CANONICAL_RIGHT_EYE, align_face, transform_points
from realtime.landmarks import anchors_from_landmarks
from training.synth_faces import Identity
from training.synth_options import SynthError, SynthOptions
from training.synth_plans import Clip, ClipPlan, Distractor, VideoFrame, VideoPlan, _frames, _place
from training.synth_render import Look
from training.synth_timing import Expression, draw_expression

__all__ = ["SynthGenerator"]

log = logging.getLogger(__name__)

_CROP_IOD = CANONICAL_RIGHT_EYE[0] - CANONICAL_LEFT_EYE[0]  # eye distance as a fraction of the crop side


# --- the generator ---------------------------------------------------------------------------------------


class SynthGenerator:
    """Plans and renders clips and videos from :class:`SynthOptions` and loaded identities.

    Holds no open resources (identities are plain arrays); ``close()`` drops the cached rigs.
    """

    def __init__(self, settings: SynthOptions, identities: Sequence[Identity]) -> None:
        if not identities:
            raise SynthError("no identities: load some faces first")
        n = settings.subjects if settings.subjects is not None else len(identities)
        if n > len(identities):
            raise SynthError(f"--subjects {n} asks for more subjects than the {len(identities)} faces found; "
                             "add photos with --faces DIR")
        self.settings = settings
        self.identities = list(identities[:n])
        self.scheme = settings.class_scheme

    def close(self) -> None:
        for ident in self.identities:
            ident._rigs.clear()

    def __enter__(self) -> SynthGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _rng(self, *key: int) -> tuple[np.random.Generator, tuple[int, ...]]:
        seed = (int(self.settings.seed), *key)
        return np.random.default_rng(np.random.SeedSequence(list(seed))), seed

    # --- recognition --------------------------------------------------------------------------------------

    def clip_plans(self) -> list[ClipPlan]:
        n = self.settings.clips_per_class * len(self.scheme.labels)
        return [self.clip_plan(s, c) for s in range(len(self.identities)) for c in range(n)]

    def clip_plan(self, subject_index: int, clip_index: int) -> ClipPlan:
        st = self.settings
        rng, seed = self._rng(1, subject_index, clip_index)
        subject = self.identities[subject_index].subject
        label = self.scheme.labels[clip_index % len(self.scheme.labels)]
        expr = draw_expression(rng, st, label, "micro")
        pre = float(rng.uniform(*st.context_s))
        post = float(rng.uniform(*st.context_s))
        onset = int(round(pre * st.fps))
        expr = expr.shifted(onset / st.fps)
        n = int(math.ceil((expr.offset_s + post) * st.fps)) + 1
        on, ap, off = _frames(expr, st.fps, n)
        return ClipPlan(
            subject_index=subject_index, subject=subject, clip=f"{subject}/{subject}_{clip_index + 1:04d}",
            label=label, expression=expr, mirrored=bool(rng.random() < 0.5), look=Look.draw(rng),
            fps=st.fps, n_frames=n, onset=on, apex=ap, offset=off,
            jitter_px=float(rng.uniform(*st.jitter_px)), noise_sigma=float(rng.uniform(*st.noise_sigma)),
            seed=seed,
        )

    def render_clip(self, plan: ClipPlan) -> Clip:
        """Aligned crops of one clip: ROI-only rendering, known landmarks + jitter → ``align_face``."""
        st = self.settings
        rng = np.random.default_rng(np.random.SeedSequence([*plan.seed, 7]))
        rig = self.identities[plan.subject_index].rig(plan.mirrored)
        x0, y0, _, _ = rig.roi
        region = plan.look.apply(rig.region(rig.scene), (x0, y0), rig.frame)
        cs = st.crop_size
        jitter = plan.jitter_px * rig.frame.iod / (_CROP_IOD * cs)  # crop px → region px
        frames = np.empty((plan.n_frames, cs, cs, 3), np.uint8)
        lms = np.empty((plan.n_frames, rig.landmarks.shape[0], 2), np.float32)
        buf = np.empty_like(region)
        origin = np.array([x0, y0], np.float64)
        for k in range(plan.n_frames):
            face = rig.render(region, plan.expression.weights(k / plan.fps, rig), out=buf)
            lm = face.landmarks - origin
            anchors = anchors_from_landmarks(lm) + rng.normal(0.0, jitter, (3, 2))
            aligned = align_face(face.image, anchors, crop_size=cs, landmarks=lm)
            noisy = aligned.crop.astype(np.float32) + rng.normal(0.0, plan.noise_sigma, aligned.crop.shape).astype(np.float32)
            frames[k] = np.clip(noisy + 0.5, 0, 255).astype(np.uint8)
            lms[k] = aligned.landmarks
        return Clip(plan, frames, lms)

    # --- spotting -----------------------------------------------------------------------------------------

    def video_plans(self) -> list[VideoPlan]:
        return [self.video_plan(i) for i in range(self.settings.videos)]

    def video_plan(self, index: int, *, seconds: float | None = None) -> VideoPlan:
        """Plan video ``index`` (subjects cycle through the identities; ``seconds`` overrides the length)."""
        st = self.settings
        rng, seed = self._rng(2, index)
        length = float(seconds if seconds is not None else st.video_seconds)
        n_frames = int(round(length * st.fps))
        subject_index = index % len(self.identities)
        w, h = st.video_size
        iod = float(rng.uniform(*st.face_height)) * h
        centre = (w * (0.5 + float(rng.uniform(-0.08, 0.08))), h * float(rng.uniform(0.36, 0.46)))
        drift = []
        for amp in (0.22, 0.15, 2.0, 0.03):  # dx, dy (× IOD), roll (deg), scale
            parts = rng.dirichlet(np.ones(3)) * amp * float(rng.uniform(0.4, 1.0))
            for a in parts:
                drift.append((float(a), float(rng.uniform(0.02, 0.15)), float(rng.uniform(0, 2 * math.pi))))
        labels = self.scheme.labels
        begin, end = 1.0, length - 0.5  # the first second is left quiet (trackers and meters warm up)
        annotated: list[tuple[float, float, float]] = []
        expressions: list[Expression] = []
        n_macro = int(rng.integers(st.macros_per_video[0], st.macros_per_video[1] + 1))
        n_micro = int(rng.integers(st.mes_per_video[0], st.mes_per_video[1] + 1))
        for kind, count in (("macro", n_macro), ("micro", n_micro)):
            for _ in range(count):
                e = draw_expression(rng, st, labels[int(rng.integers(len(labels)))], kind)
                start = _place(rng, e.duration_s, begin, end, annotated)
                if start is None:
                    log.info("video %d: no room for another %s expression", index, kind)
                    continue
                e = e.shifted(start)
                expressions.append(e)
                annotated.append((e.onset_s, e.offset_s, st.me_gap_s))
        busy = [(a, b, 0.4) for a, b, _ in annotated]
        distractors: list[Distractor] = []

        def room(duration: float) -> float | None:
            start = _place(rng, duration, begin, end, busy)
            if start is not None:
                busy.append((start, start + duration, 0.2))
            return start

        for _ in range(int(rng.integers(1, 3))):  # talking: jaw/lip oscillation episodes
            dur = float(rng.uniform(1.0, 3.0))
            amp, f, ph = float(rng.uniform(0.08, 0.16)), float(rng.uniform(3.0, 5.5)), float(rng.uniform(0, 6.28))
            if (s := room(dur)) is not None:
                distractors.append(Distractor("talk", s, s + dur / 2, s + dur, amp, f, ph))
        for _ in range(int(rng.integers(1, 3))):  # quicker head moves (nods, turns in the image plane)
            dur = float(rng.uniform(0.4, 1.2))
            rot = float(rng.uniform(1.5, 5.0)) * (1 if rng.random() < 0.5 else -1)
            shift, direction = float(rng.uniform(0.05, 0.3)), float(rng.uniform(0, 6.28))
            if (s := room(dur)) is not None:
                distractors.append(Distractor("head", s, s + dur / 2, s + dur, rot, direction=direction, shift=shift))
        if rng.random() < 0.5:  # brightness flicker
            dur = float(rng.uniform(0.5, 1.5))
            amp, f, ph = float(rng.uniform(0.02, 0.05)), float(rng.uniform(5.0, 12.0)), float(rng.uniform(0, 6.28))
            if (s := room(dur)) is not None:
                distractors.append(Distractor("flicker", s, s + dur / 2, s + dur, amp, f, ph))
        for _ in range(int(rng.poisson(st.blinks_per_minute * length / 60.0))):
            dur = float(rng.uniform(0.1, 0.25))
            depth, close = float(rng.uniform(0.75, 1.0)), float(rng.uniform(0.3, 0.45))
            if (s := room(dur)) is not None:
                distractors.append(Distractor("blink", s, s + close * dur, s + dur, depth))
        return VideoPlan(
            index=index, video=f"v{index + 1:03d}", subject_index=subject_index,
            subject=self.identities[subject_index].subject, mirrored=bool(rng.random() < 0.5),
            look=Look.draw(rng), fps=st.fps, n_frames=n_frames, size=(w, h), face_iod=iod, centre=centre,
            roll_deg=float(rng.uniform(-4.0, 4.0)), drift=tuple(drift),
            gain_drift=(float(rng.uniform(0.0, 0.03)), float(rng.uniform(0.03, 0.2)), float(rng.uniform(0, 6.28))),
            noise_sigma=float(rng.uniform(*st.noise_sigma)),
            expressions=tuple(sorted(expressions, key=lambda e: e.onset_s)),
            distractors=tuple(sorted(distractors, key=lambda d: d.onset_s)), seed=seed,
        )

    def render_video(self, plan: VideoPlan) -> Iterator[VideoFrame]:
        """The frames of a planned video, one at a time (a 30 s video does not fit in memory at once)."""
        rng = np.random.default_rng(np.random.SeedSequence([*plan.seed, 7]))
        rig = self.identities[plan.subject_index].rig(plan.mirrored)
        lit = plan.look.apply(rig.scene, (0, 0), rig.frame)
        closed = rig.closed_eyes(plan.look)
        work = lit.copy()
        region_src = rig.region(lit)
        region_dst = rig.region(work)
        buf = np.empty_like(region_src)
        w, h = plan.size
        pad = 16
        bank = rng.standard_normal((3, h + 2 * pad, w + 2 * pad, 3), dtype=np.float32) * np.float32(plan.noise_sigma)
        dirty = False
        img = np.empty((h, w, 3), np.float32)
        for k in range(plan.n_frames):
            t = k / plan.fps
            weights = {a: v for a, v in plan.weights(t, rig).items() if v != 0.0}
            closure = plan.blink(t)
            landmarks = rig.landmarks
            if weights or closure > 0.0:
                face = rig.render(region_src, weights, blink=closure, closed=closed, out=buf)
                np.copyto(region_dst, face.image)
                landmarks = face.landmarks
                dirty = True
            elif dirty:
                np.copyto(region_dst, region_src)
                dirty = False
            m = plan.matrix(t, rig)
            frame = cv2.warpAffine(work, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            b, dy, dx = int(rng.integers(3)), int(rng.integers(2 * pad)), int(rng.integers(2 * pad))
            gain = plan.gain(t) * (1.0 + 0.002 * float(rng.standard_normal()))
            np.multiply(frame, np.float32(gain), out=img, dtype=np.float32)
            img += bank[b, dy : dy + h, dx : dx + w]
            img += 0.5
            np.clip(img, 0, 255, out=img)
            yield VideoFrame(k, t, img.astype(np.uint8), transform_points(m, landmarks).astype(np.float32))

"""What a synthetic data set is made of (:class:`SynthOptions`) and the error for options that cannot work."""

from __future__ import annotations

import math
from dataclasses import dataclass

from training.aus import ExpressionScheme, get_scheme

EASINGS = ("smoothstep", "cosine", "power")
Range = tuple[float, float]


class SynthError(RuntimeError):
    """Bad generator settings, or an output that cannot be written."""


# the largest micro-expression apex displacement, × IOD: more is no micro-expression (real ones: about 0.01-0.04)
MAX_AMPLITUDE = 0.5


@dataclass(frozen=True)
class SynthOptions:
    """Everything that decides the generated data. Times in seconds; amplitudes as fractions of the IOD."""

    seed: int = 0
    fps: float = 30.0
    scheme: str = "megc3"
    subjects: int | None = None  # None: every identity found
    clips_per_class: int = 10  # recognition clips per class per subject
    crop_size: int = 128
    videos: int = 6
    video_seconds: float = 30.0
    video_size: tuple[int, int] = (640, 360)  # width, height
    micro_amplitude: Range = (0.03, 0.08)  # peak landmark displacement × IOD (1.4-3.7 px on a 128-px crop)
    macro_amplitude: Range = (0.10, 0.22)
    micro_duration_s: Range = (0.15, 0.5)  # onset → offset
    phase_median_s: float = 0.15  # median onset→apex and apex→offset (CASME-II)
    phase_spread: float = 0.35  # log-normal sigma of the phase durations
    macro_duration_s: Range = (0.6, 3.0)
    context_s: Range = (0.2, 0.3)  # neutral frames before onset and after offset in a recognition clip
    jitter_px: Range = (0.05, 0.25)  # per-frame alignment jitter (std, crop pixels) of a recognition clip
    noise_sigma: Range = (0.8, 2.5)  # sensor noise std, grey levels
    mes_per_video: tuple[int, int] = (4, 8)
    macros_per_video: tuple[int, int] = (1, 2)
    me_gap_s: float = 1.5  # least gap between annotated intervals in a video
    blinks_per_minute: float = 15.0
    face_height: Range = (0.13, 0.18)  # IOD in a video frame as a fraction of the frame height
    codec: str = "mp4v"

    def __post_init__(self) -> None:
        def bad(msg: str) -> SynthError:
            return SynthError(f"invalid setting: {msg}")

        if not self.fps > 0 or not math.isfinite(self.fps):
            raise bad(f"fps must be > 0, got {self.fps}")
        get_scheme(self.scheme)
        if self.subjects is not None and self.subjects < 1:
            raise bad(f"subjects must be >= 1, got {self.subjects}")
        if self.clips_per_class < 0 or self.videos < 0:
            raise bad("clips_per_class and videos must be >= 0")
        if self.crop_size < 32:
            raise bad(f"crop_size must be >= 32 pixels, got {self.crop_size}")
        if not 5.0 <= self.video_seconds <= 600.0:
            raise bad(f"video_seconds must be within 5..600, got {self.video_seconds}")
        w, h = self.video_size
        if w < 160 or h < 120 or w % 2 or h % 2:
            raise bad(f"video_size must be even and at least 160x120, got {w}x{h}")
        for name in ("micro_amplitude", "macro_amplitude", "micro_duration_s", "macro_duration_s", "context_s",
                     "jitter_px", "noise_sigma", "face_height"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise bad(f"{name} must be a range 0 <= lo <= hi, got {(lo, hi)}")
        if self.micro_amplitude[1] > MAX_AMPLITUDE:
            raise bad(f"micro_amplitude is the apex displacement as a fraction of the eye distance: at most "
                      f"{MAX_AMPLITUDE}, got {self.micro_amplitude}")
        if self.macro_amplitude[1] > 2 * MAX_AMPLITUDE:
            raise bad(f"macro_amplitude is a fraction of the eye distance: at most {2 * MAX_AMPLITUDE}, got "
                      f"{self.macro_amplitude}")
        if self.micro_duration_s[1] > 0.5 or self.micro_duration_s[0] < 2.0 / self.fps:
            raise bad(f"micro_duration_s must lie within [2 frames, 0.5 s], got {self.micro_duration_s}")
        if self.macro_duration_s[0] <= 0.5:
            raise bad(f"macro expressions last longer than 0.5 s, got {self.macro_duration_s}")
        if self.mes_per_video[0] > self.mes_per_video[1] or self.mes_per_video[0] < 0:
            raise bad(f"mes_per_video must be a range, got {self.mes_per_video}")
        if self.macros_per_video[0] > self.macros_per_video[1] or self.macros_per_video[0] < 0:
            raise bad(f"macros_per_video must be a range, got {self.macros_per_video}")
        for name in ("me_gap_s", "blinks_per_minute", "phase_median_s", "phase_spread"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise bad(f"{name} must be a number >= 0, got {value}")
        if len(self.codec) != 4:
            raise bad(f"codec must be a fourcc (4 characters), got {self.codec!r}")

    @property
    def class_scheme(self) -> ExpressionScheme:
        return get_scheme(self.scheme)

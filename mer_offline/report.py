"""``report.html``: one self-contained page per analysed video, for a person to read in a browser.

The page holds an overview line, the spotting score over the whole video (matplotlib, Agg, no pyplot) with
the spotter's threshold, the spotted windows shaded, the frames without a face greyed and the candidates the
spotter dropped marked by reason (a tooltip over each says which), then one card per event (aligned onset /
apex / offset crops, the two phase DIs, the flow, label and probability bars, times), a key to the flow's
colours, and the run's summary. Every image is embedded as a base64 PNG, so the file can be mailed or archived
on its own.
"""

from __future__ import annotations

import base64
import html
import io
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mer_analysis.spotting import REJECT_REASONS, Rejection
from mer_core.events import KINDS, EventRecord
from mer_core.paths import atomic_write, user_cache_dir
from mer_offline.analyze_types import AnalyzeOptions, VideoResult, WindowImages
from realtime.recordtext import label_text

__all__ = ["REJECT_STYLES", "ReportInputs", "flow_colours", "render_report", "write_report"]

KIND_COLOURS = {"micro": "#d62728", "macro": "#1f77b4"}
MAX_NUMBERED = 60  # more events than this: markers without numbers (they would overlap)
# a dropped candidate's marker on the curve, by reason: colour, matplotlib marker, the same shape as text
REJECT_STYLES: dict[str, tuple[str, str, str]] = {
    "too_small": ("#9e9e9e", "o", "●"),
    "too_large": ("#8c564b", "s", "■"),
    "cut": ("#17becf", "<", "◀"),
    "overlap": ("#bcbd22", ">", "▶"),
    "too_short": ("#e377c2", "D", "◆"),
    "context": ("#ff9896", "X", "✖"),
    "blink": ("#9467bd", "*", "★"),
    "head": ("#2ca02c", "P", "✚"),
    "no_return": ("#393b79", "h", "⬢"),
    "weaker": ("#e7ba52", "p", "⬟"),
}
_OTHER_STYLE = ("#555555", "o", "●")  # a reason this version does not know (a newer recording)
MAX_HOVER = 1000  # tooltips for at most this many dropped candidates (the highest scored); all are drawn


@dataclass(frozen=True)
class ReportInputs:
    """Everything a report shows; ``t``/``score``/``threshold``/``face`` have one entry per frame."""

    result: VideoResult
    labels: tuple[str, ...]
    engine_reason: str
    settings: AnalyzeOptions
    t: np.ndarray
    score: np.ndarray  # NaN without a face
    threshold: np.ndarray  # NaN while the spotter warms up
    face: np.ndarray
    events: list[EventRecord]
    windows: dict[tuple[int, int, int], WindowImages | None]
    rejected: Sequence[Rejection] = ()  # the candidates the spotter dropped, as it recorded them
    # their counts by reason (the summary record's ``rejected``); None: a spotter that does not say
    rejected_counts: Mapping[str, int] | None = None


def write_report(path: Path, inputs: ReportInputs) -> None:
    """Render and write the page atomically."""
    atomic_write(path, render_report(inputs).encode("utf-8"))


# --- images --------------------------------------------------------------------------------------------


def _png_uri(image: np.ndarray) -> str:
    ok, data = cv2.imencode(".png", image)
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        raise ValueError("PNG encoding failed")
    return "data:image/png;base64," + base64.b64encode(data.tobytes()).decode("ascii")


def flow_colours(flow: np.ndarray) -> np.ndarray:
    """An apex_flow field (unit RMS length) as BGR colour: hue = direction, brightness = length (3 × RMS = full)."""
    length, angle = cv2.cartToPolar(np.ascontiguousarray(flow[..., 0]), np.ascontiguousarray(flow[..., 1]),
                                    angleInDegrees=True)
    hsv = np.empty((*flow.shape[:2], 3), np.uint8)
    hsv[..., 0] = (angle / 2).astype(np.uint8)  # OpenCV's hue runs 0..179
    hsv[..., 1] = 255
    hsv[..., 2] = np.clip(length * (255 / 3.0), 0, 255).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def flow_key(size: int = 96) -> np.ndarray:
    """The key to :func:`flow_colours`, drawn by it: each point of the disc has the colour of skin that moved
    from the centre towards it, as far as its distance from the centre (the rim = 3 × RMS); white outside."""
    ramp = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0  # -1..1 across, image axes (y down)
    x, y = np.meshgrid(ramp, ramp)
    key = flow_colours(np.stack([3.0 * x, 3.0 * y], axis=-1))
    key[x**2 + y**2 > 1.0] = 255
    return key


def _matplotlib_figure(width_in: float, height_in: float) -> Any:
    """A Figure on the Agg canvas, without pyplot (no global backend, no GUI); config in the user cache."""
    if "matplotlib" not in sys.modules and not os.environ.get("MPLCONFIGDIR"):
        os.environ["MPLCONFIGDIR"] = str(user_cache_dir() / "matplotlib")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _spans(mask: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) index of every run of True in ``mask``."""
    if mask.size == 0:
        return []
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), (np.flatnonzero(edges == -1) - 1).tolist(), strict=True))


def _reject_style(reason: str) -> tuple[str, str, str]:
    return REJECT_STYLES.get(reason, _OTHER_STYLE)


def curve_png(inputs: ReportInputs) -> tuple[str, np.ndarray]:
    """The score over the whole video as a data URI (threshold dashed, windows shaded, faceless frames grey,
    dropped candidates marked by reason), and where each of ``inputs.rejected`` lies in the image, (N, 2)
    fractions of its width and height from the top left (for tooltips over it)."""
    t, score, threshold = inputs.t, inputs.score, inputs.threshold
    fig = _matplotlib_figure(12.0, 3.4)
    ax = fig.add_subplot(1, 1, 1)
    step = float(np.median(np.diff(t))) if t.size > 1 else 1.0 / 30.0
    for first, last in _spans(~inputs.face):
        ax.axvspan(t[first], t[last] + step, color="#bbbbbb", alpha=0.5, lw=0)
    for e in inputs.events:
        ax.axvspan(e.onset.t, e.offset.t + step, color=KIND_COLOURS.get(e.kind, "#999999"), alpha=0.25, lw=0)
    ax.plot(t, score, color="#222222", lw=0.8, label="score")
    if np.isfinite(threshold).any():
        ax.plot(t, threshold, color="#ff7f0e", lw=1.2, ls="--", label="threshold")
    finite = score[np.isfinite(score)]
    top = float(finite.max()) if finite.size else 1.0
    thr = threshold[np.isfinite(threshold)]
    if thr.size:
        top = max(top, float(thr.max()) * 1.2)
    top = top if top > 0 else 1.0
    ax.set_ylim(0.0, top * 1.1)
    # dropped candidates where the score showed them (a motion lag after their apex), at their score
    rejected = inputs.rejected
    points = np.array([(r.shown_t, min(r.score, top * 1.08)) for r in rejected], dtype=np.float64).reshape(-1, 2)
    reasons = np.array([r.reason for r in rejected], dtype=object)
    for reason in dict.fromkeys(reasons.tolist()):
        colour, marker, _ = _reject_style(reason)
        mine = points[reasons == reason]
        ax.plot(mine[:, 0], mine[:, 1], ls="", marker=marker, ms=5, color=colour, alpha=0.9, mec="#333333",
                mew=0.4)
    # a numbered marker above each window, so that narrow windows in a long video stay visible
    for number, e in enumerate(inputs.events, start=1):
        colour = KIND_COLOURS.get(e.kind, "#999999")
        ax.plot([e.apex.t], [top * 1.05], marker="v", ms=5, color=colour, lw=0)
        if len(inputs.events) <= MAX_NUMBERED:
            ax.annotate(str(number), (e.apex.t, top * 1.05), xytext=(4, 0), textcoords="offset points",
                        ha="left", va="center", fontsize=7, color=colour)
    ax.set_xlim(float(t[0]) if t.size else 0.0, float(t[-1]) + step if t.size else 1.0)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("score (× recent level)")
    from matplotlib.patches import Patch

    handles, _ = ax.get_legend_handles_labels()
    handles += [Patch(color=KIND_COLOURS[k], alpha=0.35, label=f"{k} window") for k in KINDS]
    handles.append(Patch(color="#bbbbbb", alpha=0.6, label="no face"))
    ax.legend(handles=handles, loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=8, ncol=len(handles),
              frameon=False, borderaxespad=0.2)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    where = fig.transFigure.inverted().transform(ax.transData.transform(points)) if len(points) else points
    where = np.column_stack([where[:, 0], 1.0 - where[:, 1]]) if len(points) else points
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), where


# --- page ------------------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1240px;
     color:#222;padding:0 16px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;margin:28px 0 8px}
.sub{color:#555;margin:0 0 12px;word-break:break-all}
.status{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:13px}
.status.ok{background:#2ca02c} .status.bad{background:#d62728}
.overview{font-size:15px;margin:8px 0 16px}
img.curve{width:100%;border:1px solid #ddd;display:block}
.curvebox{position:relative}
.rej{position:absolute;width:10px;height:10px;margin:-5px 0 0 -5px;border-radius:5px}
.rej:hover{outline:1px solid #333}
.caveat{background:#fff6e0;border-left:4px solid #f0ad4e;padding:6px 10px;font-size:14px}
table.rejected{border-collapse:collapse;font-size:13px;margin:6px 0}
table.rejected td{padding:1px 8px 1px 0} table.rejected td.n{text-align:right}
table.rejected tr.zero{color:#999}
.event{border:1px solid #ccc;border-radius:8px;padding:10px 14px;margin:12px 0;page-break-inside:avoid}
.event h3{margin:0 0 6px;font-size:16px}
.kind{display:inline-block;padding:0 7px;border-radius:8px;color:#fff;font-size:13px}
.times{color:#444;font-size:13px;margin:0 0 8px}
.row{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}
figure{margin:0;text-align:center;font-size:12px;color:#555}
figure img{width:128px;height:128px;image-rendering:pixelated;border:1px solid #ddd;display:block}
.missing{width:128px;height:128px;display:flex;align-items:center;justify-content:center;background:#f3f3f3;
         color:#888;font-size:12px;border:1px solid #ddd}
table.probs{border-collapse:collapse;margin-left:12px;font-size:13px}
table.probs td{padding:2px 6px}
.bar{height:12px;background:#4c78a8;border-radius:2px}
.barbox{width:180px;background:#eee;border-radius:2px}
table.summary{border-collapse:collapse;font-size:14px}
table.summary th{text-align:left;padding:3px 14px 3px 0;color:#555;font-weight:normal;vertical-align:top}
table.summary td{padding:3px 0}
.none{color:#666}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: float | None, spec: str = ".1f", unit: str = "") -> str:
    return "–" if value is None else f"{value:{spec}}{unit}"


def _figure(image: np.ndarray | None, caption: str) -> str:
    body = (f'<img alt="{_e(caption)}" src="{_png_uri(image)}">' if image is not None
            else '<div class="missing">not held</div>')
    return f"<figure>{body}<figcaption>{_e(caption)}</figcaption></figure>"


def _probs_table(event: EventRecord, labels: tuple[str, ...]) -> str:
    if not event.probs:
        why = "not classified (the model labels micro-expressions only)" if event.kind != "micro" else "not classified"
        return f'<p class="none">{_e(why)}</p>'
    rows = []
    for label in labels or tuple(event.probs):
        p = event.probs.get(label)
        if p is None:
            continue
        weight = " style=\"font-weight:600\"" if label == event.label else ""
        rows.append(f'<tr><td{weight}>{_e(label)}</td><td><div class="barbox"><div class="bar" '
                    f'style="width:{100.0 * p:.1f}%"></div></div></td><td>{p:.2f}</td></tr>')
    return '<table class="probs">' + "".join(rows) + "</table>"


def _card(number: int, event: EventRecord, images: WindowImages | None, labels: tuple[str, ...]) -> str:
    colour = KIND_COLOURS.get(event.kind, "#777")
    # the "?" of an uncertain label, as the dashboard and the plain event lines show it
    label = label_text(event.label, event.confidence) if event.label is not None else "unlabelled"
    conf = f" {event.confidence:.2f}" if event.confidence is not None else ""
    times = (f"onset {event.onset.t:.3f} s (frame {event.onset.frame}) · apex {event.apex.t:.3f} s "
             f"(frame {event.apex.frame}) · offset {event.offset.t:.3f} s (frame {event.offset.frame}) · "
             f"{event.duration_ms:.0f} ms · peak score {event.intensity:.2f}")
    if images is None:
        figures = [_figure(None, c) for c in ("onset", "apex", "offset", "DI onset→apex", "DI apex→offset")]
    else:
        figures = [_figure(images.onset, "onset"), _figure(images.apex, "apex"), _figure(images.offset, "offset"),
                   _figure(images.rise, "DI onset→apex"), _figure(images.fall, "DI apex→offset")]
        if images.flow is not None:
            figures.append(_figure(images.flow, "flow to the apex"))
    return (f'<section class="event" id="event-{number}">'
            f'<h3>#{number} <span class="kind" style="background:{colour}">{_e(event.kind)}</span> '
            f"{_e(label)}{_e(conf)}</h3>"
            f'<p class="times">{_e(times)}</p>'
            f'<div class="row">{"".join(figures)}{_probs_table(event, labels)}</div></section>')


def _reject_title(r: Rejection) -> str:
    why = REJECT_REASONS.get(r.reason, "")
    return (f"apex frame {r.frame} ({r.t:.3f} s) · {r.region} · score {r.score:.2f} · dropped: {r.reason}"
            + (f" — {why}" if why else ""))


def _curve(inputs: ReportInputs) -> str:
    """The curve image with a tooltip over each dropped candidate's marker (the highest scored, at most
    MAX_HOVER)."""
    uri, where = curve_png(inputs)
    spots = []
    order = sorted(range(len(inputs.rejected)), key=lambda k: -inputs.rejected[k].score)[:MAX_HOVER]
    for k in sorted(order):
        x, y = where[k]
        spots.append(f'<span class="rej" style="left:{100 * x:.2f}%;top:{100 * y:.2f}%" '
                     f'title="{_e(_reject_title(inputs.rejected[k]))}"></span>')
    return (f'<div class="curvebox"><img class="curve" alt="spotting score over time" src="{uri}">'
            + "".join(spots) + "</div>")


def _rejections(inputs: ReportInputs) -> str:
    """What a crossing of the threshold means, and the candidates dropped, by reason, with their markers."""
    s = inputs.settings.spotter
    rules = ("A score above the threshold is only a candidate, not an event. The rule spotter keeps it when the "
             f"movement lies between min_peak ({s.min_peak}) and max_peak ({s.max_peak}) of the inter-ocular "
             f"distance, the same region was quiet for {s.context_before_s} s before it and {s.context_after_s} s "
             f"after it (its contrast there below max_context = {s.max_context} × the peak), no blink or head "
             f"motion fell inside it, it lasted at least {s.min_duration_s} s and came back to the onset face, "
             "and no better overlapping candidate won.")
    counts = inputs.rejected_counts
    if counts is None:
        if inputs.settings.spotting == "rules":
            return f'<p class="none">{_e(rules)}</p>'
        return ('<p class="none">A score above the threshold is only a candidate; this spotter (the learned one) '
                "does not report why a candidate gave no window.</p>")
    total = sum(counts.values())
    said = (f"{total} candidates were dropped, each marked on the curve by why, at its region's score (hover "
            "over a marker for its apex frame, region and score):" if total else "No candidate was dropped.")
    if len(inputs.rejected) > MAX_HOVER:
        said += f" (tooltips on the {MAX_HOVER} highest scored)"
    rows = []
    for reason in dict.fromkeys([*REJECT_REASONS, *counts]):
        n = counts.get(reason, 0)
        colour, _, glyph = _reject_style(reason)
        zero = "" if n else ' class="zero"'
        rows.append(f'<tr{zero}><td style="color:{colour}">{glyph}</td>'
                    f'<td>{_e(reason)}</td><td class="n">{n}</td><td>{_e(REJECT_REASONS.get(reason, ""))}</td></tr>')
    return (f'<p class="none">{_e(rules)} {_e(said)}</p>'
            f'<table class="rejected">{"".join(rows)}</table>')


def _flow_key(inputs: ReportInputs) -> str:
    """The key to the flow images, when a card shows one."""
    if not any(w is not None and w.flow is not None for w in inputs.windows.values()):
        return ""
    text = ("Flow (what the default model classifies: the apex against the onset and the offset, averaged): the "
            "colour says which way the skin moved, as in the key (a point of the disc has the colour of skin that "
            "moved from the centre towards it: right red, down yellow-green, left cyan, up violet, in the image "
            "as shown); brightness says how far, against the window's own "
            "typical (RMS) movement: full at 3 × RMS, black = still. Each flow image is scaled on its own, so "
            "brightness cannot be compared between events.")
    return (f'<div class="row">{_figure(flow_key(), "flow colour key")}'
            f'<p class="none" style="max-width:760px">{_e(text)}</p></div>')


def _summary_rows(inputs: ReportInputs) -> list[tuple[str, str]]:
    r = inputs.result
    s = inputs.settings
    faces = "–"
    if r.frames:
        faces = f"{r.face_frames} of {r.frames} ({100.0 * (r.face_frames or 0) / r.frames:.1f} %)"
    by_kind = ", ".join(f"{r.events.get(k, 0)} {k}" for k in KINDS)
    spotter = s.spotter
    return [
        ("video", r.path),
        ("status", r.status + (f": {r.error}" if r.error else "")),
        ("frames", f"{r.frames if r.frames is not None else '–'} at {_fmt(r.fps, '.3g')} fps, "
                   f"{_fmt(r.duration_s, '.2f', ' s')}"),
        ("frames with a face", faces),
        ("events", by_kind),
        ("analysis speed", f"{_fmt(r.analysis_fps, '.1f', ' fps')} ({_fmt(r.wall_s, '.1f', ' s')} for this video)"),
        ("engine", f"{r.engine} ({inputs.engine_reason})"),
        ("model", r.model + (f" ({s.model})" if s.model else " (bundled)")),
        ("spotting", f"threshold {spotter.threshold}, min_peak "
                     f"{spotter.min_peak}, max_peak {spotter.max_peak}, max_context {spotter.max_context} (quiet "
                     f"before and after: below this × the peak), micro up to {spotter.micro_max_s} s"),
        ("face landmarks", f"every {s.landmark_every} frame(s)" + (", blendshapes" if s.blendshapes else "")),
        ("analysed", r.finished),
    ]


def render_report(inputs: ReportInputs) -> str:
    """The whole page as one HTML string."""
    r = inputs.result
    counts = " / ".join(f"{r.events.get(k, 0)} {k}" for k in KINDS)
    overview = (f"{r.frames} frames · {_fmt(r.duration_s, '.1f', ' s')} · {r.face_frames} with a face · "
                f"events {counts} · {r.engine} · {r.model}")
    status_class = "ok" if r.status == "ok" else "bad"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>mer-analyze · {_e(r.name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f'<h1>{_e(r.name)} <span class="status {status_class}">{_e(r.status)}</span></h1>',
        f'<p class="sub">{_e(r.path)}</p>',
        f'<p class="overview">{_e(overview)}</p>',
    ]
    if r.error:
        parts.append(f'<p class="none">{_e(r.error)}</p>')
    if inputs.settings.model is None:
        parts.append('<p class="caveat">The bundled model was trained only on micro-expressions rendered onto '
                     "faces by mer-synth; it has not been validated on real, spontaneous micro-expressions. Read "
                     "its labels as a hint, not a finding; for real use, train a model on CASME-II, SAMM or "
                     "MMEW.</p>")
    parts.append("<h2>Spotting score over the video</h2>")
    if inputs.t.size:
        parts.append(_curve(inputs))
        parts.append('<p class="none">Score: how far the most-moving face region stands out, in multiples of '
                     "its recent level; it measures the movement that led up to a frame, so it peaks shortly "
                     "after the window it belongs to. Shaded and marked ▼ above the curve (numbered as the cards "
                     "below): spotted windows, red micro, blue macro; grey: no face.</p>")
        parts.append(_rejections(inputs))
    else:
        parts.append('<p class="none">no frames analysed</p>')
    parts.append(f"<h2>Events ({len(inputs.events)})</h2>")
    if not inputs.events:
        parts.append('<p class="none">no event was spotted</p>')
    for number, event in enumerate(inputs.events, start=1):
        key = (event.onset.frame, event.apex.frame, event.offset.frame)
        parts.append(_card(number, event, inputs.windows.get(key), inputs.labels))
    parts.append("<h2>Summary</h2><table class=\"summary\">")
    parts += [f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in _summary_rows(inputs)]
    parts.append("</table>")
    parts.append(_flow_key(inputs))
    parts.append('<p class="none">Written by mer-analyze. Crops are the aligned faces the model sees; the '
                 "DIs are shown with the network's normalisation, mid-grey = no change.</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"

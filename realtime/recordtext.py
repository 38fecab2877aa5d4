"""One readable line per ``mer/1`` record: shared by ``mer-subscribe`` and the plain (non-terminal) log.

A label whose confidence is below :data:`UNCERTAIN_BELOW` is shown with a question mark (``positive?``): the
model's best guess, which it is not sure of. Confidences are calibrated when the model carries a fitted
temperature (``mer-train`` fits one), so "below 0.5" means "wrong about half the time or more".
"""

from __future__ import annotations

from datetime import datetime

from mer_core.events import EventRecord, Record, StatusRecord, SummaryRecord

__all__ = ["UNCERTAIN_BELOW", "clock_time", "format_record", "is_uncertain", "label_text"]

# A label is marked uncertain below this confidence: less likely than all the other classes together.
UNCERTAIN_BELOW = 0.5


def clock_time(iso: str) -> str:
    """``HH:MM:SS.mmm`` in local time from a record's UTC ISO time (the raw text if it does not parse)."""
    try:
        when = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return iso
    if when.tzinfo is not None:
        when = when.astimezone()
    return when.strftime("%H:%M:%S.") + f"{when.microsecond // 1000:03d}"


def _prob(value: float | None) -> str:
    return "   -" if value is None else f"{value:4.2f}"


def is_uncertain(confidence: float | None, uncertain_below: float = UNCERTAIN_BELOW) -> bool:
    """Whether a label with this confidence is shown as uncertain (never for an unlabelled event)."""
    return confidence is not None and confidence < uncertain_below


def label_text(label: str | None, confidence: float | None, uncertain_below: float = UNCERTAIN_BELOW) -> str:
    """``label``, ``label?`` when uncertain, ``-`` when there is none."""
    if not label:
        return "-"
    return f"{label}?" if is_uncertain(confidence, uncertain_below) else label


def format_record(record: Record, *, uncertain_below: float = UNCERTAIN_BELOW) -> str:
    """A compact one-line summary; events show when, kind, duration, label, confidence and latency.
    A label below ``uncertain_below`` confidence ends in ``?``."""
    when = clock_time(record.time)
    if isinstance(record, EventRecord):
        label = label_text(record.label, record.confidence, uncertain_below)
        return (
            f"{when}  event   {record.kind:<5}  t={record.onset.t:8.3f}s  {record.duration_ms:4.0f} ms  "
            f"{label:<10} {_prob(record.confidence)}  "
            f"latency {record.latency_ms:.0f} ms  frames {record.onset.frame}-{record.apex.frame}-{record.offset.frame}"
        )
    if isinstance(record, StatusRecord):
        return (
            f"{when}  status  {record.fps_in:5.1f} fps in  {record.fps_proc:5.1f} analysed  "
            f"dropped {record.dropped}  face {'yes' if record.face else 'no '}  frames {record.frames}"
        )
    if isinstance(record, SummaryRecord):
        events = "  ".join(f"{kind} {count}" for kind, count in record.events.items())
        return (
            f"{when}  summary {record.source or '-'}  frames {record.frames}  dropped {record.dropped}  "
            f"face {record.face_frames}  events: {events}  {record.wall_s:.1f} s  {record.mean_fps:.1f} fps  "
            f"({record.reason})"
        )
    return f"{when}  {record.type}"

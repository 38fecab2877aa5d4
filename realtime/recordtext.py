"""One readable line per ``mer/1`` record: shared by ``mer-subscribe`` and the plain (non-terminal) log."""

from __future__ import annotations

from datetime import datetime

from realtime.events import EventRecord, Record, StatusRecord, SummaryRecord

__all__ = ["clock_time", "format_record"]


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


def format_record(record: Record) -> str:
    """A compact one-line summary; events show when, kind, duration, label, confidence and latency."""
    when = clock_time(record.time)
    if isinstance(record, EventRecord):
        return (
            f"{when}  event   {record.kind:<5}  t={record.onset.t:8.3f}s  {record.duration_ms:4.0f} ms  "
            f"{(record.label or '-'):<10} {_prob(record.confidence)}  "
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

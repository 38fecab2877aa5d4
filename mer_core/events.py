"""The ``mer/1`` records (``event``, ``status``, ``summary``): typed, validated, JSON both ways.

ZMQ payloads and JSONL lines are exactly :meth:`Record.to_json`; topic = ``"mer." + type``. Adding a
field keeps ``mer/1``; changing a field's meaning needs ``mer/2``. Unknown fields from a newer writer are
ignored on read, so old subscribers keep working.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any, ClassVar, Self

SCHEMA = "mer/1"
KINDS = ("micro", "macro")

__all__ = [
    "KINDS",
    "SCHEMA",
    "EventRecord",
    "Record",
    "RecordError",
    "StatusRecord",
    "SummaryRecord",
    "TimePoint",
    "parse_record",
    "utc_now_iso",
]


class RecordError(ValueError):
    """A record does not follow ``mer/1``; ``field`` names the offending field."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"invalid mer/1 record: field '{field_name}': {message}")
        self.field = field_name


def utc_now_iso() -> str:
    """Current UTC time, ISO-8601 with milliseconds and a ``Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class TimePoint:
    """A frame of the source: 0-based index from the start and its time on the source clock (seconds)."""

    frame: int
    t: float

    def to_dict(self) -> dict[str, Any]:
        return {"frame": self.frame, "t": round(self.t, 6)}

    @classmethod
    def from_dict(cls, name: str, value: Any) -> TimePoint:
        if not isinstance(value, dict):
            raise RecordError(name, f"expected an object {{frame, t}}, got {type(value).__name__}")
        frame = _int(f"{name}.frame", value.get("frame"))
        if frame < 0:
            raise RecordError(f"{name}.frame", f"must be >= 0, got {frame}")
        return cls(frame=frame, t=_num(f"{name}.t", value.get("t")))


# --- field checkers: each raises RecordError naming the field -------------------------------------------


def _int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RecordError(name, f"expected an integer, got {value!r}")
    return value


def _num(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RecordError(name, f"expected a finite number, got {value!r}")
    return float(value)


def _opt_num(name: str, value: Any) -> float | None:
    return None if value is None else _num(name, value)


def _str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise RecordError(name, f"expected a string, got {value!r}")
    return value


def _opt_str(name: str, value: Any) -> str | None:
    return None if value is None else _str(name, value)


def _nonneg(name: str, value: float) -> float:
    if value < 0:
        raise RecordError(name, f"must be >= 0, got {value}")
    return value


@dataclass(frozen=True, kw_only=True)
class Record:
    """Fields common to every record. ``seq`` is set by the publisher (+1 per record)."""

    type: ClassVar[str] = ""
    # optional fields left out of the JSON while None (added to mer/1 later; readers of older records lack them)
    omit_if_none: ClassVar[tuple[str, ...]] = ()
    seq: int = 0
    source: str = ""
    time: str = field(default_factory=utc_now_iso)

    @property
    def topic(self) -> str:
        return f"mer.{self.type}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schema": SCHEMA, "type": self.type}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.name in self.omit_if_none:
                continue
            out[f.name] = value.to_dict() if isinstance(value, TimePoint) else value
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)

    def with_seq(self, seq: int) -> Self:
        return replace(self, seq=seq)

    @classmethod
    def _common(cls, data: dict[str, Any]) -> dict[str, Any]:
        seq = _int("seq", data.get("seq"))
        if seq < 0:
            raise RecordError("seq", f"must be >= 0, got {seq}")
        time = _str("time", data.get("time"))
        try:
            datetime.fromisoformat(time.replace("Z", "+00:00"))
        except ValueError:
            raise RecordError("time", f"not an ISO-8601 time: {time!r}") from None
        return {"seq": seq, "source": _str("source", data.get("source")), "time": time}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        raise NotImplementedError

    @classmethod
    def from_json(cls, text: str | bytes | dict[str, Any]) -> Self:
        """Parse and validate; a record of another type is rejected (use :func:`parse_record` for any)."""
        record = parse_record(text)
        if not isinstance(record, cls):
            raise RecordError("type", f"expected '{cls.type}', got '{record.type}'")
        return record


@dataclass(frozen=True, kw_only=True)
class EventRecord(Record):
    """One spotted window, classified when it is a micro-expression."""

    type: ClassVar[str] = "event"
    onset: TimePoint
    apex: TimePoint
    offset: TimePoint
    duration_ms: float
    kind: str
    intensity: float
    label: str | None = None
    confidence: float | None = None
    probs: dict[str, float] = field(default_factory=dict)
    model: str | None = None
    engine: str | None = None
    latency_ms: float = 0.0
    delay_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise RecordError("kind", f"must be one of {KINDS}, got {self.kind!r}")
        if not (self.onset.frame <= self.apex.frame <= self.offset.frame):
            raise RecordError("apex", "frames must satisfy onset <= apex <= offset")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EventRecord:
        probs = data.get("probs", {})
        if not isinstance(probs, dict):
            raise RecordError("probs", f"expected an object label -> probability, got {probs!r}")
        clean_probs = {}
        for key, value in probs.items():
            p = _num(f"probs.{key}", value)
            if not 0.0 <= p <= 1.0:
                raise RecordError(f"probs.{key}", f"probability outside [0, 1]: {p}")
            clean_probs[str(key)] = p
        confidence = _opt_num("confidence", data.get("confidence"))
        if confidence is not None and not 0.0 <= confidence <= 1.0:
            raise RecordError("confidence", f"outside [0, 1]: {confidence}")
        return cls(
            **cls._common(data),
            onset=TimePoint.from_dict("onset", data.get("onset")),
            apex=TimePoint.from_dict("apex", data.get("apex")),
            offset=TimePoint.from_dict("offset", data.get("offset")),
            duration_ms=_nonneg("duration_ms", _num("duration_ms", data.get("duration_ms"))),
            kind=_str("kind", data.get("kind")),
            intensity=_num("intensity", data.get("intensity")),
            label=_opt_str("label", data.get("label")),
            confidence=confidence,
            probs=clean_probs,
            model=_opt_str("model", data.get("model")),
            engine=_opt_str("engine", data.get("engine")),
            latency_ms=_num("latency_ms", data.get("latency_ms")),
            delay_ms=_num("delay_ms", data.get("delay_ms")),
        )


def _stage_ms(value: Any) -> dict[str, dict[str, float]]:
    if not isinstance(value, dict):
        raise RecordError("stage_ms", f"expected an object stage -> {{p50, p95}}, got {value!r}")
    out = {}
    for stage, stats in value.items():
        if not isinstance(stats, dict):
            raise RecordError(f"stage_ms.{stage}", "expected {p50, p95}")
        out[str(stage)] = {
            "p50": _num(f"stage_ms.{stage}.p50", stats.get("p50")),
            "p95": _num(f"stage_ms.{stage}.p95", stats.get("p95")),
        }
    return out


@dataclass(frozen=True, kw_only=True)
class StatusRecord(Record):
    """About once a second: counters, rates, face presence, engine and per-stage timings."""

    type: ClassVar[str] = "status"
    omit_if_none: ClassVar[tuple[str, ...]] = ("landmark_every", "classified", "overflow", "failed")
    frames: int
    dropped: int
    fps_in: float
    fps_proc: float
    face: bool
    face_frames: int
    engine: str | None = None
    stage_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    # --landmark-every auto: face landmarks on every Nth frame, the N chosen; left out otherwise (and while
    # it is still being measured)
    landmark_every: int | None = None
    # the classifier so far (see the summary): windows labelled, left out when there is no model; windows
    # published unlabelled because its queue was full / the model failed, left out while there are none
    classified: int | None = None
    overflow: int | None = None
    failed: int | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StatusRecord:
        face = data.get("face")
        if not isinstance(face, bool):
            raise RecordError("face", f"expected true/false, got {face!r}")
        return cls(
            **cls._common(data),
            frames=_int("frames", data.get("frames")),
            dropped=_int("dropped", data.get("dropped")),
            fps_in=_nonneg("fps_in", _num("fps_in", data.get("fps_in"))),
            fps_proc=_nonneg("fps_proc", _num("fps_proc", data.get("fps_proc"))),
            face=face,
            face_frames=_int("face_frames", data.get("face_frames")),
            engine=_opt_str("engine", data.get("engine")),
            stage_ms=_stage_ms(data.get("stage_ms", {})),
            landmark_every=_landmark_every(data),
            classified=_opt_count("classified", data),
            overflow=_opt_count("overflow", data),
            failed=_opt_count("failed", data),
        )


@dataclass(frozen=True, kw_only=True)
class SummaryRecord(Record):
    """Once, at the end of the source or on shutdown (Ctrl-C included): the totals."""

    type: ClassVar[str] = "summary"
    omit_if_none: ClassVar[tuple[str, ...]] = ("scored", "accuracy", "uf1", "vetoed", "landmark_every",
                                                "classified", "overflow", "failed", "rejected")
    frames: int
    dropped: int
    face_frames: int
    events: dict[str, int] = field(default_factory=lambda: {kind: 0 for kind in KINDS})
    wall_s: float = 0.0
    mean_fps: float = 0.0
    reason: str = "end"  # why the run ended: end | interrupted | error
    # mer-live --windows with a label column: how the predicted labels compare with the file's (rows with a
    # label that got an event); left out of the record (not null) when not measured
    scored: int | None = None
    accuracy: float | None = None
    uf1: float | None = None
    # windows the spotter found that the model called "none" (not a micro-expression) and so were not
    # published; left out when none were
    vetoed: int | None = None
    landmark_every: int | None = None  # --landmark-every auto: the N chosen; left out otherwise
    # windows the model labelled (left out when there is no model); windows published unlabelled because the
    # classifier's queue was full (it fell behind) or the model failed on them (an error, NaN/inf), each left
    # out when there were none
    classified: int | None = None
    overflow: int | None = None
    failed: int | None = None
    # the rule spotter's candidates (threshold crossings) that gave no window, by why they were dropped
    # (mer_analysis.spotting.REJECT_REASONS, every name, zeros included); left out for a spotter that does not say
    rejected: dict[str, int] | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SummaryRecord:
        events = data.get("events")
        if not isinstance(events, dict):
            raise RecordError("events", f"expected an object kind -> count, got {events!r}")
        return cls(
            **cls._common(data),
            frames=_int("frames", data.get("frames")),
            dropped=_int("dropped", data.get("dropped")),
            face_frames=_int("face_frames", data.get("face_frames")),
            events={str(k): _int(f"events.{k}", v) for k, v in events.items()},
            wall_s=_nonneg("wall_s", _num("wall_s", data.get("wall_s"))),
            mean_fps=_nonneg("mean_fps", _num("mean_fps", data.get("mean_fps"))),
            reason=_str("reason", data.get("reason", "end")),
            scored=None if data.get("scored") is None else _int("scored", data.get("scored")),
            accuracy=_opt_num("accuracy", data.get("accuracy")),
            uf1=_opt_num("uf1", data.get("uf1")),
            vetoed=None if data.get("vetoed") is None else _int("vetoed", data.get("vetoed")),
            landmark_every=_landmark_every(data),
            classified=_opt_count("classified", data),
            overflow=_opt_count("overflow", data),
            failed=_opt_count("failed", data),
            rejected=_opt_counts("rejected", data),
        )


def _opt_count(name: str, data: dict[str, Any]) -> int | None:
    """An optional count (>= 0) of a record: None when it is left out."""
    value = data.get(name)
    if value is None:
        return None
    count = _int(name, value)
    if count < 0:
        raise RecordError(name, f"must be >= 0, got {count}")
    return count


def _opt_counts(name: str, data: dict[str, Any]) -> dict[str, int] | None:
    """An optional object name -> count (>= 0) of a record: None when it is left out."""
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise RecordError(name, f"expected an object name -> count, got {value!r}")
    out = {}
    for key, count in value.items():
        out[str(key)] = _int(f"{name}.{key}", count)
        if out[str(key)] < 0:
            raise RecordError(f"{name}.{key}", f"must be >= 0, got {count}")
    return out


def _landmark_every(data: dict[str, Any]) -> int | None:
    value = data.get("landmark_every")
    if value is None:
        return None
    every = _int("landmark_every", value)
    if every < 1:
        raise RecordError("landmark_every", f"must be >= 1, got {every}")
    return every


_TYPES: dict[str, type[Record]] = {cls.type: cls for cls in (EventRecord, StatusRecord, SummaryRecord)}


def parse_record(text: str | bytes | dict[str, Any]) -> Record:
    """Parse any ``mer/1`` record from JSON text/bytes or a dict; raises :class:`RecordError`."""
    if isinstance(text, dict):
        data = text
    else:
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RecordError("<json>", f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise RecordError("<json>", "a record is a JSON object")
    if data.get("schema") != SCHEMA:
        raise RecordError("schema", f"expected {SCHEMA!r}, got {data.get('schema')!r}")
    kind = data.get("type")
    if kind not in _TYPES:
        raise RecordError("type", f"expected one of {sorted(_TYPES)}, got {kind!r}")
    try:
        return _TYPES[kind].from_dict(data)
    except RecordError:
        raise
    except (TypeError, AttributeError) as exc:
        raise RecordError("<record>", str(exc)) from None


def as_plain(record: Record) -> dict[str, Any]:
    """The record as plain Python data (for tests and the dashboard)."""
    return asdict(record)

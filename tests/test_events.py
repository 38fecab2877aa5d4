"""mer/1 records: round trips, topics, and rejection of malformed records naming the bad field."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from mer_core.events import (
    SCHEMA,
    EventRecord,
    Record,
    RecordError,
    StatusRecord,
    SummaryRecord,
    TimePoint,
    parse_record,
)


def _event(**overrides: Any) -> EventRecord:
    base: dict[str, Any] = dict(
        seq=3, source="file:clip.mp4", onset=TimePoint(10, 0.333), apex=TimePoint(14, 0.466),
        offset=TimePoint(19, 0.633), duration_ms=300.0, kind="micro", intensity=2.5, label="positive",
        confidence=0.7, probs={"negative": 0.1, "positive": 0.7, "surprise": 0.2}, model="default",
        engine="onnxruntime", latency_ms=12.5, delay_ms=180.0,
    )
    base.update(overrides)
    return EventRecord(**base)


RECORDS = [
    _event(),
    _event(kind="macro", label=None, confidence=None, probs={}),
    StatusRecord(seq=1, source="camera:0", frames=300, dropped=2, fps_in=30.0, fps_proc=29.5, face=True,
                 face_frames=290, engine="torch", stage_ms={"face": {"p50": 4.0, "p95": 6.5}}),
    SummaryRecord(seq=9, source="camera:0", frames=300, dropped=2, face_frames=290,
                  events={"micro": 2, "macro": 1}, wall_s=10.0, mean_fps=30.0, reason="interrupted"),
    SummaryRecord(seq=9, source="camera:0", frames=300, dropped=0, face_frames=290, events={"micro": 0, "macro": 0},
                  wall_s=10.0, mean_fps=120.0, reason="end", vetoed=3, landmark_every=4),
    StatusRecord(seq=2, source="camera:0", frames=330, dropped=2, fps_in=30.0, fps_proc=29.5, face=True,
                 face_frames=320, engine="torch", classified=12, overflow=3, failed=1),
    SummaryRecord(seq=10, source="camera:0", frames=300, dropped=0, face_frames=290,
                  events={"micro": 16, "macro": 0}, wall_s=10.0, mean_fps=30.0, classified=12, overflow=3, failed=1),
    SummaryRecord(seq=11, source="camera:0", frames=300, dropped=0, face_frames=290,
                  events={"micro": 1, "macro": 0}, rejected={"too_small": 40, "context": 3, "blink": 0}),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.type)
def test_round_trip(record: Record) -> None:
    text = record.to_json()
    data = json.loads(text)
    assert data["schema"] == SCHEMA and data["type"] == record.type
    assert parse_record(text) == record
    assert parse_record(text.encode()) == record
    assert type(record).from_json(text) == record
    assert record.topic == "mer." + record.type


def test_event_fields_match_design() -> None:
    data = json.loads(_event().to_json())
    for key in ("schema", "type", "seq", "source", "time", "onset", "apex", "offset", "duration_ms", "kind",
                "intensity", "label", "confidence", "probs", "model", "engine", "latency_ms", "delay_ms"):
        assert key in data, key
    assert data["onset"] == {"frame": 10, "t": 0.333}


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    event = _event()  # one instance: two would carry different creation times when the clock ticks between
    data = json.loads(event.to_json())
    data["added_in_a_later_version"] = 1
    assert parse_record(data) == event


def test_with_seq_and_type_mismatch() -> None:
    assert _event().with_seq(42).seq == 42
    with pytest.raises(RecordError) as info:
        StatusRecord.from_json(_event().to_json())
    assert info.value.field == "type"


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.update(schema="mer/2"), "schema"),
        (lambda d: d.update(type="blob"), "type"),
        (lambda d: d.update(seq=-1), "seq"),
        (lambda d: d.update(seq="1"), "seq"),
        (lambda d: d.update(time="yesterday"), "time"),
        (lambda d: d.pop("source"), "source"),
        (lambda d: d.update(onset={"frame": 1.5, "t": 0}), "onset.frame"),
        (lambda d: d.update(apex={"frame": 1}), "apex.t"),
        (lambda d: d.update(offset=[1, 2]), "offset"),
        (lambda d: d.update(kind="meso"), "kind"),
        (lambda d: d.update(duration_ms=-5), "duration_ms"),
        (lambda d: d.update(intensity=float("nan")), "intensity"),
        (lambda d: d.update(confidence=1.5), "confidence"),
        (lambda d: d.update(probs={"positive": 2.0}), "probs.positive"),
        (lambda d: d.update(probs=[0.1]), "probs"),
        (lambda d: d.update(apex={"frame": 99, "t": 1.0}), "apex"),
        (lambda d: d.update(latency_ms=None), "latency_ms"),
    ],
)
def test_malformed_event_names_the_field(mutate: Callable[[dict[str, Any]], None], field: str) -> None:
    data = json.loads(_event().to_json())
    mutate(data)
    with pytest.raises(RecordError) as info:
        parse_record(data)
    assert info.value.field == field
    assert field in str(info.value)


@pytest.mark.parametrize(
    ("record", "key", "value", "field"),
    [
        (RECORDS[2], "face", 1, "face"),
        (RECORDS[2], "fps_in", -1, "fps_in"),
        (RECORDS[2], "stage_ms", {"face": {"p50": 1}}, "stage_ms.face.p95"),
        (RECORDS[3], "events", {"micro": "2"}, "events.micro"),
        (RECORDS[3], "frames", None, "frames"),
        (RECORDS[5], "overflow", -1, "overflow"),
        (RECORDS[6], "failed", "1", "failed"),
        (RECORDS[7], "rejected", [3], "rejected"),
        (RECORDS[7], "rejected", {"context": -1}, "rejected.context"),
        (RECORDS[7], "rejected", {"context": 1.5}, "rejected.context"),
    ],
)
def test_malformed_status_and_summary(record: Record, key: str, value: object, field: str) -> None:
    data = json.loads(record.to_json())
    data[key] = value
    with pytest.raises(RecordError) as info:
        parse_record(data)
    assert info.value.field == field


@pytest.mark.parametrize("text", [b"\xff\xfe", "not json", "[1, 2]", "{}"])
def test_garbage_is_rejected(text: str | bytes) -> None:
    with pytest.raises(RecordError):
        parse_record(text)


def test_no_nan_can_be_serialised() -> None:
    with pytest.raises(ValueError):
        _event(intensity=float("nan")).to_json()


def test_landmark_every_is_left_out_unless_auto_chose_it() -> None:
    status = StatusRecord(seq=1, source="camera:0", frames=3, dropped=0, fps_in=30.0, fps_proc=30.0, face=True,
                          face_frames=3)
    assert "landmark_every" not in status.to_dict()
    chosen = StatusRecord.from_dict({**status.to_dict(), "landmark_every": 3})
    assert chosen.landmark_every == 3 and chosen.to_dict()["landmark_every"] == 3
    with pytest.raises(RecordError, match="landmark_every"):
        StatusRecord.from_dict({**status.to_dict(), "landmark_every": 0})


def test_classifier_counts_are_left_out_unless_there_are_some() -> None:
    summary = SummaryRecord(seq=9, source="camera:0", frames=3, dropped=0, face_frames=3)
    assert not {"classified", "overflow", "failed"} & set(summary.to_dict())
    assert SummaryRecord.from_dict(summary.to_dict()) == summary


def test_rejected_candidates_are_left_out_when_not_known_and_old_summaries_still_parse() -> None:
    without = SummaryRecord(seq=9, source="camera:0", frames=3, dropped=0, face_frames=3)
    assert "rejected" not in without.to_dict()
    assert SummaryRecord.from_dict(without.to_dict()).rejected is None
    old = {"schema": SCHEMA, "type": "summary", "seq": 4, "source": "file:a.mp4", "time": "2025-01-01T00:00:00Z",
           "frames": 10, "dropped": 0, "face_frames": 10, "events": {"micro": 0, "macro": 0}, "wall_s": 1.0,
           "mean_fps": 10.0}  # written before the field existed
    parsed = parse_record(json.dumps(old))
    assert isinstance(parsed, SummaryRecord) and parsed.rejected is None
    counted = SummaryRecord(seq=9, source="camera:0", frames=3, dropped=0, face_frames=3,
                            rejected={"context": 2, "weaker": 0})
    data = json.loads(counted.to_json())
    assert data["rejected"] == {"context": 2, "weaker": 0}
    assert SummaryRecord.from_json(counted.to_json()) == counted
    empty = SummaryRecord(seq=9, source="camera:0", frames=3, dropped=0, face_frames=3, rejected={})
    assert SummaryRecord.from_json(empty.to_json()).rejected == {}

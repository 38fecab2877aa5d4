"""Publisher → subscriber over real ZMQ on 127.0.0.1 (random ports), JSONL recording, CURVE, mer-subscribe."""

from __future__ import annotations

import dataclasses
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from mer_cli.subscribe import main
from mer_core.events import EventRecord, Record, StatusRecord, SummaryRecord, TimePoint, parse_record
from realtime.curve import CurveError, create_keys, load_public_key, load_server_keys
from realtime.publisher import Publisher, PublisherError, PublisherOptions, check_endpoint, check_exposure
from realtime.subscriber import Subscriber, SubscriberError, subscribe

pytestmark = pytest.mark.usefixtures("no_thread_left_behind")

ANY_PORT = "tcp://127.0.0.1:0"




def status(frames: int = 0) -> StatusRecord:
    return StatusRecord(frames=frames, dropped=0, fps_in=30.0, fps_proc=29.5, face=True, face_frames=frames)


def event(i: int) -> EventRecord:
    f = 100 * i
    return EventRecord(
        onset=TimePoint(f, f / 30),
        apex=TimePoint(f + 3, (f + 3) / 30),
        offset=TimePoint(f + 7, (f + 7) / 30),
        duration_ms=233.3,
        kind="micro",
        intensity=0.4,
        label="happiness",
        confidence=0.8,
        probs={"happiness": 0.8, "surprise": 0.2},
        latency_ms=12.0,
    )


def summary() -> SummaryRecord:
    return SummaryRecord(frames=10, dropped=0, face_frames=10, events={"micro": 1, "macro": 0}, wall_s=1.0)


def wait_for_connection(
    pub: Publisher, recv: Callable[[float], Record | None], limit_s: float = 10.0
) -> Record:
    """Publish status records until the subscriber sees one (PUB/SUB drops what precedes the connection)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        pub.publish(status())
        record = recv(0.02)
        if record is not None:
            return record
    raise AssertionError("subscriber never connected")


@pytest.fixture
def publisher(tmp_path: Path) -> Iterator[Publisher]:
    pub = Publisher(
        PublisherOptions(endpoint=ANY_PORT, record_path=tmp_path / "run.jsonl", source="file:test.mp4")
    )
    pub.start()
    yield pub
    pub.close()


def test_records_arrive_in_order_with_seq_plus_one(publisher: Publisher) -> None:
    assert publisher.endpoint is not None and publisher.endpoint.startswith("tcp://127.0.0.1:")
    assert not publisher.endpoint.endswith(":0")
    with Subscriber(publisher.endpoint) as sub:
        first = wait_for_connection(publisher, sub.recv)
        assert isinstance(first, StatusRecord) and first.source == "file:test.mp4"
        for i in range(20):
            publisher.publish(event(i))
        publisher.publish(summary())
        got: list[Record] = []
        while not got or not isinstance(got[-1], SummaryRecord):
            record = sub.recv(5.0)
            assert record is not None, "timed out waiting for records"
            got.append(record)
    events = [r for r in got if isinstance(r, EventRecord)]
    assert [e.onset.frame for e in events] == [100 * i for i in range(20)]
    seqs = [first.seq] + [r.seq for r in got]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # +1 per record, no gaps
    assert events[0].probs == {"happiness": 0.8, "surprise": 0.2}


def test_topic_filter(publisher: Publisher) -> None:
    assert publisher.endpoint is not None
    with Subscriber(publisher.endpoint, topics=("event",)) as sub:
        deadline = time.monotonic() + 10.0
        record = None
        while record is None and time.monotonic() < deadline:
            publisher.publish(status())
            publisher.publish(event(1))
            record = sub.recv(0.02)
        assert isinstance(record, EventRecord)
        for _ in range(5):
            publisher.publish(status())
        publisher.publish(event(2))
        while (record := sub.recv(5.0)) is not None and not (isinstance(record, EventRecord)
                                                               and record.onset.frame == 200):
            assert isinstance(record, EventRecord)
        assert isinstance(record, EventRecord)


def test_a_subscriber_that_never_reads_does_not_stall_publish(tmp_path: Path) -> None:
    pub = Publisher(PublisherOptions(endpoint=ANY_PORT, sndhwm=100, queue_size=2000))
    pub.start()
    try:
        assert pub.endpoint is not None
        with Subscriber(pub.endpoint, rcvhwm=100) as sub:
            wait_for_connection(pub, sub.recv)  # connected, and from now on never reads
            record = status(7)
            n = 100_000
            accepted = sum(pub.publish(record) for _ in range(n))  # each call only enqueues or drops
            pub.publish(summary())
            pub.close()
            stats = pub.stats
        assert stats.sent + stats.dropped_queue >= n  # everything accounted for: sent or counted as dropped
        assert accepted <= stats.sent
        assert stats.queued == 0
    finally:
        pub.close()


def test_summary_records_are_never_dropped(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    pub = Publisher(PublisherOptions(endpoint=None, record_path=path, queue_size=10))
    for i in range(15):  # not started yet: the queue fills up and the overflow is dropped
        pub.publish(status(i))
    assert pub.publish(summary()) is True  # makes room by evicting the oldest
    assert pub.stats.dropped_queue == 6
    pub.start()
    pub.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 10
    assert parse_record(lines[-1]).type == "summary"


def test_jsonl_is_complete_and_valid_after_close(publisher: Publisher, tmp_path: Path) -> None:
    for i in range(50):
        publisher.publish(event(i) if i % 5 == 0 else status(i))
    publisher.publish(summary())
    publisher.close()
    publisher.close()  # idempotent
    assert publisher.publish(status()) is False  # closed
    lines = (tmp_path / "run.jsonl").read_text().splitlines()
    records = [parse_record(line) for line in lines]
    assert [r.seq for r in records] == list(range(51))
    assert all(r.source == "file:test.mp4" for r in records)
    assert isinstance(records[-1], SummaryRecord)
    assert sum(isinstance(r, EventRecord) for r in records) == 10
    assert publisher.stats.written == 51


def test_port_in_use_is_a_clear_error(publisher: Publisher) -> None:
    assert publisher.endpoint is not None
    port = int(publisher.endpoint.rsplit(":", 1)[1])
    with pytest.raises(PublisherError) as info:
        Publisher(PublisherOptions(endpoint=publisher.endpoint)).start()
    assert str(info.value) == (
        f"{publisher.endpoint} is already in use: pick another with --zmq tcp://127.0.0.1:{port + 1}"
    )


def _this_machines_address() -> str:
    """A non-loopback IPv4 address of this machine (the one a route out would use; nothing is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("198.51.100.1", 9))
        except OSError:
            pytest.skip("no route off this machine, so no address but loopback")
        address = str(probe.getsockname()[0])
    if address.startswith("127."):
        pytest.skip("this machine has no address but loopback")
    return address


@pytest.mark.parametrize("endpoint", ["tcp://0.0.0.0:5556", "tcp://*:5556", "tcp://{here}:5556"])
def test_non_loopback_needs_curve_or_insecure(endpoint: str) -> None:
    if "{here}" in endpoint:
        endpoint = endpoint.format(here=_this_machines_address())
    with pytest.raises(PublisherError, match=r"--zmq-curve KEYDIR.*mer-live keys KEYDIR.*--insecure"):
        Publisher(PublisherOptions(endpoint=endpoint))


NOT_HERE = "203.0.113.77"  # TEST-NET-3: documentation only, no machine's address


@pytest.mark.parametrize("insecure", [False, True])
@pytest.mark.parametrize("endpoint, says", [
    ("tcp://999.1.1.1:5556", "invalid address 999.1.1.1 in 'tcp://999.1.1.1:5556': an IPv4 address is four "
                             "numbers 0..255"),
    (f"tcp://{NOT_HERE}:5556", f"cannot bind tcp://{NOT_HERE}:5556: {NOT_HERE} is not an address of this machine"),
])
def test_an_address_that_cannot_be_bound_is_said_before_the_security_rule(
    endpoint: str, says: str, insecure: bool
) -> None:
    """`--zmq tcp://999.1.1.1:5556` said "reachable from other machines: encrypt with --zmq-curve", and only with
    --insecure "not an address of this machine": whether the address can work at all comes first."""
    with socket.socket() as probe:
        try:
            probe.bind((NOT_HERE, 0))
            pytest.skip(f"this machine has the address {NOT_HERE}")
        except OSError:
            pass
    with pytest.raises(PublisherError) as info:
        check_exposure(endpoint, curve=False, insecure=insecure)
    assert str(info.value).startswith(says) and "reachable from other machines" not in str(info.value)
    with pytest.raises(PublisherError, match=re.escape(says)):
        Publisher(PublisherOptions(endpoint=endpoint, insecure=insecure))
    if endpoint.startswith("tcp://999"):
        with pytest.raises(SubscriberError, match=re.escape(says)):  # connecting there would wait for ever
            Subscriber(endpoint)


@pytest.mark.parametrize(
    "endpoint", ["127.0.0.1:5556", "tcp://127.0.0.1", "tcp://127.0.0.1:70000", "udp://127.0.0.1:5556", ""]
)
def test_bad_endpoints_are_rejected(endpoint: str) -> None:
    with pytest.raises(PublisherError, match="invalid"):
        check_endpoint(endpoint)


def test_unwritable_recording_fails_at_start(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    pub = Publisher(PublisherOptions(endpoint=ANY_PORT, record_path=tmp_path / "file" / "run.jsonl"))
    with pytest.raises(PublisherError, match="cannot write the recording"):
        pub.start()
    pub.close()


def _recording_error(path: Path) -> str:
    pub = Publisher(PublisherOptions(endpoint=None, record_path=path))
    with pytest.raises(PublisherError) as info:
        pub.start()
    pub.close()
    return str(info.value)


def test_a_recording_that_cannot_be_made_says_why_in_the_users_terms(tmp_path: Path) -> None:
    """`--record /proc/out.jsonl` said "No such file or directory" of a folder that exists."""
    (tmp_path / "file").write_text("x")
    assert _recording_error(tmp_path / "file" / "run.jsonl") == (
        f"cannot write the recording {tmp_path / 'file' / 'run.jsonl'}: {tmp_path / 'file'} is a file, not a folder; "
        "give another path")
    assert _recording_error(tmp_path) == (
        f"cannot write the recording {tmp_path}: it is a folder; give a file path, e.g. {tmp_path / 'run.jsonl'}")
    if not Path("/proc/self").is_dir():
        pytest.skip("no /proc here")
    message = _recording_error(Path("/proc/mer-live-test.jsonl"))
    assert message == ("cannot write the recording /proc/mer-live-test.jsonl: the folder /proc does not allow new "
                       "files; give a path in a folder you can write, e.g. ./run.jsonl")


def test_curve_round_trip(tmp_path: Path) -> None:
    keydir = tmp_path / "keys"
    public_path, secret_path = create_keys(keydir)
    assert public_path.name == "server.key" and secret_path.name == "server.key_secret"
    assert (secret_path.stat().st_mode & 0o077) == 0  # secret readable by the owner only
    with pytest.raises(CurveError, match="already holds CURVE keys"):
        create_keys(keydir)
    server_public, _ = load_server_keys(keydir)
    assert load_public_key(keydir) == load_public_key(public_path) == load_public_key(server_public.decode())

    with Publisher(PublisherOptions(endpoint=ANY_PORT, curve_keydir=keydir)) as pub:
        assert pub.endpoint is not None
        with Subscriber(pub.endpoint, curve_server_key=public_path) as sub:
            wait_for_connection(pub, sub.recv)
            pub.publish(event(3))
            record = sub.recv(5.0)
            while isinstance(record, StatusRecord):
                record = sub.recv(5.0)
            assert isinstance(record, EventRecord) and record.onset.frame == 300
        with Subscriber(pub.endpoint) as plain:  # no key: the handshake fails, nothing arrives
            for _ in range(10):
                pub.publish(status())
                assert plain.recv(0.02) is None


def test_curve_errors(tmp_path: Path) -> None:
    with pytest.raises(PublisherError, match="mer-live keys"):
        Publisher(PublisherOptions(endpoint="tcp://0.0.0.0:5556", curve_keydir=tmp_path / "nokeys"))
    with pytest.raises(SubscriberError, match="neither a CURVE public key"):
        Subscriber("tcp://127.0.0.1:5556", curve_server_key="not-a-key")
    with pytest.raises(SubscriberError, match="unknown topic"):
        Subscriber("tcp://127.0.0.1:5556", topics=("events",))


def test_malformed_messages_are_skipped() -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    with ctx.socket(zmq.PUB) as raw:
        raw.setsockopt(zmq.LINGER, 0)
        raw.bind("tcp://127.0.0.1:*")
        endpoint = raw.getsockopt_string(zmq.LAST_ENDPOINT)
        good = status(1).to_json().encode()
        with Subscriber(endpoint) as sub:
            record = None
            deadline = time.monotonic() + 10.0
            while record is None and time.monotonic() < deadline:
                raw.send_multipart([b"mer.status", b"{not json"])
                raw.send_multipart([b"mer.event", good])  # wrong topic for a status record
                raw.send_multipart([b"mer.status", good])
                record = sub.recv(0.02)
            assert isinstance(record, StatusRecord)
            assert sub.skipped >= 2


def test_subscribe_generator_ends_on_timeout() -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    with ctx.socket(zmq.PUB) as raw:
        raw.setsockopt(zmq.LINGER, 0)
        raw.bind("tcp://127.0.0.1:*")
        gen = subscribe(raw.getsockopt_string(zmq.LAST_ENDPOINT), timeout_s=0.05)
        assert list(gen) == []


class OneRun:
    """From its own thread: ``warmup`` records until the subscriber says it is connected, then an event and
    the summary (the end of a run), then ``after`` records until stopped — what a second run would send."""

    def __init__(self, pub: Publisher, warmup: Callable[[], Record], after: Callable[[], Record]) -> None:
        self.pub, self.warmup, self.after = pub, warmup, after
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self.connected.wait(0.005):
            self.pub.publish(self.warmup())
        self.pub.publish(event(1))
        self.pub.publish(summary())
        while not self._stop.wait(0.005):
            self.pub.publish(self.after())

    def __enter__(self) -> OneRun:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.connected.set()
        self._stop.set()
        self._thread.join(5.0)


def _take(records: Iterator[Record], run: OneRun | TwoRuns, limit: int = 2000) -> list[Record]:
    """Records from the generator until it ends (at most ``limit``, so a generator that never ends fails)."""
    got: list[Record] = []
    for record in records:
        got.append(record)
        run.connected.set()
        if len(got) >= limit:
            break
    return got


def test_subscribe_ends_after_the_summary(publisher: Publisher) -> None:
    assert publisher.endpoint is not None
    with OneRun(publisher, warmup=lambda: status(1), after=lambda: status(99)) as run:
        got = _take(subscribe(publisher.endpoint, timeout_s=10), run)
    assert isinstance(got[-1], SummaryRecord)
    assert any(isinstance(r, EventRecord) for r in got)
    assert not any(isinstance(r, StatusRecord) and r.frames == 99 for r in got)  # nothing after the summary


def test_subscribe_to_events_only_still_ends_with_the_run(publisher: Publisher) -> None:
    assert publisher.endpoint is not None
    with OneRun(publisher, warmup=lambda: event(0), after=lambda: event(7)) as run:
        got = _take(subscribe(publisher.endpoint, topics=("event",), timeout_s=10), run)
    assert got and all(isinstance(r, EventRecord) for r in got)  # the summary ends it, unseen
    assert [r.onset.frame for r in got if isinstance(r, EventRecord)][-1] == 100  # event(1), nothing after


def test_subscribe_keep_going_carries_on_past_the_summary(publisher: Publisher) -> None:
    assert publisher.endpoint is not None
    got: list[Record] = []
    with OneRun(publisher, warmup=lambda: status(1), after=lambda: status(99)) as run:
        records = subscribe(publisher.endpoint, timeout_s=10, keep_going=True)
        for record in records:
            got.append(record)
            run.connected.set()
            if isinstance(record, StatusRecord) and record.frames == 99 or len(got) >= 2000:
                break
        records.close()
    kinds = [type(r) for r in got]
    assert SummaryRecord in kinds and isinstance(got[-1], StatusRecord) and got[-1].frames == 99


def _connected_on_first_message(monkeypatch: pytest.MonkeyPatch, connected: threading.Event) -> None:
    """mer-subscribe in this process tells a publishing thread when its first message came (the handshake
    _take does for the generator)."""
    recv_message = Subscriber.recv_message

    def recv_and_tell(self: Subscriber, timeout_s: float | None = None) -> Any:
        message = recv_message(self, timeout_s)
        if message is not None:
            connected.set()
        return message

    monkeypatch.setattr(Subscriber, "recv_message", recv_and_tell)


def test_mer_subscribe_ends_at_the_summary_of_its_run(
    publisher: Publisher, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """It went on after the summary (and, run with a timeout, printed the next mer-live run's records)."""
    assert publisher.endpoint is not None
    with OneRun(publisher, warmup=lambda: status(1), after=lambda: status(99)) as run:
        _connected_on_first_message(monkeypatch, run.connected)
        code = main([publisher.endpoint, "--json", "--count", "500", "--timeout", "10"])
    records = [parse_record(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and isinstance(records[-1], SummaryRecord)
    assert not any(isinstance(r, StatusRecord) and r.frames == 99 for r in records)  # nothing after the summary


def test_mer_subscribe_to_events_still_ends_with_the_run(
    publisher: Publisher, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert publisher.endpoint is not None
    with OneRun(publisher, warmup=lambda: event(0), after=lambda: event(7)) as run:
        _connected_on_first_message(monkeypatch, run.connected)
        code = main([publisher.endpoint, "--topic", "event", "--json", "--count", "500", "--timeout", "10"])
    records = [parse_record(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and records and all(isinstance(r, EventRecord) for r in records)  # the summary ends it, unseen
    assert [r.onset.frame for r in records if isinstance(r, EventRecord)][-1] == 100  # event(1), nothing after


class TwoRuns:
    """A raw PUB socket from its own thread: status records of run A (``file:a.mp4``, seq 0, 1, ...) until the
    subscriber is connected, then run B's (its own source, or A's with seq from 0 again: a new mer-live) and
    its summary, over and over, until stopped. Run A never sends its summary: it was killed."""

    def __init__(self, b_source: str) -> None:
        self.b_source = b_source
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._sock = ctx.socket(zmq.PUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind("tcp://127.0.0.1:*")
        self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def _send(self, record: Record) -> None:
        self._sock.send_multipart([record.topic.encode(), record.to_json().encode()])

    def _run(self) -> None:
        seq = 0
        while not self.connected.wait(0.005):
            self._send(dataclasses.replace(status(1), seq=seq, source="file:a.mp4"))
            seq += 1
        seq = 0
        while not self._stop.wait(0.005):
            self._send(dataclasses.replace(status(2), seq=seq, source=self.b_source))
            self._send(dataclasses.replace(summary(), seq=seq + 1, source=self.b_source))
            seq += 2

    def __enter__(self) -> TwoRuns:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.connected.set()
        self._stop.set()
        self._thread.join(5.0)
        self._sock.close()


@pytest.mark.parametrize("b_source", ["file:b.mp4", "file:a.mp4"], ids=["another-source", "seq-from-0"])
def test_another_runs_records_are_never_taken_for_the_joined_run(
    b_source: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The run joined ends without a summary and another mer-live starts on the same port: its records end
    the subscription, unprinted (mer-subscribe printed the second run's summary as if it were the first's)."""
    with TwoRuns(b_source) as runs:
        got = _take(subscribe(runs.endpoint, timeout_s=10), runs)
    assert got and all(isinstance(r, StatusRecord) and r.frames == 1 for r in got)
    with TwoRuns(b_source) as runs:
        _connected_on_first_message(monkeypatch, runs.connected)
        code = main([runs.endpoint, "--json", "--count", "500", "--timeout", "10"])
    captured = capsys.readouterr()
    records = [parse_record(line) for line in captured.out.splitlines()]
    assert code == 1 and records and all(isinstance(r, StatusRecord) and r.frames == 1 for r in records)
    assert "the run from 'file:a.mp4' ended without its summary" in captured.err


def test_mer_subscribe_help_says_when_it_stops() -> None:
    from mer_cli.subscribe import build_parser as _parser

    text = _parser().format_help()
    for needle in ("Ctrl-C", "summary", "--keep-going", "exit codes"):
        assert needle in text


class Repeater:
    """Publishes a status record every few ms from its own thread until stopped (for CLI tests)."""

    def __init__(self, pub: Publisher) -> None:
        self.pub = pub
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        i = 0
        while not self._stop.wait(0.005):
            self.pub.publish(status(i))
            i += 1

    def __enter__(self) -> Repeater:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5.0)


def test_mer_subscribe_json_count(publisher: Publisher, capsys: pytest.CaptureFixture[str]) -> None:
    assert publisher.endpoint is not None
    with Repeater(publisher):
        code = main([publisher.endpoint, "--json", "--count", "2", "--timeout", "10"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["schema"] == "mer/1" and first["type"] == "status"
    assert second["seq"] == first["seq"] + 1


def test_mer_subscribe_readable_lines(publisher: Publisher, capsys: pytest.CaptureFixture[str]) -> None:
    assert publisher.endpoint is not None
    with Repeater(publisher):
        code = main([publisher.endpoint, "--topic", "status", "--count", "1", "--timeout", "10"])
    out = capsys.readouterr().out
    assert code == 0
    assert "status" in out and "fps in" in out and "face yes" in out


def test_mer_subscribe_timeout_without_publisher(capsys: pytest.CaptureFixture[str]) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    with ctx.socket(zmq.PUB) as raw:
        raw.bind("tcp://127.0.0.1:*")
        code = main([raw.getsockopt_string(zmq.LAST_ENDPOINT), "--count", "1", "--timeout", "0.05"])
    assert code == 1
    assert capsys.readouterr().out == ""


def test_mer_subscribe_says_what_it_waits_for(capsys: pytest.CaptureFixture[str]) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    with ctx.socket(zmq.PUB) as raw:
        raw.bind("tcp://127.0.0.1:*")
        endpoint = raw.getsockopt_string(zmq.LAST_ENDPOINT)
        main([endpoint, "--json", "--count", "1", "--timeout", "0.05"])
    captured = capsys.readouterr()
    assert f"waiting for {endpoint}" in captured.err
    assert captured.out == ""  # stdout carries records only (--json stays machine-readable)


def test_mer_subscribe_ctrl_c_exits_cleanly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(self: Subscriber, timeout_s: float | None = None) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Subscriber, "recv_message", interrupted)
    assert main(["tcp://127.0.0.1:5556"]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out


@pytest.mark.parametrize("endpoint, says", [
    ("tcp://127.0.0.1:99999", "invalid port 99999"),
    ("tcp://127.0.0.1:0", "names no port"),
    ("tcp://127.0.0.1:*", "names no port"),
    ("nonsense", "invalid ZMQ endpoint"),
])
def test_the_subscriber_refuses_an_endpoint_it_could_only_wait_on(endpoint: str, says: str) -> None:
    """ZMQ connects to tcp://host:99999 without complaint and waits for ever; mer-subscribe says so at once."""
    with pytest.raises(SubscriberError, match=says):
        Subscriber(endpoint)


"""Receiving ``mer/1`` records: :class:`Subscriber` and the :func:`subscribe` generator (``mer-subscribe``
is :mod:`mer_cli.subscribe`).

    for record in subscribe("tcp://127.0.0.1:5556", topics=("event",)):  # ends with mer-live's summary
        print(record.kind, record.label, record.confidence)

It follows the run it joined (:class:`RunFollower`): it ends at that run's summary, and at the first record of
another run (another ``source``, or ``seq`` starting again), which means the run it joined ended without one;
a later run on the same endpoint is never taken for it.

Malformed messages are skipped with a warning. A subscriber only receives what is published after it has
connected (ZMQ PUB/SUB); ``status`` records repeat about once a second, so a late subscriber soon knows
the publisher is there. For a CURVE publisher pass its public key (``KEYDIR/server.key`` or the key text).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from typing import Any

from mer_core.events import Record, RecordError, parse_record
from realtime.curve import CurveError, client_keypair, load_public_key
from realtime.publisher import DEFAULT_ENDPOINT, PublisherError, check_endpoint

__all__ = ["DEFAULT_ENDPOINT", "TOPICS", "Message", "RunFollower", "Subscriber", "SubscriberError", "subscribe"]

log = logging.getLogger(__name__)

TOPICS = ("event", "status", "summary")
_POLL_SLICE_MS = 200  # poll in slices so Ctrl-C is handled promptly


class SubscriberError(RuntimeError):
    """Bad endpoint, topic or CURVE key; the message says what to change."""


def _connect_endpoint(endpoint: str) -> str:
    """The publisher's endpoint checked as mer-live checks it, plus what only a publisher may use (any port):
    ZMQ would otherwise accept ``tcp://host:99999`` and wait for ever. Raises :class:`SubscriberError`."""
    try:
        checked = check_endpoint(endpoint)
    except PublisherError as exc:
        raise SubscriberError(str(exc)) from None
    if checked.endswith(":*"):
        raise SubscriberError(f"{endpoint!r} names no port: give the one mer-live publishes on, e.g. "
                              f"{DEFAULT_ENDPOINT}")
    return checked


@dataclass(frozen=True)
class Message:
    topic: str  # "mer.event", ...
    payload: bytes  # the JSON exactly as published (unknown fields included)
    record: Record


def _topics(topics: Iterable[str]) -> tuple[str, ...]:
    out = []
    for topic in topics:
        name = topic.removeprefix("mer.")
        if name not in TOPICS:
            raise SubscriberError(f"unknown topic {topic!r}: use one of {', '.join(TOPICS)}")
        out.append(f"mer.{name}")
    return tuple(dict.fromkeys(out))


class Subscriber:
    """A SUB socket connected to a publisher; use it from one thread. ``recv(timeout_s)`` → record or None."""

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        topics: Iterable[str] = TOPICS,
        curve_server_key: str | bytes | os.PathLike[str] | None = None,
        curve_client_keydir: str | os.PathLike[str] | None = None,
        rcvhwm: int = 10_000,
    ) -> None:
        import zmq

        self.endpoint = _connect_endpoint(endpoint)
        self.topics = _topics(topics)
        self.skipped = 0  # malformed messages ignored
        self._sock: Any = zmq.Context.instance().socket(zmq.SUB)
        try:
            self._sock.setsockopt(zmq.LINGER, 0)
            self._sock.setsockopt(zmq.RCVHWM, rcvhwm)
            if curve_server_key is not None:
                try:
                    public, secret = client_keypair(curve_client_keydir)
                    self._sock.setsockopt(zmq.CURVE_SERVERKEY, load_public_key(curve_server_key))
                    self._sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
                    self._sock.setsockopt(zmq.CURVE_SECRETKEY, secret)
                except CurveError as exc:
                    raise SubscriberError(str(exc)) from None
            for topic in self.topics:
                self._sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
            self._sock.connect(self.endpoint)
        except zmq.ZMQError as exc:
            self._sock.close(linger=0)
            raise SubscriberError(f"cannot connect to {endpoint!r}: {exc}") from None
        except BaseException:
            self._sock.close(linger=0)
            raise

    def recv_message(self, timeout_s: float | None = None) -> Message | None:
        """The next well-formed message, or None when ``timeout_s`` passes without one."""
        import zmq

        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            remaining_ms = _POLL_SLICE_MS
            if deadline is not None:
                remaining_ms = min(remaining_ms, max(0, int((deadline - time.monotonic()) * 1000)))
            if self._sock.poll(remaining_ms, zmq.POLLIN):
                frames = self._sock.recv_multipart(zmq.NOBLOCK)
                message = self._parse(frames)
                if message is not None:
                    return message
            elif deadline is not None and time.monotonic() >= deadline:
                return None

    def recv(self, timeout_s: float | None = None) -> Record | None:
        message = self.recv_message(timeout_s)
        return None if message is None else message.record

    def _parse(self, frames: list[bytes]) -> Message | None:
        """A well-formed message, or None (counted in ``skipped`` and logged) for anything else."""
        why: str
        if len(frames) != 2:
            why = f"expected 2 frames [topic, JSON], got {len(frames)}"
        else:
            topic = frames[0].decode("utf-8", "replace")
            try:
                record = parse_record(frames[1])
            except RecordError as exc:
                why = str(exc)
            else:
                if record.topic == topic:
                    return Message(topic=topic, payload=frames[1], record=record)
                why = f"topic {topic!r} carries a {record.type!r} record"
        self.skipped += 1
        log.warning("skipping a malformed message from %s: %s", self.endpoint, why)
        return None

    def close(self) -> None:
        if not self._sock.closed:
            self._sock.close(linger=0)

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RunFollower:
    """Tells the records of the run a subscriber joined from those of a later run on the same endpoint.

    The run is the first record's: its ``source``, and a ``seq`` that only grows (the publisher numbers every
    record it sends +1, from 0, so gaps are records not subscribed to or dropped). A record with another source,
    or a seq not above the last one (a new publisher starts again from 0), belongs to another run. The run has
    ended once its summary was accepted.
    """

    def __init__(self) -> None:
        self.source: str | None = None  # the run's, once its first record came
        self.last_seq = -1
        self.ended = False  # its summary came

    def accept(self, record: Record) -> bool:
        """True (and noted) for a record of the followed run, False for one of another run."""
        if self.source is None:
            self.source = record.source
        elif record.source != self.source or record.seq <= self.last_seq:
            return False
        self.last_seq = record.seq
        self.ended = self.ended or record.type == "summary"
        return True

    def describe(self, other: Record) -> str:
        """Why ``other`` is not of this run, for a message."""
        if other.source != self.source:
            return f"records from {other.source or 'another source'!r} began"
        return f"seq began again at {other.seq} after {self.last_seq}"


def subscribe(
    endpoint: str = DEFAULT_ENDPOINT,
    *,
    topics: Iterable[str] = TOPICS,
    timeout_s: float | None = None,
    curve_server_key: str | bytes | os.PathLike[str] | None = None,
    keep_going: bool = False,
) -> Generator[Record, None, None]:
    """Yield records as they arrive, until the ``summary`` of the run it joined (the end of that run) or
    ``timeout_s`` seconds without any record (None = no limit).

    The summary is yielded when ``topics`` include it, and ends the loop either way (it is received for
    that even when not asked for). A record of another run (:class:`RunFollower`) ends it too, unyielded: the
    run it joined ended without a summary (killed). ``keep_going=True`` carries on past the end, e.g. across
    several runs of a publisher on the same endpoint. The socket is created on the first ``next()`` and closed
    when the generator finishes or is closed.
    """
    wanted = _topics(topics)
    listen = wanted if keep_going else (*wanted, "mer.summary")
    run = None if keep_going else RunFollower()
    with Subscriber(endpoint, topics=listen, curve_server_key=curve_server_key) as sub:
        while True:
            message = sub.recv_message(timeout_s)
            if message is None:
                return
            if run is not None and not run.accept(message.record):
                log.warning("the run from %r on %s ended without its summary (%s)", run.source, sub.endpoint,
                            run.describe(message.record))
                return
            if message.topic in wanted:
                yield message.record
            if run is not None and run.ended:
                return

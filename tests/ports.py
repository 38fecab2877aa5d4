"""A free loopback TCP port for tests that bind a concrete ZMQ endpoint, and a subscriber listening on one."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from mer_core.events import Record, SummaryRecord


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def subscribed(endpoint: str, *, timeout_s: float) -> Iterator[list[Record]]:
    """A thread subscribed to ``endpoint``'s events and summary, connected before the block runs (a handshake,
    not a sleep: ZMQ reconnects until the publisher binds and keeps what follows); yields the records it got,
    which are complete after the block (it ends at the summary, at ``timeout_s`` or when the block ends)."""
    from realtime.subscriber import Subscriber

    received: list[Record] = []
    done = threading.Event()
    connected = threading.Event()

    def listen() -> None:
        with Subscriber(endpoint, topics=("event", "summary")) as sub:
            connected.set()
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and not done.is_set():
                record = sub.recv(timeout_s=0.2)
                if record is None:
                    continue
                received.append(record)
                if isinstance(record, SummaryRecord):
                    return

    listener = threading.Thread(target=listen)
    listener.start()
    try:
        assert connected.wait(timeout=30), "the subscriber did not start"
        yield received
    finally:
        done.set()
        listener.join(timeout=10)

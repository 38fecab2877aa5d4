"""The publisher: one thread that alone owns the ZeroMQ PUB socket and the JSONL recording.

Other threads call :meth:`Publisher.publish`, which only enqueues (bounded, never blocks; a full queue
drops the record and counts it — except a summary, for which the oldest queued record makes room). The
thread numbers records (``seq`` +1 per record, from 0), sends ``[topic, JSON]`` with ``NOBLOCK`` (a slow
subscriber loses records at its high-water mark instead of slowing anyone) and appends each record to the
JSONL file with a flush, so the file is complete and valid after Ctrl-C.

The socket is created, bound and closed in the publisher thread (pyzmq sockets are not thread-safe);
``start()`` waits for the bind and raises :class:`PublisherError` in the caller when it fails.

Binding beyond loopback needs CURVE keys (``curve_keydir``, see :mod:`realtime.curve`) or an explicit
``insecure=True``. With CURVE, subscribers need the server's *public* key (``KEYDIR/server.key``).
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import logging
import queue
import re
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from mer_core.events import Record, SummaryRecord
from realtime.curve import CurveError, load_server_keys

__all__ = [
    "DEFAULT_ENDPOINT",
    "Publisher",
    "PublisherError",
    "PublisherOptions",
    "PublisherStats",
    "check_endpoint",
    "check_exposure",
    "is_loopback",
]

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5556"

_TCP = re.compile(r"tcp://(?P<host>\[[0-9A-Fa-f:.]+\]|[^:/\[\]\s]+):(?P<port>\*|\d{1,5})")
_IPC = re.compile(r"ipc://\S+")
_LOOPBACK_NAMES = ("localhost", "lo", "[::1]", "ip6-localhost")


class PublisherError(RuntimeError):
    """The publisher cannot start (bad endpoint, port in use, missing keys, unwritable recording)."""


@dataclass(frozen=True)
class PublisherOptions:
    endpoint: str | None = DEFAULT_ENDPOINT  # None: no ZMQ, only the JSONL recording
    record_path: Path | None = None  # JSONL recording (truncated at start), one record per line
    sndhwm: int = 1000  # messages queued per subscriber before ZMQ drops for that subscriber
    linger_s: float = 0.2  # how long close() lets queued messages leave
    curve_keydir: Path | None = None  # KEYDIR with server.key_secret: encrypt with CURVE
    insecure: bool = False  # allow a non-loopback endpoint without CURVE
    source: str = ""  # filled into records whose `source` is empty
    queue_size: int = 10_000  # records waiting for the publisher thread
    close_timeout_s: float = 2.0  # close() sends what is queued for at most this long
    start_timeout_s: float = 5.0  # start() waits this long for the bind


@dataclass(frozen=True)
class PublisherStats:
    sent: int  # records numbered and handed to ZMQ / the recording (= next seq)
    written: int  # lines in the JSONL recording
    dropped_queue: int  # records lost because the queue was full (publish() faster than the thread)
    dropped_zmq: int  # records ZMQ refused at once (EAGAIN); per-subscriber HWM drops are invisible here
    queued: int  # records waiting now


def is_loopback(host: str) -> bool:
    return host.startswith("127.") or host.lower() in _LOOPBACK_NAMES


def check_endpoint(endpoint: str) -> str:
    """Validate ``tcp://HOST:PORT`` (PORT may be ``*`` or ``0``: any free port) or ``ipc://PATH``.

    Returns the endpoint to bind (``:0`` becomes ``:*``); raises :class:`PublisherError`.
    """
    text = endpoint.strip()
    if _IPC.fullmatch(text):
        return text
    match = _TCP.fullmatch(text)
    if match is None:
        raise PublisherError(
            f"invalid ZMQ endpoint {endpoint!r}: expected tcp://HOST:PORT, e.g. {DEFAULT_ENDPOINT}"
        )
    host = match["host"]
    if re.fullmatch(r"[\d.]+", host) or host.startswith("["):  # an IP address, not a host or interface name
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            raise PublisherError(
                f"invalid address {host} in {endpoint!r}: an IPv4 address is four numbers 0..255 (e.g. "
                f"{DEFAULT_ENDPOINT}), an IPv6 one goes in brackets (tcp://[::1]:5556)"
            ) from None
    port = match["port"]
    if port == "0":
        return f"tcp://{match['host']}:*"
    if port != "*" and not 1 <= int(port) <= 65535:
        raise PublisherError(f"invalid port {port} in {endpoint!r}: use 1..65535, e.g. {DEFAULT_ENDPOINT}")
    return text


def _host(endpoint: str) -> str | None:
    match = _TCP.fullmatch(endpoint)
    return match["host"] if match else None


def _check_local(endpoint: str, host: str) -> None:
    """Refuse an IP address that is not one of this machine's: no bind there can work, whatever the security
    settings (and saying first that it is "reachable from other machines" sent users after keys)."""
    name = host.strip("[]")
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return  # `*`, a host name or an interface name: the bind itself says
    if ip.is_unspecified or ip.is_loopback:
        return
    with socket.socket(socket.AF_INET6 if ip.version == 6 else socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((name, 0))  # any port: only whether the address is here
        except OSError as exc:
            if exc.errno in (errno.EADDRNOTAVAIL, errno.EINVAL):
                raise PublisherError(
                    f"cannot bind {endpoint}: {name} is not an address of this machine (use e.g. "
                    f"{DEFAULT_ENDPOINT}, or tcp://*:5556 for all interfaces)"
                ) from None


def check_exposure(endpoint: str, *, curve: bool, insecure: bool) -> None:
    """Refuse (:class:`PublisherError`) an address this machine does not have, then a bind beyond loopback
    without CURVE keys or an explicit ``insecure``.

    Cheap (no socket is bound for more than a moment), so ``mer-live`` checks it before loading anything;
    ``Publisher`` checks it again.
    """
    host = _host(check_endpoint(endpoint))
    if host is not None:
        _check_local(endpoint, host)
    if host is not None and not is_loopback(host) and not curve and not insecure:
        raise PublisherError(
            f"{endpoint} is reachable from other machines: encrypt with --zmq-curve KEYDIR (create keys "
            "with `mer-live keys KEYDIR`), or pass --insecure to publish unencrypted"
        )


def _recording_problem(path: Path, exc: OSError) -> str:
    """Why the recording cannot be opened, in the user's terms: a folder, a file in the way, or a folder that
    takes no new files (read-only, not yours, or a system folder such as /proc, which says "No such file")."""
    if path.is_dir():
        return f"cannot write the recording {path}: it is a folder; give a file path, e.g. {path / 'run.jsonl'}"
    existing = next((p for p in path.parents if p.exists()), None)
    if existing is not None and not existing.is_dir():
        return f"cannot write the recording {path}: {existing} is a file, not a folder; give another path"
    if existing is not None and exc.errno in (errno.ENOENT, errno.EACCES, errno.EPERM, errno.EROFS):
        why = "" if exc.errno == errno.ENOENT else f" ({exc.strerror})"
        return (f"cannot write the recording {path}: the folder {existing} does not allow new files{why}; give "
                "a path in a folder you can write, e.g. ./run.jsonl")
    return f"cannot write the recording {path}: {exc.strerror or exc}"


class Publisher:
    """Publishes ``mer/1`` records over ZMQ PUB and/or to a JSONL file from its own thread.

    ``publish(record)`` from any thread; ``start()`` binds (raises :class:`PublisherError`);
    ``close()`` sends what is queued (bounded), closes socket and file; safe to call twice.
    ``endpoint`` is the address actually bound (a concrete port when ``*``/``0`` was asked for).
    """

    def __init__(self, options: PublisherOptions | None = None) -> None:
        self.options = opts = options or PublisherOptions()
        self._bind_to = check_endpoint(opts.endpoint) if opts.endpoint is not None else None
        self._curve: tuple[bytes, bytes] | None = None
        if opts.curve_keydir is not None:
            try:
                self._curve = load_server_keys(opts.curve_keydir)
            except CurveError as exc:
                raise PublisherError(str(exc)) from None
        elif opts.endpoint is not None:
            check_exposure(opts.endpoint, curve=False, insecure=opts.insecure)
        if self._bind_to is None and opts.record_path is None:
            raise PublisherError("nothing to publish to: give a ZMQ endpoint or a recording path")
        self.endpoint: str | None = None  # set once bound
        self._queue: queue.Queue[Record] = queue.Queue(maxsize=max(1, opts.queue_size))
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=False)
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._start_error: PublisherError | None = None
        self._started = False
        self._closed = False
        self._file: IO[str] | None = None  # owned by the publisher thread
        self._lock = threading.Lock()
        self._sent = 0
        self._written = 0
        self._dropped_queue = 0
        self._dropped_zmq = 0

    # --- any thread -------------------------------------------------------------------------------
    def start(self) -> Publisher:
        """Start the thread and wait for the bind; raises :class:`PublisherError` if it failed."""
        if self._started:
            return self
        if self._closed:
            raise PublisherError("publisher is closed")
        self._started = True
        self._thread.start()
        if not self._ready.wait(self.options.start_timeout_s):
            self._stop.set()
            raise PublisherError(f"publisher did not start within {self.options.start_timeout_s:g} s")
        if self._start_error is not None:
            self._thread.join(self.options.close_timeout_s)
            self._closed = True
            raise self._start_error
        return self

    def publish(self, record: Record) -> bool:
        """Enqueue a record (never blocks). False when it was dropped or the publisher is closed."""
        if self._closed or self._stop.is_set():
            return False
        try:
            self._queue.put_nowait(record)
            return True
        except queue.Full:
            pass
        if isinstance(record, SummaryRecord):  # the totals must get through: evict the oldest
            for _ in range(64):
                try:
                    self._queue.get_nowait()
                    self._count_queue_drop()
                except queue.Empty:
                    pass
                try:
                    self._queue.put_nowait(record)
                    return True
                except queue.Full:
                    continue
        self._count_queue_drop()
        return False

    def _count_queue_drop(self) -> None:
        with self._lock:
            self._dropped_queue += 1

    @property
    def stats(self) -> PublisherStats:
        with self._lock:
            return PublisherStats(
                sent=self._sent,
                written=self._written,
                dropped_queue=self._dropped_queue,
                dropped_zmq=self._dropped_zmq,
                queued=self._queue.qsize(),
            )

    def close(self) -> None:
        """Send what is queued (for at most ``close_timeout_s``), then close socket and file."""
        if self._closed and not self._thread.is_alive():
            return
        self._stop.set()
        if self._started:
            self._thread.join(self.options.close_timeout_s + self.options.linger_s + 1.0)
            if self._thread.is_alive():
                log.warning("publisher thread did not finish in time")
        self._closed = True

    def __enter__(self) -> Publisher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the publisher thread ------------------------------------------------------------------------
    def _run(self) -> None:
        sock: Any = None
        try:
            try:
                sock = self._open_socket()
                self._file = self._open_recording()
            except PublisherError as exc:
                self._start_error = exc
                return
            except Exception as exc:  # unexpected: still report it to start(), not as a thread traceback
                self._start_error = PublisherError(f"publisher failed to start: {exc}")
                return
            finally:
                self._ready.set()
            self._serve(sock)
        except Exception:
            log.exception("publisher thread failed")
        finally:
            self._closed = True
            if sock is not None:
                sock.close(linger=int(self.options.linger_s * 1000))
            if self._file is not None:
                self._file.close()
                self._file = None

    def _open_socket(self) -> Any:
        if self._bind_to is None:
            return None
        import zmq

        opts = self.options
        sock: Any = zmq.Context.instance().socket(zmq.PUB)
        try:
            sock.setsockopt(zmq.SNDHWM, opts.sndhwm)
            sock.setsockopt(zmq.LINGER, int(opts.linger_s * 1000))
            host = _host(self._bind_to) or ""
            if host.startswith("[") or host == "*":
                sock.setsockopt(zmq.IPV6, 1)
            if self._curve is not None:
                sock.curve_publickey, sock.curve_secretkey = self._curve
                sock.curve_server = True
            sock.bind(self._bind_to)
            self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise PublisherError(self._bind_message(exc)) from None
        log.info("publishing on %s%s", self.endpoint, " (CURVE)" if self._curve else "")
        return sock

    def _bind_message(self, exc: Any) -> str:
        endpoint = self.options.endpoint
        if exc.errno == errno.EADDRINUSE:
            match = _TCP.fullmatch(self._bind_to or "")
            if match and match["port"] != "*":
                other = f"tcp://{match['host']}:{int(match['port']) % 65535 + 1}"
                return f"{endpoint} is already in use: pick another with --zmq {other}"
            return f"{endpoint} is already in use: pick another with --zmq"
        if exc.errno in (errno.EADDRNOTAVAIL, errno.ENODEV):
            return (
                f"cannot bind {endpoint}: not an address or interface of this machine "
                f"(use e.g. {DEFAULT_ENDPOINT}, or tcp://*:5556 for all interfaces)"
            )
        return f"cannot bind {endpoint}: {exc.strerror if hasattr(exc, 'strerror') else exc}"

    def _open_recording(self) -> IO[str] | None:
        path = self.options.record_path
        if path is None:
            return None
        path = Path(path).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return open(path, "w", encoding="utf-8", newline="\n")
        except OSError as exc:
            raise PublisherError(_recording_problem(path, exc)) from None

    def _serve(self, sock: Any) -> None:
        deadline: float | None = None
        while True:
            if self._stop.is_set() and deadline is None:
                deadline = time.monotonic() + self.options.close_timeout_s
            try:
                record = self._queue.get(timeout=0.05) if deadline is None else self._queue.get_nowait()
            except queue.Empty:
                if deadline is not None:
                    return  # stopping and everything is sent
                continue
            self._send(sock, record)
            if deadline is not None and time.monotonic() > deadline:
                left = self._queue.qsize()
                if left:
                    log.warning("publisher closing: %d queued records not sent", left)
                    with self._lock:
                        self._dropped_queue += left
                return

    def _send(self, sock: Any, record: Record) -> None:
        import zmq

        try:
            stamped = dataclasses.replace(record, seq=self._sent, source=record.source or self.options.source)
            payload = stamped.to_json()
        except Exception:
            log.exception("cannot serialise a %s record; skipped", record.type)
            return
        with self._lock:
            self._sent += 1
        if sock is not None:
            try:
                sock.send_multipart([stamped.topic.encode(), payload.encode()], flags=zmq.NOBLOCK)
            except zmq.Again:
                with self._lock:
                    self._dropped_zmq += 1
        if self._file is not None:
            try:
                self._file.write(payload + "\n")
                self._file.flush()
                with self._lock:
                    self._written += 1
            except OSError as exc:
                log.error("recording write failed (%s); recording stops", exc.strerror or exc)
                self._file.close()
                self._file = None

"""``mer-subscribe``: print the ``mer/1`` records a ``mer-live`` publishes (:mod:`realtime.subscriber` receives them)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from mer_cli.options import add_log_arguments, configure_logging, positive_integer, positive_number
from mer_core.events import Record
from realtime.recordtext import format_record
from realtime.subscriber import DEFAULT_ENDPOINT, TOPICS, RunFollower, Subscriber, SubscriberError

EPILOG = """\
when it stops:
  at the end of the mer-live run it joined (its summary, received even when --topic leaves it out), or
  when another run's records arrive there (the run it joined ended without a summary); after --count
  records; after --timeout seconds without a record; or with Ctrl-C, at any time. --keep-going prints the
  runs that follow too, until Ctrl-C, --count or --timeout.

exit codes:
  0    the run ended (its summary came), --count records were printed, or Ctrl-C
  1    --timeout passed before --count records, or the run ended without a summary
  2    a bad address, topic or key
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mer-subscribe",
        description="Print the micro-expression events (and status) published by mer-live, until its run ends.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "endpoint",
        nargs="?",
        default=DEFAULT_ENDPOINT,
        help=f"publisher address (default {DEFAULT_ENDPOINT})",
    )
    p.add_argument(
        "--topic", action="append", choices=TOPICS, help="record types to show (repeatable; default all)"
    )
    p.add_argument("--json", action="store_true", help="print each record as its raw JSON line")
    p.add_argument("--count", type=positive_integer, default=None, metavar="N", help="exit after N records")
    p.add_argument("--keep-going", action="store_true",
                   help="go on past the end of the run: print the runs that follow on ENDPOINT too")
    p.add_argument(
        "--timeout", type=positive_number, default=None, metavar="S", help="exit after S seconds without a record"
    )
    p.add_argument(
        "--curve-server-key",
        default=None,
        metavar="KEY",
        help="publisher's CURVE public key, key file or KEYDIR",
    )
    add_log_arguments(p, default="error", verbose_alias=True)  # info: the messages skipped, and why
    return p


def _style(record: Record) -> str:
    if record.type == "event":
        return "bold magenta" if getattr(record, "kind", "") == "micro" else "cyan"
    return "dim" if record.type == "status" else "bold"


def main(argv: Sequence[str] | None = None) -> int:
    """``mer-subscribe [ENDPOINT] [--topic T]... [--json] [--count N] [--timeout S] [--keep-going]``: until the
    joined run's summary (see :class:`realtime.subscriber.RunFollower`); Ctrl-C exits 0."""
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, fmt="mer-subscribe: %(message)s")
    from rich.console import Console
    from rich.text import Text

    console = Console(highlight=False, soft_wrap=True)
    shown = 0
    wanted = {f"mer.{topic}" for topic in args.topic or TOPICS}
    # the summary is listened to even when not shown: it says the run has ended
    listen = [*(args.topic or TOPICS), *(() if args.keep_going else ("summary",))]
    run = None if args.keep_going else RunFollower()
    waiting: Any = None  # the "waiting for ENDPOINT" spinner on a terminal, until the first message
    try:
        with Subscriber(args.endpoint, topics=listen, curve_server_key=args.curve_server_key) as sub:
            waiting = _say_waiting(args.endpoint)
            while args.count is None or shown < args.count:
                message = sub.recv_message(args.timeout)
                if waiting is not None:
                    waiting.stop()
                    waiting = None
                if message is None:
                    break
                if run is not None and not run.accept(message.record):
                    print(f"mer-subscribe: the run from {run.source!r} ended without its summary "
                          f"({run.describe(message.record)} on {args.endpoint}); stopping", file=sys.stderr)
                    return 1
                if message.topic in wanted:
                    if args.json:
                        sys.stdout.write(message.payload.decode("utf-8") + "\n")
                        sys.stdout.flush()
                    else:
                        console.print(Text(format_record(message.record), style=_style(message.record)))
                    shown += 1
                if run is not None and run.ended:
                    return 0
    except KeyboardInterrupt:
        return 0
    except SubscriberError as exc:
        print(f"mer-subscribe: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. piped into `head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    finally:
        if waiting is not None:
            waiting.stop()
    return 0 if args.count is None or shown >= args.count else 1


def _say_waiting(endpoint: str) -> Any:
    """Say on stderr that nothing has arrived yet: a spinner on a terminal (returned, to stop at the first
    message), else one line (None returned). Records go to stdout, so ``--json`` output stays clean."""
    text = f"waiting for {endpoint} ..."
    if sys.stderr.isatty():
        from rich.console import Console

        status = Console(stderr=True).status(f"{text} (start mer-live there; Ctrl-C to stop)")
        status.start()
        return status
    print(f"mer-subscribe: {text}", file=sys.stderr, flush=True)
    return None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

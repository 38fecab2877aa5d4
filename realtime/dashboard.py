"""The live view: a pure renderer of a frozen snapshot, a refresh thread that pulls snapshots, a plain log.

Rich-style: the pipeline never pushes to the screen. It offers ``get_snapshot()`` (cheap: copy a few
counters and references into a :class:`DashboardSnapshot`); :class:`Dashboard` calls it at ≤ 10 Hz from its
own thread and draws :func:`render_dashboard` of it with ``rich.live.Live``. When stdout is no terminal,
:class:`PlainLog` prints one line per new event (and a status line now and then) instead. Both show a
label less confident than ``DashboardSnapshot.uncertain_below`` (default 0.5) as ``label?``, dimmed.
"""

from __future__ import annotations

import io
import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from rich.console import Console, ConsoleOptions, Group, JustifyMethod, RenderableType, RenderResult
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from mer_core.events import EventRecord
from realtime.recordtext import UNCERTAIN_BELOW, format_record, is_uncertain, label_text

__all__ = [
    "Dashboard",
    "DashboardSnapshot",
    "PlainLog",
    "Sparkline",
    "format_status",
    "make_display",
    "render_dashboard",
    "render_text",
    "sparkline",
]

log = logging.getLogger(__name__)

BLOCKS = "▁▂▃▄▅▆▇█"  # 1/8 .. 8/8 of a cell
# The stage panel always lists these rows (in pipeline order), so it keeps its height between refreshes;
# a stage without samples in the last second shows "-". Other stages (mer-bench's decode) come first.
STAGES = ("face", "motion", "spotting", "di", "classify", "publish")
_PARTIAL = " ▏▎▍▌▋▊▉"  # horizontal eighths for probability bars
MAX_REFRESH_HZ = 10.0


@dataclass(frozen=True)
class DashboardSnapshot:
    """Everything the screen shows, copied by the pipeline at one instant (treat as immutable).

    Sequences are oldest first. ``events`` are the last few published :class:`EventRecord` (the view
    shows the newest 8 and the class probabilities of the newest one). ``intensity`` is the recent motion
    signal (e.g. the last ~5 s, one value per analysed frame) and ``threshold`` the spotter's current
    threshold on the same scale. ``stage_ms`` is :meth:`realtime.stats.StageStats.snapshot`.
    """

    source: str = ""  # e.g. "camera:0", "file:clip.mp4"
    endpoint: str = ""  # where records are published, e.g. "tcp://127.0.0.1:5556"; "" = no ZMQ
    engine: str | None = None  # e.g. "onnxruntime-cpu"
    engine_reason: str = ""  # why this engine, e.g. "TensorRT not installed; no CUDA"
    model: str | None = None  # model name/version from the card
    elapsed_s: float = 0.0  # since the run started
    frames: int = 0  # frames read from the source
    analyzed: int = 0  # frames the analyser processed
    dropped: int = 0  # frames lost because analysis fell behind
    fps_in: float = 0.0
    fps_proc: float = 0.0
    face: bool = False  # a face in the latest analysed frame
    face_frames: int = 0
    intensity: Sequence[float] = ()
    intensity_window_s: float = 0.0  # seconds covered by `intensity` (for the title; 0 = not shown)
    threshold: float | None = None
    spotting: str = "idle"  # spotter state, e.g. "idle", "rising", "in window", "no face"
    events: Sequence[EventRecord] = ()
    event_counts: Mapping[str, int] = field(default_factory=dict)  # totals by kind, e.g. {"micro": 2}
    unlabelled: int = 0  # windows published without a label: the classifier fell behind or the model failed
    # the rule spotter's candidates dropped so far, by reason (mer_analysis.spotting.REJECT_REASONS); None: a
    # spotter that does not say (the row is left out)
    rejected: Mapping[str, int] | None = None
    stage_ms: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    message: str = ""  # one line of news: "ended: end of file", a warning, ...
    uncertain_below: float = UNCERTAIN_BELOW  # labels less confident than this show as "label?", dimmed


# --- pure rendering ---------------------------------------------------------------------------------


def sparkline(values: Sequence[float], width: int | None = None, vmax: float | None = None) -> str:
    """One-row sparkline of the last ``width`` values, scaled to ``vmax`` (default: their maximum)."""
    vals = list(values)[-width:] if width else list(values)
    if not vals:
        return ""
    top = vmax if vmax and vmax > 0 else max(max(vals), 1e-12)
    out = []
    for v in vals:
        level = 0 if not math.isfinite(v) else min(max(v / top, 0.0), 1.0)
        out.append(BLOCKS[max(math.ceil(level * 8) - 1, 0)])
    return "".join(out)


@dataclass(frozen=True)
class Sparkline:
    """A multi-row sparkline that fills the width it is given; the threshold row is drawn as ``┄``.

    Columns at or above the threshold are highlighted, so a spotted rise is visible at a glance.
    """

    values: Sequence[float]
    threshold: float | None = None
    height: int = 3

    def lines(self, width: int) -> list[Text]:
        vals = [v if math.isfinite(v) else 0.0 for v in list(self.values)[-max(width, 1) :]]
        h = max(self.height, 1)
        top = max([*vals, (self.threshold or 0.0) * 1.25, 1e-12])
        levels = [min(max(v / top, 0.0), 1.0) * h * 8 for v in vals]
        thr_row = None
        if self.threshold is not None and self.threshold > 0:
            thr_row = h - 1 - min(int(self.threshold / top * h), h - 1)
        rows = []
        for r in range(h):
            base = (h - 1 - r) * 8
            text = Text(no_wrap=True, overflow="crop")
            for v, level in zip(vals, levels, strict=True):
                fill = int(min(max(level - base, 0.0), 8.0))
                above = self.threshold is not None and v >= self.threshold
                if fill:
                    text.append(BLOCKS[fill - 1], style="bold red" if above else "green")
                elif r == thr_row:
                    text.append("┄", style="yellow")
                else:
                    text.append(" ")
            if len(vals) < width:
                text.append(("┄" if r == thr_row else " ") * (width - len(vals)), style="yellow")
            rows.append(text)
        return rows

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if not self.values:
            yield Text("waiting for a face…", style="dim")
            return
        yield from self.lines(options.max_width)


def _bar(p: float, width: int) -> str:
    eighths = int(round(min(max(p, 0.0), 1.0) * width * 8))
    full, part = divmod(eighths, 8)
    return ("█" * full + (_PARTIAL[part] if part else "")).ljust(width)


def _fmt(value: float | None, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def _header(s: DashboardSnapshot) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    engine = Text(s.engine or "-", style="bold cyan")
    if s.engine_reason:
        engine.append(f"  ({s.engine_reason})", style="dim")
    if s.model:
        engine.append(f"   model {s.model}")
    grid.add_row("engine", engine)
    rates = Text()
    rates.append(f"{s.fps_in:5.1f}", style="bold")
    rates.append(" fps in   ")
    rates.append(f"{s.fps_proc:5.1f}", style="bold")
    rates.append(" fps analysed   dropped ")
    rates.append(str(s.dropped), style="bold red" if s.dropped else "bold")
    rates.append(f"   frames {s.frames}")
    grid.add_row("rate", rates)
    face = Text("● yes" if s.face else "○ no", style="bold green" if s.face else "bold yellow")
    face.append(f"   ({s.face_frames} frames with a face)", style="dim")
    grid.add_row("face", face)
    grid.add_row("zmq", Text(s.endpoint, style="bold") if s.endpoint else Text("off", style="dim"))
    spot = Text(s.spotting, style="bold magenta" if s.spotting not in ("idle", "") else "")
    counts = "  ".join(f"{kind} {n}" for kind, n in s.event_counts.items())
    if counts:
        spot.append(f"   events: {counts}")
    if s.unlabelled:
        spot.append(f"   {s.unlabelled} unlabelled (classifier behind or failing)", style="bold red")
    grid.add_row("spotting", spot)
    if s.rejected is not None:
        grid.add_row("rejected", _rejected_text(s.rejected))
    if s.message:
        grid.add_row("note", Text(s.message, style="yellow"))
    return grid


def _rejected_text(rejected: Mapping[str, int]) -> Text:
    """One compact row: the candidates dropped so far, by reason, in the spotter's order of checks."""
    counts = [(reason, n) for reason, n in rejected.items() if n]
    if not counts:
        return Text("no candidate dropped yet", style="dim")
    text = Text(f"{sum(n for _, n in counts)} candidates: ")
    text.append("  ".join(f"{reason} {n}" for reason, n in counts), style="dim")
    return text


def _events_table(events: Sequence[EventRecord], uncertain_below: float = UNCERTAIN_BELOW) -> RenderableType:
    if not events:
        return Text("no events yet", style="dim")
    table = Table(expand=True, box=None, padding=(0, 1), header_style="bold")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("t (s)", "right"),
        ("kind", "left"),
        ("dur ms", "right"),
        ("label", "left"),
        ("conf", "right"),
        ("lat ms", "right"),
    )
    for name, justify in columns:
        table.add_column(name, justify=justify, no_wrap=True)
    for e in reversed(list(events)[-8:]):
        unsure = "dim" if e.label and is_uncertain(e.confidence, uncertain_below) else ""
        table.add_row(
            f"{e.onset.t:.2f}",
            Text(e.kind, style="bold magenta" if e.kind == "micro" else "cyan"),
            f"{e.duration_ms:.0f}",
            Text(label_text(e.label, e.confidence, uncertain_below), style=unsure),
            Text(_fmt(e.confidence, ".2f"), style=unsure),
            f"{e.latency_ms:.0f}",
        )
    return table


def _probs(event: EventRecord | None, width: int = 18, uncertain_below: float = UNCERTAIN_BELOW) -> RenderableType:
    if event is None or not event.probs:
        return Text("no classified event yet", style="dim")
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(no_wrap=True)
    grid.add_column(justify="right", no_wrap=True)
    best = max(event.probs, key=lambda k: event.probs[k])
    unsure = is_uncertain(event.probs[best], uncertain_below)
    for label, p in sorted(event.probs.items(), key=lambda kv: -kv[1]):
        style = ("dim magenta" if unsure else "bold magenta") if label == best else "blue"
        name = Text(label_text(label, p, uncertain_below) if label == best else label,
                    style=("dim" if unsure else "bold") if label == best else "")
        grid.add_row(name, Text(_bar(p, width), style=style), f"{p:.2f}")
    return grid


def _stages(stage_ms: Mapping[str, Mapping[str, float]]) -> RenderableType:
    """Every stage in :data:`STAGES` on its own row, always ("-" without samples), so the height is fixed."""
    table = Table(box=None, padding=(0, 1), header_style="bold", expand=True)
    table.add_column("stage", no_wrap=True)
    table.add_column("p50", justify="right")
    table.add_column("p95", justify="right")
    extra = [stage for stage in stage_ms if stage not in STAGES]
    for stage in (*extra, *STAGES):
        st = stage_ms.get(stage)
        if st is None:
            table.add_row(stage, "-", "-", style="dim")
        else:
            table.add_row(stage, f"{st.get('p50', 0.0):.1f}", f"{st.get('p95', 0.0):.1f}")
    return table


def render_dashboard(snapshot: DashboardSnapshot) -> RenderableType:
    """The whole screen for one snapshot; a pure function (no I/O, no clock)."""
    s = snapshot
    minutes, seconds = divmod(max(s.elapsed_s, 0.0), 60.0)
    header = Panel(
        _header(s),
        title=f"[bold]mer-live[/] · {s.source or '-'}",
        subtitle=f"{int(minutes):02d}:{seconds:04.1f}",
        title_align="left",
        subtitle_align="right",
    )
    motion_title = "motion intensity"
    if s.intensity_window_s:
        motion_title += f" (last {s.intensity_window_s:.0f} s)"
    if s.threshold is not None:
        motion_title += f" · threshold [yellow]┄ {s.threshold:.3g}[/]"
    motion = Panel(Sparkline(s.intensity, s.threshold), title=motion_title, title_align="left")
    latest = s.events[-1] if s.events else None
    lower = Table.grid(expand=True, padding=(0, 1))
    lower.add_column(ratio=3)
    lower.add_column(ratio=2)
    prob_title = "last event" + (
        f" · {label_text(latest.label, latest.confidence, s.uncertain_below)}"
        if latest is not None and latest.label else "")
    lower.add_row(
        Panel(_events_table(s.events, s.uncertain_below), title="events (newest first)", title_align="left"),
        Group(
            Panel(_probs(latest, uncertain_below=s.uncertain_below), title=prob_title, title_align="left"),
            Panel(_stages(s.stage_ms), title="stage ms (last 1 s)", title_align="left"),
        ),
    )
    return Group(header, motion, lower)


def render_text(snapshot: DashboardSnapshot, width: int = 100) -> str:
    """The dashboard as plain text (no colours), e.g. for the README or a test."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, force_terminal=False, legacy_windows=False)
    console.print(render_dashboard(snapshot))
    return buffer.getvalue()


def format_status(s: DashboardSnapshot) -> str:
    """One plain status line for logs."""
    return (
        f"{time.strftime('%H:%M:%S')}  status  {s.fps_in:5.1f} fps in  {s.fps_proc:5.1f} analysed  "
        f"dropped {s.dropped}  face {'yes' if s.face else 'no '}  frames {s.frames}  "
        f"engine {s.engine or '-'}"
    )


# --- the two displays -------------------------------------------------------------------------------


class _Poller:
    """A non-daemon thread calling ``tick()`` at ``hz`` until stopped; stop = set + join; final tick at stop."""

    def __init__(self, name: str, hz: float, join_timeout_s: float) -> None:
        self._period = 1.0 / min(max(hz, 0.1), MAX_REFRESH_HZ)
        self._join_timeout_s = join_timeout_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=False)
        self._started = False

    def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> Any:
        if not self._started:
            self._started = True
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop refreshing (after one last update) and wait for the thread; safe to call twice."""
        self._stop.set()
        if self._started and self._thread is not threading.current_thread():
            self._thread.join(self._join_timeout_s)
            if self._thread.is_alive():
                log.warning("%s did not stop in time", self._thread.name)

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class Dashboard(_Poller):
    """Draws ``render_dashboard(get_snapshot())`` with ``rich.live.Live`` at ``refresh_hz`` (≤ 10) from its own thread.

    A failing ``get_snapshot`` keeps the last good screen (logged once). Printing to the console while it
    runs goes above the live view (Rich redirects stdout/stderr while live).
    """

    def __init__(
        self,
        get_snapshot: Callable[[], DashboardSnapshot],
        *,
        refresh_hz: float = 8.0,
        console: Console | None = None,
        transient: bool = False,
        join_timeout_s: float = 2.0,
    ) -> None:
        super().__init__("dashboard", refresh_hz, join_timeout_s)
        self.get_snapshot = get_snapshot
        self.console = console or Console()
        self.transient = transient
        self.frames_drawn = 0
        self._last: RenderableType = Text("starting…", style="dim")
        self._failed = False

    def _renderable(self) -> RenderableType:
        try:
            self._last = render_dashboard(self.get_snapshot())
            self.frames_drawn += 1
        except Exception:
            if not self._failed:
                self._failed = True
                log.exception("dashboard snapshot failed; showing the last good one")
        return self._last

    def _run(self) -> None:
        from rich.live import Live

        live = Live(
            console=self.console,
            get_renderable=self._renderable,
            auto_refresh=False,  # our thread refreshes: stoppable, not a daemon
            transient=self.transient,
            vertical_overflow="visible",
        )
        try:
            live.start(refresh=True)
            while not self._stop.wait(self._period):
                live.refresh()
        except Exception:
            log.exception("dashboard failed")
        finally:
            live.stop()  # draws one last time


class PlainLog(_Poller):
    """For a stdout that is no terminal: one line per new event, a status line every ``status_every_s``.

    Pulls the same snapshots as :class:`Dashboard` (so a blocked pipe never stalls the pipeline). Events
    are recognised as new by the running total of events published (not by onset: ``--windows`` publishes
    in file order, which need not be time order); the final poll at stop prints the last ones.
    """

    def __init__(
        self,
        get_snapshot: Callable[[], DashboardSnapshot],
        *,
        file: IO[str] | None = None,
        status_every_s: float = 10.0,
        poll_hz: float = 4.0,
        clock: Callable[[], float] = time.monotonic,
        join_timeout_s: float = 2.0,
    ) -> None:
        super().__init__("plain-log", poll_hz, join_timeout_s)
        self.get_snapshot = get_snapshot
        self._file = file
        self.status_every_s = status_every_s
        self._clock = clock
        self._printed = 0  # events published and printed (or no longer in the snapshot's recent ones)
        self._last_status: float | None = None
        self.lines = 0
        self._broken = False

    def poll(self) -> int:
        """Print what is new in the current snapshot; returns the number of lines printed."""
        if self._broken:
            return 0
        snapshot = self.get_snapshot()
        out: list[str] = []
        # a snapshot without totals (tests, tools) holds every event there is
        total = sum(snapshot.event_counts.values()) if snapshot.event_counts else len(snapshot.events)
        new = min(total - self._printed, len(snapshot.events))
        if new > 0:  # the snapshot's events are the most recent ones, in the order published
            out += [format_record(e, uncertain_below=snapshot.uncertain_below) for e in snapshot.events[-new:]]
        self._printed = max(self._printed, total)
        now = self._clock()
        if self.status_every_s > 0 and (
            self._last_status is None or now - self._last_status >= self.status_every_s
        ):
            if self._last_status is not None:  # no status line at t=0: nothing to say yet
                out.append(format_status(snapshot))
            self._last_status = now
        if out:
            file = self._file or sys.stdout
            try:
                file.write("".join(line + "\n" for line in out))
                file.flush()
            except (BrokenPipeError, ValueError, OSError):
                self._broken = True
                return 0
            self.lines += len(out)
        return len(out)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self._period):
                self.poll()
            self.poll()
        except Exception:
            log.exception("plain log failed")


def make_display(
    get_snapshot: Callable[[], DashboardSnapshot], *, console: Console | None = None, refresh_hz: float = 8.0
) -> Dashboard | PlainLog:
    """A :class:`Dashboard` when the console is a terminal, else a :class:`PlainLog` on its file."""
    console = console or Console()
    if console.is_terminal:
        return Dashboard(get_snapshot, refresh_hz=refresh_hz, console=console)
    return PlainLog(get_snapshot, file=console.file)

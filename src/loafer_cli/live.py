"""``loafer run``'s live view: a table of the routes, redrawn in the terminal.

When ``loafer run`` logs plain lines to a terminal, :func:`live_view` shows one row per
route (state, handled/s over the last seconds, in flight, received, settlements by
outcome, errors and the last one) under the log lines, redrawn about once a second.

The view runs beside :meth:`Manager.run`, which owns the event loop: a thread polls
:meth:`Manager.status` once a second. ``status()`` only reads counters, an
``asyncio.Event``'s flag, a set's length and a dict whose keys never change (every
outcome kind is counted from the start), so reading them from another thread is safe.
Log records are printed through the view's console, above the table, so the two do not
garble each other; what is written to stderr (and to stdout when it is the terminal too)
goes above it as well.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from rich.console import Console
from rich.live import Live
from rich.segment import Segment, Segments
from rich.table import Table
from rich.text import Text

from loafer_core.manager import Manager
from loafer_core.status import RouteState, RouteStatus

__all__ = ["COLUMNS", "RateMeter", "live_view", "route_row", "status_table", "wanted"]

logger = logging.getLogger("loafer_cli")

#: The table's column headers.
COLUMNS = (
    "route",
    "state",
    "handled/s",
    "in flight",
    "received",
    "ACCEPT",
    "RETRY",
    "REJECT",
    "RELEASE",
    "errors",
    "last error",
)
_OUTCOMES = ("ACCEPT", "RETRY", "REJECT", "RELEASE")
#: Seconds between two polls (and redraws).
REFRESH = 1.0
#: Seconds over which handled/s is measured.
RATE_WINDOW = 5.0
#: Characters of the last error shown.
ERROR_WIDTH = 60

_STYLES = {
    RouteState.STARTING: "cyan",
    RouteState.RUNNING: "green",
    RouteState.BACKING_OFF: "yellow",
    RouteState.STALLED: "bold yellow",
    RouteState.DRAINING: "blue",
    RouteState.STOPPED: "dim",
    RouteState.FAILED: "bold red",
}


def wanted(*, log_format: str, no_live: bool) -> bool:
    """Whether ``loafer run`` shows the view: stderr is a terminal (not a dumb one), the
    logs are plain lines, ``--no-live`` was not given, and this is not one of
    ``--workers``' processes (they share the terminal)."""
    import os

    if no_live or log_format != "plain" or "LOAFER_WORKER" in os.environ:
        return False
    if os.environ.get("TERM") == "dumb":  # no cursor movement: the table cannot be redrawn
        return False
    return sys.stderr.isatty()


def _truncate(text: str, width: int = ERROR_WIDTH) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def route_row(status: RouteStatus, rate: float | None) -> list[Text]:
    """One row of the table: the cells of ``status`` (``rate``: handled/s, None while
    not yet measured)."""
    state = status.state.value
    if status.failures:
        state += f" ({status.failures})"
    if status.stuck_handlers:
        state += f", {status.stuck_handlers} stuck"
    error = status.error or status.last_message_error or ""
    return [
        Text(status.name, style="bold"),
        Text(state, style=_STYLES.get(status.state, "")),
        Text("-" if rate is None else f"{rate:.1f}"),
        Text(str(status.in_flight)),
        Text(str(status.received)),
        *(Text(str(status.settled.get(kind, 0))) for kind in _OUTCOMES),
        Text(str(status.message_errors), style="red" if status.message_errors else ""),
        Text(_truncate(error), style="red" if status.error else ""),
    ]


def status_table(statuses: Sequence[RouteStatus], rates: dict[str, float | None]) -> Table:
    """The table of every route (``rates``: handled/s by route name)."""
    table = Table(title=None, expand=False)
    for name in COLUMNS:
        numeric = name not in ("route", "state", "last error")
        table.add_column(
            name,
            justify="right" if numeric else "left",
            no_wrap=True,
            overflow="ellipsis",
            max_width=ERROR_WIDTH if name == "last error" else None,
        )
    for status in statuses:
        table.add_row(*route_row(status, rates.get(status.name)))
    return table


class RateMeter:
    """Handled (settled) messages per second of each route over the last ``window``
    seconds."""

    def __init__(self, window: float = RATE_WINDOW) -> None:
        self.window = window
        self._samples: dict[str, deque[tuple[float, int]]] = {}

    def update(self, statuses: Sequence[RouteStatus], now: float) -> dict[str, float | None]:
        """Record ``statuses`` seen at ``now`` (monotonic seconds); the rates by route
        (None until two samples were taken)."""
        rates: dict[str, float | None] = {}
        for status in statuses:
            samples = self._samples.setdefault(status.name, deque())
            samples.append((now, sum(status.settled.values())))
            while len(samples) > 2 and now - samples[1][0] >= self.window:
                samples.popleft()
            then, before = samples[0]
            rates[status.name] = (samples[-1][1] - before) / (now - then) if now > then else None
        return rates


class _LiveLogHandler(logging.Handler):
    """Prints log records through the live view's console (above the table)."""

    def __init__(self, console: Console, level: int) -> None:
        super().__init__(level)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            self.console.print(Text(line), highlight=False, markup=False, soft_wrap=True)
        except Exception:  # pragma: no cover - logging's own contract
            self.handleError(record)


def _prerendered(console: Console, table: Table) -> Segments:
    """``table`` rendered once, here: Live draws its renderable again under every log
    line, which for a table of ten routes costs some 15 ms; its segments, under 1 ms."""
    lines = console.render_lines(table, console.options, pad=False)
    segments: list[Segment] = []
    for i, line in enumerate(lines):
        if i:
            segments.append(Segment.line())
        segments.extend(line)
    return Segments(segments)


class _Poller(threading.Thread):
    """Polls the manager's status once a second and redraws the table."""

    def __init__(self, manager: Manager, live: Live) -> None:
        super().__init__(name="loafer-live", daemon=True)
        self.manager = manager
        self.live = live
        self.meter = RateMeter()
        self.stopping = threading.Event()

    def redraw(self, *, refresh: bool = True) -> None:
        """Poll the status; update the table (and draw it, with ``refresh``)."""
        statuses = self.manager.status()
        rates = self.meter.update(statuses, time.monotonic())
        table = _prerendered(self.live.console, status_table(statuses, rates))
        self.live.update(table, refresh=refresh)

    def run(self) -> None:
        while not self.stopping.wait(REFRESH):  # a periodic redraw, not a synchronisation
            try:
                self.redraw()
            except Exception:  # pragma: no cover - a bug here must not stop the routes
                logger.exception("the live view failed; it is no longer updated")
                return


@contextmanager
def live_view(manager: Manager, *, enabled: bool = True) -> Iterator[None]:
    """Show the live table of ``manager``'s routes while the block runs (the manager
    runs in it); log records go above the table. At the end the table is drawn once
    more, left on screen, and logging goes back to the root logger's own handlers.
    Does nothing unless ``enabled``."""
    if not enabled:
        yield
        return
    console = Console(stderr=True)
    live = Live(
        console=console,
        auto_refresh=False,
        redirect_stdout=sys.stdout.isatty(),
        redirect_stderr=True,
        transient=False,
    )
    poller = _Poller(manager, live)
    root = logging.getLogger()
    handlers = list(root.handlers)
    handler = _LiveLogHandler(console, logging.NOTSET)
    handler.setFormatter(handlers[0].formatter if handlers else None)
    poller.redraw(refresh=False)  # the first table, and the first sample of the rates
    live.start(refresh=True)
    for old in handlers:
        root.removeHandler(old)
    root.addHandler(handler)
    poller.start()
    try:
        yield
    finally:
        poller.stopping.set()
        poller.join()
        try:
            poller.redraw(refresh=False)
            live.stop()  # draws the table a last time
        finally:
            root.removeHandler(handler)
            for old in handlers:
                root.addHandler(old)

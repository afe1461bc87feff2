"""``loafer dlq``: the dead letters of the routes in a config file or module.

- ``loafer dlq list``: each route's dead-letter store, with its count;
- ``loafer dlq show``: the dead letters (reason, attempts, origin, first/last failure,
  headers; ``--json`` for one JSON object a line);
- ``loafer dlq replay``: back to the origin, all or filtered (``--id``, ``--reason``,
  ``--older-than``), ``--dry-run``, at most ``--rate`` messages/s;
- ``loafer dlq purge``: delete them, after a confirmation (``--yes`` to skip it).

Each takes ``MODULE:ATTR`` or ``--config FILE`` as ``loafer check`` does, and ``--route``
to pick routes by name (default: every route whose provider has a dead-letter store).
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from loafer_core.deadletters import (
    DEFAULT_RATE,
    DeadLetter,
    DeadLetters,
    Filter,
    HasDeadLetters,
    dead_letters_of,
)
from loafer_core.errors import ConfigurationError
from loafer_core.route import Route

__all__ = ["build_dlq_app", "parse_duration"]

#: What loads the routes (``loafer_cli.app.load_routes``).
Loader = Callable[[str | None, Path | None], list[Route]]
#: The context manager turning a ConfigurationError into exit code 78.
ErrorScope = Callable[[], AbstractContextManager[None]]

TargetArg = Annotated[
    str | None,
    typer.Argument(
        metavar="[MODULE:ATTR]", help="The routes (as for loafer check).", show_default=False
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="A loafer.toml config file instead of MODULE:ATTR."),
]
RouteOpt = Annotated[
    list[str] | None, typer.Option("--route", "-r", help="Only this route (repeatable).")
]
IdOpt = Annotated[
    list[str] | None, typer.Option("--id", help="Only this dead letter (repeatable).")
]
ReasonOpt = Annotated[
    str | None, typer.Option("--reason", help="Only those whose reason contains this text.")
]
OlderOpt = Annotated[
    str | None,
    typer.Option(
        "--older-than", help="Only those dead-lettered longer ago (90, 30s, 15m, 2h, 7d)."
    ),
]
#: A progress line every this many seconds of a long replay.
_PROGRESS_EVERY = 2.0


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``30s``, ``15m``, ``2h`` or ``7d``; ConfigurationError if not."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    raw = text.strip().lower()
    unit = units.get(raw[-1:])
    try:
        value = float(raw[:-1] if unit is not None else raw) * (unit or 1.0)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ConfigurationError(
            f"--older-than {text!r}: expected seconds or a duration such as 30s, 15m, 2h, 7d"
        )
    return value


def _filter(ids: list[str] | None, reason: str | None, older: str | None) -> Filter:
    return Filter(
        ids=frozenset(ids) if ids else None,
        reason=reason,
        older_than=parse_duration(older) if older is not None else None,
    )


def _stores(routes: list[Route], names: list[str] | None) -> list[tuple[str, DeadLetters]]:
    """``(route name, store)`` of the routes picked (every one with a store by default)."""
    if names:
        known = {r.name for r in routes}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigurationError(
                f"--route {', '.join(unknown)}: no such route (routes: {', '.join(sorted(known))})"
            )
        return [(r.name, dead_letters_of(r.provider)) for r in routes if r.name in names]
    out = [(r.name, dead_letters_of(r.provider)) for r in routes if _has_store(r)]
    if not out:
        raise ConfigurationError("no route here has a dead-letter store loafer can read")
    return out


def _has_store(route: Route) -> bool:
    if not isinstance(route.provider, HasDeadLetters):
        return False
    try:
        dead_letters_of(route.provider)
    except ConfigurationError:
        return False  # dead letters turned off: not listed
    return True


async def _list(stores: list[tuple[str, DeadLetters]]) -> list[tuple[str, DeadLetters, int]]:
    out = []
    for name, store in stores:
        async with store:
            out.append((name, store, await store.count()))
    return out


def _show_line(route: str, letter: DeadLetter) -> str:
    first = letter.first_failure.isoformat() if letter.first_failure else "?"
    last = letter.last_failure.isoformat() if letter.last_failure else "?"
    body = letter.as_json()["body"]
    return (
        f"{route} id={letter.id} reason={letter.reason!r} attempts={letter.attempts} "
        f"origin={letter.origin} first={first} last={last} headers="
        f"{json.dumps(letter.as_json()['headers'], default=str)} body={str(body)[:200]!r}"
    )


async def _show(
    stores: list[tuple[str, DeadLetters]], flt: Filter, limit: int, as_json: bool
) -> None:
    for name, store in stores:
        async with store:
            for letter in await store.list(flt, limit=limit):
                if as_json:
                    print(json.dumps({"route": name, **letter.as_json()}, default=str))
                else:
                    print(_show_line(name, letter))


def _progress(name: str) -> Callable[[int], None]:
    last = [time.monotonic()]

    def report(moved: int) -> None:
        now = time.monotonic()
        if now - last[0] >= _PROGRESS_EVERY:
            last[0] = now
            print(f"{name}: {moved} replayed so far", file=sys.stderr, flush=True)

    return report


async def _replay(
    stores: list[tuple[str, DeadLetters]], flt: Filter, rate: float | None, dry_run: bool
) -> None:
    for name, store in stores:
        async with store:
            report = await store.replay(flt, rate=rate, dry_run=dry_run, progress=_progress(name))
        if dry_run:
            print(f"{name}: {report.matched} would be replayed (dry run): {' '.join(report.ids)}")
        else:
            print(f"{name}: {report.replayed} replayed ({store.guarantee}) from {store.where}")


async def _purge(stores: list[tuple[str, DeadLetters]], flt: Filter) -> None:
    for name, store in stores:
        async with store:
            print(f"{name}: {await store.purge(flt)} purged from {store.where}")


def _table(rows: list[tuple[str, DeadLetters, int]]) -> Table:
    table = Table(title="loafer dlq")
    for column in ("route", "dead letters", "count", "replay", "limits"):
        table.add_column(column)
    for name, store, count in rows:
        table.add_row(name, store.where, str(count), store.guarantee, store.limits or "")
    return table


@dataclass(frozen=True)
class _Scope:
    """What every command uses: the route loader and the error scope."""

    load_routes: Loader
    errors: ErrorScope

    def stores(
        self, target: str | None, config: Path | None, names: list[str] | None
    ) -> list[tuple[str, DeadLetters]]:
        with self.errors():
            return _stores(self.load_routes(target, config), names)

    def filter(self, ids: list[str] | None, reason: str | None, older: str | None) -> Filter:
        with self.errors():
            return _filter(ids, reason, older)

    def run(self, step: Callable[[], Any]) -> Any:
        with self.errors():
            return asyncio.run(step())


def build_dlq_app(load_routes: Loader, errors: ErrorScope) -> typer.Typer:
    """The ``loafer dlq`` commands, loading routes with ``load_routes`` under ``errors``."""
    dlq = typer.Typer(
        name="dlq",
        help="Dead letters of the routes: list, show, replay, purge.",
        no_args_is_help=True,
        add_completion=False,
    )
    scope = _Scope(load_routes, errors)
    _add_reading(dlq, scope)
    _add_writing(dlq, scope)
    return dlq


def _add_reading(dlq: typer.Typer, scope: _Scope) -> None:
    @dlq.command("list", help="Each route's dead-letter store, with its count.")
    def list_(
        target: TargetArg = None, config_file: ConfigOpt = None, route: RouteOpt = None
    ) -> None:
        """List the dead-letter stores and their counts."""
        picked = scope.stores(target, config_file, route)
        rows = scope.run(lambda: _list(picked))
        Console(width=160).print(_table(rows))

    @dlq.command(help="The dead letters: reason, attempts, origin, failure times, headers.")
    def show(
        target: TargetArg = None,
        config_file: ConfigOpt = None,
        route: RouteOpt = None,
        id: IdOpt = None,
        reason: ReasonOpt = None,
        older_than: OlderOpt = None,
        limit: Annotated[int, typer.Option("--limit", min=1, help="Most per route.")] = 20,
        as_json: Annotated[bool, typer.Option("--json", help="One JSON object a line.")] = False,
    ) -> None:
        """Show dead letters."""
        picked = scope.stores(target, config_file, route)
        flt = scope.filter(id, reason, older_than)
        scope.run(lambda: _show(picked, flt, limit, as_json))


def _add_writing(dlq: typer.Typer, scope: _Scope) -> None:
    @dlq.command(help="Move dead letters back to their origin (publish-confirm, then remove).")
    def replay(
        target: TargetArg = None,
        config_file: ConfigOpt = None,
        route: RouteOpt = None,
        id: IdOpt = None,
        reason: ReasonOpt = None,
        older_than: OlderOpt = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Move nothing; say what.")] = False,
        rate: Annotated[
            float, typer.Option("--rate", min=0.0, help="Most messages/s (0: no bound).")
        ] = DEFAULT_RATE,
    ) -> None:
        """Replay dead letters."""
        picked = scope.stores(target, config_file, route)
        flt = scope.filter(id, reason, older_than)
        scope.run(lambda: _replay(picked, flt, rate or None, dry_run))

    @dlq.command(help="Delete dead letters (asks first; --yes skips the question).")
    def purge(
        target: TargetArg = None,
        config_file: ConfigOpt = None,
        route: RouteOpt = None,
        id: IdOpt = None,
        reason: ReasonOpt = None,
        older_than: OlderOpt = None,
        yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    ) -> None:
        """Purge dead letters."""
        picked = scope.stores(target, config_file, route)
        flt = scope.filter(id, reason, older_than)
        names = ", ".join(name for name, _ in picked)
        if not yes and not typer.confirm(f"Delete the matching dead letters of {names}?"):
            print("nothing purged", file=sys.stderr)
            raise typer.Exit(1)
        scope.run(lambda: _purge(picked, flt))

"""A project directory for ``loafer run/check --config``: a handlers module that logs
each id it handles (with its pid), a ``loafer.toml``, and readers of the log lines."""

from __future__ import annotations

import json
import os
import textwrap
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from tests.loafer_cli.runner import Service

#: the handlers every proof's config names (``handlers:handle``); each takes
#: ``HANDLER_DELAY`` seconds (default 0)
HANDLERS = textwrap.dedent(
    """
    import asyncio
    import json
    import logging
    import os

    log = logging.getLogger("handlers")
    DELAY = float(os.environ.get("HANDLER_DELAY", "0"))


    async def handle(message, metadata):
        if isinstance(message, bytes | str):
            message = json.loads(message)
        log.info("handling %s by pid %d", message["id"], os.getpid())
        await asyncio.sleep(DELAY)  # work that takes a while: messages stay in flight
        log.info("handled %s by pid %d", message["id"], os.getpid())
    """
)


def write_project(directory: Path, config: str) -> Path:
    """``handlers.py`` and ``loafer.toml`` (``config``) in ``directory``; returns it."""
    (directory / "handlers.py").write_text(HANDLERS)
    (directory / "loafer.toml").write_text(config)
    return directory


def bodies(prefix: str, count: int) -> list[str]:
    """``count`` JSON bodies ``{"id": "PREFIX-i"}``."""
    return [json.dumps({"id": f"{prefix}-{i}"}) for i in range(count)]


def toml_array(items: Iterable[str]) -> str:
    """A TOML array of strings (JSON string syntax is valid TOML basic-string syntax)."""
    return "[" + ", ".join(json.dumps(item) for item in items) + "]"


def handled(lines: Iterable[str]) -> dict[str, set[str]]:
    """The ids the handlers logged, by prefix (``rabbit-3`` is under ``rabbit``)."""
    out: dict[str, set[str]] = defaultdict(set)
    for line in lines:
        if "handlers: handled " not in line:
            continue
        ident = line.split("handlers: handled ", 1)[1].split()[0]
        out[ident.rsplit("-", 1)[0]].add(ident)
    return out


def handled_by(lines: Iterable[str]) -> dict[int, set[str]]:
    """The ids the handlers logged, by the pid of the process that handled them."""
    out: dict[int, set[str]] = defaultdict(set)
    for line in lines:
        if "handlers: handled " not in line:
            continue
        ident, _, _, pid = line.split("handlers: handled ", 1)[1].split()[:4]
        out[int(pid)].add(ident)
    return out


def expected(prefix: str, count: int) -> set[str]:
    """Every id :func:`bodies` made."""
    return {f"{prefix}-{i}" for i in range(count)}


def children(pid: int) -> set[int]:
    """The live (not zombie) child processes of ``pid``, from ``/proc/*/stat``."""
    found: set[int] = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                text = stat.read()
        except OSError:
            continue  # gone meanwhile
        # pid (comm) state ppid ...: comm may hold spaces and parentheses
        state, ppid = text.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid and state != "Z":
            found.add(int(entry.name))
    return found


def wait_for_ids(service: Service, wanted: set[str], timeout: float = 60) -> None:
    """Read ``service``'s log until every id of ``wanted`` was handled (duplicates
    allowed), within ``timeout`` seconds in all."""

    def every_id_handled(lines: list[str]) -> bool:
        return not wanted - set().union(*handled(lines).values())

    service.wait_until(every_id_handled, f"{len(wanted)} ids handled", timeout)

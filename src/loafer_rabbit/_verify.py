"""Checking a provider's set-up without consuming or changing anything (``loafer check``).

One short-lived, plain (not robust: nothing to reconnect) connection; each check on a
channel of its own, since a refused declare closes its channel:

- the work queue: a passive declare (it must exist; with ``declare=True`` a missing one
  is fine, ``start`` creates it);
- every queue or exchange ``start`` would declare and that exists already (the work
  queue with ``declare=True``, the dead-letter exchange and queue, the single retry
  queue): declared again with the settings ``start`` uses, which RabbitMQ accepts without
  change when they match and refuses (PRECONDITION_FAILED) when they differ, exactly as
  ``start`` would fail. A missing one is left missing: ``start`` would create it.

No ``basic.consume``, no ``basic.get``, no binding: the queues' messages are untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractChannel
from aio_pika.connection import make_url

from loafer_core.errors import LoaferError
from loafer_rabbit._topology import topology_error
from loafer_rabbit.errors import connect_error, operation_error

__all__ = ["Entity", "verify_topology"]

Declare = Callable[[AbstractChannel], Awaitable[object]]


@dataclass(frozen=True)
class Entity:
    """A queue or exchange to check: ``what`` and ``name`` for messages; ``passive``
    checks it exists; ``declare`` (if any) declares it as ``start`` would; ``required``:
    its absence is a problem (else ``start`` would create it)."""

    what: str
    name: str
    passive: Declare
    declare: Declare | None = None
    required: bool = True


async def _on_channel(connection: aio_pika.abc.AbstractConnection, step: Declare) -> None:
    channel = await connection.channel(publisher_confirms=False)
    try:
        await step(channel)
    finally:
        if not channel.is_closed:
            with contextlib.suppress(Exception):
                await channel.close()


async def _check(connection: aio_pika.abc.AbstractConnection, entity: Entity, url: str) -> None:
    try:
        await _on_channel(connection, entity.passive)
    except aiormq.exceptions.ChannelNotFoundEntity as exc:
        if entity.required:
            raise topology_error(exc, entity.what, entity.name, url) from None
        return  # start would declare it
    except (asyncio.CancelledError, LoaferError):
        raise
    except Exception as exc:
        raise topology_error(exc, entity.what, entity.name, url) from None
    if entity.declare is not None:
        try:
            await _on_channel(connection, entity.declare)
        except (asyncio.CancelledError, LoaferError):
            raise
        except Exception as exc:
            raise topology_error(exc, entity.what, entity.name, url) from None


async def verify_topology(
    url: str,
    entities: list[Entity],
    *,
    timeout: float,
    close_timeout: float,
    connection_name: str,
    ssl_context: ssl.SSLContext | None,
    options: Mapping[str, Any],
) -> None:
    """Connect (within ``timeout``), check each entity in turn (within ``timeout`` in
    all), close the connection (within ``close_timeout``, even when cancelled)."""
    kwargs = {k: v for k, v in options.items() if k != "reconnect_interval"}
    connection = aio_pika.Connection(
        make_url(url, **kwargs),
        ssl_context=ssl_context,
        client_properties={"connection_name": connection_name},
        **kwargs,
    )
    try:
        try:
            async with asyncio.timeout(timeout):
                await connection.connect(timeout=timeout)
        except (asyncio.CancelledError, LoaferError):
            raise
        except Exception as exc:
            raise connect_error(exc, url) from None
        try:
            async with asyncio.timeout(timeout):
                for entity in entities:
                    await _check(connection, entity, url)
        except TimeoutError:
            raise operation_error("checking the queues", TimeoutError(), url) from None
    finally:
        await _close(connection, close_timeout)


async def _close(connection: aio_pika.Connection, timeout: float) -> None:
    """Close within ``timeout``; cancelled, the close still finishes (bounded) before the
    cancellation propagates, so nothing is left open."""
    task = asyncio.get_running_loop().create_task(_bounded_close(connection, timeout))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task}, timeout=timeout + 1)
        raise


async def _bounded_close(connection: aio_pika.Connection, timeout: float) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(timeout):
            await connection.close(aiormq.exceptions.ConnectionClosed(320, "closed by the client"))

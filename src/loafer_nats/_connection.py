"""Opening and closing nats-py's connection, bounded and safe to cancel.

nats-py reconnects by itself after a dropped connection (``max_reconnect_attempts=-1``:
for good), re-subscribes, and sends what was written meanwhile (acks, pull requests) once
back. Its first connect, with reconnection on, loops until it succeeds: we bound it with
``connect_timeout`` and report the last error it met (refused credentials are a
ConfigurationError, not a timeout). Its callbacks log through ``loafer_nats.connection``
with secrets masked; its own error logging (ERROR with a traceback per reconnection
attempt) is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import nats.aio.client
import nats.errors

from loafer_core.settings import Connection
from loafer_nats.errors import connect_error, mask_url, protect, scrub, secrets_of

__all__ = ["close_connection", "open_connection"]

logger = logging.getLogger("loafer_nats.connection")

Callback = Callable[[], Awaitable[None] | None]

#: Seconds nats-py waits for one TCP connect + handshake (the whole connect is bounded
#: by our ``connect_timeout``).
ATTEMPT_TIMEOUT = 2.0


def client_options(connection: Connection) -> tuple[dict[str, Any], tuple[str, ...]]:
    """nats-py's connect options from ``connection`` (its TLS context as ``tls``) and the
    secrets they and the URL hold, masked from now on in every log record."""
    options = dict(connection.options)
    secrets = secrets_of(connection.url, options)
    protect(secrets)
    if connection.tls is not None:
        options["tls"] = connection.tls
    return options, secrets


async def open_connection(
    url: str,
    *,
    name: str,
    connect_timeout: float,
    reconnect_wait: float,
    secrets: Iterable[str],
    options: Mapping[str, Any],
    on_disconnect: Callback | None = None,
    on_reconnect: Callback | None = None,
) -> nats.aio.client.Client:
    """Connect to ``url`` (reconnecting for good after later drops). A failure, or no
    connection within ``connect_timeout``, raises our error without the secrets; a
    cancellation closes what was begun."""
    secrets = tuple(secrets)
    client = nats.aio.client.Client()
    errors: list[BaseException] = []
    where = mask_url(url)

    async def error_cb(exc: Exception) -> None:
        first = not errors
        errors.append(exc)
        del errors[:-3]
        level = logging.WARNING if first or client.is_connected else logging.DEBUG
        logger.log(level, "NATS at %s: %s", where, scrub(f"{type(exc).__name__}: {exc}", secrets))

    async def disconnected_cb() -> None:
        if client.is_closed:
            return
        logger.warning("NATS at %s: disconnected; reconnecting", where)
        if on_disconnect is not None:
            result = on_disconnect()
            if result is not None:
                await result

    async def reconnected_cb() -> None:
        errors.clear()
        logger.info("NATS at %s: reconnected", where)
        if on_reconnect is not None:
            result = on_reconnect()
            if result is not None:
                await result

    kwargs: dict[str, Any] = {
        "servers": [url],
        "name": name,
        "connect_timeout": min(ATTEMPT_TIMEOUT, connect_timeout),
        "reconnect_time_wait": reconnect_wait,
        "max_reconnect_attempts": -1,
        "allow_reconnect": True,
        "error_cb": error_cb,
        "disconnected_cb": disconnected_cb,
        "reconnected_cb": reconnected_cb,
        **options,
    }
    try:
        async with asyncio.timeout(connect_timeout):
            await client.connect(**kwargs)
    except BaseException as exc:
        await close_connection(client, 1.0)
        if isinstance(exc, Exception):
            cause: BaseException = exc
            if isinstance(exc, TimeoutError) and errors:
                cause = errors[-1]
                if not isinstance(
                    cause,
                    nats.errors.AuthorizationError
                    | nats.errors.InvalidUserCredentialsError
                    | nats.errors.SecureConnRequiredError
                    | nats.errors.SecureConnWantedError,
                ):
                    cause = exc
            raise connect_error(cause, url, secrets) from None
        raise
    return client


async def close_connection(client: nats.aio.client.Client, timeout: float) -> None:
    """Flush what is written (acks, naks) and close, within ``timeout``. Never raises;
    cancelled, it still closes (bounded) before the cancellation goes on."""
    task = asyncio.get_running_loop().create_task(_close(client, timeout))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await asyncio.wait({task}, timeout=timeout)
        raise


async def _close(client: nats.aio.client.Client, timeout: float) -> None:
    if client.is_closed:
        return
    try:
        async with asyncio.timeout(timeout):
            if client.is_connected:
                with contextlib.suppress(Exception):
                    await client.flush(timeout=max(1, int(timeout)))
            await client.close()
    except TimeoutError:
        logger.warning("closing the NATS connection took more than %ss: abandoned", timeout)
    except Exception as exc:
        logger.debug("error while closing a NATS connection: %s", type(exc).__name__)

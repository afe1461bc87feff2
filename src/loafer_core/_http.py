"""A minimal HTTP/1.1 server for the health and metrics endpoints (asyncio's own).

One request per connection, answered and closed; a request must arrive within
:data:`REQUEST_TIMEOUT` seconds and :data:`REQUEST_LIMIT` bytes, or the connection is
closed unanswered. Only GET and HEAD are answered (405 otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable

from loafer_core.errors import ConfigurationError

__all__ = ["REQUEST_LIMIT", "REQUEST_TIMEOUT", "Answer", "listen"]

REQUEST_TIMEOUT = 5.0
REQUEST_LIMIT = 8192

Answer = tuple[int, str, bytes]
"""``(status code, content type, body)``."""

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


async def listen(
    respond: Callable[[str], Answer], host: str, port: int, what: str
) -> asyncio.Server:
    """Serve ``respond(path)`` on ``host:port``; a port that cannot be bound is a
    ConfigurationError naming ``what`` (``"health"``, ``"metrics"``)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    head = await reader.readuntil(b"\r\n\r\n")
                method, target, _version = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            except (
                TimeoutError,
                asyncio.IncompleteReadError,
                asyncio.LimitOverrunError,
                ValueError,
            ):
                return  # not a request we answer: just close
            if method in ("GET", "HEAD"):
                code, content_type, body = respond(target.split("?", 1)[0])
            else:
                refused = json.dumps({"error": f"method {method} not allowed"}).encode()
                code, content_type, body = 405, "application/json", refused
            writer.write(
                f"HTTP/1.1 {code} {_REASONS.get(code, '')}\r\n"
                f"Content-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n"
                "Cache-Control: no-store\r\n"
                "Connection: close\r\n\r\n".encode()
                + (b"" if method == "HEAD" else body)
            )
            async with asyncio.timeout(REQUEST_TIMEOUT):
                await writer.drain()
        except (ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()

    try:
        return await asyncio.start_server(answer, host, port, limit=REQUEST_LIMIT)
    except OSError as exc:
        raise ConfigurationError(
            f"{what} endpoint: cannot listen on {host}:{port} ({exc.strerror or exc}); "
            f"choose another {what} port"
        ) from None


async def stop(server: asyncio.Server | None) -> None:
    """Stop listening (answers under way are cut after a second)."""
    if server is None:
        return
    server.close()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(1.0):
            await server.wait_closed()

"""Health endpoints for container probes, on asyncio's own server (no dependency).

``Manager(routes, health_port=8080)`` serves, for as long as :meth:`Manager.serve` runs:

- ``GET /livez``: ``200 {"status": "ok"}`` whenever the event loop answers (a loop
  blocked by a handler does not answer: the probe times out);
- ``GET /readyz``: ``200`` once every route is running, ``503`` while any is starting,
  backing off or draining, with each route's state in the body;
- ``GET /status``: every route's :class:`~loafer_core.status.RouteStatus` as JSON.

Anything else is ``404`` (``405`` for a method other than GET/HEAD). Each connection
gets one answer and is closed; a request must arrive within 5 seconds and 8 KiB.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from loafer_core.errors import ConfigurationError
from loafer_core.status import RouteStatus

__all__ = ["HealthServer"]

logger = logging.getLogger("loafer_core.health")

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
REQUEST_TIMEOUT = 5.0
REQUEST_LIMIT = 8192


class HealthServer:
    """Serves ``/livez``, ``/readyz`` and ``/status`` from a status source.

    ``status`` is called on each request (``Manager.status``). ``port=0`` binds a free
    port: :attr:`port` tells which once :meth:`start` returned.
    """

    def __init__(
        self,
        status: Callable[[], Sequence[RouteStatus]],
        *,
        host: str = "0.0.0.0",
        port: int = 8080,
    ) -> None:
        self._status = status
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    def __repr__(self) -> str:
        return f"<HealthServer {self.host}:{self.port}>"

    async def start(self) -> None:
        """Bind and serve; a port that cannot be bound is a ConfigurationError."""
        try:
            self._server = await asyncio.start_server(
                self._answer, self.host, self.port, limit=REQUEST_LIMIT
            )
        except OSError as exc:
            raise ConfigurationError(
                f"health endpoint: cannot listen on {self.host}:{self.port} "
                f"({exc.strerror or exc}); choose another health port"
            ) from None
        sockets = self._server.sockets
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        logger.info(
            "health endpoints on http://%s:%d (/livez, /readyz, /status)", self.host, self.port
        )

    async def close(self) -> None:
        """Stop listening (answers under way are cut after a second)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await server.wait_closed()

    async def __aenter__(self) -> HealthServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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
            code, body = self._route(method, target.split("?", 1)[0])
            payload = json.dumps(body).encode()
            writer.write(
                f"HTTP/1.1 {code} {_REASONS[code]}\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n"
                "Cache-Control: no-store\r\n"
                "Connection: close\r\n\r\n".encode()
                + (b"" if method == "HEAD" else payload)
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

    def _route(self, method: str, path: str) -> tuple[int, Any]:
        if method not in ("GET", "HEAD"):
            return 405, {"error": f"method {method} not allowed"}
        if path == "/livez":
            return 200, {"status": "ok"}
        if path == "/readyz":
            routes = self._status()
            ready = bool(routes) and all(route.ready for route in routes)
            return (200 if ready else 503), {
                "status": "ready" if ready else "not ready",
                "routes": {route.name: route.state.value for route in routes},
            }
        if path == "/status":
            return 200, {"routes": [route.as_dict() for route in self._status()]}
        return 404, {"error": f"no such endpoint {path!r}: /livez, /readyz, /status"}

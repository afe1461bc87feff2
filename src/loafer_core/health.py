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
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from loafer_core import _http
from loafer_core.status import RouteStatus

__all__ = ["HealthServer"]

logger = logging.getLogger("loafer_core.health")


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
        self._server = await _http.listen(self._respond, self.host, self.port, "health")
        sockets = self._server.sockets
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        logger.info(
            "health endpoints on http://%s:%d (/livez, /readyz, /status)", self.host, self.port
        )

    async def close(self) -> None:
        """Stop listening (answers under way are cut after a second)."""
        server, self._server = self._server, None
        await _http.stop(server)

    async def __aenter__(self) -> HealthServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _respond(self, path: str) -> _http.Answer:
        code, body = self._route(path)
        return code, "application/json", json.dumps(body).encode()

    def _route(self, path: str) -> tuple[int, Any]:
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

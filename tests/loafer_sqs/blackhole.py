"""A TCP proxy to the SQS endpoint that can turn into a blackhole.

It runs its own event loop in a thread of its own, so the test's loop holds only the
tasks of the code under test (``asyncio.all_tasks()`` says whether anything was left
behind). Once :meth:`Blackhole.swallow` is called, every byte is read and dropped in
both directions and new connections are accepted but never answered: the endpoint is
there and silent, like a host behind a firewall that drops packets after the
handshake. With no target it is a blackhole from the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import TracebackType
from urllib.parse import urlsplit


class Blackhole:
    """``with Blackhole(target) as hole:`` -> ``hole.url`` proxies to ``target``."""

    def __init__(self, target: str | None = None) -> None:
        if target is None:
            self._upstream: tuple[str, int] | None = None
        else:
            parts = urlsplit(target)
            self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.swallowing = target is None
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.BaseTransport] = set()
        self._backs: set[asyncio.Future[None]] = set()
        self._clients = 0
        self._idle: asyncio.Event | None = None
        self._connected: asyncio.Event | None = None

    # -- the test's side ---------------------------------------------------------------

    def __enter__(self) -> Blackhole:
        self._thread.start()
        port = self._run(self._start())
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._run(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def swallow(self) -> None:
        """From now on, answer nothing and forward nothing."""
        self.swallowing = True

    @property
    def clients(self) -> int:
        """Client connections still open."""
        return self._clients

    async def connected(self, timeout: float) -> None:
        """Wait (bounded) until a client has connected."""
        future = asyncio.run_coroutine_threadsafe(self._wait_connected(timeout), self._loop)
        await asyncio.wrap_future(future)

    async def all_closed(self, timeout: float) -> None:
        """Wait (bounded) until every client connection has been closed by the client."""
        future = asyncio.run_coroutine_threadsafe(self._wait_idle(timeout), self._loop)
        await asyncio.wrap_future(future)

    # -- the proxy's thread ------------------------------------------------------------

    def _run(self, coro: object) -> int:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]
        return future.result(10)

    async def _start(self) -> int:
        self._idle = asyncio.Event()
        self._idle.set()
        self._connected = asyncio.Event()
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _wait_idle(self, timeout: float) -> None:
        assert self._idle is not None
        await asyncio.wait_for(self._idle.wait(), timeout)

    async def _wait_connected(self, timeout: float) -> None:
        assert self._connected is not None
        await asyncio.wait_for(self._connected.wait(), timeout)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for transport in list(self._transports):
            transport.abort()
        # aborted connections read as closed: the handlers end by themselves
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        for task in tasks:
            task.cancel()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                if writer is not None and not self.swallowing:
                    writer.write(data)
                    await writer.drain()
        if writer is not None:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._idle is not None
        assert self._connected is not None
        self._clients += 1
        self._idle.clear()
        self._connected.set()
        self._transports.add(writer.transport)
        try:
            if self.swallowing or self._upstream is None:
                await self._pipe(reader, None)  # read until the client hangs up
                writer.close()
                return
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
            self._transports.add(up_writer.transport)
            # the way back runs until the server hangs up (or the proxy stops)
            back = asyncio.ensure_future(self._pipe(up_reader, writer))
            self._backs.add(back)
            back.add_done_callback(self._backs.discard)
            await self._pipe(reader, up_writer)  # until the client hangs up
        finally:
            self._clients -= 1
            if self._clients == 0:
                self._idle.set()

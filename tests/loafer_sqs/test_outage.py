"""An SQS outage (connections cut for a while) loses nothing and stops nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any
from urllib.parse import urlsplit

import pytest

from loafer_core import Manager
from loafer_sqs import SQSRoute
from tests.loafer_sqs.conftest import MakeQueue, send_bodies, wait_for_counts

pytestmark = pytest.mark.sqs


class CuttableProxy:
    """A TCP proxy to the SQS endpoint whose connections can be cut and refused."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.down = False
        self.refused = 0
        self.writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            self.refused += 1
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            writer.close()
            return
        self.writers.update({writer, up_writer})
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self.writers.discard(writer)
            self.writers.discard(up_writer)

    def cut(self) -> None:
        self.down = True
        for writer in list(self.writers):
            writer.transport.abort()

    def restore(self) -> None:
        self.down = False

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_outage_loses_nothing(
    sqs: Any,
    make_queue: MakeQueue,
    client_options: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = await make_queue(visibility=2)
    total = 40
    await send_bodies(sqs, url, [json.dumps({"i": i}) for i in range(total)])
    proxy = CuttableProxy(client_options["endpoint_url"])
    endpoint = await proxy.start()
    path = urlsplit(url).path
    seen: set[int] = set()
    some = asyncio.Event()
    everything = asyncio.Event()

    async def handler(message: Any, metadata: Any) -> bool:
        await asyncio.sleep(0.05)
        seen.add(message["i"])
        if len(seen) >= 10:
            some.set()
        if len(seen) == total:
            everything.set()
        return True

    caplog.set_level(logging.WARNING)
    from aiobotocore.config import AioConfig

    # no retries inside botocore: the outage reaches loafer's own retry paths
    no_retries = AioConfig(retries={"mode": "standard", "total_max_attempts": 1})
    options = {**client_options, "endpoint_url": endpoint, "config": no_retries}
    route = SQSRoute(
        endpoint + path,
        {"options": {"WaitTimeSeconds": 1}, **options},
        handler=handler,
        max_concurrency=10,
    )
    try:
        async with Manager([route]) as manager:
            await asyncio.wait_for(some.wait(), 20)
            proxy.cut()
            await asyncio.sleep(3)  # the outage itself
            proxy.restore()
            await asyncio.wait_for(everything.wait(), 60)
            assert manager is not None
        assert seen == set(range(total))
        # the outage was real: calls were refused, fetches failed and were retried
        assert proxy.refused > 0
        assert any("fetch failed" in r.getMessage() for r in caplog.records), caplog.text
        await wait_for_counts(sqs, url, (0, 0), 20)
    finally:
        await proxy.close()

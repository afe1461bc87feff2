"""Fixtures for the NATS provider tests: a real nats-server with JetStream, an admin
client for set-up (unique stream names, deleted after each test), and a TCP proxy that
can cut the connection without touching the shared server."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import nats
import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext, api

from loafer_core.testing import eventually


def unique(prefix: str = "loafer-test") -> str:
    """A stream name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class NatsAdmin:
    """Test-side JetStream client: creates, fills, inspects and deletes streams."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.streams: set[str] = set()
        self.nc: Client | None = None

    async def open(self) -> None:
        self.nc = await nats.connect(self.url, name="loafer-test-admin")
        self.js: JetStreamContext = self.nc.jetstream(timeout=10)

    def track(self, *streams: str) -> None:
        """Delete these streams at teardown too (ones a provider created)."""
        self.streams.update(streams)

    async def stream(
        self,
        name: str | None = None,
        *,
        consumer: str | None = "work",
        ack_wait: float = 30.0,
        max_deliver: int | None = None,
        dead_letter: bool = False,
        **consumer_options: Any,
    ) -> str:
        """Create stream ``name`` (subject ``<name>.>``) and its durable pull consumer;
        with ``dead_letter``, stream ``<name>-dead`` capturing ``dead.<name>``."""
        name = name or unique()
        self.streams.add(name)
        await self.js.add_stream(
            api.StreamConfig(
                name=name,
                subjects=[f"{name}.>"],
                retention=api.RetentionPolicy.WORK_QUEUE,
                storage=api.StorageType.FILE,
            )
        )
        if consumer:
            await self.js.add_consumer(
                name,
                api.ConsumerConfig(
                    durable_name=consumer,
                    ack_policy=api.AckPolicy.EXPLICIT,
                    ack_wait=ack_wait,
                    max_deliver=max_deliver or -1,
                    **consumer_options,
                ),
            )
        if dead_letter:
            self.streams.add(f"{name}-dead")
            await self.js.add_stream(
                api.StreamConfig(name=f"{name}-dead", subjects=[f"dead.{name}"])
            )
        return name

    async def put(
        self,
        stream: str,
        body: bytes,
        headers: Mapping[str, str] | None = None,
        subject: str | None = None,
    ) -> None:
        await self.js.publish(
            subject or f"{stream}.in", body, headers=dict(headers) if headers else None
        )

    async def put_many(self, stream: str, bodies: Sequence[bytes], window: int = 500) -> None:
        for start in range(0, len(bodies), window):
            await asyncio.gather(
                *(self.put(stream, body) for body in bodies[start : start + window])
            )

    async def consumer(self, stream: str, consumer: str = "work") -> api.ConsumerInfo:
        return await self.js.consumer_info(stream, consumer)

    async def messages(self, stream: str) -> int:
        return int((await self.js.stream_info(stream)).state.messages)

    async def stored(self, stream: str) -> list[Any]:
        """Every message stored in ``stream`` (read by sequence, nothing consumed)."""
        state = (await self.js.stream_info(stream)).state
        out: list[Any] = []
        if not state.messages:
            return out
        for seq in range(state.first_seq, state.last_seq + 1):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                out.append(await self.js.get_msg(stream, seq))
        return out

    async def wait_consumer(
        self, stream: str, *, timeout: float = 15.0, consumer: str = "work", **expected: int
    ) -> api.ConsumerInfo:
        """Poll consumer info until its counters (num_pending=..., num_ack_pending=...)
        are as expected (the server's state: nothing to await)."""
        info = None

        async def reached() -> api.ConsumerInfo | None:
            nonlocal info
            info = await self.consumer(stream, consumer)
            return info if all(getattr(info, k) == v for k, v in expected.items()) else None

        found = await eventually(reached, timeout=timeout, what=f"consumer counters {expected}")
        assert found is not None, info
        return found

    async def cleanup(self) -> None:
        assert self.nc is not None
        for stream in self.streams:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await self.js.delete_stream(stream)
        await self.nc.close()


@pytest.fixture
async def admin(nats_url: str) -> AsyncIterator[NatsAdmin]:
    """An admin client; every stream it creates or tracks is deleted after the test."""
    helper = NatsAdmin(nats_url)
    await helper.open()
    try:
        yield helper
    finally:
        await helper.cleanup()


class Proxy:
    """A local TCP proxy to the NATS server: :meth:`cut` drops every connection and stops
    listening (as a server restart would look to the client), :meth:`resume` listens again
    on the same port. The shared server is never touched."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.connections = 0

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.writers.update((writer, up_writer))
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ]
        self.tasks.update(pumps)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in pumps:
            task.cancel()
        for w in (writer, up_writer):
            w.close()
            self.writers.discard(w)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()

    async def cut(self) -> None:
        """Stop listening and drop every connection."""
        if self.server is not None:
            self.server.close()
            self.server = None
        for w in list(self.writers):
            w.transport.abort()
        self.writers.clear()
        for task in list(self.tasks):
            task.cancel()
        self.tasks.clear()

    async def resume(self) -> None:
        await self.start()


@pytest.fixture
async def proxy(nats_url: str) -> AsyncIterator[Proxy]:
    """A TCP proxy in front of the NATS server under test."""
    from urllib.parse import urlsplit

    parts = urlsplit(nats_url)
    helper = Proxy(parts.hostname or "127.0.0.1", parts.port or 4222)
    await helper.start()
    try:
        yield helper
    finally:
        await helper.cut()

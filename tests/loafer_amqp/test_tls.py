"""amqps:// for real: a TLS-terminating proxy (asyncio, self-signed certificate) in front
of the broker, so that the provider's SSLDomain options are exercised end to end."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from loafer_amqp import AMQPProvider, AMQPPublisher
from loafer_core.errors import LoaferError
from loafer_core.outcome import ACCEPT
from loafer_core.provider import Delivery

from .conftest import Broker

pytestmark = pytest.mark.amqp


def _certificate(directory: Path, name: str) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
async def tls_proxy(amqp_url: str, tmp_path: Path) -> AsyncIterator[tuple[int, Path]]:
    """(port, CA file) of a TLS listener on localhost forwarding to the broker."""
    cert, key = _certificate(tmp_path, "server")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    target = urlsplit(amqp_url)
    tasks: set[asyncio.Task[None]] = set()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(target.hostname, target.port or 5672)
        both = [
            asyncio.create_task(pipe(reader, up_writer)),
            asyncio.create_task(pipe(up_reader, writer)),
        ]
        tasks.update(both)
        try:
            await asyncio.gather(*both, return_exceptions=True)
        finally:
            # abort(): a TLS close would wait for a close_notify from a peer that is gone.
            writer.transport.abort()
            up_writer.transport.abort()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, cert
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def test_amqps_with_a_verified_certificate(
    tls_proxy: tuple[int, Path], amqp_url: str, broker: Broker, queue: str
) -> None:
    port, ca = tls_proxy
    creds = urlsplit(amqp_url)
    url = f"amqps://{creds.username}:{creds.password}@localhost:{port}"
    address = f"/amq/queue/{queue}"
    async with AMQPPublisher(url, address, ssl_ca=str(ca)) as publisher:
        await publisher.publish(b'{"over": "tls"}')
    provider = AMQPProvider(url, address, ssl_ca=str(ca), fetch_wait=5.0)
    try:
        await provider.start(1)
        async with asyncio.timeout(10):
            got: list[Delivery] = []
            while not got:
                got = list(await provider.fetch(1))
        assert got[0].raw == b'{"over": "tls"}'
        await provider.settle(got[0], ACCEPT)
    finally:
        await provider.close()
    await broker.wait_depth(queue, 0)


async def test_amqps_refuses_an_untrusted_certificate(
    tls_proxy: tuple[int, Path], tmp_path: Path, queue: str
) -> None:
    port, _ = tls_proxy
    other_ca, _ = _certificate(tmp_path, "other")
    provider = AMQPProvider(
        f"amqps://guest:guest@localhost:{port}",
        f"/amq/queue/{queue}",
        ssl_ca=str(other_ca),
        connect_timeout=10,
    )
    try:
        with pytest.raises(LoaferError):
            await provider.start(1)
    finally:
        await provider.close()

"""Checking an address without receiving anything (``loafer check``).

A reactor client of its own opens a connection and a session, attaches one receiver link
to the address and grants it no credit: the broker refuses an unknown address (the link
is detached with ``amqp:not-found``), and with no credit it sends nothing. Then the link
is detached, the connection closed and the reactor thread ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from proton.reactor import AtLeastOnce, Container

from loafer_amqp._bridge import ConnectionSettings, ReactorClient, logger
from loafer_core.errors import LoaferError

__all__ = ["verify_address"]

PeerCheck = Callable[[dict[str, Any]], LoaferError | None]


class _VerifyingClient(ReactorClient):
    """Reactor side of a verification: one receiver link that is never given credit."""

    def __init__(self, settings: ConnectionSettings, address: str, check_peer: PeerCheck) -> None:
        super().__init__(settings, label=f"verify:{address}")
        self.address = address
        self._check_peer = check_peer
        self._receiver: Any = None

    def check_peer(self, properties: dict[str, Any]) -> LoaferError | None:
        return self._check_peer(properties)

    def open_links(self, container: Container, session: Any) -> None:
        # The handler's prefetch is 0: no credit is ever granted on this link.
        self._receiver = container.create_receiver(
            session,
            source=self.address,
            name=f"loafer-verify-{self.address}-{self.generation}",
            options=AtLeastOnce(),
        )

    def all_links_attached(self) -> bool:
        link = self._receiver
        return bool(
            link is not None
            and link.state & link.REMOTE_ACTIVE
            and link.remote_source.address is not None
        )

    def describe_link(self, link: Any) -> str:
        return f"address {self.address!r}"

    def on_message(self, event: Any) -> None:
        # Never expected (no credit). Left unsettled, it goes back with the connection.
        logger.error("%s: a message arrived on a link without credit", self.label)

    def before_shutdown(self) -> None:
        link = self._receiver
        if link is not None:
            link.close()  # detach before the connection closes

    def forget_links(self) -> None:
        self._receiver = None


async def verify_address(
    settings: ConnectionSettings,
    address: str,
    *,
    check_peer: PeerCheck,
    connect_timeout: float,
    close_timeout: float,
) -> None:
    """Attach to ``address`` with no credit, within ``connect_timeout``; then detach,
    close and end the reactor thread (within ``close_timeout``, even when cancelled)."""
    client = _VerifyingClient(settings, address, check_peer)
    client.start_thread(asyncio.get_running_loop())
    try:
        await client.wait_ready(connect_timeout)
    finally:
        closing = asyncio.get_running_loop().create_task(client.shutdown(close_timeout))
        try:
            await asyncio.shield(closing)
        except asyncio.CancelledError:
            await asyncio.wait({closing}, timeout=close_timeout + 6)
            raise

"""Send raw AMQP 1.0 message bytes (sections as given) to an address, with raw proton."""

from __future__ import annotations

from typing import Any

from proton.handlers import MessagingHandler
from proton.reactor import Container

#: an amqp-value section holding a ``char`` whose code point is out of range: RabbitMQ
#: 3.10 stores and redelivers it as is; proton's ``Message.decode`` raises on it.
UNDECODABLE = b"\x00Sw\x73\x00\x11\x00\x00"


class _Send(MessagingHandler):
    def __init__(self, url: str, address: str, payloads: list[bytes]) -> None:
        super().__init__()
        self.url, self.address, self.payloads = url, address, list(payloads)
        self.outcomes: list[str] = []
        self.total = len(payloads)

    def on_start(self, event: Any) -> None:
        conn = event.container.connect(
            self.url, allowed_mechs="PLAIN", allow_insecure_mechs=True, reconnect=False
        )
        event.container.create_sender(conn, self.address)

    def on_sendable(self, event: Any) -> None:
        while self.payloads and event.sender.credit:
            event.sender.delivery(event.sender.delivery_tag())
            event.sender.stream(self.payloads.pop(0))
            event.sender.advance()

    def on_accepted(self, event: Any) -> None:
        self._done(event, "accepted")

    def on_rejected(self, event: Any) -> None:
        self._done(event, "rejected")

    def on_released(self, event: Any) -> None:
        self._done(event, "released")

    def _done(self, event: Any, what: str) -> None:
        self.outcomes.append(what)
        if len(self.outcomes) == self.total:
            event.connection.close()

    def on_transport_error(self, event: Any) -> None:
        self.outcomes.append(f"transport error {event.transport.condition}")
        event.connection.close()


def send_raw(url: str, address: str, payloads: list[bytes]) -> list[str]:
    """Send ``payloads`` (encoded messages) and return each one's outcome (blocking)."""
    handler = _Send(url, address, payloads)
    Container(handler).run()
    return handler.outcomes

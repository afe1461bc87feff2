"""A process for the outbox and inbox crash proofs (``test_outbox_proofs.py``).

``MODE=relay``: ``Manager.run()`` on an :class:`~loafer_postgres.relay.OutboxRelay` of
schema ``SCHEMA`` forwarding destination ``orders`` to RabbitMQ queue ``QUEUE``. With
``KILL_AFTER_CONFIRM=N`` its publisher kills the process (SIGKILL) right after the
broker confirmed the Nth publish, before the relay could delete that row (it writes
``confirmed <i>`` to ``EVENTS`` first, ``i`` from the body ``{"i": i, ...}``).

``MODE=inbox``: ``Manager.run()`` on a RabbitRoute of queue ``QUEUE`` with an
:class:`~loafer_postgres.inbox.Inbox`; the handler inserts ``(message)`` into
``SCHEMA.effects`` through the inbox's connection and writes ``begun N``. With
``KILL_IN_TRANSACTION=N`` it kills the process after that insert, before the commit;
with ``KILL_AFTER_COMMIT=N`` a middleware outside the inbox kills it once message N's
transaction committed, before the broker's ack.

Both log at INFO to stderr (the inbox logs each skipped duplicate).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from typing import Any

from loafer_core import Manager
from loafer_core.outcome import OutcomeKind
from loafer_postgres.inbox import Inbox
from loafer_postgres.relay import OutboxRelay
from loafer_rabbit import RabbitPublisher, RabbitRoute

ENV = os.environ


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class KillingPublisher:
    """A RabbitPublisher that dies right after the Nth confirm."""

    def __init__(self, publisher: RabbitPublisher, kill_after: int, events: Any) -> None:
        self.publisher, self.kill_after, self.events = publisher, kill_after, events
        self.confirmed = 0

    async def start(self) -> None:
        await self.publisher.start()

    async def close(self) -> None:
        await self.publisher.close()

    async def publish(self, body: Any, *, headers: Any = None, **options: Any) -> None:
        await self.publisher.publish(body, headers=headers, **options)
        self.confirmed += 1
        if self.confirmed == self.kill_after:
            self.events.write(f"confirmed {json.loads(body)['i']}\n")
            _kill()


def relay(events: Any) -> Manager:
    publisher: Any = RabbitPublisher(ENV["RABBIT_URL"], routing_key=ENV["QUEUE"])
    kill_after = int(ENV.get("KILL_AFTER_CONFIRM", "0"))
    if kill_after:
        publisher = KillingPublisher(publisher, kill_after, events)
    route = OutboxRelay(
        {"orders": publisher},
        url=ENV["POSTGRES_URL"],
        schema=ENV["SCHEMA"],
        lease=float(ENV.get("LEASE", "3")),
        poll_interval=1,
        max_concurrency=int(ENV.get("MAX_CONCURRENCY", "20")),
        id_option="message_id",
    )
    return Manager([route], shutdown_timeout=20)


def inbox(events: Any) -> Manager:
    table = f'"{ENV["SCHEMA"]}".effects'
    kill_in = int(ENV.get("KILL_IN_TRANSACTION", "-1"))
    kill_after = int(ENV.get("KILL_AFTER_COMMIT", "-1"))
    guard = Inbox(ENV["POSTGRES_URL"], schema=ENV["SCHEMA"], consumer="proof", pool_size=20)

    async def handler(content: Any, metadata: Any) -> None:
        n = int(content)
        events.write(f"begun {n} {os.getpid()}\n")
        await Inbox.connection().execute(f"INSERT INTO {table} (message) VALUES ($1)", n)
        await asyncio.sleep(0.005)
        if n == kill_in:
            _kill()  # mid-transaction: the insert is never committed

    async def killer(delivery: Any, route: Any, call_next: Any) -> Any:
        outcome = await call_next(delivery)
        if int(delivery.raw) == kill_after and outcome.kind is OutcomeKind.ACCEPT:
            _kill()  # committed by the inbox, not yet acked
        return outcome

    route = RabbitRoute(
        ENV["QUEUE"],
        url=ENV["RABBIT_URL"],
        handler=handler,
        translator=None,
        max_concurrency=int(ENV.get("MAX_CONCURRENCY", "10")),
        middleware=[killer, guard],
    )
    return Manager([route], shutdown_timeout=20)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    events = open(ENV["EVENTS"], "a", buffering=1)  # noqa: SIM115 - for the process's life
    manager = relay(events) if ENV["MODE"] == "relay" else inbox(events)
    manager.run()
    events.close()


if __name__ == "__main__":
    main()

"""The forwarding service the cross-broker proofs run (and SIGKILL) as a child process.

``python -m tests.forward_worker '<json config>'`` runs one route: it consumes the source
queue and forwards every message's content to the target queue, with the id header
copied, through :mod:`loafer_core.forward`. Fault injection, chosen by the test:

- ``{"kill": {"point": "a", "at": N}}``: at the N-th publish, hand the message to the
  target publisher, give it ``a_wait`` seconds to go out, and SIGKILL this process
  before the publish returned (the broker's confirm not seen);
- ``{"kill": {"point": "b", "at": N}}``: once the N-th message was handled and every
  publish of it confirmed (the route returned ACCEPT; with idempotency, its key marked),
  SIGKILL this process before the source settlement.

Each kill appends a JSON line to ``status`` first (the point, the message's id, and for
(a) whether the confirm had come anyway); a clean exit (SIGTERM, drained) appends the
counters. With ``redis``, an :class:`~loafer_core.idempotency.Idempotency` middleware
(Redis store) keyed on the id header runs inside the kill-(b) hook.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping
from typing import Any

from loafer_core import Manager, Outcome, Route
from loafer_core.forward import Publish
from loafer_core.idempotency import Idempotency, from_header
from loafer_core.middleware import Process
from loafer_core.provider import Delivery

ID = "fwd-id"  # no "x-" prefix: RabbitMQ maps those to AMQP 1.0 annotations
key_of = from_header(ID)


def make_provider(spec: Mapping[str, Any]) -> Any:
    """The provider consuming ``spec`` (a queue on rabbit, amqp, sqs or pubsub)."""
    kind = spec["kind"]
    if kind == "pubsub":
        from loafer_pubsub import PubSubProvider

        return PubSubProvider(spec["queue"], project=spec["project"], emulator_host=spec["host"])
    if kind == "rabbit":
        from loafer_rabbit import RabbitProvider

        return RabbitProvider(spec["queue"], url=spec["url"])
    if kind == "amqp":
        from loafer_amqp import AMQPProvider

        return AMQPProvider(url=spec["url"], address=f"/amq/queue/{spec['queue']}")
    from loafer_sqs import SQSProvider

    return SQSProvider(spec["queue"], {"WaitTimeSeconds": 1}, **spec["client"])


def make_publisher(spec: Mapping[str, Any]) -> Any:
    """A publisher to ``spec``'s queue."""
    kind = spec["kind"]
    if kind == "pubsub":
        from loafer_pubsub import PubSubPublisher

        return PubSubPublisher(spec["queue"], project=spec["project"], emulator_host=spec["host"])
    if kind == "rabbit":
        from loafer_rabbit import RabbitPublisher

        return RabbitPublisher(spec["url"], routing_key=spec["queue"], timeout=10)
    if kind == "amqp":
        from loafer_amqp import AMQPPublisher

        return AMQPPublisher(spec["url"], f"/amq/queue/{spec['queue']}", timeout=10)
    from loafer_sqs import SQSPublisher

    return SQSPublisher(spec["queue"], **spec["client"])


def note(path: str, record: Mapping[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(record) + "\n")
        out.flush()
        os.fsync(out.fileno())


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class KillBeforeConfirm:
    """Wraps the target publisher: the ``at``-th publish is sent, then the process dies."""

    def __init__(self, inner: Any, at: int, wait: float, status: str) -> None:
        self.inner = inner
        self.at = at
        self.wait = wait
        self.status = status
        self.count = 0

    def __getattr__(self, name: str) -> Any:  # connect/start/close/__aenter__: the inner's
        return getattr(self.inner, name)

    async def publish(
        self, body: Any, *, headers: Mapping[str, Any] | None = None, **options: Any
    ) -> None:
        self.count += 1
        if self.count != self.at:
            await self.inner.publish(body, headers=headers, **options)
            return
        sending = asyncio.ensure_future(self.inner.publish(body, headers=headers, **options))
        await asyncio.wait({sending}, timeout=self.wait)
        note(
            self.status,
            {"point": "a", "id": (headers or {}).get(ID), "confirmed": sending.done()},
        )
        die()


def kill_after_confirm(at: int, status: str) -> Any:
    """Middleware: the ``at``-th ACCEPT (publishes confirmed) kills before the settle."""
    accepted = 0

    async def middleware(delivery: Delivery, route: Route, call_next: Process) -> Outcome:
        nonlocal accepted
        outcome = await call_next(delivery)
        if outcome.is_accept:
            accepted += 1
            if accepted == at:
                note(status, {"point": "b", "id": key_of(delivery)})
                die()
        return outcome

    return middleware


async def forward(content: Any, metadata: Any) -> Publish:
    return Publish(content, headers={ID: str(content["id"])})


def main(config: Mapping[str, Any]) -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    status = config["status"]
    publisher = make_publisher(config["target"])
    kill = config.get("kill") or {}
    if kill.get("point") == "a":
        publisher = KillBeforeConfirm(publisher, kill["at"], config.get("a_wait", 0.005), status)
    middleware: list[Any] = []
    if kill.get("point") == "b":
        middleware.append(kill_after_confirm(kill["at"], status))
    idempotency = None
    store = None
    if config.get("redis"):
        from loafer_core.ext.redis_store import RedisStore

        store = RedisStore(config["redis"], prefix=config["prefix"])
        idempotency = Idempotency(store, key=ID, lock_ttl=5)
        middleware.append(idempotency)
    route = Route(
        make_provider(config["source"]),
        forward,
        name="forward",
        publish_to=publisher,
        middleware=middleware,
        max_concurrency=config.get("concurrency", 20),
    )
    manager = Manager([route], shutdown_timeout=10)
    if store is not None:
        manager.services.append(store)
    manager.run()
    note(
        status,
        {
            "point": "exit",
            "skipped": idempotency.skipped if idempotency else None,
            "busy": idempotency.busy if idempotency else None,
        },
    )


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))

"""Quickstart: a route on the embedded in-memory broker, end to end.

Run it with `bash scripts/quickstart.sh` (or `python examples/quickstart.py` once
loafer-core is installed).
"""

from __future__ import annotations

import asyncio
import json
import logging

from loafer_core import JSONTranslator, Manager, RejectMessage, RetryMessage, Route
from loafer_core.memory import MemoryBroker, MemoryProvider

attempts: dict[str, int] = {}


async def greet(content: dict[str, str], metadata: dict[str, object]) -> bool:
    """The handler: True (or None) accepts the message."""
    name = content["name"]
    if name == "flaky":
        attempts[name] = attempts.get(name, 0) + 1
        if attempts[name] < 3:
            raise RetryMessage(delay=0.1)  # a failed attempt: deliver again in 100 ms
    if name == "poison":
        raise RejectMessage("we never greet poison")  # dead-lettered, never redelivered
    print(f"hello, {name}! (attempt {metadata['attempt']})")
    return True


def on_error(exc_type: type[BaseException], exc: BaseException, message: object) -> bool:
    """Translation and handler errors land here; True accepts (drops) the message."""
    print(f"could not handle {message!r}: {exc}")
    return True


async def main() -> None:
    broker = MemoryBroker(history=100)
    for name in ("ada", "grace", "flaky", "poison"):
        broker.publish("greetings", json.dumps({"name": name}).encode())
    broker.publish("greetings", b"{not json")

    route = Route(
        MemoryProvider(broker, "greetings"),
        greet,
        translator=JSONTranslator(),
        error_handler=on_error,
        max_concurrency=10,
        max_attempts=5,
    )
    async with Manager([route]):
        await broker.wait_idle("greetings", timeout=10)

    outcomes = [repr(s.outcome) for s in broker.settlements("greetings")]
    dead = [(m.body, m.reject_reason) for m in broker.dead_letters("greetings")]
    print(f"settlements: {outcomes}")
    print(f"dead letters: {dead}")
    print("quickstart OK")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main())

"""A consumer process for the crash and shutdown tests: ``python consumer.py``.

Environment: ``QUEUE_URL``, ``EVENTS`` (a file: one ``start N``/``done N`` line per
event), ``HANDLER_SECONDS``, ``MAX_CONCURRENCY``, ``SHUTDOWN_TIMEOUT``, and the
standard AWS variables (credentials, region, ``AWS_ENDPOINT_URL``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from loafer_core import Manager
from loafer_sqs import SQSRoute

EVENTS = os.environ["EVENTS"]
SECONDS = float(os.environ.get("HANDLER_SECONDS", "0.2"))


def record(line: str) -> None:
    with open(EVENTS, "a", encoding="utf-8") as events:
        events.write(line + "\n")


async def handler(message: Any, metadata: Any) -> bool:
    record(f"start {message['i']}")
    await asyncio.sleep(SECONDS)  # the work
    record(f"done {message['i']}")
    return True


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    route = SQSRoute(
        os.environ["QUEUE_URL"],
        {"options": {"WaitTimeSeconds": 1}},
        handler=handler,
        max_concurrency=int(os.environ.get("MAX_CONCURRENCY", "10")),
    )
    Manager([route], shutdown_timeout=float(os.environ.get("SHUTDOWN_TIMEOUT", "30"))).run()


if __name__ == "__main__":
    main()

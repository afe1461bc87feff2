"""A consumer process for the crash and shutdown tests: ``Manager(...).run()`` on a
topic.

Each message body is ``{"i": N}``; the handler appends ``start N PID`` and ``done N PID``
lines to ``--log`` (one ``os.write`` per line, so a SIGKILL never leaves half a line),
sleeping ``--sleep`` seconds in between. At exit it writes ``abandoned K PID``
(deliveries a revocation abandoned) and ``exit 0 PID``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from typing import Any

from loafer_core import Manager
from loafer_kafka import KafkaRoute


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--shutdown-timeout", type=float, default=30.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")

    fd = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def record(event: str, n: int) -> None:
        os.write(fd, f"{event} {n} {os.getpid()}\n".encode())

    async def handler(content: Any, metadata: Any) -> bool:
        n = int(content["i"])
        record("start", n)
        if args.sleep:
            await asyncio.sleep(args.sleep)
        record("done", n)
        return True

    route = KafkaRoute(
        args.topic,
        url=args.url,
        idempotent=False,  # Tansu refuses the idempotent producer
        session_timeout=6,
        dead_letter_topic=None,
        handler=handler,
        max_concurrency=args.concurrency,
        poll_timeout=0.5,
    )
    record("ready", 0)
    Manager([route], shutdown_timeout=args.shutdown_timeout).run()
    record("abandoned", route.provider.abandoned)
    record("exit", 0)


if __name__ == "__main__":
    main()

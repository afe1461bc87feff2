"""A consumer process for the crash and shutdown tests: ``Manager(...).run()`` on one address.

Each message body is ``{"i": N}``; the handler appends ``start N PID`` and ``done N PID``
lines to ``--log`` (one ``os.write`` per line, so a SIGKILL never leaves half a line),
sleeping ``--sleep`` seconds in between. After ``--hang-after`` messages it writes
``hang N PID`` and blocks forever (to be killed mid-message). At exit it writes
``exit 0 PID`` and ``threads K PID``, K being the AMQP reactor threads still alive.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import threading
from typing import Any

from loafer_amqp import AMQPRoute
from loafer_core import Manager


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--address", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--hang-after", type=int, default=0)
    parser.add_argument("--shutdown-timeout", type=float, default=30.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")

    fd = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    handled = 0

    def record(event: str, n: int) -> None:
        os.write(fd, f"{event} {n} {os.getpid()}\n".encode())

    async def handler(content: Any, metadata: Any) -> bool:
        nonlocal handled
        n = int(content["i"])
        record("start", n)
        if args.hang_after and handled >= args.hang_after:
            record("hang", n)
            await asyncio.Event().wait()
        if args.sleep:
            await asyncio.sleep(args.sleep)
        handled += 1
        record("done", n)
        return True

    route = AMQPRoute(
        args.address,
        url=args.url,
        handler=handler,
        max_concurrency=args.concurrency,
        fetch_wait=1.0,
    )
    record("ready", 0)
    Manager([route], shutdown_timeout=args.shutdown_timeout).run()
    record("exit", 0)
    alive = [t for t in threading.enumerate() if t.name.startswith("loafer-amqp-")]
    record("threads", len(alive))


if __name__ == "__main__":
    main()

"""A consumer process for the crash and shutdown tests: ``Manager(...).run()`` on one queue.

Each message body is ``{"i": N}``; the handler appends ``start N`` and ``done N`` lines
to ``--log`` (one ``os.write`` per line, so a SIGKILL never leaves half a line), sleeping
``--sleep`` seconds in between. With ``--hang-after N``, handlers started once N are done
never finish (for the SIGKILL test).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from typing import Any

from loafer_core import Manager
from loafer_rabbit import RabbitRoute


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--headroom", type=int, default=0)
    parser.add_argument("--shutdown-timeout", type=float, default=30.0)
    parser.add_argument(
        "--hang-after", type=int, default=0, help="once N are done, handlers hang (to be killed)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")

    fd = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def record(event: str, n: int) -> None:
        os.write(fd, f"{event} {n} {os.getpid()}\n".encode())

    done = 0

    async def handler(content: Any, metadata: Any) -> bool:
        nonlocal done
        n = int(content["i"])
        record("start", n)
        if args.hang_after and done >= args.hang_after:
            record("hang", n)
            await asyncio.Event().wait()
        if args.sleep:
            await asyncio.sleep(args.sleep)
        done += 1
        record("done", n)
        return True

    route = RabbitRoute(
        args.queue,
        url=args.url,
        handler=handler,
        max_concurrency=args.concurrency,
        prefetch_headroom=args.headroom,
        connection_name=f"loafer-worker-{args.queue}",
        poll_timeout=1.0,
    )
    record("ready", 0)
    Manager([route], shutdown_timeout=args.shutdown_timeout).run()
    record("exit", 0)


if __name__ == "__main__":
    main()

"""A consumer process for the crash tests: ``Manager.run()`` on one PostgresRoute.

Environment: ``POSTGRES_URL``, ``SCHEMA``, ``QUEUE``, ``EVENTS`` (a file: one ``done N``
line per handled message), ``HANDLER_SECONDS`` (each handler's sleep),
``MAX_CONCURRENCY``, ``LEASE`` (seconds).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from loafer_core import Manager
from loafer_postgres import PostgresRoute


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    events = open(os.environ["EVENTS"], "a", buffering=1)  # noqa: SIM115 - for the process's life
    pause = float(os.environ.get("HANDLER_SECONDS", "0"))

    async def handler(content: Any, metadata: Any) -> bool:
        if pause:
            await asyncio.sleep(pause)
        events.write(f"done {content['i']}\n")
        return True

    route = PostgresRoute(
        os.environ["QUEUE"],
        url=os.environ["POSTGRES_URL"],
        schema=os.environ["SCHEMA"],
        handler=handler,
        max_concurrency=int(os.environ.get("MAX_CONCURRENCY", "20")),
        lease=float(os.environ.get("LEASE", "2")),
        poll_interval=1.0,
    )
    Manager([route], shutdown_timeout=20).run()
    events.close()


if __name__ == "__main__":
    main()

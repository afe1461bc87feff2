"""A rate limit shared through Redis holds across ``loafer run --workers 3``: three
processes consuming one RabbitMQ queue start, together, no more handlers per second
than the one bucket allows (within 10 %), and every message is handled."""

from __future__ import annotations

import json
import textwrap
import uuid
from pathlib import Path

import pytest

from tests.loafer_cli.projects import bodies, expected, handled
from tests.loafer_cli.runner import Service
from tests.loafer_rabbit.conftest import RabbitAdmin

RATE = 25  # per second, for the three workers together
COUNT = 200  # 8 s at the rate

CONFIG = textwrap.dedent(
    """
    [manager]
    shutdown_timeout = 10

    [[routes]]
    name = "limited"
    provider = "rabbit"
    queue = "${QUEUE}"
    handler = "limited:handle"
    max_concurrency = 8
    middleware = ["limited:rate_limit"]

    [routes.provider_options]
    url = "${RABBIT_URL}"
    """
)

MODULE = textwrap.dedent(
    """
    import logging
    import os
    import time

    from loafer_core.ext.redis_rate import RedisTokenBucket
    from loafer_core.ratelimit import RateLimit

    log = logging.getLogger("handlers")


    def rate_limit():
        bucket = RedisTokenBucket(
            os.environ["REDIS_URL"], key=os.environ["BUCKET"], rate=float(os.environ["RATE"]),
            burst=1,
        )
        return RateLimit(bucket=bucket)


    async def handle(message, metadata):
        log.info("handled %s by pid %d at %.6f", message["id"], os.getpid(), time.time())
    """
)


@pytest.mark.rabbit
@pytest.mark.redis
async def test_three_workers_share_one_rate_through_redis(
    tmp_path: Path, admin: RabbitAdmin, rabbit_url: str, redis_url: str
) -> None:
    import redis.asyncio

    queue = await admin.declare()
    bucket = f"workers-{uuid.uuid4().hex[:10]}"
    (tmp_path / "limited.py").write_text(MODULE)
    (tmp_path / "loafer.toml").write_text(CONFIG)
    env = {
        "QUEUE": queue,
        "RABBIT_URL": rabbit_url,
        "REDIS_URL": redis_url,
        "BUCKET": bucket,
        "RATE": str(RATE),
    }
    await admin.put_many(queue, [body.encode() for body in bodies("m", COUNT)])
    service = Service(["--config", "loafer.toml", "--workers", "3"], cwd=tmp_path, env=env)
    try:
        service.wait_until(
            lambda lines: len(handled(lines)["m"]) == COUNT, "every message handled", timeout=90
        )
        assert service.stop() == 0, "\n".join(service.lines[-30:])
    finally:
        service.kill()
        client = redis.asyncio.Redis.from_url(redis_url)
        await client.delete(f"loafer:rate:{bucket}")
        await client.aclose()
    assert handled(service.lines)["m"] == expected("m", COUNT)
    times, pids = [], set()
    for line in service.lines:
        if "handlers: handled " in line:
            words = line.split("handlers: handled ", 1)[1].split()
            pids.add(int(words[3]))
            times.append(float(words[5]))
    assert len(pids) == 3, f"the work was not shared by the three workers: {pids}"
    times.sort()
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert RATE * 0.9 <= rate <= RATE * 1.1, f"{rate:.1f} per second, the limit is {RATE}"
    # and no second held more than its share (a burst of one at most)
    per_second: dict[int, int] = {}
    for t in times:
        per_second[int(t - times[0])] = per_second.get(int(t - times[0]), 0) + 1
    assert max(per_second.values()) <= RATE + 2, json.dumps(per_second)

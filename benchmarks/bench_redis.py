"""Redis Streams benchmark: loafer (RedisRoute / RedisPublisher) vs raw redis-py, same run.

    python benchmarks/bench_redis.py                     # 50,000 messages, concurrency 100
    python benchmarks/bench_redis.py --messages 20000 --rounds 3
    python benchmarks/bench_redis.py --decode none --profile /tmp/redis.prof

Publishing: N entries ``XADD``-ed, raw redis-py pipelined (``--pipeline`` commands per
round trip, no transaction) vs ``RedisPublisher.publish_many`` (the same pipeline).

Consuming: the same N entries pre-published on a stream, read through a consumer group;
the raw side is the fastest simple redis-py loop (``XREADGROUP COUNT 100``, then one
``XACK`` for the batch); the loafer side is a ``RedisRoute`` with ``max_concurrency=100``
and a no-op async handler, run by a ``Manager``. Both are timed from connecting until
the XACK of the N-th entry has been answered (each side counts per XACK sent, not per
message). Two comparisons, each with the same work on both sides (``--decode``):

- ``none``: neither side decodes the body (the raw loop hands nothing on; the route has
  ``translator=PassThroughTranslator()``: the handler gets the body's bytes);
- ``json``: both decode each body as UTF-8 JSON (the raw loop ``json.loads`` it; the
  route uses the provider's default translator, ``RedisTranslator``).

Each comparison reads its own consumer group of the same two streams. With both, the
summary also gives the unequal comparison first reported (loafer decoding JSON, the raw
loop not), for reference.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis.asyncio
from redis.utils import HIREDIS_AVAILABLE

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from loafer_core import Manager
from loafer_core.translator import PassThroughTranslator
from loafer_redis import RedisProvider, RedisPublisher, RedisRoute

MODES = ("none", "json")


def group_of(mode: str) -> str:
    return f"bench-{mode}"


def bodies(n: int) -> list[bytes]:
    return [b'{"i": %d, "payload": "benchmark message"}' % i for i in range(n)]


async def prepare(url: str, modes: Sequence[str], *streams: str) -> None:
    async with redis.asyncio.Redis.from_url(url) as client:
        for stream in streams:
            for mode in modes:
                await client.xgroup_create(stream, group_of(mode), id="0", mkstream=True)


async def delete(url: str, *streams: str) -> None:
    async with redis.asyncio.Redis.from_url(url) as client:
        for stream in streams:
            await client.delete(stream, f"{stream}:dead", f"{stream}:delayed")


async def length(url: str, stream: str) -> int:
    async with redis.asyncio.Redis.from_url(url) as client:
        return int(await client.xlen(stream))


async def pending(url: str, stream: str, group: str) -> int:
    async with redis.asyncio.Redis.from_url(url) as client:
        return int((await client.xpending(stream, group))["pending"])


# -- publishing ---------------------------------------------------------------------------


async def raw_publish(url: str, stream: str, payloads: list[bytes], pipeline: int) -> float:
    started = time.perf_counter()
    async with redis.asyncio.Redis.from_url(url) as client:
        for start in range(0, len(payloads), pipeline):
            pipe = client.pipeline(transaction=False)
            for body in payloads[start : start + pipeline]:
                pipe.xadd(stream, {"body": body})
            await pipe.execute()
    return time.perf_counter() - started


async def loafer_publish(url: str, stream: str, payloads: list[bytes], pipeline: int) -> float:
    started = time.perf_counter()
    async with RedisPublisher(stream, url=url, pipeline=pipeline) as publisher:
        sent = await publisher.publish_many(payloads)
    assert sent == len(payloads)
    return time.perf_counter() - started


# -- consuming ----------------------------------------------------------------------------


async def raw_consume(url: str, stream: str, n: int, count: int, mode: str) -> float:
    decode = mode == "json"
    group = group_of(mode)
    started = time.perf_counter()
    done = 0
    async with redis.asyncio.Redis.from_url(url) as client:
        while done < n:
            reply = await client.xreadgroup(group, "raw", {stream: ">"}, count=count, block=1000)
            for _, entries in reply:
                ids = [entry_id for entry_id, _ in entries]
                if decode:
                    for _, fields in entries:
                        json.loads(fields[b"body"].decode("utf-8"))
                if ids:
                    await client.xack(stream, group, *ids)
                    done += len(ids)
    return time.perf_counter() - started


class CountingProvider(RedisProvider):
    """RedisProvider that signals when the XACK of the n-th entry has been answered
    (counted per XACK sent, as the raw loop counts: nothing added per message)."""

    def __init__(self, *args: Any, n: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.target = n
        self.acked = 0
        self.done = asyncio.Event()

    def _acked(self, count: int) -> None:  # called as each XACK is answered
        self.acked += count
        if self.acked >= self.target:
            self.done.set()


async def loafer_consume(url: str, stream: str, n: int, concurrency: int, mode: str) -> float:
    async def handler(content: Any, metadata: Any) -> None:
        return None

    group = group_of(mode)
    options: dict[str, Any] = {} if mode == "json" else {"translator": PassThroughTranslator()}
    route = RedisRoute(
        stream, url=url, group=group, handler=handler, max_concurrency=concurrency, **options
    )
    provider = CountingProvider(stream, url=url, group=group, n=n)
    route.provider = provider  # same options, with an acknowledgement counter
    started = time.perf_counter()
    async with Manager([route]) as manager:
        await manager.wait_started()
        await provider.done.wait()
        elapsed = time.perf_counter() - started
    return elapsed


# -- main ---------------------------------------------------------------------------------


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f} msg/s"


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--concurrency", type=int, default=100, help="loafer max_concurrency")
    parser.add_argument("--count", type=int, default=100, help="raw XREADGROUP COUNT")
    parser.add_argument("--pipeline", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--decode",
        choices=(*MODES, "both"),
        default="both",
        help="consume comparisons: bodies not decoded, JSON-decoded (both sides), or both",
    )
    parser.add_argument(
        "--profile", help="write a cProfile of the loafer consume(s) only to this file"
    )
    args = parser.parse_args()
    n = args.messages
    modes = MODES if args.decode == "both" else (args.decode,)
    payloads = bodies(n)
    keys = ["pub_raw", "pub_loafer"] + [f"{s}_{m}" for m in modes for s in ("raw", "loafer")]
    results: dict[str, list[float]] = {k: [] for k in keys}
    profiler: Any = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
    print(
        f"redis-py {redis.__version__}, hiredis {'installed' if HIREDIS_AVAILABLE else 'absent'}",
        flush=True,
    )
    for round_ in range(1, args.rounds + 1):
        raw_s = f"bench-raw-{uuid.uuid4().hex[:8]}"
        loafer_s = f"bench-loafer-{uuid.uuid4().hex[:8]}"
        await prepare(args.url, modes, raw_s, loafer_s)
        got: dict[str, float] = {}
        try:
            # Alternate which side goes first, so drift on a shared machine evens out.
            raw_first = bool(round_ % 2)
            if raw_first:
                got["pub_raw"] = await raw_publish(args.url, raw_s, payloads, args.pipeline)
                got["pub_loafer"] = await loafer_publish(
                    args.url, loafer_s, payloads, args.pipeline
                )
            else:
                got["pub_loafer"] = await loafer_publish(
                    args.url, loafer_s, payloads, args.pipeline
                )
                got["pub_raw"] = await raw_publish(args.url, raw_s, payloads, args.pipeline)
            assert await length(args.url, raw_s) == n and await length(args.url, loafer_s) == n
            for mode in modes:
                for side in ("raw", "loafer") if raw_first else ("loafer", "raw"):
                    if side == "raw":
                        got[f"raw_{mode}"] = await raw_consume(args.url, raw_s, n, args.count, mode)
                        continue
                    if profiler is not None:
                        profiler.enable()
                    got[f"loafer_{mode}"] = await loafer_consume(
                        args.url, loafer_s, n, args.concurrency, mode
                    )
                    if profiler is not None:
                        profiler.disable()
                assert await pending(args.url, loafer_s, group_of(mode)) == 0, (
                    "loafer left entries pending"
                )
        finally:
            await delete(args.url, raw_s, loafer_s)
        for key in keys:
            results[key].append(got[key])
        line = [
            f"round {round_}: publish raw {rate(n, got['pub_raw'])}, "
            f"loafer {rate(n, got['pub_loafer'])} ({got['pub_raw'] / got['pub_loafer']:.2f}x)"
        ]
        for mode in modes:
            raw, loafer = got[f"raw_{mode}"], got[f"loafer_{mode}"]
            line.append(
                f"consume+ack decode={mode}: raw {rate(n, raw)}, loafer {rate(n, loafer)} "
                f"({raw / loafer:.2f}x)"
            )
        print("; ".join(line), flush=True)
    if profiler is not None:
        profiler.dump_stats(args.profile)
    med = {k: statistics.median(v) for k, v in results.items()}

    def ratios(raw: str, loafer: str) -> str:
        per_round = [r / lo for r, lo in zip(results[raw], results[loafer], strict=True)]
        return (
            f"ratio {med[raw] / med[loafer]:.2f}x (median of rounds "
            f"{statistics.median(per_round):.2f}x; rounds "
            f"{', '.join(f'{r:.2f}' for r in per_round)})"
        )

    print()
    print(
        f"{n:,} entries, loafer max_concurrency {args.concurrency}, raw XREADGROUP COUNT "
        f"{args.count}, publish pipeline {args.pipeline}, {args.rounds} round(s), medians:"
    )
    print(
        f"  publish (XADD):  raw redis-py {rate(n, med['pub_raw'])}, "
        f"RedisPublisher {rate(n, med['pub_loafer'])}, "
        f"{ratios('pub_raw', 'pub_loafer')}; target >= 0.9x"
    )
    for mode in modes:
        what = "no decoding" if mode == "none" else "JSON decoding on both sides"
        print(
            f"  consume and ack, {what}: raw redis-py {rate(n, med[f'raw_{mode}'])}, "
            f"RedisRoute {rate(n, med[f'loafer_{mode}'])}, "
            f"{ratios(f'raw_{mode}', f'loafer_{mode}')}; target >= 0.7x"
        )
    if len(modes) == 2:
        # the comparison first reported: loafer decoding JSON, the raw loop not (unequal work)
        print(
            f"  (loafer decoding JSON vs raw not decoding: {rate(n, med['loafer_json'])} vs "
            f"{rate(n, med['raw_none'])}, {ratios('raw_none', 'loafer_json')})"
        )


if __name__ == "__main__":
    asyncio.run(main())

"""Core benchmark: the framework on the memory provider vs a bare asyncio loop, same run.

    python benchmarks/bench_core.py [--messages 200000] [--concurrency 100] [--repeat 3]
    nox -s bench -- core

Prints messages/s for each side and the ratio (framework / bare). Parts:

1. async no-op handler: framework vs an asyncio.Queue feeding N worker tasks, fed by a
   producer (the target's baseline) and, for reference, pre-filled (then a single worker
   drains it without a task switch); vs the memory broker alone (the ceiling for any
   dispatcher on it) and vs a hand-written consumer of the memory broker;
2. plain sync handler: framework (its route's threads) vs workers calling
   asyncio.to_thread; and a handler blocking 5 ms, vs to_thread and vs an executor with a
   thread per worker;
3. JSON translator cost: JSON bodies through JSONTranslator vs the same with no translator;
4. memory: 1,000,000 messages through one route, fed so the backlog stays under 10,000,
   peak RSS of a fresh process;
5. tracing (``--parts tracing``): OpenTelemetry consumer spans (the SDK, a batch span
   processor and an exporter that drops the spans) against the plain route, with
   messages that carry no trace context and with messages that do (a ``traceparent``
   header each); ``metrics+tracing``: both against the plain route.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pydantic

from loafer_core import JSONTranslator, Manager, Route
from loafer_core.memory import MemoryBroker, MemoryProvider


async def noop(content: Any, metadata: Any) -> bool:
    return True


def sync_noop(content: Any, metadata: Any) -> bool:
    return True


def sync_blocking(content: Any, metadata: Any) -> bool:
    """A sync handler waiting on I/O for 5 ms (an HTTP call, a query)."""
    time.sleep(0.005)
    return True


async def bare_async(n: int, concurrency: int) -> float:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    count = 0
    done = asyncio.Event()
    meta: dict[str, Any] = {}

    async def worker() -> None:
        nonlocal count
        while True:
            item = await queue.get()
            await noop(item, meta)
            count += 1
            if count == n:
                done.set()

    start = time.perf_counter()
    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    await done.wait()
    elapsed = time.perf_counter() - start
    for w in workers:
        w.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    return n / elapsed


async def bare_async_fed(n: int, concurrency: int) -> float:
    """A feeder task puts into an asyncio.Queue bounded at the concurrency; N workers."""
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=concurrency)
    count = 0
    done = asyncio.Event()
    meta: dict[str, Any] = {}

    async def feeder() -> None:
        for i in range(n):
            await queue.put(i)

    async def worker() -> None:
        nonlocal count
        while True:
            item = await queue.get()
            await noop(item, meta)
            count += 1
            if count == n:
                done.set()

    start = time.perf_counter()
    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    workers.append(asyncio.create_task(feeder()))
    await done.wait()
    elapsed = time.perf_counter() - start
    for w in workers:
        w.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    return n / elapsed


async def bare_thread(
    n: int, concurrency: int, handler: Callable[..., Any] = sync_noop, threads: int | None = None
) -> float:
    """N workers calling asyncio.to_thread (the default executor), or, with ``threads``,
    run_in_executor on a ThreadPoolExecutor of that many threads."""
    loop = asyncio.get_running_loop()
    pool = None if threads is None else ThreadPoolExecutor(threads)
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    count = 0
    done = asyncio.Event()
    meta: dict[str, Any] = {}

    async def worker() -> None:
        nonlocal count
        while True:
            item = await queue.get()
            if pool is None:
                await asyncio.to_thread(handler, item, meta)
            else:
                await loop.run_in_executor(pool, handler, item, meta)
            count += 1
            if count == n:
                done.set()

    start = time.perf_counter()
    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    await done.wait()
    elapsed = time.perf_counter() - start
    for w in workers:
        w.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    if pool is not None:
        pool.shutdown()
    return n / elapsed


async def raw_broker(n: int, concurrency: int) -> float:
    """A hand-written consumer of the same memory broker: fetch, handle, ACCEPT."""
    from loafer_core import ACCEPT

    broker = MemoryBroker()
    broker.publish_many("bench", list(range(1, n + 1)))
    provider = MemoryProvider(broker, "bench", wait=1.0)
    await provider.start(concurrency)
    queue: asyncio.Queue[Any] = asyncio.Queue()
    count = 0
    done = asyncio.Event()
    slots = asyncio.Semaphore(concurrency)

    async def fetcher() -> None:
        while True:
            await slots.acquire()
            free = 1
            while free < concurrency and not slots.locked():
                await slots.acquire()
                free += 1
            for d in await provider.fetch(free):
                queue.put_nowait(d)

    async def worker() -> None:
        nonlocal count
        while True:
            d = await queue.get()
            await noop(d.raw, d.metadata)
            await provider.settle(d, ACCEPT)
            slots.release()
            count += 1
            if count == n:
                done.set()

    start = time.perf_counter()
    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    tasks.append(asyncio.create_task(fetcher()))
    await done.wait()
    elapsed = time.perf_counter() - start
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return n / elapsed


async def broker_floor(n: int, concurrency: int) -> float:
    """The memory broker alone: one coroutine fetches, handles and settles, nothing else.

    No dispatcher can consume this broker faster (it does at least this work per message),
    so this is the ceiling of ``loafer / bare loop`` on the memory provider.
    """
    from loafer_core import ACCEPT

    broker = MemoryBroker()
    broker.publish_many("bench", list(range(1, n + 1)))
    provider = MemoryProvider(broker, "bench", wait=0)
    await provider.start(concurrency)
    count = 0
    start = time.perf_counter()
    while count < n:
        for d in await provider.fetch(concurrency):
            await noop(d.raw, d.metadata)
            await provider.settle(d, ACCEPT)
            count += 1
    return n / (time.perf_counter() - start)


async def framework(
    n: int,
    concurrency: int,
    handler: Callable[..., Any],
    *,
    bodies: list[Any] | None = None,
    translator: Any = None,
    middleware: list[Any] | None = None,
    metrics: bool = False,
    headers: dict[str, Any] | None = None,
) -> float:
    broker = MemoryBroker()
    if headers is None:
        broker.publish_many("bench", bodies if bodies is not None else list(range(1, n + 1)))
    else:
        for body in bodies if bodies is not None else range(1, n + 1):
            broker.publish("bench", body, headers=headers)
    count = 0
    done = asyncio.Event()
    is_async = asyncio.iscoroutinefunction(handler)

    if is_async:

        @functools.wraps(handler)  # keeps a typed handler's annotations (see typed_part)
        async def counting(content: Any, metadata: Any) -> Any:
            nonlocal count
            result = await handler(content, metadata)
            count += 1
            if count == n:
                done.set()
            return result

        wrapped: Callable[..., Any] = counting
    else:
        loop = asyncio.get_running_loop()
        counter = itertools.count(1)  # next() on it is atomic under the GIL

        def counting_sync(content: Any, metadata: Any) -> Any:
            result = handler(content, metadata)
            if next(counter) == n:
                loop.call_soon_threadsafe(done.set)
            return result

        wrapped = counting_sync
    route = Route(
        MemoryProvider(broker, "bench", wait=1.0),
        wrapped,
        translator=translator,
        max_concurrency=concurrency,
        middleware=middleware,
    )
    manager = Manager([route])
    if metrics:
        from loafer_core.metrics import PrometheusMetrics

        PrometheusMetrics().install(manager)
    start = time.perf_counter()
    async with manager:
        await done.wait()
        elapsed = time.perf_counter() - start
    return n / elapsed


class Rounds(list[float]):
    """One side's msg/s, one figure per round; ``best`` is the highest."""

    @property
    def best(self) -> float:
        return max(self)


def paired(runs: int, *fns: Callable[[], float]) -> list[Rounds]:
    """Each side's figure per round, the sides alternating round by round (fairer on a
    noisy machine than all the runs of one side, then all of the other)."""
    results = [Rounds() for _ in fns]
    for _ in range(runs):
        for i, fn in enumerate(fns):
            results[i].append(fn())
    return results


def ratio(a: Rounds, b: Rounds) -> float:
    """The median over rounds of a/b: each round's two figures were measured moments
    apart, so a burst of noise on the machine moves both; one bad round cannot decide."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def peak_rss_mb() -> float:
    """Peak RSS of this process (VmHWM: unlike ru_maxrss it is not inherited over exec)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_part(total: int) -> None:
    async def main() -> None:
        broker = MemoryBroker()
        broker.declare("mem")
        handled = 0
        done = asyncio.Event()

        async def handler(content: Any, metadata: Any) -> bool:
            nonlocal handled
            handled += 1
            if handled == total:
                done.set()
            return True

        route = Route(MemoryProvider(broker, "mem", wait=1.0), handler, max_concurrency=100)
        peak_backlog = 0
        async with Manager([route]):
            sent = 0
            while sent < total:
                depth = broker.depth("mem")
                if depth < 2_500:  # top up to 5,000
                    chunk = min(5_000 - depth, total - sent)
                    broker.publish_many("mem", [b'{"payload": "0123456789"}'] * chunk)
                    sent += chunk
                peak_backlog = max(peak_backlog, broker.depth("mem"))
                await asyncio.sleep(0)
            await done.wait()
        rss_mb = peak_rss_mb()
        print(json.dumps({"handled": handled, "peak_backlog": peak_backlog, "rss_mb": rss_mb}))

    asyncio.run(main())


def run(coro: Any) -> float:
    return asyncio.run(coro)


def async_part(n: int, c: int, r: int) -> None:
    bare, fed, raw_b, floor, fw = paired(
        r,
        lambda: run(bare_async(n, c)),
        lambda: run(bare_async_fed(n, c)),
        lambda: run(raw_broker(n, c)),
        lambda: run(broker_floor(n, c)),
        lambda: run(framework(n, c, noop)),
    )
    print(f"async no-op, {n} msgs, concurrency {c} (best round; ratios: median of rounds):")
    print(
        f"  bare loop, fed queue (max {c:>3})  : {fed.best:>10,.0f} msg/s  (the target's baseline)"
    )
    print(f"  bare loop, queue pre-filled      : {bare.best:>10,.0f} msg/s  (one worker drains it)")
    print(f"  memory broker alone (the floor)  : {floor.best:>10,.0f} msg/s")
    print(f"  raw memory-broker consumer       : {raw_b.best:>10,.0f} msg/s")
    print(f"  loafer (memory provider)         : {fw.best:>10,.0f} msg/s")
    per_round = ", ".join(f"{x / y:.2f}" for x, y in zip(fw, fed, strict=True))
    print(f"  ratio loafer / fed loop          : {ratio(fw, fed):.2f} (target >= 0.70)")
    print(f"    per round: {per_round}")
    print(
        f"  ratio loafer / pre-filled loop   : {ratio(fw, bare):.2f} (the broker alone: "
        f"{ratio(floor, bare):.2f}; see docs/benchmarks.md)"
    )
    print(f"  ratio loafer / broker alone      : {ratio(fw, floor):.2f} (dispatcher's own cost)")
    print(f"  ratio loafer / raw broker        : {ratio(fw, raw_b):.2f}")


def sync_part(sn: int, c: int, r: int) -> None:
    bare_t, fw_t = paired(
        r, lambda: run(bare_thread(sn, c)), lambda: run(framework(sn, c, sync_noop))
    )
    print(f"sync no-op, {sn} msgs, concurrency {c}:")
    print(f"  bare to_thread loop: {bare_t.best:>9,.0f} msg/s")
    print(
        f"  loafer (memory)    : {fw_t.best:>9,.0f} msg/s   ratio {ratio(fw_t, bare_t):.2f} "
        "(target >= 0.80)"
    )
    bn = max(1, sn // 10)
    default_t, sized_t, fw_b = paired(
        r,
        lambda: run(bare_thread(bn, c, sync_blocking)),
        lambda: run(bare_thread(bn, c, sync_blocking, threads=c)),
        lambda: run(framework(bn, c, sync_blocking)),
    )
    print(f"sync handler blocking 5 ms, {bn} msgs, concurrency {c}:")
    print(f"  bare to_thread loop (default executor): {default_t.best:>7,.0f} msg/s")
    print(f"  bare loop on a {c}-thread executor     : {sized_t.best:>7,.0f} msg/s")
    print(
        f"  loafer (memory)                       : {fw_b.best:>7,.0f} msg/s   ratio "
        f"{ratio(fw_b, default_t):.2f} / {ratio(fw_b, sized_t):.2f}"
    )


def json_part(n: int, c: int, r: int) -> None:
    bodies = [b'{"id": 12345, "name": "loafer", "tags": ["a", "b"], "ok": true}'] * n
    raw, js = paired(
        r,
        lambda: run(framework(n, c, noop, bodies=bodies)),
        lambda: run(framework(n, c, noop, bodies=bodies, translator=JSONTranslator())),
    )
    per_msg_us = statistics.median((1 / j - 1 / b) * 1e6 for j, b in zip(js, raw, strict=True))
    print(
        f"JSON translator, {n} msgs: no translator {raw.best:,.0f} msg/s, JSONTranslator "
        f"{js.best:,.0f} msg/s: {per_msg_us:.1f} us per message (median of rounds)"
    )


async def passthrough(delivery: Any, route: Any, call_next: Any) -> Any:
    """A middleware that does nothing but call the rest of the chain."""
    return await call_next(delivery)


def middleware_part(n: int, c: int, r: int) -> None:
    """The cost of middleware: an empty chain (``middleware=[]``, no wrapper is built) and
    one pass-through middleware, against the plain route, in the same run."""
    plain, empty, one = paired(
        r,
        lambda: run(framework(n, c, noop)),
        lambda: run(framework(n, c, noop, middleware=[])),
        lambda: run(framework(n, c, noop, middleware=[passthrough])),
    )
    per_msg_us = statistics.median((1 / o - 1 / p) * 1e6 for o, p in zip(one, plain, strict=True))
    print(
        f"middleware, {n} msgs: plain route {plain.best:,.0f} msg/s; empty chain "
        f"{empty.best:,.0f} msg/s (ratio {ratio(empty, plain):.2f}); one pass-through "
        f"{one.best:,.0f} msg/s (ratio {ratio(one, plain):.2f}, {per_msg_us:.2f} us per "
        "message, median of rounds)"
    )


class Order(pydantic.BaseModel):
    """The typed part's model: five fields."""

    id: int
    name: str
    tags: list[str]
    ok: bool
    total: float


def typed_part(n: int, c: int, r: int) -> None:
    """A handler typed with a pydantic model of 5 fields against the plain JSON route."""

    async def typed(order: Order, metadata: Any) -> bool:  # Order: module level, to resolve
        return True

    bodies = [b'{"id": 12345, "name": "loafer", "tags": ["a", "b"], "ok": true, "total": 9.5}'] * n
    plain, model = paired(
        r,
        lambda: run(framework(n, c, noop, bodies=bodies, translator=JSONTranslator())),
        lambda: run(framework(n, c, typed, bodies=bodies, translator=JSONTranslator())),
    )
    per_msg_us = statistics.median((1 / m - 1 / p) * 1e6 for m, p in zip(model, plain, strict=True))
    print(
        f"typed handler, {n} msgs: JSON route {plain.best:,.0f} msg/s, pydantic model of 5 "
        f"fields {model.best:,.0f} msg/s (ratio {ratio(model, plain):.2f}, {per_msg_us:.1f} us "
        "per message, median of rounds)"
    )


def metrics_part(n: int, c: int, r: int) -> None:
    """The cost of Prometheus metrics (``PrometheusMetrics().install(manager)``, no
    server) against the plain route, in the same run."""
    plain, measured = paired(
        r,
        lambda: run(framework(n, c, noop)),
        lambda: run(framework(n, c, noop, metrics=True)),
    )
    per_msg_us = statistics.median(
        (1 / m - 1 / p) * 1e6 for m, p in zip(measured, plain, strict=True)
    )
    print(
        f"metrics, {n} msgs: plain route {plain.best:,.0f} msg/s; with metrics "
        f"{measured.best:,.0f} msg/s (ratio {ratio(measured, plain):.2f}, {per_msg_us:.2f} us "
        "per message, median of rounds)"
    )


def tracer_provider() -> Any:
    """The OpenTelemetry SDK as an application sets it up (a batch span processor), with
    an exporter that drops the spans: the cost measured is making them."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Dropping(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    # a queue that holds a whole run: no span dropped (the default 2,048 fills while the
    # export thread waits for the interpreter, and dropped spans would cost less)
    provider.add_span_processor(BatchSpanProcessor(Dropping(), max_queue_size=1_000_000))
    return provider


def tracing_part(n: int, c: int, r: int, with_metrics: bool) -> None:
    """The cost of OpenTelemetry consumer spans (``middleware=[tracing()]``) against the
    plain route, in the same run; with ``with_metrics``, metrics and tracing together."""
    from loafer_core.ext.otel import tracing

    provider = tracer_provider()
    traced = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    if with_metrics:
        plain, both = paired(
            r,
            lambda: run(framework(n, c, noop)),
            lambda: run(
                framework(n, c, noop, metrics=True, middleware=[tracing(tracer_provider=provider)])
            ),
        )
        per_msg_us = statistics.median(
            (1 / b - 1 / p) * 1e6 for b, p in zip(both, plain, strict=True)
        )
        print(
            f"metrics+tracing, {n} msgs: plain route {plain.best:,.0f} msg/s; metrics and "
            f"tracing {both.best:,.0f} msg/s (ratio {ratio(both, plain):.2f}, "
            f"{per_msg_us:.1f} us per message, median of rounds)"
        )
        return
    plain, roots, children = paired(
        r,
        lambda: run(framework(n, c, noop)),
        lambda: run(framework(n, c, noop, middleware=[tracing(tracer_provider=provider)])),
        lambda: run(
            framework(n, c, noop, middleware=[tracing(tracer_provider=provider)], headers=traced)
        ),
    )
    root_us = statistics.median((1 / t - 1 / p) * 1e6 for t, p in zip(roots, plain, strict=True))
    child_us = statistics.median(
        (1 / t - 1 / p) * 1e6 for t, p in zip(children, plain, strict=True)
    )
    print(
        f"tracing, {n} msgs: plain route {plain.best:,.0f} msg/s; traced, no context in the "
        f"messages {roots.best:,.0f} msg/s (ratio {ratio(roots, plain):.2f}, {root_us:.1f} us "
        f"per message); traced, a traceparent in each {children.best:,.0f} msg/s (ratio "
        f"{ratio(children, plain):.2f}, {child_us:.1f} us per message; target >= 0.50; "
        "median of rounds)"
    )


def memory_report(total: int) -> None:
    out = subprocess.run(
        [sys.executable, __file__, "--memory-only", "--memory-messages", str(total)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    mem = json.loads(out.strip().splitlines()[-1])
    print(
        f"memory: {mem['handled']:,} msgs through one route, backlog <= "
        f"{mem['peak_backlog']:,}: peak RSS {mem['rss_mb']:.1f} MB (target < 150)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--sync-messages", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--memory-messages", type=int, default=1_000_000)
    parser.add_argument(
        "--parts",
        default="async,sync,json,middleware,typed,metrics,memory",
        help="comma-separated parts to run (default: all of "
        "async,sync,json,middleware,typed,metrics,memory; also tracing, metrics+tracing: "
        "they need opentelemetry-sdk)",
    )
    parser.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_only:
        memory_part(args.memory_messages)
        return
    n, c, r = args.messages, args.concurrency, args.repeat
    parts = set(args.parts.split(","))
    unknown = parts - {
        "async",
        "sync",
        "json",
        "middleware",
        "typed",
        "metrics",
        "memory",
        "tracing",
        "metrics+tracing",
    }
    if unknown:
        parser.error(f"--parts: unknown part(s) {', '.join(sorted(unknown))}")

    print(f"python {sys.version.split()[0]}, {r} alternating rounds")
    if "async" in parts:
        async_part(n, c, r)
    if "sync" in parts:
        sync_part(args.sync_messages, c, r)
    if "json" in parts:
        json_part(n, c, r)
    if "middleware" in parts:
        middleware_part(n, c, r)
    if "typed" in parts:
        typed_part(n, c, r)
    if "metrics" in parts:
        metrics_part(n, c, r)
    if "tracing" in parts:
        tracing_part(n, c, r, with_metrics=False)
    if "metrics+tracing" in parts:
        tracing_part(n, c, r, with_metrics=True)
    if "memory" in parts:
        memory_report(args.memory_messages)


if __name__ == "__main__":
    main()

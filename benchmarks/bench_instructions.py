"""Core benchmark in instructions, not seconds: deterministic on a noisy machine.

    python benchmarks/bench_instructions.py [--small 20000] [--large 40000]
    nox -s bench -- instructions

Runs each side of ``bench_core.py``'s async no-op comparison under ``valgrind
--tool=callgrind`` at two message counts and reports instructions per message: the
difference between the two runs divided by the difference in messages, so interpreter
start-up cancels out; the cost of putting the messages on the queue (before the timed
part in ``bench_core.py``) is measured the same way and subtracted. Instructions are not
time (cache misses and branch mispredictions differ), but the same binary, input and
environment give the same count whatever else the machine is doing, so a change's
effect shows even when wall-clock rounds vary by 30%.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

SIDES = {
    "bare": ("bare loop, queue pre-filled", "queue"),
    "fed": ("bare loop, fed queue", None),
    "floor": ("memory broker alone (the floor)", "broker"),
    "raw": ("raw memory-broker consumer", "broker"),
    "loafer": ("loafer (memory provider)", "broker"),
    "metrics": ("loafer with Prometheus metrics", "broker"),
}


def run_side(side: str, n: int, concurrency: int) -> None:
    """Run one side in this process (the child that valgrind watches)."""
    sys.path.insert(0, str(HERE))
    import bench_core

    from loafer_core.memory import MemoryBroker

    if side == "setup-queue":
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(n):
            queue.put_nowait(i)
        return
    if side == "setup-broker":
        MemoryBroker().publish_many("bench", list(range(n)))
        return
    coro = {
        "bare": lambda: bench_core.bare_async(n, concurrency),
        "fed": lambda: bench_core.bare_async_fed(n, concurrency),
        "floor": lambda: bench_core.broker_floor(n, concurrency),
        "raw": lambda: bench_core.raw_broker(n, concurrency),
        "loafer": lambda: bench_core.framework(n, concurrency, bench_core.noop),
        "metrics": lambda: bench_core.framework(n, concurrency, bench_core.noop, metrics=True),
    }[side]()
    asyncio.run(coro)


def count(side: str, n: int, concurrency: int) -> int:
    """Instructions of a fresh interpreter running ``side`` with ``n`` messages."""
    out = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            __file__,
            "--child",
            side,
            str(n),
            str(concurrency),
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    match = re.search(r"refs:\s+([\d,]+)", out.stderr)
    if match is None:
        raise SystemExit(f"no instruction count from valgrind:\n{out.stderr[-2000:]}")
    return int(match.group(1).replace(",", ""))


def per_message(side: str, small: int, large: int, concurrency: int) -> float:
    return (count(side, large, concurrency) - count(side, small, concurrency)) / (large - small)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=20_000)
    parser.add_argument("--large", type=int, default=40_000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        side, n, c = args.child
        run_side(side, int(n), int(c))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    small, large, c = args.small, args.large, args.concurrency
    setup = {
        "queue": per_message("setup-queue", small, large, c),
        "broker": per_message("setup-broker", small, large, c),
    }
    results: dict[str, float] = {}
    print(f"python {sys.version.split()[0]}, instructions per message ({small:,} vs {large:,})")
    for side, (label, kind) in SIDES.items():
        total = per_message(side, small, large, c)
        results[side] = total - (setup[kind] if kind else 0.0)
        print(f"  {label:<34}: {results[side]:>9,.0f} instructions/msg")
    loafer = results["loafer"]
    print("  ratios (the other side's instructions / loafer's: higher is better for loafer)")
    for side in ("bare", "fed", "floor", "raw"):
        print(f"    loafer / {SIDES[side][0]:<32}: {results[side] / loafer:.2f}")
    print(f"    {SIDES['metrics'][0]} / loafer: {loafer / results['metrics']:.2f} (throughput)")


if __name__ == "__main__":
    main()

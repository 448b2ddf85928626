"""Throughput of StoreWriter.commit() under concurrent callers (not a test).

    python -m tests.store.bench_store_writer [--tasks 100] [--seconds 5] [--synchronous FULL]

Each task loops: commit one PutSubscription (the op a SUBSCRIBE refresh
persists before its 2xx), measuring the wait. Prints ops/s, batch sizes and
latencies.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import trio

from presencex.store.writer import PutSubscription, StoreWriter

from .store_factories import make_subscription


async def run(tasks: int, seconds: float, synchronous: str, path: str) -> None:
    writer = StoreWriter(path, synchronous=synchronous)
    latencies: list[float] = []
    done = 0

    async def caller(n: int, deadline: float) -> None:
        nonlocal done
        i = 0
        while trio.current_time() < deadline:
            i += 1
            op = PutSubscription(make_subscription(n * 1_000_000 + i % 1000, local_cseq=i))
            started = time.perf_counter()
            await writer.commit([op])
            latencies.append(time.perf_counter() - started)
            done += 1

    async with trio.open_nursery() as nursery:
        await nursery.start(writer.serve)
        started = time.perf_counter()
        deadline = trio.current_time() + seconds
        with trio.fail_after(seconds + 30):
            async with trio.open_nursery() as callers:
                for n in range(tasks):
                    callers.start_soon(caller, n, deadline)
        elapsed = time.perf_counter() - started
        nursery.cancel_scope.cancel()
    stats = writer.statistics()
    latencies.sort()
    print(f"synchronous={synchronous} tasks={tasks} seconds={elapsed:.2f}")
    print(f"  ops/s through commit(): {done / elapsed:,.0f} ({done} ops)")
    print(
        f"  batches: {stats.batches}, mean size {stats.ops / stats.batches:.1f},"
        f" max {stats.max_batch_size}, failures {stats.failures}"
    )
    print(
        f"  transaction time: mean {1000 * stats.commit_seconds_total / stats.batches:.2f} ms,"
        f" max {1000 * stats.commit_seconds_max:.2f} ms"
    )
    print(
        f"  commit() latency: p50 {1000 * statistics.median(latencies):.2f} ms,"
        f" p99 {1000 * latencies[int(len(latencies) * 0.99)]:.2f} ms,"
        f" max {1000 * latencies[-1]:.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--synchronous", default="FULL")
    parser.add_argument("--db", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.db or str(Path(tmp) / "bench.db")
        trio.run(run, args.tasks, args.seconds, args.synchronous, path)


if __name__ == "__main__":
    main()

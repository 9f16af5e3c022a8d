"""What the Prometheus metrics cost the hot paths: ``JexClient.get`` and
``ArchiveWriter.add`` with a real :class:`~collector.ops.metrics.Metrics` and with one whose
methods do nothing, in one process, as ratios; then each hook alone and one scrape.

    .venv/bin/python bench/bench_metrics.py [--requests 2000] [--adds 5000] [--rounds 5]

Requests go through ``httpx.MockTransport`` (no network: the client's own work is what
is measured, so the ratio is the worst case; a real request also waits milliseconds
for the exchange). Rounds alternate between the two variants; the best of each is kept.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
from bench_wal import depth_table, trades_table
from prometheus_client import generate_latest

from collector.collect.jobs import RoundResult
from collector.exchange import endpoints
from collector.exchange.budget import WeightBudget
from collector.exchange.client import JexClient
from collector.ops.metrics import Metrics, RoundResultLike
from collector.storage.writer import ArchiveWriter


class NoMetrics(Metrics):
    """The baseline: every hook does nothing."""

    def request(self, endpoint: str, status: int | str) -> None: ...
    def used_weight(self, used: int) -> None: ...
    def rate_limited(self, status: int) -> None: ...
    def retry(self, endpoint: str, reason: str) -> None: ...
    def watch_budget(self, limits: Callable[[], tuple[int, int]]) -> None: ...
    def written(self, dataset: str, market: str, rows: int) -> None: ...
    def flush_failed(self, dataset: str) -> None: ...
    def flushed(self, seconds: float) -> None: ...
    def watch_buffers(self, rows: Callable[[], dict[str, int]]) -> None: ...
    def watch_wal(self, size: Callable[[], int]) -> None: ...
    def quarantined(self, endpoint: str, kind: str) -> None: ...
    def quarantine_dropped(self, endpoint: str, kind: str) -> None: ...
    def job_rounds(self, job: str, reports: Iterable[RoundResultLike]) -> None: ...


def answer(request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        200,
        json={"lastUpdateId": 1, "bids": [["1.0", "2.0"]], "asks": [["1.1", "3.0"]]},
        headers={"X-MBX-USED-WEIGHT-1M": "17"},
    )


async def requests(metrics: Metrics, count: int) -> float:
    """Seconds per ``get``."""
    async with JexClient(
        "https://jex.test",
        transport=httpx.MockTransport(answer),
        budget=WeightBudget(limit=10**9, burst_s=60, start_fill=1.0),  # never waits
        metrics=metrics,
    ) as client:
        started = time.perf_counter()
        for _ in range(count):
            await client.get(endpoints.DEPTH, market="spot", params={"symbol": "BTCUSDT"})
        return (time.perf_counter() - started) / count


def adds(metrics: Metrics, count: int, directory: Path) -> float:
    """Seconds per ``add`` (the shapes bench_wal.py uses: depth, trades, one-row ticker)."""
    writer = ArchiveWriter(directory, metrics=metrics)
    tables = [depth_table(1), trades_table(1), depth_table(2).slice(0, 1)]
    started = time.perf_counter()
    for index in range(count):
        writer.add("depth" if index % 3 != 1 else "trades", tables[index % 3])
    return (time.perf_counter() - started) / count


def per_call(action: Callable[[], Any], count: int = 20_000) -> float:
    started = time.perf_counter()
    for _ in range(count):
        action()
    return (time.perf_counter() - started) / count


def compare(name: str, measure: Callable[[Metrics], float], rounds: int) -> None:
    best: dict[str, float] = {"with": float("inf"), "without": float("inf")}
    for _ in range(rounds):
        best["without"] = min(best["without"], measure(NoMetrics()))
        best["with"] = min(best["with"], measure(Metrics()))
    print(
        f"{name}: {best['without'] * 1e6:.1f} us without metrics, {best['with'] * 1e6:.1f} us "
        f"with: {best['with'] / best['without']:.3f}x "
        f"({(best['with'] - best['without']) * 1e6:+.2f} us)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--adds", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    compare(
        "JexClient.get (MockTransport)",
        lambda m: asyncio.run(requests(m, args.requests)),
        args.rounds,
    )
    with tempfile.TemporaryDirectory() as tmp:
        compare("ArchiveWriter.add", lambda m: adds(m, args.adds, Path(tmp)), args.rounds)

    metrics = Metrics()
    reports = [
        RoundResult("depth", market, 3, 120, ms=12.0) for market in ("spot", "option", "contract")
    ]
    hooks: dict[str, Callable[[], Any]] = {
        "request(path, 200)": lambda: metrics.request("/api/v1/spot/depth", 200),
        "used_weight(17)": lambda: metrics.used_weight(17),
        "written(dataset, market, rows)": lambda: metrics.written("trades", "spot", 50),
        "job_rounds(job, 3 markets)": lambda: metrics.job_rounds("depth", reports),
    }
    print("one hook alone:")
    for name, hook in hooks.items():
        print(f"  {name:32} {per_call(hook) * 1e6:.2f} us")

    # A scrape of a registry about as full as the daemon's (the simulator's 13 instruments).
    with tempfile.TemporaryDirectory() as tmp:
        writer = ArchiveWriter(tmp, metrics=metrics)
        for index in range(3000):  # about a 30 s flush interval of the default schedule
            writer.add("depth", depth_table(index))
        for path in range(30):
            metrics.request(f"/api/v1/spot/endpoint{path}", 200)
        for job in range(12):
            metrics.job_rounds(f"job{job}", reports)
        held = per_call(writer.buffered_rows, 200)
        scrape = per_call(lambda: generate_latest(metrics.registry), 200)
        size = len(generate_latest(metrics.registry))
    print(
        f"one scrape: {scrape * 1e3:.2f} ms ({size} bytes); of which reading the writer's "
        f"buffer sizes (3000 tables, under its lock): {held * 1e3:.3f} ms"
    )


if __name__ == "__main__":
    main()

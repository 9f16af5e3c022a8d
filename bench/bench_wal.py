"""What the write-ahead log costs ``ArchiveWriter.add``: the same tables added with and
without it, in one process, as a ratio.

    .venv/bin/python bench/bench_wal.py [--adds 5000] [--dir PATH]

Tables are the shapes the jobs add: a depth snapshot (20 levels a side = 40 rows), a
page of trades (50 rows) and a one-row ticker. ``--dir`` picks the disk (default: a
temporary directory). The daemon's once-a-second fsync (``sync``) is timed apart: it
runs in a worker thread, not in ``add``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from collector import datasets
from collector.storage.writer import ArchiveWriter

T0 = 1_764_000_000_000


def depth_table(received_ms: int) -> pa.Table:
    rows = 40
    return pa.table(
        {
            "market": ["spot"] * rows,
            "symbol": ["BTCUSDT"] * rows,
            "received_at": [received_ms] * rows,
            "update_id": [received_ms] * rows,
            "side": ["bid"] * 20 + ["ask"] * 20,
            "level": [i % 20 for i in range(rows)],
            "price": [100.0 + i for i in range(rows)],
            "qty": [1.0] * rows,
        },
        schema=datasets.get("depth").schema,
    )


def trades_table(first_id: int) -> pa.Table:
    rows = 50
    return pa.table(
        {
            "market": ["spot"] * rows,
            "symbol": ["BTCUSDT"] * rows,
            "trade_id": list(range(first_id, first_id + rows)),
            "time": [T0 + first_id + i for i in range(rows)],
            "price": [100.0] * rows,
            "qty": [0.5] * rows,
            "is_buyer_maker": [True] * rows,
            "received_at": [T0 + first_id + rows] * rows,
        },
        schema=datasets.get("trades").schema,
    )


def ticker_table(received_ms: int) -> pa.Table:
    return pa.table(
        {"market": ["spot"], "symbol": ["BTCUSDT"], "received_at": [received_ms], "price": [1.0]},
        schema=datasets.get("ticker_price").schema,
    )


def timed_adds(writer: ArchiveWriter, tables: list[tuple[str, pa.Table]]) -> float:
    """Seconds per add, over every table."""
    started = time.perf_counter()
    for name, table in tables:
        writer.add(name, table)
    return (time.perf_counter() - started) / len(tables)


def best_of(runs: int, measure: Callable[[], float]) -> float:
    return min(measure() for _ in range(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adds", type=int, default=5000, help="adds per measurement")
    parser.add_argument("--runs", type=int, default=5, help="measurements (best is kept)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write")
    args = parser.parse_args()
    tables = [
        item
        for i in range(args.adds // 3 + 1)
        for item in (
            ("depth", depth_table(T0 + i)),
            ("trades", trades_table(i * 50)),
            ("ticker_price", ticker_table(T0 + i)),
        )
    ][: args.adds]
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        results: dict[str, float] = {}
        syncs: list[float] = []
        for label, wal in (("without WAL", False), ("with WAL", True)):

            def measure(wal: bool = wal, label: str = label) -> float:
                root = Path(scratch) / f"{label.replace(' ', '-')}-{time.perf_counter_ns()}"
                writer = ArchiveWriter(root, wal=wal)
                seconds = timed_adds(writer, tables)
                if wal:
                    started = time.perf_counter()
                    writer.sync()
                    syncs.append(time.perf_counter() - started)
                writer.close()
                return seconds

            results[label] = best_of(args.runs, measure)
    rows = sum(t.num_rows for _, t in tables) / len(tables)
    without, with_wal = results["without WAL"], results["with WAL"]
    print(f"{len(tables)} adds of {rows:.0f} rows on average, best of {args.runs} runs")
    print(f"add() without WAL: {without * 1e6:7.1f} us")
    print(f"add() with WAL:    {with_wal * 1e6:7.1f} us")
    extra_us = (with_wal - without) * 1e6
    print(f"ratio with/without: {with_wal / without:.1f}x  (+{extra_us:.1f} us per add)")
    print(f"sync() after {len(tables)} adds: median {statistics.median(syncs) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()

"""Benchmark (Delta Lake issue): flush commits, today's partitions against a closed day,
compaction time, and the size of the Delta log.

    .venv/bin/python bench/delta.py [--hours 2] [--out /tmp/bench-delta] [--json F]

Builds ``--hours`` of the default schedule's flushes (every 30 s, every dataset and
market, synthetic rows at the simulator's rates: ``bench/compaction.py``'s generator)
with the daemon's writer, and runs the daemon's compaction pass every 10 minutes (the
open-partition policy of ``collector/storage/compaction.py``), timing:

* each flush (one Delta commit per dataset: file writes and the commit), and the
  commit alone for one dataset;
* each compaction pass (merges of today's flush files, whole rewrites, vacuum and
  checkpoint);
* the same queries on that archive ("today": partitions compacted through the day)
  and on a copy compacted as a closed day (one sorted file per partition, strongest
  encodings), both through ``collector.read.catalog`` (DuckDB ``delta_scan``) in this
  process, best of ``--repeat``; the ratio is the figure (machines here are noisy);
* the closed-day compaction of the whole archive;
* files a query opens per dataset and market, and the ``_delta_log`` folder's size.
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import compaction as day_bench  # bench/compaction.py: the day's synthetic flushes
from common import machine, table, timed, write_json

from collector import datasets
from collector.read import catalog
from collector.storage import compaction, delta
from collector.storage.writer import ArchiveWriter

#: The daemon's compaction interval (storage.compact_every) in flushes of 30 s.
COMPACT_EVERY_FLUSHES = 20

QUERIES = {
    "trades vwap by symbol": (
        "SELECT market, symbol, sum(price * qty) / sum(qty) AS vwap, count(*) AS n "
        "FROM trades GROUP BY ALL ORDER BY ALL"
    ),
    "trades last hour, one symbol": (
        "SELECT count(*), avg(price) FROM trades WHERE market = 'spot' "
        "AND symbol = 'BTCUSDT' AND time >= (SELECT max(time) FROM trades) - INTERVAL 1 HOUR"
    ),
    "depth top of book": (
        "SELECT market, symbol, side, avg(price) AS price, count(*) AS n FROM depth "
        "WHERE level = 0 GROUP BY ALL ORDER BY ALL"
    ),
    "book_ticker spread": (
        "SELECT market, symbol, avg(ask_price - bid_price) AS spread FROM book_ticker "
        "GROUP BY ALL ORDER BY ALL"
    ),
}


def build(data_dir: Path, flushes: int) -> dict[str, Any]:
    """The day's flushes with the daemon's compaction every COMPACT_EVERY_FLUSHES."""
    clock = [day_bench.DAY_START_MS]
    writer = ArchiveWriter(data_dir, clock_ms=lambda: clock[0])
    synthetic = day_bench.Synthetic(1)
    rows: Counter[tuple[str, str]] = Counter()
    flush_s: list[float] = []
    passes_s: list[float] = []
    commits = 0
    for index in range(flushes):
        start = day_bench.DAY_START_MS + index * day_bench.FLUSH_MS
        end = start + day_bench.FLUSH_MS
        for market, symbol, per_hour in day_bench.INSTRUMENTS:
            for poll in day_bench.POLLS:
                if market not in datasets.get(poll.dataset).markets:
                    continue
                times = [t for t in range(start, end, 1000) if t % poll.every_ms == 0]
                if times:
                    rows_table = synthetic.table(poll.dataset, market, symbol, times, poll.rows)
                    writer.add(poll.dataset, rows_table)
                    rows[(poll.dataset, market)] += rows_table.num_rows
            count = int(per_hour * (index + 1) * day_bench.FLUSH_MS / 3_600_000) - int(
                per_hour * index * day_bench.FLUSH_MS / 3_600_000
            )
            if count:
                times = sorted(int(t) for t in synthetic.rng.integers(start, end, count))
                trades = synthetic.table("trades", market, symbol, times)
                writer.add("trades", trades)
                rows[("trades", market)] += trades.num_rows
        clock[0] = end
        started = time.perf_counter()
        result = writer.flush()
        flush_s.append(time.perf_counter() - started)
        if result.errors:
            raise result.errors[0]
        commits += len({Path(f).parts[-4] for f in result.files})
        if index % COMPACT_EVERY_FLUSHES == COMPACT_EVERY_FLUSHES - 1:
            started = time.perf_counter()
            report = compaction.compact_archive(data_dir, closed_before_ms=clock[0] - 86_400_000)
            passes_s.append(time.perf_counter() - started)
            if report.errors:
                raise RuntimeError(report.errors[0])
    return {
        "rows": {f"{name}/{market}": count for (name, market), count in rows.items()},
        "flushes": flushes,
        "commits": commits,
        "flush_median_s": statistics.median(flush_s),
        "flush_p95_s": sorted(flush_s)[int(len(flush_s) * 0.95)],
        "compaction_passes": len(passes_s),
        "compaction_pass_median_s": statistics.median(passes_s) if passes_s else 0.0,
        "compaction_pass_max_s": max(passes_s, default=0.0),
    }


def commit_alone(data_dir: Path, repeat: int = 50) -> dict[str, float]:
    """One dataset's small flush (100 trades): file write and commit, then the commit
    of an empty action list, on the archive as built (its log as long as the day's)."""
    writer = ArchiveWriter(data_dir)
    schema = datasets.get("trades").schema
    base = day_bench.DAY_START_MS
    flush_times = []
    for k in range(repeat):
        n = 100
        rows = pa.table(
            {
                "market": ["spot"] * n,
                "symbol": ["BENCH"] * n,
                "trade_id": list(range(k * n, (k + 1) * n)),
                "time": [base + k * n + i for i in range(n)],
                "price": [1.0] * n,
                "qty": [1.0] * n,
                "is_buyer_maker": [True] * n,
                "received_at": [base] * n,
            },
            schema=schema,
        )
        writer.add("trades", rows)
        started = time.perf_counter()
        writer.flush()
        flush_times.append(time.perf_counter() - started)
    table_ = delta.open_table(data_dir, "trades")
    assert table_ is not None
    commit_times = []
    for _ in range(repeat):
        started = time.perf_counter()
        table_.update_incremental()
        delta.commit(table_, "trades", [])
        commit_times.append(time.perf_counter() - started)
    return {
        "one_dataset_flush_median_s": statistics.median(flush_times),
        "commit_only_median_s": statistics.median(commit_times),
    }


def files_per_group(data_dir: Path) -> dict[str, int]:
    most: dict[str, int] = {}
    for name, table_ in delta.tables(data_dir):
        counts = Counter((f.partition.market, f.partition.date) for f in delta.files(table_, name))
        most[name] = max(counts.values(), default=0)
    return most


def log_sizes(data_dir: Path) -> dict[str, tuple[int, int]]:
    return {name: delta.log_size(data_dir, name) for name in datasets.DATASETS}


def query_times(data_dir: Path, repeat: int) -> dict[str, float]:
    found = {}
    for label, sql in QUERIES.items():
        best, _, _ = timed(lambda sql=sql: catalog.query(data_dir, sql), repeat)
        found[label] = best
    return found


def same(left: pa.Table, right: pa.Table) -> bool:
    """Equal rows, floats within a relative 1e-9."""
    if left.num_rows != right.num_rows or left.column_names != right.column_names:
        return False
    for a, b in zip(left.to_pylist(), right.to_pylist(), strict=True):
        for name in left.column_names:
            x, y = a[name], b[name]
            if isinstance(x, float) and isinstance(y, float):
                if not math.isclose(x, y, rel_tol=1e-9):
                    return False
            elif x != y:
                return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench-delta"))  # noqa: S108
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    today = args.out / "today"
    closed = args.out / "closed"
    flushes = int(args.hours * 3600 / 30)

    started = time.perf_counter()
    built = build(today, flushes)
    build_s = time.perf_counter() - started
    shutil.copytree(today, closed)
    started = time.perf_counter()
    report = compaction.compact_archive(closed, retention_hours=0)
    closed_compaction_s = time.perf_counter() - started
    assert not report.errors, report.errors

    # Same rows on both sides, or the comparison means nothing (float sums over rows in
    # another order differ in the 15th digit).
    for sql in QUERIES.values():
        assert same(catalog.query(today, sql), catalog.query(closed, sql)), sql
    today_s = query_times(today, args.repeat)
    closed_s = query_times(closed, args.repeat)
    commits = commit_alone(args.out / "commit")

    print(f"{flushes} flushes ({args.hours:g} h of the default schedule), built in {build_s:.1f} s")
    print(
        f"flush (every dataset, one commit each): median {built['flush_median_s'] * 1000:.0f} ms, "
        f"p95 {built['flush_p95_s'] * 1000:.0f} ms; one dataset's flush of 100 trades: "
        f"{commits['one_dataset_flush_median_s'] * 1000:.1f} ms, of which the commit "
        f"{commits['commit_only_median_s'] * 1000:.1f} ms"
    )
    print(
        f"compaction passes through the day: {built['compaction_passes']}, median "
        f"{built['compaction_pass_median_s']:.2f} s, max {built['compaction_pass_max_s']:.2f} s; "
        f"closing the day (every partition rewritten, vacuum): {closed_compaction_s:.2f} s"
    )
    rows = [
        [label, today_s[label] * 1000, closed_s[label] * 1000, today_s[label] / closed_s[label]]
        for label in QUERIES
    ]
    print(table(["query", "today ms", "closed day ms", "ratio"], rows))
    today_files = files_per_group(today)
    closed_files = files_per_group(closed)
    print(
        table(
            ["dataset", "files (today)", "files (closed)", "log files", "log bytes"],
            [
                [name, today_files.get(name, 0), closed_files.get(name, 0), *log_sizes(today)[name]]
                for name in datasets.DATASETS
            ],
        )
    )
    write_json(
        args.json,
        {
            "machine": machine(),
            "hours": args.hours,
            "build": built,
            "commit": commits,
            "closed_compaction_s": closed_compaction_s,
            "query_today_s": today_s,
            "query_closed_s": closed_s,
            "files_today": today_files,
            "files_closed": closed_files,
            "log": log_sizes(today),
        },
    )


if __name__ == "__main__":
    main()

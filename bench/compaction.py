"""Benchmark: a day of the default schedule's flushes, then one compaction pass.

    .venv/bin/python bench/compaction.py                 # 2880 flushes: one day
    .venv/bin/python bench/compaction.py --flushes 60    # half an hour

Builds the archive with ArchiveWriter and a fake clock (one flush every 30 s from
midnight UTC), with the simulator's 13 instruments (3 spot, 2 contract, 8 options) and
row counts per flush that follow schedules.yaml: depth every 10 s (20 levels a side),
trades every 5 s (the simulator's trades per hour), book ticker and indices every 10 s,
ticker price every 30 s, klines (1m and 1h), 24-hour ticker, average price, contract
info and protection fund every minute, funding every 10 minutes, instruments every 5.
Values are synthetic (random walks rounded like prices) but have each dataset's schema.

Prints files, rows and bytes before and after per dataset and market, the time of the
compaction pass against a baseline measured in the same process (reading every file
once with pyarrow, and a DuckDB scan of every view before and after), and the peak
RSS. Nothing is asserted: tests/test_compaction.py runs a small version.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import run_main

from collector import datasets
from collector.read import catalog
from collector.storage import compaction, delta
from collector.storage.writer import ArchiveWriter

DAY_START_MS = int(dt.datetime(2025, 11, 24, tzinfo=dt.UTC).timestamp() * 1000)
FLUSH_MS = 30_000
MINUTE_MS = 60_000

#: (market, symbol, trades per hour): the simulator's instruments.
INSTRUMENTS: list[tuple[str, str, int]] = [
    ("spot", "BTCUSDT", 7200),
    ("spot", "ETHUSDT", 3600),
    ("spot", "JEXUSDT", 1800),
    ("contract", "BTCUSDT", 5400),
    ("contract", "ETHUSDT", 2700),
    *[
        ("option", f"BTC1128{kind}{strike}", 360)
        for strike in (88000, 92000)
        for kind in ("C", "P")
    ],
    *[
        ("option", f"BTC1205{kind}{strike}", 360)
        for strike in (88000, 92000)
        for kind in ("C", "P")
    ],
]


@dataclass(frozen=True)
class Poll:
    """One dataset's rows per poll: every ``every_ms``, ``rows`` per symbol."""

    dataset: str
    every_ms: int
    rows: int = 1


POLLS = [
    Poll("depth", 10_000, 40),  # limit 20: 20 bids + 20 asks
    Poll("book_ticker", 10_000),
    Poll("indices_price", 10_000),
    Poll("ticker_price", 30_000),
    Poll("ticker_24hr", 60_000),
    Poll("avg_price", 60_000),
    Poll("contract_info", 60_000),
    Poll("protection_fund", 60_000),  # one fund record a minute
    Poll("funding_rate", 600_000),  # one funding event every 10 minutes
    Poll("instruments", 300_000),
]


class Synthetic:
    """Rows with a dataset's schema: keys unique, values like prices and quantities."""

    def __init__(self, seed: int = 1) -> None:
        self.rng = np.random.default_rng(seed)
        self.next_id: Counter[tuple[str, str, str]] = Counter()
        self.price: dict[tuple[str, str], float] = {}

    def table(
        self,
        name: str,
        market: str,
        symbol: str,
        times: list[int],
        per_time: int = 1,
        interval: str = "1m",
    ) -> pa.Table:
        spec = datasets.get(name)
        n = len(times) * per_time
        when = np.repeat(np.array(times, dtype=np.int64), per_time)
        mid = self._walk(market, symbol, n)
        columns: dict[str, Any] = {}
        for column in spec.columns:
            columns[column.name] = self._column(name, column, market, symbol, n, when, mid)
        if name == "klines":
            columns["interval"] = [interval] * n
        if name == "depth":  # per_time rows a snapshot: half bids, half asks, by level
            half = per_time // 2
            columns["side"] = (["bid"] * half + ["ask"] * half) * len(times)
            columns["level"] = pa.array(list(range(half)) * 2 * len(times), pa.int16())
        return pa.table(columns, schema=spec.schema)

    def _walk(self, market: str, symbol: str, n: int) -> np.ndarray:
        start = self.price.get((market, symbol), 1000.0 + 100 * len(symbol))
        path = start * np.exp(np.cumsum(self.rng.normal(0, 0.0002, n)))
        self.price[(market, symbol)] = float(path[-1])
        return np.round(path, 2)

    def _column(
        self,
        name: str,
        column: datasets.Column,
        market: str,
        symbol: str,
        n: int,
        when: np.ndarray,
        mid: np.ndarray,
    ) -> Any:
        spec = datasets.get(name)
        if column.name == "market":
            return [market] * n
        if column.name == "symbol":
            return [symbol] * n
        if column.name == spec.time_column or column.name == "received_at":
            return pa.array(when, pa.int64()).cast(datasets.TIMESTAMP)
        if column.name in ("trade_id", "id", "update_id"):
            key = (name, market, symbol)
            first = self.next_id[key] + 1
            self.next_id[key] += n
            return np.arange(first, first + n, dtype=np.int64)
        if column.type == pa.string():
            return ["TRADING" if column.name == "status" else "USDT"] * n
        if column.type == datasets.TIMESTAMP:
            return pa.array(when + 60_000, pa.int64()).cast(datasets.TIMESTAMP)
        if column.type == pa.bool_():
            return self.rng.random(n) < 0.5
        if column.type == pa.int64():
            return self.rng.integers(1, 500, n)
        if "qty" in column.name or "volume" in column.name:
            return np.round(self.rng.exponential(0.5, n), 4)
        return np.round(mid * (1 + self.rng.normal(0, 0.0005, n)), 2)


def build(data_dir: Path, flushes: int, *, seed: int = 1) -> dict[tuple[str, str], int]:
    """Write ``flushes`` flush rounds from midnight UTC; return rows per dataset, market."""
    clock = [DAY_START_MS]
    writer = ArchiveWriter(data_dir, clock_ms=lambda: clock[0])
    synthetic = Synthetic(seed)
    rows: Counter[tuple[str, str]] = Counter()
    for index in range(flushes):
        start = DAY_START_MS + index * FLUSH_MS
        end = start + FLUSH_MS
        for market, symbol, per_hour in INSTRUMENTS:
            for poll in POLLS:
                if market not in datasets.get(poll.dataset).markets:
                    continue
                times = [t for t in range(start, end, 1000) if t % poll.every_ms == 0]
                if times:
                    table = synthetic.table(poll.dataset, market, symbol, times, poll.rows)
                    _add(writer, rows, poll.dataset, table)
            # Trades: the simulator's rate, spread over the 30 s.
            count = int(per_hour * (index + 1) * FLUSH_MS / 3_600_000) - int(
                per_hour * index * FLUSH_MS / 3_600_000
            )
            if count:
                times = sorted(int(t) for t in synthetic.rng.integers(start, end, count))
                _add(writer, rows, "trades", synthetic.table("trades", market, symbol, times))
            # Klines: the minute that closed, and the hour that closed.
            if start % MINUTE_MS == 0 and start > DAY_START_MS:
                closed = [synthetic.table("klines", market, symbol, [start - MINUTE_MS])]
                if start % 3_600_000 == 0:
                    closed.append(
                        synthetic.table("klines", market, symbol, [start - 3_600_000], 1, "1h")
                    )
                _add(writer, rows, "klines", pa.concat_tables(closed))
        clock[0] = end
        result = writer.flush()
        if result.errors:
            raise result.errors[0]
    return dict(rows)


def _add(writer: ArchiveWriter, rows: Counter[tuple[str, str]], name: str, table: pa.Table) -> None:
    writer.add(name, table)
    rows[(name, table["market"][0].as_py())] += table.num_rows


def current_files(data_dir: Path) -> list[tuple[str, delta.DataFile]]:
    """(dataset, file) of every table's current version, from the Delta log: a glob
    would also find the files compaction replaced, until they are vacuumed."""
    return [
        (name, file)
        for name, table in delta.tables(data_dir.resolve())
        for file in delta.files(table, name)
    ]


def files_by_group(data_dir: Path) -> dict[tuple[str, str], tuple[int, int]]:
    """(files, bytes) per dataset and market, as readers see them."""
    found: dict[tuple[str, str], tuple[int, int]] = {}
    for name, file in current_files(data_dir):
        key = (name, file.partition.market)
        files, size = found.get(key, (0, 0))
        found[key] = (files + 1, size + file.size)
    return found


def read_every_file(data_dir: Path) -> int:
    rows = 0
    root = data_dir.resolve()
    for name, file in current_files(data_dir):
        rows += pq.read_table(delta.file_path(root, name, file.path)).num_rows
    return rows


def scan_views(data_dir: Path) -> None:
    with catalog.connect(data_dir) as connection:
        for name in datasets.DATASETS:
            connection.execute(f"SELECT count(*), count(DISTINCT symbol) FROM {name}").fetchall()  # noqa: S608


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flushes", type=int, default=2880, help="flush rounds (2880: a day)")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a temporary dir")
    parser.add_argument("--keep", action="store_true", help="keep the archive afterwards")
    args = parser.parse_args()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="bench-compaction-"))
    try:
        run(data_dir, args.flushes)
    finally:
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)


def run(data_dir: Path, flushes: int) -> None:
    started = time.perf_counter()
    build(data_dir, flushes)
    built_s = time.perf_counter() - started
    before = files_by_group(data_dir)
    print(f"built {sum(f for f, _ in before.values())} files in {built_s:.0f} s ({data_dir})")
    print(f"peak RSS after building: {peak_rss_mb():.0f} MB")

    started = time.perf_counter()
    rows = read_every_file(data_dir)
    read_before_s = time.perf_counter() - started
    started = time.perf_counter()
    scan_views(data_dir)
    scan_before_s = time.perf_counter() - started
    print(
        f"baseline: read every file once {read_before_s:.2f} s ({rows} rows); "
        f"DuckDB scan of every view {scan_before_s:.2f} s"
    )
    print(f"peak RSS after the baseline: {peak_rss_mb():.0f} MB")

    started = time.perf_counter()
    report = compaction.compact_archive(data_dir, retention_hours=0)
    compact_s = time.perf_counter() - started
    print(
        f"compaction: {compact_s:.2f} s = {compact_s / read_before_s:.1f} x the baseline read; "
        f"{report.summary()}"
    )
    print(f"peak RSS after compaction: {peak_rss_mb():.0f} MB")

    after = files_by_group(data_dir)
    started = time.perf_counter()
    read_every_file(data_dir)
    read_after_s = time.perf_counter() - started
    started = time.perf_counter()
    scan_views(data_dir)
    scan_after_s = time.perf_counter() - started
    print(f"after: read every file once {read_after_s:.2f} s; DuckDB scan {scan_after_s:.2f} s")
    print()
    print(f"{'dataset':<16}{'market':<10}{'files':>16}{'rows':>22}{'MB':>18}")
    for key in sorted(before):
        group = report.groups.get(key)
        files_b, bytes_b = before[key]
        files_a, bytes_a = after.get(key, (0, 0))
        rows_text = f"{group.rows_before} -> {group.rows_after}" if group else ""
        print(
            f"{key[0]:<16}{key[1]:<10}{f'{files_b} -> {files_a}':>16}{rows_text:>22}"
            f"{f'{bytes_b / 1e6:.1f} -> {bytes_a / 1e6:.1f}':>18}"
        )
    total_b = sum(b for _, b in before.values())
    total_a = sum(b for _, b in after.values())
    files = f"{sum(f for f, _ in before.values())} -> {sum(f for f, _ in after.values())}"
    print(f"{'total':<26}{files:>16}{'':>22}{f'{total_b / 1e6:.1f} -> {total_a / 1e6:.1f}':>18}")


if __name__ == "__main__":
    run_main(main)

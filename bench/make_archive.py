"""A realistic month-sized archive for the storage, view and loader benchmarks (issue 5).

    .venv/bin/python bench/make_archive.py --days 30 --out /tmp/bench-archive
    .venv/bin/python bench/make_archive.py --days 1 --scale 0.05 --out /tmp/tiny   # tests

The rows are the simulator's market (``collector.sim.market``), generated with its
own vectorized hour blocks: prices on each instrument's tick grid around its mid
path, lot-size quantities, its trade arrival process (uniform times in the hour),
its 13 instruments (3 spot, 2 contract, 8 weekly options, listed and expired as the
simulator does). Trade rates are the simulator's times ``--scale`` (default 2, so
that spot BTCUSDT has 10.4 million trades in 30 days and the month 34 million).

* trades: every trade, ``received_at`` the first 10 s poll after the trade plus a
  20-200 ms response time (what ``historicalTrades`` every 10 s gives);
* depth: 20-level snapshots every 10 s (the shipped schedule) from the simulator's
  book model, for ``--depth-symbols`` only (default spot BTCUSDT, spot ETHUSDT and
  contract BTCUSDT: 1 million rows a day; every symbol would be 4.5 million);
* klines: ``1m`` for every symbol, computed from the trades as the simulator does
  (an empty minute repeats the previous close).

Written with the project's own writer (``ArchiveWriter``, ``--flushes`` flushes a
day, default 24) and then each closed day is compacted (``compact_archive``), as the
daemon does. Beside it, the same rows as Binance-style CSV (data.binance.vision):
one file per dataset, market, symbol and day, market and symbol in the name and
every other column in the rows (times as epoch milliseconds), plain under ``csv/``
and one zip per CSV under ``zip/``. Finally ``ideal/trades.parquet``: every trade in
one file sorted by market, symbol and time, with a ``date`` column, written with the
same Parquet options (the views' and loaders' baseline).

Layout of ``--out``: ``data/`` (the archive), ``csv/``, ``zip/``, ``ideal/``,
``manifest.json`` (rows per dataset, days, symbols, generation times).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime as dt
import io
import json
import shutil
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DEFAULT_ARCHIVE

from collector import datasets
from collector.sim.market import DAY, HOUR, MINUTE, Instrument, SimExchange
from collector.storage import compaction, delta, parquet_format
from collector.storage.writer import ArchiveWriter

#: The archive's first day: fixed, so that every run makes the same archive.
START = dt.date(2026, 10, 1)
POLL_MS = 10_000
DEPTH_LEVELS = 20
DEFAULT_DEPTH = "spot/BTCUSDT,spot/ETHUSDT,contract/BTCUSDT"


class ScaledExchange(SimExchange):
    """The simulator's market with every instrument's trade rate times ``scale``."""

    def __init__(self, *, scale: float, end_ms: int, days: int, seed: int = 1) -> None:
        super().__init__(seed, clock=lambda: end_ms, history_days=days)
        self.scale = scale

    def instruments(self, market: str, at_ms: int | None = None) -> list[Instrument]:
        return [
            dataclasses.replace(i, trades_per_hour=max(1, round(i.trades_per_hour * self.scale)))
            for i in super().instruments(market, at_ms)
        ]


def day_ms(day: dt.date) -> int:
    return (day - dt.date(1970, 1, 1)).days * DAY


def ts(values: np.ndarray) -> pa.Array:
    return pa.array(values.astype(np.int64), pa.int64()).cast(datasets.TIMESTAMP)


# -- rows -----------------------------------------------------------------------------------


def listed_hours(sim: ScaledExchange, market: str, start: int) -> dict[str, list[int]]:
    """Per symbol, the hours of the day starting at ``start`` during which it is listed."""
    hours: dict[str, list[int]] = {}
    for hour in range(start // HOUR, start // HOUR + 24):
        for inst in sim.instruments(market, hour * HOUR):
            hours.setdefault(inst.symbol, []).append(hour)
    return hours


def trades_of(sim: ScaledExchange, market: str, symbol: str, hours: list[int]) -> pa.Table:
    blocks = [sim._make_block(market, symbol, hour) for hour in hours]
    times = np.concatenate([b.times for b in blocks])
    ids = np.concatenate([b.first_id + np.arange(len(b.times)) for b in blocks])
    # The trades job polls every 10 s and pages until caught up: a trade arrives with the
    # first poll after it, which takes 20-200 ms to answer.
    polls = times // POLL_MS + 1
    latency = sim._rng(market, symbol, "latency", hours[0]).integers(
        20, 200, polls.max() - polls.min() + 1
    )
    received = polls * POLL_MS + latency[polls - polls.min()]
    n = len(times)
    return pa.table(
        {
            "market": pa.array([market] * n, pa.string()),
            "symbol": pa.array([symbol] * n, pa.string()),
            "trade_id": pa.array(ids, pa.int64()),
            "time": ts(times),
            "price": np.concatenate([b.prices for b in blocks]),
            "qty": np.concatenate([b.qtys for b in blocks]),
            "is_buyer_maker": np.concatenate([b.buyer_maker for b in blocks]),
            "received_at": ts(received),
        },
        schema=datasets.get("trades").schema,
    )


def klines_of(trades: pa.Table, hours: list[int], market: str, symbol: str) -> pa.Table:
    """1m klines of one symbol's trades, for every minute of the hours it was listed."""
    times = trades.column("time").cast(pa.int64()).to_numpy()
    prices = trades.column("price").to_numpy()
    qtys = trades.column("qty").to_numpy()
    taker = ~trades.column("is_buyer_maker").to_numpy(zero_copy_only=False)
    opens = np.concatenate([np.arange(h * HOUR, (h + 1) * HOUR, MINUTE) for h in hours])
    lo = np.searchsorted(times, opens, side="left")
    hi = np.searchsorted(times, opens + MINUTE, side="left")
    count = hi - lo
    filled = count > 0
    starts = lo[filled]
    quote = prices * qtys

    def per_minute(values: np.ndarray, ufunc: np.ufunc) -> np.ndarray:
        out = np.zeros(len(opens))
        out[filled] = ufunc.reduceat(values, starts) if len(starts) else []
        return out

    high, low = per_minute(prices, np.maximum), per_minute(prices, np.minimum)
    first = np.where(filled, prices[np.minimum(lo, len(prices) - 1)], np.nan)
    last = np.where(filled, prices[np.maximum(hi - 1, 0)], np.nan)
    # An empty minute repeats the previous close (the simulator's rule).
    close = _ffill(last, prices[0])
    open_ = np.where(filled, first, close)
    high = np.where(filled, high, close)
    low = np.where(filled, low, close)
    n = len(opens)
    return pa.table(
        {
            "market": pa.array([market] * n, pa.string()),
            "symbol": pa.array([symbol] * n, pa.string()),
            "interval": pa.array(["1m"] * n, pa.string()),
            "open_time": ts(opens),
            "close_time": ts(opens + MINUTE - 1),
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            # The exchange sends volumes with 8 decimals.
            "volume": np.round(per_minute(qtys, np.add), 8),
            "quote_volume": np.round(per_minute(quote, np.add), 8),
            "trade_count": pa.array(count, pa.int64()),
            "taker_buy_volume": np.round(per_minute(qtys * taker, np.add), 8),
            "taker_buy_quote_volume": np.round(per_minute(quote * taker, np.add), 8),
        },
        schema=datasets.get("klines").schema,
    )


def _ffill(values: np.ndarray, initial: float) -> np.ndarray:
    index = np.where(np.isnan(values), 0, np.arange(len(values)))
    np.maximum.accumulate(index, out=index)
    out = values[index]
    return np.where(np.isnan(out), initial, out)


def depth_of(sim: ScaledExchange, inst: Instrument, start: int) -> pa.Table:
    """A day of 20-level snapshots every 10 s: the simulator's book model, vectorized."""
    polls = np.arange(start, start + DAY, POLL_MS, dtype=np.int64)
    rng = sim._rng(inst.market, inst.symbol, "book", start)
    latency = rng.integers(20, 200, len(polls))
    now = polls + latency // 2  # the exchange's clock when it answered
    received = polls + latency
    mid = sim._fair(inst, now)
    tick = inst.tick
    spread = np.maximum(1, np.round(mid * 0.0002 / tick))
    step = np.maximum(1, np.round(mid * 0.0001 / tick))
    best_bid = np.maximum(np.floor(mid / tick - spread / 2), DEPTH_LEVELS * step + 1)
    level = np.arange(DEPTH_LEVELS)
    bids = (best_bid[:, None] - level * step[:, None]) * tick
    asks = (best_bid[:, None] + spread[:, None] + level * step[:, None]) * tick
    lot = 10.0**-inst.qty_decimals
    raw = rng.lognormal(0.0, 1.0, (len(polls), 2 * DEPTH_LEVELS))
    qtys = np.maximum(np.round(raw, inst.qty_decimals), lot)
    prices = np.round(np.concatenate([bids, asks], axis=1), inst.price_decimals)
    rows = len(polls) * 2 * DEPTH_LEVELS
    per = 2 * DEPTH_LEVELS
    sides = np.tile(np.array(["bid"] * DEPTH_LEVELS + ["ask"] * DEPTH_LEVELS), len(polls))
    return pa.table(
        {
            "market": pa.array([inst.market] * rows, pa.string()),
            "symbol": pa.array([inst.symbol] * rows, pa.string()),
            "received_at": ts(np.repeat(received, per)),
            "update_id": pa.array(np.repeat(now // 100, per), pa.int64()),
            "side": pa.array(sides, pa.string()),
            "level": pa.array(np.tile(np.concatenate([level, level]), len(polls)), pa.int16()),
            "price": prices.reshape(-1),
            "qty": qtys.reshape(-1),
        },
        schema=datasets.get("depth").schema,
    )


def day_rows(
    sim: ScaledExchange, day: dt.date, depth_symbols: set[tuple[str, str]]
) -> Iterator[tuple[str, str, str, pa.Table]]:
    """(dataset, market, symbol, rows) of one day, one symbol at a time."""
    start = day_ms(day)
    for market in datasets.MARKETS:
        for symbol, hours in listed_hours(sim, market, start).items():
            trades = trades_of(sim, market, symbol, hours)
            yield "trades", market, symbol, trades
            yield "klines", market, symbol, klines_of(trades, hours, market, symbol)
            if (market, symbol) in depth_symbols:
                inst = sim._instrument_any_time(market, symbol, start)
                yield "depth", market, symbol, depth_of(sim, inst, start)


# -- CSV ------------------------------------------------------------------------------------


def csv_bytes(rows: pa.Table) -> bytes:
    """Binance style: no market or symbol column (they are in the name), times in ms."""
    columns = {}
    for field in rows.schema:
        if field.name in ("market", "symbol"):
            continue
        column = rows.column(field.name)
        if field.type == datasets.TIMESTAMP:
            column = column.cast(pa.int64())
        columns[field.name] = column
    sink = io.BytesIO()
    # Unquoted, like the exchange-published files (no value needs quotes).
    pacsv.write_csv(pa.table(columns), sink, pacsv.WriteOptions(quoting_style="none"))
    return sink.getvalue()


def write_csv(out: Path, dataset: str, market: str, symbol: str, day: dt.date, data: bytes) -> str:
    name = f"{symbol}-{dataset}-{day.isoformat()}"
    plain = out / "csv" / dataset / market / f"{name}.csv"
    plain.parent.mkdir(parents=True, exist_ok=True)
    plain.write_bytes(data)
    zipped = out / "zip" / dataset / market / f"{name}.zip"
    zipped.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zipped, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{name}.csv", data)
    return name


# -- the ideal file -------------------------------------------------------------------------


def delta_dataset(data_dir: Path, name: str) -> pads.Dataset:
    """The table's current files as a pyarrow dataset with the dataset's columns (market
    from the partition path) and its types (times in ms)."""
    table = delta.open_table(data_dir, name)
    assert table is not None, f"no {name} table in {data_dir}"
    files = [delta.file_path(data_dir, name, f.path) for f in delta.files(table, name)]
    partitioning = pads.partitioning(
        pa.schema([("market", pa.string()), ("date", pa.date32())]), flavor="hive"
    )
    return pads.dataset(
        files,
        format="parquet",
        schema=datasets.get(name).schema,
        partitioning=partitioning,
        partition_base_dir=str(data_dir / name),
    )


def write_ideal(data_dir: Path, path: Path) -> int:
    """Every trade in one file, sorted by market, symbol, time, with a ``date`` column."""
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset = delta_dataset(data_dir, "trades")
    schema = datasets.get("trades").schema.append(pa.field("date", pa.date32(), nullable=False))
    keys = dataset.to_table(columns=["market", "symbol"]).group_by(["market", "symbol"])
    pairs = sorted(keys.aggregate([]).to_pylist(), key=lambda r: (r["market"], r["symbol"]))
    rows = 0
    with pq.ParquetWriter(path, schema, **parquet_format.write_options("trades")) as writer:
        for pair in pairs:
            table = dataset.to_table(
                filter=(pads.field("market") == pair["market"])
                & (pads.field("symbol") == pair["symbol"])
            ).sort_by("time")
            date = pc.cast(pc.cast(table.column("time"), pa.int64()), pa.int64())
            date = pc.cast(pc.divide(date, 86_400_000), pa.int32()).cast(pa.date32())
            table = table.append_column(schema.field("date"), date)
            writer.write_table(table, row_group_size=compaction.ROW_GROUP_ROWS)
            rows += table.num_rows
    return rows


# -- main -----------------------------------------------------------------------------------


def build(
    out: Path, *, days: int, scale: float, depth: str, flushes: int, threads: int = 2
) -> dict[str, Any]:
    """Generate the archive, the CSVs and the ideal file under ``out``; the manifest."""
    if out.exists():
        shutil.rmtree(out)
    data_dir = out / "data"
    end_ms = day_ms(START + dt.timedelta(days=days))
    sim = ScaledExchange(scale=scale, end_ms=end_ms, days=days)
    depth_symbols = {tuple(item.split("/", 1)) for item in depth.split(",") if item}
    clock = {"ms": day_ms(START)}
    writer = ArchiveWriter(data_dir, clock_ms=lambda: clock["ms"])
    rows: dict[str, int] = {}
    symbols: dict[str, dict[str, int]] = {}
    timing = {"generate_s": 0.0, "write_s": 0.0, "compact_s": 0.0, "csv_s": 0.0}
    pool = concurrent.futures.ThreadPoolExecutor(threads)  # zlib releases the GIL
    pending: list[concurrent.futures.Future[str]] = []
    for offset in range(days):
        day = START + dt.timedelta(days=offset)
        started = time.perf_counter()
        tables = list(day_rows(sim, day, depth_symbols))
        timing["generate_s"] += time.perf_counter() - started
        started = time.perf_counter()
        # The daemon flushes every 30 s; here ``flushes`` times a day, each flush the rows
        # of its slice of the day, so that compaction has a day of many files to merge.
        for index in range(flushes):
            lo = day_ms(day) + index * DAY // flushes
            hi = day_ms(day) + (index + 1) * DAY // flushes
            for dataset, _, _, table in tables:
                column = datasets.get(dataset).time_column
                times = table.column(column).cast(pa.int64())
                mask = pc.and_(pc.greater_equal(times, lo), pc.less(times, hi))
                part = table.filter(mask)
                if part.num_rows:
                    writer.add(dataset, part)
            clock["ms"] = hi
            result = writer.flush()
            if result.errors:
                raise RuntimeError(f"flush failed: {result.errors[0]}")
        timing["write_s"] += time.perf_counter() - started
        started = time.perf_counter()
        report = compaction.compact_archive(
            data_dir,
            closed_before_ms=day_ms(day) + DAY,
            open_partitions=False,
            retention_hours=0,
            clock_ms=lambda: clock["ms"],
        )
        if report.errors:
            raise RuntimeError(f"compaction failed: {report.errors[0]}")
        timing["compact_s"] += time.perf_counter() - started
        started = time.perf_counter()
        for dataset, market, symbol, table in tables:
            rows[dataset] = rows.get(dataset, 0) + table.num_rows
            key = f"{dataset}/{market}/{symbol}"
            symbols[key] = symbols.get(key, 0) + table.num_rows
            data = csv_bytes(table)
            pending.append(pool.submit(write_csv, out, dataset, market, symbol, day, data))
        # Bounded: at most a day of CSVs in memory.
        for future in pending:
            future.result()
        pending.clear()
        timing["csv_s"] += time.perf_counter() - started
        print(f"{day}: {sum(t.num_rows for *_, t in tables):,} rows", file=sys.stderr)
    pool.shutdown()
    started = time.perf_counter()
    ideal_rows = write_ideal(data_dir, out / "ideal" / "trades.parquet")
    timing["ideal_s"] = time.perf_counter() - started
    manifest = {
        "start": START.isoformat(),
        "days": days,
        "scale": scale,
        "flushes_per_day": flushes,
        "depth_symbols": sorted("/".join(pair) for pair in depth_symbols),
        "rows": rows,
        "rows_per_symbol": dict(sorted(symbols.items())),
        "ideal_trades_rows": ideal_rows,
        "timing_s": {k: round(v, 1) for k, v in timing.items()},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--out", type=Path, default=DEFAULT_ARCHIVE)
    parser.add_argument("--scale", type=float, default=2.0, help="times the simulator's rates")
    parser.add_argument(
        "--trades",
        type=float,
        default=None,
        help="aim at this many trades in all instead of --scale (sets the scale)",
    )
    parser.add_argument("--depth-symbols", default=DEFAULT_DEPTH, help="market/SYMBOL,...")
    parser.add_argument("--flushes", type=int, default=24, help="flushes per day")
    args = parser.parse_args()
    scale = args.scale
    if args.trades:
        # The simulator's 13 instruments trade 23,580 times an hour at scale 1.
        scale = args.trades / (23_580 * 24 * args.days)
    started = time.perf_counter()
    manifest = build(
        args.out, days=args.days, scale=scale, depth=args.depth_symbols, flushes=args.flushes
    )
    manifest["total_s"] = round(time.perf_counter() - started, 1)
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(json.dumps(manifest, indent=1))


if __name__ == "__main__":
    main()

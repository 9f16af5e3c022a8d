"""The archive is a plain Delta Lake table per dataset: other Delta readers (polars,
deltalake with pandas, DuckDB's delta_scan in a plain connection) read the same rows,
partition values and times as the collector's own views, before and after compaction;
and a reader running while compaction commits always sees a whole version."""

from __future__ import annotations

import collections
import datetime as dt
import random
import threading
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from collector import datasets
from collector.read import catalog
from collector.storage import compaction, delta
from collector.storage.writer import ArchiveWriter

T0 = 1_764_000_000_000  # 2025-11-24T16:00:00Z
DAY_MS = 86_400_000
DAY0 = dt.date(2025, 11, 24)
DAY1 = DAY0 + dt.timedelta(days=1)
MARKETS = ("spot", "contract")

Key = tuple[str, dt.date]


class Truth:
    """What the archive must hold, kept beside the writer: per (market, date), the rows'
    count, sum(price * qty), sum(qty), and the first and last time (ms)."""

    def __init__(self) -> None:
        self.rows: dict[Key, list[tuple[int, float, float]]] = collections.defaultdict(list)

    def add(self, table: pa.Table) -> None:
        for row in table.to_pylist():
            time_ms = int(row["time"].timestamp() * 1000)
            key = (row["market"], row["time"].astimezone(dt.UTC).date())
            self.rows[key].append((time_ms, row["price"], row["qty"]))

    def summary(self) -> dict[Key, tuple[int, float, int, int]]:
        """(rows, VWAP, first time ms, last time ms) per (market, date)."""
        found = {}
        for key, rows in self.rows.items():
            notional = sum(price * qty for _, price, qty in rows)
            volume = sum(qty for _, _, qty in rows)
            times = [t for t, _, _ in rows]
            found[key] = (len(rows), notional / volume, min(times), max(times))
        return found


def trades(market: str, first_id: int, n: int, start_ms: int, rng: random.Random) -> pa.Table:
    """``n`` trades of one market with ids from ``first_id``, in the hour from ``start_ms``."""
    return pa.table(
        {
            "market": [market] * n,
            "symbol": [rng.choice(("BTCUSDT", "ETHUSDT")) for _ in range(n)],
            "trade_id": list(range(first_id, first_id + n)),
            "time": [start_ms + rng.randrange(3_600_000) for _ in range(n)],
            "price": [round(rng.uniform(90.0, 110.0), 2) for _ in range(n)],
            "qty": [round(rng.uniform(0.001, 3.0), 3) for _ in range(n)],
            "is_buyer_maker": [rng.random() < 0.5 for _ in range(n)],
            "received_at": [start_ms + 3_600_000] * n,
        },
        schema=datasets.get("trades").schema,
    )


def write_flushes(
    writer: ArchiveWriter,
    truth: Truth,
    rng: random.Random,
    *,
    flushes: int,
    per_partition: int,
    days: tuple[dt.date, ...] = (DAY0, DAY1),
    next_id: list[int],
) -> None:
    """``flushes`` flushes, each adding ``per_partition`` new trades to every market and
    day: one file per partition per flush."""
    for _ in range(flushes):
        for market in MARKETS:
            for day in days:
                start = (day - dt.date(1970, 1, 1)).days * DAY_MS + 3_600_000
                table = trades(market, next_id[0], per_partition, start, rng)
                next_id[0] += per_partition
                writer.add("trades", table)
                truth.add(table)
        result = writer.flush()
        assert result.errors == []


def plain_duckdb() -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that knows nothing of the collector, with the ``delta``
    extension from the pip package duckdb-extension-delta."""
    shipped = catalog.extension_file("delta")
    assert shipped is not None, "duckdb-extension-delta is a dependency"
    connection = duckdb.connect()
    connection.execute(f"LOAD '{shipped}'")
    connection.execute("SET TimeZone = 'UTC'")
    return connection


SUMMARY_SQL = (
    "SELECT market, date, count(*), sum(price * qty) / sum(qty), "
    "epoch_ms(min(time)), epoch_ms(max(time)) FROM {source} GROUP BY market, date"
)


def by_catalog(root: Path) -> dict[Key, tuple[Any, ...]]:
    table = catalog.query(root, SUMMARY_SQL.format(source="trades"), derived_views=False)
    return {(r[0], r[1]): tuple(r[2:]) for r in (tuple(d.values()) for d in table.to_pylist())}


def by_delta_scan(root: Path) -> dict[Key, tuple[Any, ...]]:
    source = f"delta_scan('{root / 'trades'}')"
    with plain_duckdb() as connection:
        rows = connection.execute(SUMMARY_SQL.format(source=source)).fetchall()
    return {(r[0], r[1]): tuple(r[2:]) for r in rows}


def by_polars(root: Path) -> dict[Key, tuple[Any, ...]]:
    frame = (
        pl.scan_delta(str(root / "trades"))
        .group_by("market", "date")
        .agg(
            pl.len().alias("rows"),
            ((pl.col("price") * pl.col("qty")).sum() / pl.col("qty").sum()).alias("vwap"),
            pl.col("time").min().dt.epoch("ms").alias("first"),
            pl.col("time").max().dt.epoch("ms").alias("last"),
        )
        .collect()
    )
    return {(r[0], r[1]): tuple(r[2:]) for r in frame.iter_rows()}


def by_pandas(root: Path) -> dict[Key, tuple[Any, ...]]:
    frame = DeltaTable(str(root / "trades")).to_pandas()
    frame["notional"] = frame["price"] * frame["qty"]
    frame["time_ms"] = frame["time"].map(lambda t: int(t.timestamp() * 1000))
    found = {}
    for (market, date), group in frame.groupby(["market", "date"]):
        # The partition value comes back as it is stored in the log: an ISO date.
        day = date if isinstance(date, dt.date) else dt.date.fromisoformat(str(date))
        found[(market, day)] = (
            len(group),
            group["notional"].sum() / group["qty"].sum(),
            int(group["time_ms"].min()),
            int(group["time_ms"].max()),
        )
    return found


READERS = {
    "catalog": by_catalog,
    "duckdb delta_scan": by_delta_scan,
    "polars scan_delta": by_polars,
    "deltalake to_pandas": by_pandas,
}


def assert_reads(root: Path, truth: Truth) -> None:
    expected = truth.summary()
    for name, read in READERS.items():
        found = read(root)
        assert sorted(found) == sorted(expected), name
        for key, (rows, vwap, first, last) in expected.items():
            got = found[key]
            assert (got[0], got[2], got[3]) == (rows, first, last), (name, key)
            assert got[1] == pytest.approx(vwap, rel=1e-12), (name, key)


def test_other_delta_readers_read_what_the_views_read(tmp_path: Path) -> None:
    rng = random.Random(11)
    truth = Truth()
    next_id = [1]
    writer = ArchiveWriter(tmp_path)
    write_flushes(writer, truth, rng, flushes=5, per_partition=40, next_id=next_id)
    assert_reads(tmp_path, truth)

    # The first day is compacted (one file per partition); the second keeps its flush files.
    report = compaction.compact_archive(
        tmp_path, closed_before_ms=(DAY1 - dt.date(1970, 1, 1)).days * DAY_MS,
        open_partitions=False,
    )  # fmt: skip
    assert not report.errors and report.partitions == len(MARKETS)
    table = delta.open_table(tmp_path, "trades")
    assert table is not None
    per_partition = collections.Counter(
        (f.partition.market, f.partition.date) for f in delta.files(table, "trades")
    )
    assert per_partition == {
        **{(m, DAY0): 1 for m in MARKETS},
        **{(m, DAY1): 5 for m in MARKETS},
    }
    assert_reads(tmp_path, truth)

    # Flushes after the compaction land beside its output.
    write_flushes(writer, truth, rng, flushes=2, per_partition=15, next_id=next_id)
    assert_reads(tmp_path, truth)


def test_partition_filters_select_the_same_rows_in_every_reader(tmp_path: Path) -> None:
    rng = random.Random(5)
    truth = Truth()
    write_flushes(ArchiveWriter(tmp_path), truth, rng, flushes=2, per_partition=25, next_id=[1])
    expected = len(truth.rows[("contract", DAY1)])
    path = str(tmp_path / "trades")
    polars_rows = (
        pl.scan_delta(path)
        .filter((pl.col("market") == "contract") & (pl.col("date") == DAY1))
        .select(pl.len())
        .collect()
        .item()
    )
    pandas_rows = len(
        DeltaTable(path).to_pandas(filters=[("market", "=", "contract"), ("date", "=", DAY1)])
    )
    with plain_duckdb() as connection:
        duckdb_row = connection.execute(
            f"SELECT count(*) FROM delta_scan('{path}') WHERE market = 'contract' AND date = $day",
            {"day": DAY1},
        ).fetchone()
    view = catalog.query(
        tmp_path,
        "SELECT count(*) AS n FROM trades WHERE market = 'contract' AND date = $day",
        {"day": DAY1},
        derived_views=False,
    )
    assert polars_rows == pandas_rows == expected
    assert duckdb_row == (expected,)
    assert view["n"].to_pylist() == [expected]


class ReaderLoop:
    """A thread counting a table's rows and summing a column with DuckDB's delta_scan, in
    a loop, until stopped; what it read and what it raised are kept."""

    def __init__(self, path: Path) -> None:
        self.sql = f"SELECT count(*), sum(qty) FROM delta_scan('{path}')"
        self.results: list[tuple[int, float]] = []
        self.failures: list[BaseException] = []
        self._started = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def __enter__(self) -> ReaderLoop:
        self._thread.start()
        assert self._started.wait(30), "the reader never read"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def wait_for_reads(self, count: int) -> None:
        target = len(self.results) + count
        while len(self.results) < target and not self.failures and self._thread.is_alive():
            self._stop.wait(0.01)

    def _run(self) -> None:
        try:
            with plain_duckdb() as connection:
                while not self._stop.is_set():
                    row = connection.execute(self.sql).fetchone()
                    assert row is not None
                    self.results.append((row[0], row[1]))
                    self._started.set()
        except BaseException as exc:  # handed to the test
            self.failures.append(exc)
            self._started.set()


def test_a_reader_during_compaction_always_sees_a_whole_version(tmp_path: Path) -> None:
    """A DuckDB delta_scan loop in a thread while compaction replaces partitions of many
    flush files: every read counts every row exactly once and none fails. Each round
    adds flush files (reader stopped), then compacts them with the previous output.
    ``sum(qty)`` makes DuckDB read the data: a count alone could come from the log."""
    rng = random.Random(3)
    truth = Truth()
    next_id = [1]
    writer = ArchiveWriter(tmp_path)
    partitions = len(MARKETS) * 2
    overlapping = 0
    for _ in range(3):
        write_flushes(writer, truth, rng, flushes=30, per_partition=20, next_id=next_id)
        expected_rows = sum(len(rows) for rows in truth.rows.values())
        expected_volume = sum(qty for rows in truth.rows.values() for _, _, qty in rows)
        table = delta.open_table(tmp_path, "trades")
        assert table is not None and len(delta.files(table, "trades")) >= 30 * partitions

        with ReaderLoop(tmp_path / "trades") as reader:
            before = len(reader.results)
            report = compaction.compact_archive(tmp_path)
            overlapping += len(reader.results) - before
            reader.wait_for_reads(3)  # and some reads of the compacted version
        assert not reader.failures, reader.failures
        assert {count for count, _ in reader.results} == {expected_rows}
        for _, volume in reader.results:
            assert volume == pytest.approx(expected_volume, rel=1e-12)
        assert not report.errors and report.partitions == partitions
        table = delta.open_table(tmp_path, "trades")
        assert table is not None and len(delta.files(table, "trades")) == partitions
    assert overlapping > 0, "no read ran while compaction did"


def test_dask_on_a_local_cluster_gives_duckdbs_hourly_vwap(sim_archive: Path) -> None:
    """Dask distributed (dask-deltatable, the dask extra) over the trades table: the
    hourly VWAP per market and symbol equals the views', computed on 2 worker processes."""
    dask_deltatable = pytest.importorskip("dask_deltatable")
    distributed = pytest.importorskip("distributed")
    expected = catalog.query(
        sim_archive,
        "SELECT market, symbol, epoch_ms(date_trunc('hour', time)) AS hour, "
        "sum(price * qty) / sum(qty) AS vwap, count(*) AS trades "
        "FROM trades GROUP BY ALL ORDER BY ALL",
        derived_views=False,
    ).to_pylist()
    assert expected
    with (
        distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        frame = dask_deltatable.read_deltalake(
            str(sim_archive.resolve() / "trades"),
            columns=["market", "symbol", "time", "price", "qty"],
        )
        frame = frame.assign(
            hour=frame["time"].dt.floor("h"), notional=frame["price"] * frame["qty"]
        )
        sums = frame.groupby(["market", "symbol", "hour"]).agg(
            {"notional": "sum", "qty": "sum", "price": "count"}
        )
        result = client.compute(sums).result().reset_index()
    found = sorted(
        (
            str(row.market),
            str(row.symbol),
            int(row.hour.timestamp() * 1000),
            row.notional / row.qty,
            int(row.price),
        )
        for row in result.itertuples()
    )
    assert len(found) == len(expected)
    for got, want in zip(found, expected, strict=True):
        assert got[:3] == (want["market"], want["symbol"], want["hour"])
        assert got[3] == pytest.approx(want["vwap"], rel=1e-9)
        assert got[4] == want["trades"]

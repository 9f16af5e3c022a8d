"""Stress: plain readers of a Delta table while flushes and compaction commit to it.

    .venv/bin/python bench/reader_race.py [--seconds 20] [--vacuum-every 25] [--json F]

A writer thread (the daemon's ``ArchiveWriter``) flushes 10 trades into one partition
of the trades table every few milliseconds, one Delta commit each; the main thread
compacts that partition in a loop (``compact_partition``: one commit that removes the
files it read and adds their merge), and after every ``--vacuum-every`` compactions runs
the daemon's housekeeping (vacuum of files replaced over ``delta.RETENTION_HOURS`` ago,
checkpoint, log cleanup). That is far denser than the daemon: a flush every 30 s, a
compaction pass every 10 minutes. Meanwhile each reader, in its own thread, counts the
table's rows and distinct trade ids in a loop (so that it reads the data, not only the
log's statistics):

* ``duckdb delta_scan``: ``delta_scan`` in one plain DuckDB connection (what the views do);
* ``catalog.query``: the collector's own read (a new connection and view each time);
* ``deltalake``: ``DeltaTable(path).to_pyarrow_table(columns=["trade_id"])``;
* ``polars scan_delta``: ``pl.scan_delta(path)``, ``len`` and ``n_unique``;

and, for contrast, the reader the README warns against:

* ``duckdb parquet glob``: ``read_parquet('<table>/market=*/date=*/*.parquet')``.

A read "failed" when it raised. It is "wrong" when its count is below the rows whose
flush had returned before it began ("missing"), above the rows whose flush had started
when it ended ("extra"), or when a trade id shows twice ("duplicated"). The Delta
readers are expected at 0 failed, 0 wrong; the glob also reads the replaced files
(every row twice or more), files being written and files of failed flushes.

Also reported: flushes whose commit failed (their rows stay in the writer's buffer and
go out with its next flush) and, at the end, the table's rows against those added.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, run_main, table, write_json

from collector import datasets
from collector.errors import StorageError
from collector.read import catalog
from collector.storage import compaction, delta, layout
from collector.storage.writer import ArchiveWriter

T0 = 1_764_000_000_000
PARTITION = layout.Partition("trades", "spot", layout.date_of_ms(T0))
ROWS_PER_FLUSH = 10
#: Readers of the table through its log, then the glob (the contrast).
DELTA_READERS = ("duckdb delta_scan", "catalog.query", "deltalake", "polars scan_delta")


def trades(first: int, count: int) -> pa.Table:
    ids = list(range(first, first + count))
    return pa.table(
        {
            "market": ["spot"] * count,
            "symbol": [f"S{i % 3}" for i in ids],
            "trade_id": ids,
            "time": [T0 + i for i in ids],
            "price": [1.0] * count,
            "qty": [1.0] * count,
            "is_buyer_maker": [True] * count,
            "received_at": [T0] * count,
        },
        schema=datasets.get("trades").schema,
    )


class Readers:
    """Each reader: () -> (rows, distinct trade ids) of the table now. Connections
    belong to the thread that reads with them (one thread per reader)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = Path(delta.table_uri(root, "trades"))
        self.local = threading.local()

    def _duckdb(self) -> duckdb.DuckDBPyConnection:
        connection = getattr(self.local, "connection", None)
        if connection is None:
            connection = duckdb.connect()
            catalog.load_delta(connection)
            self.local.connection = connection
        return connection

    def duckdb_delta_scan(self) -> tuple[int, int]:
        location = catalog.path_literal(self.path)
        row = (
            self._duckdb()
            .execute(f"SELECT count(*), count(DISTINCT trade_id) FROM delta_scan({location})")  # noqa: S608
            .fetchone()
        )
        assert row is not None
        return int(row[0]), int(row[1])

    def catalog_query(self) -> tuple[int, int]:
        found = catalog.query(
            self.root,
            "SELECT count(*) AS n, count(DISTINCT trade_id) AS d FROM trades",
            derived_views=False,
            only=("trades",),
        )
        return found["n"][0].as_py(), found["d"][0].as_py()

    def deltalake(self) -> tuple[int, int]:
        ids = DeltaTable(str(self.path)).to_pyarrow_table(columns=["trade_id"])["trade_id"]
        return len(ids), pc.count_distinct(ids).as_py()

    def polars(self) -> tuple[int, int]:
        found = (
            pl.scan_delta(str(self.path))
            .select(pl.len().alias("n"), pl.col("trade_id").n_unique().alias("d"))
            .collect()
        )
        return int(found["n"][0]), int(found["d"][0])

    def parquet_glob(self) -> tuple[int, int]:
        glob = catalog.path_literal(f"{self.path}/market=*/date=*/*.parquet")
        row = (
            self._duckdb()
            .execute(f"SELECT count(*), count(DISTINCT trade_id) FROM read_parquet({glob})")  # noqa: S608
            .fetchone()
        )
        assert row is not None
        return int(row[0]), int(row[1])

    def all(self) -> dict[str, Callable[[], tuple[int, int]]]:
        return {
            "duckdb delta_scan": self.duckdb_delta_scan,
            "catalog.query": self.catalog_query,
            "deltalake": self.deltalake,
            "polars scan_delta": self.polars,
            "duckdb parquet glob": self.parquet_glob,
        }


def _message(exc: BaseException) -> str:
    """The error's first line with file names left out, so that like errors count together."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return re.sub(r"""(['"])/[^'"]*\1""", "<file>", text)[:160]


def run(root: Path, seconds: float, vacuum_every: int) -> dict[str, Any]:
    writer = ArchiveWriter(root)
    lock = threading.Lock()
    flushed = [0]  # rows whose flush returned
    started = [0]  # rows whose flush had begun
    for _ in range(20):
        writer.add("trades", trades(flushed[0], ROWS_PER_FLUSH))
        writer.flush()
        flushed[0] += ROWS_PER_FLUSH
    started[0] = flushed[0]
    stop = threading.Event()
    stats: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    read_s: dict[str, list[float]] = collections.defaultdict(list)
    readers = Readers(root).all()

    def read_loop(name: str) -> None:
        while not stop.is_set():
            with lock:
                floor = flushed[0]
            began = time.perf_counter()
            try:
                count, distinct = readers[name]()
            except Exception as exc:  # counted, by kind
                stats[name]["failed"] += 1
                stats[name][f"error {type(exc).__name__}: {_message(exc)}"] += 1
                continue
            read_s[name].append(time.perf_counter() - began)
            with lock:
                ceiling = started[0]
            stats[name]["reads"] += 1
            wrong = False
            if count < floor:
                stats[name]["missing"] += 1
                wrong = True
            if count > ceiling:
                stats[name]["extra"] += 1
                wrong = True
            if count != distinct:
                stats[name]["duplicated"] += 1
                wrong = True
            stats[name]["wrong"] += wrong

    flushes = [0]

    def write_loop() -> None:
        next_id = 1_000_000
        while not stop.is_set():
            writer.add("trades", trades(next_id, ROWS_PER_FLUSH))
            next_id += ROWS_PER_FLUSH
            with lock:
                started[0] += ROWS_PER_FLUSH
            result = writer.flush()
            with lock:
                flushed[0] += result.rows.get("trades", 0)
            for error in result.errors:  # the rows stay buffered for the next flush
                stats["writer"][f"failed flush: {_message(error)}"] += 1
            flushes[0] += not result.errors
            time.sleep(0.005)

    threads = [threading.Thread(target=read_loop, args=(name,)) for name in readers]
    threads.append(threading.Thread(target=write_loop))
    for thread in threads:
        thread.start()
    switches = conflicts = vacuums = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            switches += compaction.compact_partition(root, PARTITION).compacted
        except StorageError:
            conflicts += 1
        if vacuum_every and switches and switches % vacuum_every == 0:
            compaction.housekeeping(str(root), "trades", delta.RETENTION_HOURS, full=False)
            vacuums += 1
    stop.set()
    for thread in threads:
        thread.join()
    for _ in range(10):  # rows of a failed last flush are still buffered
        if not writer.flush().errors:
            break
    writer.close()
    last = delta.open_table(root, "trades")
    assert last is not None
    ids = DeltaTable(str(Path(delta.table_uri(root, "trades")))).to_pyarrow_table(
        columns=["trade_id"]
    )["trade_id"]
    return {
        "seconds": seconds,
        "flushes": flushes[0],
        "switches": switches,
        "conflicts": conflicts,
        "housekeeping": vacuums,
        "rows_added": started[0],
        "rows_at_end": len(ids),
        "distinct_at_end": pc.count_distinct(ids).as_py(),
        "table_version": last.version(),
        "files_on_disk": sum(1 for _ in Path(delta.table_uri(root, "trades")).rglob("*.parquet")),
        "current_files": len(delta.files(last, "trades")),
        "writer": dict(stats.pop("writer", {})),
        "readers": {
            name: {
                **{key: stats[name][key] for key in ("reads", "failed", "wrong")},
                **{
                    key: value
                    for key, value in sorted(stats[name].items())
                    if key not in ("reads", "failed", "wrong")
                },
                "median_read_ms": statistics.median(read_s[name]) * 1000 if read_s[name] else None,
            }
            for name in readers
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--vacuum-every", type=int, default=25, help="housekeeping after this many switches"
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-reader-race-"))
    try:
        result = run(root, args.seconds, args.vacuum_every)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"{result['seconds']:.0f} s: {result['flushes']} flushes, {result['switches']} "
        f"compactions of the partition ({result['conflicts']} conflicts), "
        f"{result['housekeeping']} vacuum + checkpoint passes; table version "
        f"{result['table_version']}, {result['current_files']} current files, "
        f"{result['files_on_disk']} files on disk"
    )
    print(
        f"rows added {result['rows_added']:,}; in the table at the end {result['rows_at_end']:,} "
        f"({result['distinct_at_end']:,} distinct)"
    )
    for error, count in result["writer"].items():
        print(f"writer: {count} x {error}")
    rows = []
    for name, found in result["readers"].items():
        errors = {k: v for k, v in found.items() if k.startswith("error ")}
        rows.append(
            [
                name,
                found["reads"],
                found["failed"],
                found["wrong"],
                found.get("missing", 0),
                found.get("extra", 0),
                found.get("duplicated", 0),
                round(found["median_read_ms"] or 0.0, 1),
                "; ".join(f"{k.removeprefix('error ')} x{v}" for k, v in errors.items()),
            ]
        )
    print(
        table(
            [
                "reader",
                "reads",
                "failed",
                "wrong",
                "missing",
                "extra",
                "duplicated",
                "median ms",
                "errors",
            ],
            rows,
        )
    )
    write_json(args.json, {"machine": machine(), **result})


if __name__ == "__main__":
    run_main(main)

"""Stress: how readers fare while compaction switches a partition over and over.

    .venv/bin/python bench/reader_race.py --seconds 30

A writer flushes into one partition, compaction rewrites it in a loop (a switch every
few milliseconds: far denser than the daemon's one per partition and day), and four
readers count the partition's rows. A count is "missing" when it is below what had
been flushed before the read began, "duplicated" when a trade id shows twice; an
"error" is an exception (a listed file gone). Readers:

* duckdb glob: ``read_parquet`` over ``market=*/date=*`` (what the views do), no retry;
* pyarrow dir: ``pyarrow.dataset`` on ``.../date=D``;
* pyarrow resolved: ``pyarrow.dataset`` on the resolved generation folder;
* catalog.query: the collector's reads (retried when a switch happened meanwhile).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collector import catalog, datasets
from collector.storage import compaction, layout
from collector.storage.writer import ArchiveWriter

T0 = 1_764_000_000_000
PARTITION = layout.Partition("trades", "spot", layout.date_of_ms(T0))


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-reader-race-"))
    try:
        run(root, args.seconds)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(root: Path, seconds: float) -> None:
    writer = ArchiveWriter(root)
    lock = threading.Lock()
    flushed = [0]  # rows whose flush returned
    for _ in range(20):
        writer.add("trades", trades(flushed[0], 10))
        writer.flush()
        flushed[0] += 10
    stop = threading.Event()
    stats: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    directory = root / PARTITION.path
    glob = layout.dataset_glob(str(root), "trades")

    def duckdb_glob() -> tuple[int, int]:
        connection = duckdb.connect()
        row = connection.execute(
            f"SELECT count(*), count(DISTINCT trade_id) FROM read_parquet('{glob}')"  # noqa: S608
        ).fetchone()
        connection.close()
        assert row is not None
        return int(row[0]), int(row[1])

    def pyarrow_dir(path: Path) -> tuple[int, int]:
        dataset = ds.dataset(str(path), format="parquet")
        if not dataset.files:
            return 0, 0
        ids = dataset.to_table(columns=["trade_id"])["trade_id"]
        return len(ids), len(set(ids.to_pylist()))

    def catalog_query() -> tuple[int, int]:
        table = catalog.query(
            root, "SELECT count(*) AS n, count(DISTINCT trade_id) AS d FROM trades"
        )
        return table["n"][0].as_py(), table["d"][0].as_py()

    readers: dict[str, Callable[[], tuple[int, int]]] = {
        "duckdb glob": duckdb_glob,
        "pyarrow dir": lambda: pyarrow_dir(directory),
        "pyarrow resolved": lambda: pyarrow_dir(directory.resolve()),
        "catalog.query": catalog_query,
    }

    def read_loop(name: str) -> None:
        while not stop.is_set():
            with lock:
                floor = flushed[0]
            try:
                count, distinct = readers[name]()
            except Exception as exc:  # counted, by kind
                stats[name][f"error {type(exc).__name__}"] += 1
                continue
            stats[name]["reads"] += 1
            if count < floor:
                stats[name]["missing"] += 1
            if count != distinct:
                stats[name]["duplicated"] += 1

    def write_loop() -> None:
        while not stop.is_set():
            with lock:
                first = flushed[0]
            writer.add("trades", trades(first + 1_000_000, 10))
            writer.flush()
            with lock:
                flushed[0] += 10
            time.sleep(0.005)

    threads = [threading.Thread(target=read_loop, args=(name,)) for name in readers]
    threads.append(threading.Thread(target=write_loop))
    for thread in threads:
        thread.start()
    switches = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        switches += compaction.compact_partition(root, PARTITION).compacted
    stop.set()
    for thread in threads:
        thread.join()
    print(f"{switches} switches in {seconds:.0f} s")
    for name in readers:
        print(f"{name:<18}", dict(sorted(stats[name].items())))


if __name__ == "__main__":
    main()

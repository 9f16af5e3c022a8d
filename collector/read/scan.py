"""The reads a daemon makes at start, with pyarrow alone: where each job resumes.

DuckDB and the pandas it loads would stay in a daemon's memory for good (about 80 MB)
for two queries at start, so these read the Parquet files of each table's current
version (listed from its Delta log) directly, a few columns at a time, one file at a
time. A damaged file is left out, logged and recorded, as every read of the archive does
(:func:`collector.read.damaged.readable`). :mod:`collector.read.catalog` re-exports both.
"""

from __future__ import annotations

import heapq
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from collector import datasets
from collector.read.damaged import left_out_paths, readable
from collector.storage import delta
from collector.storage.groups import first_of_each
from collector.storage.location import Archive

#: pyarrow's errors when a Parquet file cannot be read (ArrowIOError is an OSError).
ARROW_READ_ERRORS: tuple[type[BaseException], ...] = (OSError, pa.ArrowInvalid)
#: Columns of a table that live in its partition values, not in its files.
PARTITION_COLUMNS = frozenset({"market", "date"})


class UnreadableFile(OSError):
    """A data file pyarrow could not read; the message names the file, which is how
    :func:`collector.read.damaged.find_damaged` finds it when its footer looks fine."""


def _files(archive: Archive, dataset: str) -> list[delta.DataFile]:
    table = delta.open_table(archive.uri, dataset)
    if table is None:
        return []
    left_out = left_out_paths(archive, dataset)
    return [f for f in delta.files(table, dataset) if f.path not in left_out]


def _read(archive: Archive, dataset: str, file: delta.DataFile, columns: list[str]) -> pa.Table:
    try:
        return pq.read_table(
            archive.fs_path(dataset, file.path),
            columns=columns,
            filesystem=archive.filesystem(),
        )
    except ARROW_READ_ERRORS as exc:
        where = delta.file_path(archive.uri, dataset, file.path)
        raise UnreadableFile(f"cannot read {where}: {exc}") from exc


def _with_market(table: pa.Table, market: str) -> pa.Table:
    return table.append_column("market", pa.array([market] * table.num_rows, pa.string()))


def max_by_group(
    data_dir: str | Path | Archive, dataset: str, column: str, group: tuple[str, ...]
) -> dict[tuple[Any, ...], Any]:
    """``max(column)`` per group over the archived files: where each job resumes.

    Times come back as milliseconds since the epoch.
    """
    spec = datasets.get(dataset)
    for name in (column, *group):
        if name not in spec.column_names:
            raise ValueError(f"{dataset} has no column {name!r}")
    archive = Archive.of(data_dir)
    if not delta.has_rows(archive.uri, dataset):
        return {}
    return readable(
        archive,
        (dataset,),
        lambda: _max_by_group(archive, dataset, column, group),
        errors=ARROW_READ_ERRORS,
    )


def _max_by_group(
    archive: Archive, dataset: str, column: str, group: tuple[str, ...]
) -> dict[tuple[Any, ...], Any]:
    is_time = datasets.get(dataset).schema.field(column).type == datasets.TIMESTAMP
    in_files = [c for c in dict.fromkeys((*group, column)) if c not in PARTITION_COLUMNS]
    best: dict[tuple[Any, ...], Any] = {}
    for file in _files(archive, dataset):
        table = _read(archive, dataset, file, in_files)
        table = table.filter(pc.is_valid(table.column(column)))
        if not table.num_rows:
            continue
        if "market" in group:
            table = _with_market(table, file.partition.market)
        if is_time:
            index = table.column_names.index(column)
            table = table.set_column(index, column, pc.cast(table.column(column), pa.int64()))
        newest = table.take(first_of_each(table, group, order=[(column, "descending")]))
        keys = zip(*(newest.column(g).to_pylist() for g in group), strict=True)
        for key, value in zip(keys, newest.column(column).to_pylist(), strict=True):
            if key not in best or value > best[key]:
                best[key] = value
    return best


def last_recent_trades(
    data_dir: str | Path | Archive, per_symbol: int
) -> dict[tuple[str, str], list[tuple[int, float, float]]]:
    """The newest ``per_symbol`` trades without an id, per market and symbol, oldest first.

    These came from the recent-trades endpoint; a restarted job compares its first poll
    with them so that it does not store the overlap again. Rows keep the order the
    exchange sent them in: newest means latest time, then the later file (files sort by
    name in creation order, and compacted files carry the creation time of their newest
    input), then the later row (a file's rows are stably sorted by time).
    """
    archive = Archive.of(data_dir)
    return readable(
        archive,
        ("trades",),
        lambda: _last_recent_trades(archive, per_symbol),
        errors=ARROW_READ_ERRORS,
    )


def _last_recent_trades(
    archive: Archive, per_symbol: int
) -> dict[tuple[str, str], list[tuple[int, float, float]]]:
    # Per market and symbol, the newest rows as (time, file path, row, price, qty).
    newest: dict[tuple[str, str], list[tuple[int, str, int, float, float]]] = {}
    for file in _files(archive, "trades"):
        table = _read(archive, "trades", file, ["symbol", "time", "price", "qty", "trade_id"])
        table = table.append_column("__row", pa.array(range(table.num_rows), pa.int64()))
        table = _newest_per_symbol(table.filter(pc.is_null(table.column("trade_id"))), per_symbol)
        if not table.num_rows:
            continue
        rows = table.column("__row")
        path = delta.file_path(archive.uri, "trades", file.path)
        times = pc.cast(table.column("time"), pa.int64()).to_pylist()
        columns = zip(
            table.column("symbol").to_pylist(),
            times,
            rows.to_pylist(),
            table.column("price").to_pylist(),
            table.column("qty").to_pylist(),
            strict=True,
        )
        for symbol, time_ms, row, price, qty in columns:
            found = newest.setdefault((file.partition.market, symbol), [])
            entry = (time_ms, path, row, price, qty)
            if len(found) < per_symbol:
                heapq.heappush(found, entry)
            elif entry > found[0]:
                heapq.heapreplace(found, entry)
    return {
        key: [(time_ms, price, qty) for time_ms, _, _, price, qty in sorted(found)]
        for key, found in sorted(newest.items())
        if found
    }


def _newest_per_symbol(table: pa.Table, count: int) -> pa.Table:
    """The ``count`` newest rows of each symbol of one file (latest time, then later row)."""
    if table.num_rows <= count:
        return table
    order = [("symbol", "ascending"), ("time", "descending"), ("__row", "descending")]
    table = table.take(pc.sort_indices(table, sort_keys=order))
    symbols = table.column("symbol").combine_chunks()
    starts = pa.concat_arrays(
        [pa.array([True]), pc.not_equal(symbols.slice(1), symbols.slice(0, len(symbols) - 1))]
    )
    positions = pa.array(range(table.num_rows), pa.int64())
    group = pc.subtract(pc.cumulative_sum(pc.cast(starts, pa.int64())), 1)
    first = pc.take(positions.filter(starts), group)
    return table.filter(pc.less(pc.subtract(positions, first), count))

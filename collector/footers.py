"""Row counts, time ranges and sizes of the archive, from the Delta log's file statistics.

What ``jex-collector status`` shows per dataset and market comes from each table's
log (:func:`collector.storage.delta.files`): every file of the table's latest version
with its size, row count and the min/max of the dataset's time column, as the writer
and compaction recorded them in the file's add action. No data file is opened, so
today's figures cost the same with 50 flush files as with 50,000. Files the log does
not name (written but never committed, or replaced and awaiting vacuum) are not
counted. Only a file committed without statistics (not one the collector wrote) has
its Parquet footer read.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from collector import datasets
from collector.storage import delta, layout
from collector.storage.location import Archive

log = logging.getLogger(__name__)

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MILLISECONDS = '"timeUnit":"milliseconds"'


@dataclass
class FileSummary:
    rows: int
    first_ms: int | None
    last_ms: int | None
    size: int


@dataclass
class GroupSummary:
    """One dataset and market: its partitions' files, rows and event times."""

    dataset: str
    market: str
    partitions: int = 0
    files: int = 0
    bytes: int = 0
    rows_total: int = 0
    rows_today: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    unreadable: int = 0  # files whose footer could not be read (counted in files, bytes)

    def add(self, summary: FileSummary, today: bool) -> None:
        self.files += 1
        self.bytes += summary.size
        self.rows_total += summary.rows
        if today:
            self.rows_today += summary.rows
        if summary.first_ms is not None:
            self.first_ms = _min(self.first_ms, summary.first_ms)
        if summary.last_ms is not None:
            self.last_ms = _max(self.last_ms, summary.last_ms)


def summarize(data_dir: str | Path, today: dt.date) -> dict[tuple[str, str], GroupSummary]:
    """Every dataset and market with at least one file, keyed (dataset, market);
    ``rows_today`` counts the partition of the UTC date ``today``.

    One read of each table's log (its last checkpoint and the commits after it).
    """
    root = Archive.of(data_dir).uri
    groups: dict[tuple[str, str], GroupSummary] = {}
    for name, table in delta.tables(root):
        seen: set[layout.Partition] = set()
        for file in delta.files(table, name):
            partition = file.partition
            group = groups.setdefault(
                (name, partition.market), GroupSummary(name, partition.market)
            )
            if partition not in seen:
                seen.add(partition)
                group.partitions += 1
            summary = _from_log(file)
            if summary is None:
                path = Path(delta.file_path(root, name, file.path))
                summary = read_footer(name, path, file.size)
            if summary is None:
                group.files += 1
                group.bytes += file.size
                group.unreadable += 1
            else:
                group.add(summary, partition.date == today)
    return groups


def _from_log(file: delta.DataFile) -> FileSummary | None:
    """The file's figures from its add action, or None when the log lacks them (rows,
    or a time range for a file that has rows)."""
    if file.rows < 0:
        return None
    if file.rows > 0 and (file.min_time_ms is None or file.max_time_ms is None):
        return None
    return FileSummary(file.rows, file.min_time_ms, file.max_time_ms, file.size)


def read_footer(dataset: str, path: Path, size: int) -> FileSummary | None:
    """Rows and time range of one file from its footer (None when it cannot be read).

    A file whose row groups carry no statistics for the time column (not one the
    collector wrote) has that column read instead.
    """
    time_column = datasets.get(dataset).time_column
    try:
        metadata = pq.read_metadata(path)
        index = metadata.schema.names.index(time_column)
        # The collector writes milliseconds: the raw int64 statistics are the times.
        raw_ms = _MILLISECONDS in metadata.schema.column(index).logical_type.to_json()
        first: int | None = None
        last: int | None = None
        for number in range(metadata.num_row_groups):
            group = metadata.row_group(number)
            if group.num_rows == 0:
                continue
            stats = group.column(index).statistics
            if stats is None or not stats.has_min_max:
                return _read_times(path, time_column, metadata.num_rows, size)
            low, high = (
                (stats.min_raw, stats.max_raw) if raw_ms else (_ms(stats.min), _ms(stats.max))
            )
            first = _min(first, low)
            last = _max(last, high)
        return FileSummary(metadata.num_rows, first, last, size)
    except (OSError, ValueError) as exc:
        # Gone (vacuumed after a compaction replaced it) or not Parquet: left out.
        log.warning("status: cannot read the footer of %s: %s", path, exc)
        return None


def _read_times(path: Path, column: str, rows: int, size: int) -> FileSummary:
    times = pq.read_table(path, columns=[column])[column]
    bounds = pc.min_max(times)
    return FileSummary(rows, _ms(bounds["min"].as_py()), _ms(bounds["max"].as_py()), size)


def _ms(value: object) -> int | None:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return (value - _EPOCH) // dt.timedelta(milliseconds=1)
    return None


def _min(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)

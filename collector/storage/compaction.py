"""Compaction: each partition's many small files merged into few large sorted ones.

The daemon commits one file per dataset, market and date at every flush (every 30 s:
thousands a day). Compaction rewrites a partition as at most a few files,
de-duplicated on the dataset's key and sorted by its sort keys, with row groups sized
for scans, in one Delta commit that removes exactly the files it read and adds the new
ones (:func:`collector.storage.delta.commit`). Readers see the partition before or
after, never a mix: that is the commit's atomicity, not code of ours.

* A closed partition (its UTC date ended over :data:`CLOSED_AFTER_S` ago) is compacted
  once, at the strongest encodings (:mod:`collector.storage.parquet_format`).
* Today's partitions are compacted through the day, so that a query on today's data
  opens few files: once a partition has :data:`OPEN_FLUSH_FILES` flush files, they are
  merged into one file; once it has :data:`OPEN_MERGED_FILES` such files, the whole
  partition is rewritten. At most about ``OPEN_FLUSH_FILES + OPEN_MERGED_FILES`` files
  are live at any time, and the day's rows are rewritten a few times, not at every pass.

Safe next to writers (the daemon, a backfill, other shards): a file committed meanwhile
is not among the removed ones and stays. Two compactions of the same files conflict in
the Delta log; the later commit fails, changes nothing, and is reported. ``kill -9`` at
any point leaves the table as it was or as compacted: the files written by a killed
pass were never committed and :func:`collector.storage.delta.vacuum` deletes them.

After the partitions, each table is vacuumed (files replaced more than
``retention_hours`` ago, and uncommitted ones) and checkpointed, and log entries past
the log retention are deleted, so the ``_delta_log`` folder stays small.

Which partitions and files are due, and the output's names, are in
:mod:`collector.storage.compaction_policy`, the report dataclasses in
:mod:`collector.storage.compaction_result`; this module re-exports their public names.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import math
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from collector import datasets
from collector.errors import StorageError
from collector.storage import delta, layout, parquet_format
from collector.storage.compaction_policy import CLOSED_AFTER_S as CLOSED_AFTER_S
from collector.storage.compaction_policy import OPEN_FLUSH_FILES as OPEN_FLUSH_FILES
from collector.storage.compaction_policy import OPEN_MERGED_FILES as OPEN_MERGED_FILES
from collector.storage.compaction_policy import (
    already_compact,
    day_end_ms,
    open_choice,
    output_names,
)
from collector.storage.compaction_policy import (
    closed_before_beside_daemon as closed_before_beside_daemon,
)
from collector.storage.compaction_policy import closed_before_ms as closed_before_ms
from collector.storage.compaction_policy import daemon_running as daemon_running
from collector.storage.compaction_result import CompactionResult as CompactionResult
from collector.storage.compaction_result import GroupResult as GroupResult
from collector.storage.compaction_result import PartitionResult as PartitionResult
from collector.storage.location import Archive
from collector.storage.writer import dedupe_on_key
from collector.units import wall_clock_ms

log = logging.getLogger(__name__)

#: Rows per row group. DuckDB and pyarrow read a file one row group at a time, in
#: parallel across row groups, and skip row groups by their min/max statistics. With
#: rows sorted by symbol then time, 128Ki rows cover one symbol over hours (about nine
#: hours of 20-level depth at 10 s polls), so a query for one symbol or a time window
#: skips most of a file, while a whole-day scan still gets 8-20 row groups per file to
#: spread over the cores. DuckDB's own writer uses 122,880 rows for the same reasons;
#: pyarrow's default (1Mi rows) would make a day of most datasets a single row group.
ROW_GROUP_ROWS = 128 * 1024
#: Rows per file; a partition with more is split into equal files. 32 row groups, tens
#: of MB compressed: every dataset of the default schedule keeps one file per day
#: (the largest, option depth with 8 symbols, has 2.8M rows a day).
FILE_ROWS = 32 * ROW_GROUP_ROWS
#: Files read at once while merging (pyarrow releases the GIL while decoding).
READ_THREADS = 4


# -- the archive ----------------------------------------------------------------------------


def compact_archive(
    data_dir: str | Path,
    *,
    closed_before_ms: int | None = None,
    open_partitions: bool = True,
    retention_hours: float = delta.RETENTION_HOURS,
    clock_ms: Callable[[], int] = wall_clock_ms,
    should_stop: Callable[[], bool] = lambda: False,
    row_group_rows: int = ROW_GROUP_ROWS,
    file_rows: int = FILE_ROWS,
    open_flush_files: int = OPEN_FLUSH_FILES,
    open_merged_files: int = OPEN_MERGED_FILES,
    full_vacuum: bool = True,
) -> CompactionResult:
    """Compact every partition whose UTC date ended at or before ``closed_before_ms``
    (every partition, whole, when None), merge open partitions' flush files as the
    module describes (with ``open_partitions``), then vacuum and checkpoint each table.

    Safe next to writers and other compactions (see the module). A failing partition
    is recorded in ``errors`` and the others go on. ``should_stop`` is asked between
    partitions. ``full_vacuum=False`` deletes only files the log says were replaced; a
    full vacuum also lists the table's folders for files never committed (left by a
    crash between writing a file and committing it), which the daemon does once per
    start.
    """
    report = CompactionResult()
    archive = _root(data_dir)
    root = archive.uri
    for name in datasets.DATASETS:
        table = delta.open_table(root, name)
        if table is None:
            continue
        by_partition: dict[layout.Partition, list[delta.DataFile]] = {}
        for file in delta.files(table, name):
            by_partition.setdefault(file.partition, []).append(file)
        stale = False  # whether this process committed since the table was read
        for partition, found in sorted(by_partition.items()):
            if should_stop():
                return report
            if stale:
                # A commit builds on the snapshot it read: after our own commit, read the
                # table again, or the next commit would conflict with the previous one.
                table.update_incremental()
                found = delta.files(table, name, market=partition.market, date=partition.date)
                stale = False
            closed = closed_before_ms is None or day_end_ms(partition.date) <= closed_before_ms
            # None: the whole partition; a list: those files ([] when nothing is due).
            chosen: list[delta.DataFile] | None
            if closed:
                chosen = None if not already_compact(found) else []
            elif open_partitions:
                chosen = open_choice(found, open_flush_files, open_merged_files)
            else:
                continue
            try:
                if chosen == []:
                    result = _unchanged(partition, found)
                else:
                    inputs = found if chosen is None else chosen
                    full = chosen is None or len(chosen) == len(found)
                    result = _rewrite(
                        archive,
                        table,
                        partition,
                        inputs,
                        total=len(found),
                        final=closed and full,
                        clock_ms=clock_ms,
                        row_group_rows=row_group_rows,
                        file_rows=file_rows,
                    )
            except (OSError, pa.ArrowException, DeltaError, StorageError) as exc:
                stale = True
                report.errors.append(f"{partition.path}: {_first_line(exc)}")
                log.error(
                    "compaction of %s failed: %s (the partition is unchanged)", partition.path, exc
                )
                continue
            stale = stale or result.compacted
            report.group(name, partition.market).add(result)
        report.removed += housekeeping(root, name, retention_hours, report, full=full_vacuum)
    return report


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def housekeeping(
    root: str,
    dataset: str,
    retention_hours: float,
    report: CompactionResult | None = None,
    *,
    full: bool = True,
) -> int:
    """Vacuum and checkpoint one table; returns the number of files vacuumed."""
    try:
        table = delta.ensure_table(root, dataset)
        removed = delta.vacuum(table, retention_hours, full=full)
        delta.checkpoint(table)
    except (OSError, DeltaError, StorageError) as exc:
        if report is not None:
            report.errors.append(f"{dataset}: vacuum and checkpoint: {exc}")
        log.error("vacuum of %s failed: %s (tried again at the next pass)", dataset, exc)
        return 0
    return len(removed)


def _root(data_dir: str | Path | Archive) -> Archive:
    return Archive.of(data_dir)


# -- one partition --------------------------------------------------------------------------


def compact_partition(
    data_dir: str | Path,
    partition: layout.Partition,
    *,
    clock_ms: Callable[[], int] = wall_clock_ms,
    only_with_duplicates: bool = False,
    row_group_rows: int = ROW_GROUP_ROWS,
    file_rows: int = FILE_ROWS,
) -> PartitionResult:
    """Compact one partition now, whether closed or not (``verify --repair`` uses this).

    With ``only_with_duplicates`` the partition is rewritten only when it holds rows
    sharing a key. Raises :class:`StorageError` when a concurrent compaction replaced
    the same files first.
    """
    archive = _root(data_dir)
    table = delta.open_table(archive.uri, partition.dataset)
    found = (
        []
        if table is None
        else delta.files(table, partition.dataset, market=partition.market, date=partition.date)
    )
    if table is None or not found:
        raise FileNotFoundError(f"no partition {partition.path}")
    if not only_with_duplicates and already_compact(found):
        return _unchanged(partition, found)
    return _rewrite(
        archive,
        table,
        partition,
        found,
        total=len(found),
        final=True,
        clock_ms=clock_ms,
        row_group_rows=row_group_rows,
        file_rows=file_rows,
        only_with_duplicates=only_with_duplicates,
    )


def _rewrite(
    data_dir: str | Path | Archive,
    table: DeltaTable,
    partition: layout.Partition,
    inputs: list[delta.DataFile],
    *,
    total: int,
    final: bool,
    clock_ms: Callable[[], int],
    row_group_rows: int,
    file_rows: int,
    only_with_duplicates: bool = False,
) -> PartitionResult:
    """Merge ``inputs``, write the result, and commit it in place of exactly ``inputs``.

    ``final`` (a whole closed partition): the strongest encodings; otherwise the
    flushes' faster zstd level, since the files will be rewritten later today.
    """
    spec = datasets.get(partition.dataset)
    archive = Archive.of(data_dir)
    fs = archive.filesystem()
    root = archive.fs_path()
    table_rows = read_files(archive, partition, inputs)
    merged = dedupe_on_key(table_rows, spec.key)
    if only_with_duplicates and merged.num_rows == table_rows.num_rows:
        return _unchanged(partition, inputs)
    merged = merged.sort_by(spec.sort_keys)
    whole = len(inputs) == total
    kind = "c" if whole else "m"
    options = parquet_format.write_options(partition.dataset, compacted=final)
    count = max(1, math.ceil(merged.num_rows / file_rows))
    per_file = math.ceil(merged.num_rows / count) if merged.num_rows else 0
    names = output_names([Path(f.path).name for f in inputs], count, kind, clock_ms)
    adds = []
    written: list[str] = []
    try:
        for index, name in enumerate(names):
            part = merged.slice(index * per_file, per_file)
            action = delta.write_file(
                fs,
                root,
                partition,
                part,
                name,
                {**options, "row_group_size": row_group_rows},
            )
            adds.append(action)
            written.append(delta.file_path(root, partition.dataset, action.path))
        delta.commit(
            table,
            partition.dataset,
            adds,
            [delta.remove_action(f) for f in inputs],
            metadata={"jex.operation": "compact", "jex.partition": partition.path},
        )
    except BaseException:
        for path in written:  # never committed: no reader can see them
            with contextlib.suppress(OSError):
                fs.delete_file(path)
        raise
    return PartitionResult(
        partition,
        True,
        files_before=total,
        files_after=total - len(inputs) + len(adds),
        rows_before=table_rows.num_rows,
        rows_after=merged.num_rows,
        bytes_before=sum(f.size for f in inputs),
        bytes_after=sum(a.size for a in adds),
    )


def read_files(
    data_dir: str | Path | Archive, partition: layout.Partition, inputs: list[delta.DataFile]
) -> pa.Table:
    """The rows of ``inputs`` (files of one partition), in creation order, with the
    dataset's columns (``market`` from the partition)."""
    spec = datasets.get(partition.dataset)
    schema = delta.file_schema(partition.dataset)
    archive = Archive.of(data_dir)
    fs = archive.filesystem()
    root = archive.fs_path()

    def read_one(file: delta.DataFile) -> pa.Table:
        return pq.read_table(
            delta.file_path(root, partition.dataset, file.path), schema=schema, filesystem=fs
        )

    with concurrent.futures.ThreadPoolExecutor(READ_THREADS) as pool:
        tables = list(pool.map(read_one, inputs))
    body = pa.concat_tables(tables) if tables else schema.empty_table()
    market = pa.array([partition.market] * body.num_rows, pa.string())
    return body.add_column(0, spec.schema.field("market"), market).select(spec.column_names)


def _unchanged(partition: layout.Partition, found: list[delta.DataFile]) -> PartitionResult:
    rows = sum(max(f.rows, 0) for f in found)
    size = sum(f.size for f in found)
    return PartitionResult(partition, False, len(found), len(found), rows, rows, size, size)

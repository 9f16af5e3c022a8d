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
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import logging
import math
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from collector import datasets
from collector.errors import StorageError
from collector.storage import delta, layout, parquet_format
from collector.storage.location import Archive, is_remote
from collector.storage.writer import dedupe_on_key

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
#: How long a partition's date must have been over before it counts as closed: late
#: flushes and the last klines of the day land within this time.
CLOSED_AFTER_S = 3600.0
#: An open partition's flush files are merged into one once there are this many.
OPEN_FLUSH_FILES = 30
#: An open partition is rewritten whole once it has this many merged files.
OPEN_MERGED_FILES = 8
#: Files read at once while merging (pyarrow releases the GIL while decoding).
READ_THREADS = 4

# part-<stamp>-<random>-c<NN>.parquet: the files of one full compaction share stamp and
# random; -m<NN> marks an open partition's merged flush files.
_COMPACTED = re.compile(
    r"^part-(?P<stamp>\d{8}T\d{9})-(?P<set>[0-9a-f]{8})-(?P<kind>[cm])(?P<seq>\d{2})\.parquet$"
)
_STAMP = re.compile(r"^part-(?P<stamp>\d{8}T\d{9})-")


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class PartitionResult:
    """What compaction did to one partition (all zero changes when it was skipped)."""

    partition: layout.Partition
    compacted: bool
    files_before: int
    files_after: int
    rows_before: int = 0
    rows_after: int = 0
    bytes_before: int = 0
    bytes_after: int = 0

    @property
    def duplicates_removed(self) -> int:
        return self.rows_before - self.rows_after


@dataclass
class GroupReport:
    """Totals over the partitions of one dataset and market that compaction looked at:
    ``partitions`` were rewritten, ``unchanged`` already were compact (their files and
    rows count on both sides)."""

    dataset: str
    market: str
    partitions: int = 0
    unchanged: int = 0
    files_before: int = 0
    files_after: int = 0
    rows_before: int = 0
    rows_after: int = 0
    duplicates_removed: int = 0
    bytes_before: int = 0
    bytes_after: int = 0

    def add(self, result: PartitionResult) -> None:
        if result.compacted:
            self.partitions += 1
        else:
            self.unchanged += 1
        self.files_before += result.files_before
        self.files_after += result.files_after
        self.rows_before += result.rows_before
        self.rows_after += result.rows_after
        self.duplicates_removed += result.duplicates_removed
        self.bytes_before += result.bytes_before
        self.bytes_after += result.bytes_after

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CompactionReport:
    groups: dict[tuple[str, str], GroupReport] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    #: Files deleted by vacuum (replaced ones past the retention, uncommitted ones).
    removed: int = 0

    def group(self, dataset: str, market: str) -> GroupReport:
        return self.groups.setdefault((dataset, market), GroupReport(dataset, market))

    @property
    def files_before(self) -> int:
        return sum(g.files_before for g in self.groups.values())

    @property
    def files_after(self) -> int:
        return sum(g.files_after for g in self.groups.values())

    @property
    def partitions(self) -> int:
        return sum(g.partitions for g in self.groups.values())

    def summary(self) -> str:
        """One line: partitions compacted, files before and after, duplicates, failures."""
        duplicates = sum(g.duplicates_removed for g in self.groups.values())
        text = (
            f"{self.partitions} partition(s) compacted, files {self.files_before} -> "
            f"{self.files_after}, {duplicates} duplicate row(s) removed, "
            f"{self.removed} old file(s) vacuumed"
        )
        if self.errors:
            text += f", {len(self.errors)} partition(s) failed"
        return text


def daemon_running(data_dir: str | Path) -> bool:
    """Whether a collector daemon holds ``<data_dir>/.collector.lock`` (exclusively)."""
    from collector.storage import lock

    return lock.daemon_pid(data_dir) is not None


# -- the archive ----------------------------------------------------------------------------


def compact_archive(
    data_dir: str | Path,
    *,
    closed_before_ms: int | None = None,
    open_partitions: bool = True,
    retention_hours: float = delta.RETENTION_HOURS,
    clock_ms: Callable[[], int] = _wall_ms,
    should_stop: Callable[[], bool] = lambda: False,
    row_group_rows: int = ROW_GROUP_ROWS,
    file_rows: int = FILE_ROWS,
    open_flush_files: int = OPEN_FLUSH_FILES,
    open_merged_files: int = OPEN_MERGED_FILES,
    full_vacuum: bool = True,
) -> CompactionReport:
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
    report = CompactionReport()
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
            closed = closed_before_ms is None or _day_end_ms(partition.date) <= closed_before_ms
            # None: the whole partition; a list: those files ([] when nothing is due).
            chosen: list[delta.DataFile] | None
            if closed:
                chosen = None if not _already_compact(found) else []
            elif open_partitions:
                chosen = _open_choice(found, open_flush_files, open_merged_files)
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
    report: CompactionReport | None = None,
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


def _open_choice(
    found: list[delta.DataFile], flush_files: int, merged_files: int
) -> list[delta.DataFile]:
    """The files of an open partition to merge now: none, its flush files, or all."""
    flushes = [f for f in found if not _COMPACTED.match(Path(f.path).name)]
    merged = len(found) - len(flushes)
    if len(flushes) < flush_files:
        return []
    if merged + 1 >= merged_files:
        return found
    return flushes


def _root(data_dir: str | Path | Archive) -> Archive:
    return Archive.of(data_dir)


def _day_end_ms(date: dt.date) -> int:
    return (date - dt.date(1970, 1, 1)).days * 86_400_000 + 86_400_000


def closed_before_ms(now_ms: int, closed_after_s: float = CLOSED_AFTER_S) -> int:
    """The ``closed_before_ms`` that selects partitions closed at ``now_ms``."""
    return now_ms - int(closed_after_s * 1000)


def closed_before_beside_daemon(data_dir: str | Path, now_ms: int) -> int | None:
    """The ``closed_before_ms`` of a compaction started beside the daemon: the daemon's
    own (:func:`closed_before_ms`) when one is or may be collecting into ``data_dir``
    (it holds the archive's lock, or the archive is on an object store, where daemons on
    other hosts hold no local lock); None (every partition whole) when none can be."""
    if is_remote(data_dir) or daemon_running(data_dir):
        return closed_before_ms(now_ms)
    return None


# -- one partition --------------------------------------------------------------------------


def compact_partition(
    data_dir: str | Path,
    partition: layout.Partition,
    *,
    clock_ms: Callable[[], int] = _wall_ms,
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
    if not only_with_duplicates and _already_compact(found):
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
    names = _output_names([Path(f.path).name for f in inputs], count, kind, clock_ms)
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


def _already_compact(found: list[delta.DataFile]) -> bool:
    """One file, or exactly the complete output of one earlier full compaction."""
    if len(found) <= 1:
        return True
    matches = [_COMPACTED.match(Path(f.path).name) for f in found]
    if not all(m is not None and m["kind"] == "c" for m in matches):
        return False
    sets = {(m["stamp"], m["set"]) for m in matches if m}
    sequence = sorted(int(m["seq"]) for m in matches if m)
    return len(sets) == 1 and sequence == list(range(len(found)))


def _output_names(
    inputs: list[str], count: int, kind: str, clock_ms: Callable[[], int]
) -> list[str]:
    """Names that sort where the inputs did: before any file flushed later.

    Readers that need arrival order among rows of the same time (the newest recent
    trades, ``catalog.last_recent_trades``) order by file name: the outputs carry the
    time stamp of the newest input, and a file flushed after it has a later one.
    """
    stamp = None
    for name in sorted(inputs, reverse=True):
        if match := _STAMP.match(name):
            stamp = match["stamp"]
            break
    if stamp is None:
        stamp = layout.part_name(clock_ms())[len(layout.PART_PREFIX) :].split("-")[0]
    token = secrets.token_hex(4)
    return [
        f"{layout.PART_PREFIX}{stamp}-{token}-{kind}{index:02d}{layout.PARQUET_SUFFIX}"
        for index in range(count)
    ]

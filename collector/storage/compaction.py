"""Compaction: each partition's many small files merged into few large sorted ones.

The daemon writes one file per dataset, market and date at every flush (every 30 s:
thousands a day). :func:`compact_archive` rewrites each closed partition as at most a
few files, de-duplicated on the dataset's key and sorted by its sort keys, with row
groups sized for scans. Readers never see half of it: the merged files go into a new
generation directory and the partition's ``date=D`` symlink is flipped to it in one
rename (:mod:`collector.storage.partitions`). Old generations are deleted a grace
period after the flip.

``kill -9`` at any point leaves the archive complete and without duplicates: until
the flip nothing visible has changed, after it the new generation is complete. The
next pass deletes what the killed one left (an unfinished generation, a temporary
link, expired old generations).
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import logging
import math
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from collector import datasets
from collector.errors import StorageError
from collector.storage import layout, parquet_format, partitions
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
#: How long replaced files stay on disk after the flip, for readers holding a resolved
#: path into the old generation.
GRACE_S = 600.0
#: Files read at once while merging (pyarrow releases the GIL while decoding).
READ_THREADS = 4

LOCK_NAME = ".compact.lock"
DAEMON_LOCK_NAME = ".collector.lock"

# part-<stamp>-<random>-c<NN>.parquet: the files of one compaction share stamp and random.
_COMPACTED = re.compile(
    r"^part-(?P<stamp>\d{8}T\d{9})-(?P<set>[0-9a-f]{8})-c(?P<seq>\d{2})\.parquet$"
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
    #: Another compaction held the archive's lock: nothing was done.
    locked: bool = False
    #: Retired, unfinished or temporary generation entries deleted.
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
        if self.locked:
            return "skipped: another compaction is running on this archive"
        duplicates = sum(g.duplicates_removed for g in self.groups.values())
        text = (
            f"{self.partitions} partition(s) compacted, files {self.files_before} -> "
            f"{self.files_after}, {duplicates} duplicate row(s) removed"
        )
        if self.errors:
            text += f", {len(self.errors)} partition(s) failed"
        return text


# -- locks ----------------------------------------------------------------------------------


@contextmanager
def archive_lock(data_dir: str | Path) -> Iterator[bool]:
    """The archive's compaction lock (``<data_dir>/.compact.lock``), not waited for:
    yields False when another compaction holds it."""
    root = Path(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    with partitions.flock(root / LOCK_NAME, exclusive=True, blocking=False) as acquired:
        yield acquired


def daemon_running(data_dir: str | Path) -> bool:
    """Whether a collector daemon holds ``<data_dir>/.collector.lock`` (exclusively)."""
    path = Path(data_dir) / DAEMON_LOCK_NAME
    if not path.exists():
        return False
    with partitions.flock(path, exclusive=False, blocking=False) as acquired:
        return not acquired


# -- the archive ----------------------------------------------------------------------------


def compact_archive(
    data_dir: str | Path,
    *,
    closed_before_ms: int | None = None,
    grace_s: float = GRACE_S,
    clock_ms: Callable[[], int] = _wall_ms,
    should_stop: Callable[[], bool] = lambda: False,
    row_group_rows: int = ROW_GROUP_ROWS,
    file_rows: int = FILE_ROWS,
) -> CompactionReport:
    """Compact every partition whose UTC date ended at or before ``closed_before_ms``
    (every partition when None), and delete expired and abandoned generations.

    Safe next to writers (the daemon, a backfill): a file flushed meanwhile is carried
    into the new generation. Only one compaction runs per archive: when another holds
    ``<data_dir>/.compact.lock`` this returns at once with ``locked`` set. A failing
    partition is recorded in ``errors`` and the others go on. ``should_stop`` is asked
    between partitions.
    """
    report = CompactionReport()
    root = Path(data_dir).resolve()
    with archive_lock(root) as acquired:
        if not acquired:
            report.locked = True
            log.info("another compaction holds %s; skipped", root / LOCK_NAME)
            return report
        for name in datasets.DATASETS:
            for market in datasets.MARKETS:
                if should_stop():
                    return report
                _compact_market(
                    root,
                    name,
                    market,
                    report,
                    closed_before_ms=closed_before_ms,
                    grace_s=grace_s,
                    clock_ms=clock_ms,
                    should_stop=should_stop,
                    row_group_rows=row_group_rows,
                    file_rows=file_rows,
                )
    return report


def _compact_market(
    root: Path,
    dataset: str,
    market: str,
    report: CompactionReport,
    *,
    closed_before_ms: int | None,
    grace_s: float,
    clock_ms: Callable[[], int],
    should_stop: Callable[[], bool],
    row_group_rows: int,
    file_rows: int,
) -> None:
    directory = root / dataset / f"market={market}"
    if not directory.is_dir():
        return
    # Cleaning first also restores a partition an interrupted conversion left unlinked.
    report.removed += _remove_leftovers(root, dataset, market, grace_s, clock_ms, report)
    for partition in partitions.list_partitions(root, dataset):
        if partition.market != market:
            continue
        if closed_before_ms is not None and _day_end_ms(partition.date) > closed_before_ms:
            continue
        if should_stop():
            return
        try:
            result = _compact(
                root,
                partition,
                grace_s=grace_s,
                clock_ms=clock_ms,
                only_with_duplicates=False,
                row_group_rows=row_group_rows,
                file_rows=file_rows,
            )
        except (OSError, pa.ArrowException, StorageError) as exc:
            report.errors.append(f"{partition.path}: {exc}")
            log.error(
                "compaction of %s failed: %s (the partition is unchanged)", partition.path, exc
            )
            continue
        report.group(dataset, market).add(result)
    # Again after the flips, so that with no grace period nothing is left over.
    report.removed += _remove_leftovers(root, dataset, market, grace_s, clock_ms, report)


def _remove_leftovers(
    root: Path,
    dataset: str,
    market: str,
    grace_s: float,
    clock_ms: Callable[[], int],
    report: CompactionReport,
) -> int:
    try:
        removed = partitions.remove_leftovers(
            root, dataset, market, now_s=clock_ms() / 1000, grace_s=grace_s
        )
    except OSError as exc:
        report.errors.append(f"{dataset}/market={market}: cleaning up: {exc}")
        return 0
    return len(removed)


def _day_end_ms(date: dt.date) -> int:
    return (date - dt.date(1970, 1, 1)).days * 86_400_000 + 86_400_000


def closed_before_ms(now_ms: int, closed_after_s: float = CLOSED_AFTER_S) -> int:
    """The ``closed_before_ms`` that selects partitions closed at ``now_ms``."""
    return now_ms - int(closed_after_s * 1000)


# -- one partition --------------------------------------------------------------------------


def compact_partition(
    data_dir: str | Path,
    partition: layout.Partition,
    *,
    grace_s: float = GRACE_S,
    clock_ms: Callable[[], int] = _wall_ms,
    only_with_duplicates: bool = False,
    row_group_rows: int = ROW_GROUP_ROWS,
    file_rows: int = FILE_ROWS,
) -> PartitionResult:
    """Compact one partition now, whether closed or not (``verify --repair`` uses this).

    With ``only_with_duplicates`` the partition is rewritten only when it holds rows
    sharing a key. Raises :class:`StorageError` when another compaction is running.
    """
    root = Path(data_dir).resolve()
    with archive_lock(root) as acquired:
        if not acquired:
            raise StorageError(
                f"another compaction is running on {root} (it holds {root / LOCK_NAME}); "
                "try again when it has finished",
                dataset=partition.dataset,
                path=str(root / partition.path),
            )
        result = _compact(
            root,
            partition,
            grace_s=grace_s,
            clock_ms=clock_ms,
            only_with_duplicates=only_with_duplicates,
            row_group_rows=row_group_rows,
            file_rows=file_rows,
        )
        partitions.remove_leftovers(
            root, partition.dataset, partition.market, now_s=clock_ms() / 1000, grace_s=grace_s
        )
        return result


def _compact(
    root: Path,
    partition: layout.Partition,
    *,
    grace_s: float,
    clock_ms: Callable[[], int],
    only_with_duplicates: bool,
    row_group_rows: int,
    file_rows: int,
) -> PartitionResult:
    """Merge, write a new generation, flip. The caller holds the archive's lock."""
    spec = datasets.get(partition.dataset)
    found = partitions.current(root, partition)
    if found is None:
        raise FileNotFoundError(f"no partition {partition.path}")
    inputs = partitions.data_files(found.directory)
    if not only_with_duplicates and _already_compact(found.directory, inputs):
        return _unchanged(partition, [found.directory / name for name in inputs])
    if found.number is None and found.directory.is_symlink():
        raise StorageError(
            f"{partition.path} is a symlink to {os.readlink(found.directory)}, not to one of "
            "its generations: left alone (make it a plain directory to have it compacted)",
            dataset=partition.dataset,
        )
    if found.number is None:
        # A plain directory from before generations: converted once, in place.
        with partitions.locked(root, partition, exclusive=True):
            found = partitions.convert_plain(root, partition, flip_time_s=clock_ms() / 1000)
            inputs = partitions.data_files(found.directory)
    paths = [found.directory / name for name in inputs]
    table = _read(paths, spec.schema)
    merged = dedupe_on_key(table, spec.key)
    if only_with_duplicates and merged.num_rows == table.num_rows:
        return _unchanged(partition, paths)
    merged = merged.sort_by(spec.sort_keys)
    generation = partitions.new_generation(root, partition)
    outputs = _write_outputs(
        generation, partition.dataset, merged, inputs, clock_ms, row_group_rows, file_rows
    )

    with partitions.locked(root, partition, exclusive=True):
        now = partitions.current(root, partition)
        if now is None or now.directory != found.directory:
            raise StorageError(
                f"{partition.path} changed generation while it was being compacted; "
                "is another program compacting this archive?",
                dataset=partition.dataset,
            )
        present = partitions.data_files(found.directory)
        missing = sorted(set(inputs) - set(present))
        if missing:
            raise StorageError(
                f"{partition.path}: {len(missing)} file(s) disappeared while it was being "
                f"compacted (e.g. {missing[0]}); not switching, the partition is unchanged",
                dataset=partition.dataset,
            )
        late = sorted(set(present) - set(inputs))
        for name in late:
            # Flushed after we read the inputs: carried over as they are (same inode).
            os.link(found.directory / name, generation / name)
        partitions.fsync_dir(generation)
        partitions.flip(root, partition, generation, flip_time_s=clock_ms() / 1000)

    late_bytes = sum((generation / name).stat().st_size for name in late)
    return PartitionResult(
        partition,
        True,
        files_before=len(inputs) + len(late),
        files_after=len(outputs) + len(late),
        rows_before=table.num_rows,
        rows_after=merged.num_rows,
        bytes_before=sum(path.stat().st_size for path in paths) + late_bytes,
        bytes_after=sum((generation / name).stat().st_size for name in outputs) + late_bytes,
    )


def _unchanged(partition: layout.Partition, paths: list[Path]) -> PartitionResult:
    rows = sum(pq.read_metadata(path).num_rows for path in paths)
    size = sum(path.stat().st_size for path in paths)
    return PartitionResult(partition, False, len(paths), len(paths), rows, rows, size, size)


def _already_compact(directory: Path, names: list[str]) -> bool:
    """One file, or exactly the complete output of one earlier compaction that opens."""
    if len(names) <= 1:
        return True
    matches = [_COMPACTED.match(name) for name in names]
    if not all(matches):
        return False
    sets = {(m["stamp"], m["set"]) for m in matches if m}
    sequence = sorted(int(m["seq"]) for m in matches if m)
    if len(sets) != 1 or sequence != list(range(len(names))):
        return False
    try:
        for name in names:
            pq.read_metadata(directory / name)
    except (OSError, pa.ArrowException):
        return False
    return True


def _read(paths: list[Path], schema: pa.Schema) -> pa.Table:
    """All files as one table, in file-name (creation) order, cast to ``schema``."""

    def read_one(path: Path) -> pa.Table:
        return pq.read_table(path, schema=schema)

    with concurrent.futures.ThreadPoolExecutor(READ_THREADS) as pool:
        tables = list(pool.map(read_one, paths))
    return pa.concat_tables(tables) if tables else schema.empty_table()


def _write_outputs(
    generation: Path,
    dataset: str,
    table: pa.Table,
    inputs: list[str],
    clock_ms: Callable[[], int],
    row_group_rows: int,
    file_rows: int,
) -> list[str]:
    """Write ``table`` as one or more files into ``generation``, each atomically."""
    count = max(1, math.ceil(table.num_rows / file_rows))
    per_file = math.ceil(table.num_rows / count) if table.num_rows else 0
    names = _output_names(inputs, count, clock_ms)
    for index, name in enumerate(names):
        part = table.slice(index * per_file, per_file)
        final = generation / name
        temp = generation / layout.temp_name(name)
        pq.write_table(
            part,
            temp,
            row_group_size=row_group_rows,
            **parquet_format.write_options(dataset),
        )
        # The same rule as the writer: data durable before the name, name after rename.
        _fsync_file(temp)
        os.rename(temp, final)
    partitions.fsync_dir(generation)
    return names


def _output_names(inputs: list[str], count: int, clock_ms: Callable[[], int]) -> list[str]:
    """Names that sort where the inputs did: before any file flushed later.

    Readers that need arrival order among rows of the same time (the newest recent
    trades, ``catalog.last_recent_trades``) order by file name: the outputs carry the
    time stamp of the newest input, and a file flushed after it has a later one.
    """
    stamp = None
    for name in reversed(inputs):
        if match := _STAMP.match(name):
            stamp = match["stamp"]
            break
    if stamp is None:
        stamp = layout.part_name(clock_ms())[len(layout.PART_PREFIX) :].split("-")[0]
    token = secrets.token_hex(4)
    return [
        f"{layout.PART_PREFIX}{stamp}-{token}-c{index:02d}{layout.PARQUET_SUFFIX}"
        for index in range(count)
    ]


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

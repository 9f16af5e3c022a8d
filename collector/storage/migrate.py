"""``jex-collector migrate``: an archive in the layout before Delta Lake, converted into
one Delta table per dataset in another directory.

Each old partition (:mod:`collector.storage.legacy`) becomes one commit to its
dataset's table: its rows read, de-duplicated on the dataset's key, sorted by its sort
keys and written at the compacted encodings, in files of at most
:data:`~collector.storage.compaction.FILE_ROWS` rows named like a compaction's output
(so compaction leaves a closed partition alone). The commit carries the application
transaction ``(jex-migrate:<partition>, 1)``; a partition whose transaction is in the
table is skipped, so a migration stopped at any point (even by ``kill -9``) is resumed
by running it again, and every row ends up in the new archive exactly once. Files a
killed run wrote but did not commit are invisible and deleted by the next vacuum.

After each commit the table is read back (its log, not the files): the rows of the
files the commit added must be the rows written, or the partition is reported.

The old archive is only read. Its ``_state``, ``_wal``, quarantine and DuckDB file are
not copied: the daemon makes them anew. A write-ahead log still holding rows (the
previous release was killed and never restarted) stops the migration, since those
rows are in no Parquet file yet.

A daemon may already be collecting into the new directory while the history is
migrated: its commits and the migration's are appends to different files.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError
from deltalake.transaction import AddAction

from collector import datasets
from collector.errors import CollectorError, ConfigError, StorageError
from collector.storage import compaction, delta, layout, legacy, parquet_format, wal
from collector.storage.lock import daemon_pid
from collector.storage.writer import dedupe_on_key
from collector.units import wall_clock_ms

log = logging.getLogger(__name__)

APP_PREFIX = "jex-migrate"
#: The version each partition's application transaction records (there is only one).
MIGRATED = 1
#: Held on the new archive while a migration runs: two migrations never interleave.
LOCK_NAME = ".migrate.lock"


class MigrationError(CollectorError):
    """A migration cannot start now: a daemon is running on the old archive, its
    write-ahead log holds rows, or another migration into the same place is running.
    (Wrong directories are a :class:`ConfigError`.)"""


def app_id(partition: layout.Partition) -> str:
    return f"{APP_PREFIX}:{partition.path}"


@dataclass
class PartitionMigration:
    """What happened to one old partition: ``migrated`` now, ``done`` by an earlier run,
    ``empty`` (no data files), or ``failed`` (``error`` says why; nothing committed
    unless the error is a row count mismatch found after the commit)."""

    partition: layout.Partition
    status: str
    files_before: int = 0
    files_after: int = 0
    rows_read: int = 0
    rows_written: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    error: str = ""

    @property
    def duplicates_removed(self) -> int:
        return self.rows_read - self.rows_written

    def line(self) -> str:
        """One line of progress."""
        where = self.partition.path
        if self.status == "done":
            return f"{where}: already migrated"
        if self.status == "empty":
            return f"{where}: no data files"
        if self.status == "failed":
            return f"{where}: FAILED: {self.error}"
        return (
            f"{where}: {self.rows_written} row(s), files {self.files_before} -> "
            f"{self.files_after}, {_size(self.bytes_before)} -> {_size(self.bytes_after)}"
            + (
                f", {self.duplicates_removed} duplicate(s) removed"
                if self.duplicates_removed
                else ""
            )
        )


@dataclass
class MigrationResult:
    source: str
    target: str
    partitions: list[PartitionMigration] = field(default_factory=list)
    #: Top-level entries of the old archive that were not copied.
    not_copied: list[str] = field(default_factory=list)
    #: Entries that could not be migrated at all (unknown markets, Delta tables).
    skipped: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for p in self.partitions if p.status == status)

    @property
    def errors(self) -> list[str]:
        return [f"{p.partition.path}: {p.error}" for p in self.partitions if p.status == "failed"]

    def total(self, name: str) -> int:
        return sum(int(getattr(p, name)) for p in self.partitions if p.status == "migrated")

    def summary(self) -> str:
        text = (
            f"{self.count('migrated')} partition(s) migrated, {self.count('done')} already "
            f"done, {self.count('empty')} empty; {self.total('rows_written')} row(s) "
            f"({self.total('duplicates_removed')} duplicate(s) removed); files "
            f"{self.total('files_before')} -> {self.total('files_after')}; "
            f"{_size(self.total('bytes_before'))} -> {_size(self.total('bytes_after'))}"
        )
        if self.errors:
            text += f"; {len(self.errors)} partition(s) FAILED"
        return text


def _size(size: int) -> str:
    """Bytes for people: 812 B, 2.4 kB, 31.0 MB, 1.2 GB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def migrate_archive(
    source: str | Path,
    target: str | Path,
    *,
    ignore_wal: bool = False,
    progress: Callable[[PartitionMigration], None] = lambda _: None,
    clock_ms: Callable[[], int] = wall_clock_ms,
    row_group_rows: int = compaction.ROW_GROUP_ROWS,
    file_rows: int = compaction.FILE_ROWS,
) -> MigrationResult:
    """Convert every partition of the old archive at ``source`` into the Delta tables at
    ``target`` (created as needed); ``progress`` is called after each partition.

    Before anything is written, raises :class:`ConfigError` when the directories are
    wrong and :class:`MigrationError` when the previous release's daemon is running on
    ``source`` or its write-ahead log holds rows (unless ``ignore_wal``). A partition
    that fails is reported and the others go on.
    """
    old, new = _check_directories(source, target)
    pid = daemon_pid(old)
    if pid is not None:
        raise MigrationError(
            f"a collector daemon (pid {pid or '?'}) is running on {old}; stop it first "
            "(the old archive must not change while it is read)"
        )
    unflushed = wal_rows(old)
    if unflushed and not ignore_wal:
        raise MigrationError(
            f"{old / wal.WAL_DIR} holds {unflushed} row(s) the previous release never wrote "
            "to Parquet (it was stopped without a final flush); start that release on "
            f"{old} once and stop it to flush them, or pass --ignore-wal to leave them out"
        )
    report = MigrationResult(str(old), str(new))
    report.not_copied = sorted(  # hidden names are locks: nothing to copy
        entry.name
        for entry in old.iterdir()
        if entry.name not in datasets.DATASETS and not entry.name.startswith(".")
    )
    new.mkdir(parents=True, exist_ok=True)
    with _migration_lock(new):
        for dataset in datasets.DATASETS:
            if not (old / dataset).is_dir():
                continue
            if not legacy.is_legacy_dataset(old, dataset):
                if delta.is_table(old, dataset):
                    report.skipped.append(f"{dataset}: already a Delta table in {old}")
                continue
            report.skipped += [
                f"{entry.relative_to(old)}: unknown market"
                for entry in legacy.unknown_entries(old, dataset)
            ]
            table = delta.ensure_table(str(new), dataset)
            for partition in legacy.list_partitions(old, dataset):
                result = migrate_partition(
                    old,
                    str(new),
                    table,
                    partition,
                    clock_ms=clock_ms,
                    row_group_rows=row_group_rows,
                    file_rows=file_rows,
                )
                report.partitions.append(result)
                progress(result)
    return report


def _check_directories(source: str | Path, target: str | Path) -> tuple[Path, Path]:
    old = Path(source).resolve()
    new = Path(target).resolve()
    if old == new:
        raise ConfigError("--from and --to must be different directories")
    if old in new.parents or new in old.parents:
        raise ConfigError(f"--from {source} and --to {target} must not be inside one another")
    if not old.is_dir():
        raise ConfigError(f"no archive at {source}: the directory does not exist")
    if not legacy.is_legacy_archive(old):
        raise ConfigError(
            f"{source} holds no archive in the layout before Delta Lake: nothing to migrate"
        )
    if new.exists() and legacy.is_legacy_archive(new):
        raise ConfigError(f"--to {target} holds an archive in the old layout itself")
    return old, new


@contextlib.contextmanager
def _migration_lock(new: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``<new>/.migrate.lock`` (dropped by the kernel if killed)."""
    fd = os.open(new / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise MigrationError(f"another migration into {new} is running") from None
        yield
    finally:
        os.close(fd)


def wal_rows(data_dir: Path) -> int:
    """Rows readable in ``<data_dir>/_wal`` (segments of the old writer), read-only."""
    rows = 0
    directory = data_dir / wal.WAL_DIR
    if not directory.is_dir():
        return 0
    for segment in sorted(directory.iterdir()):
        if not segment.is_dir():
            continue
        for stream in sorted(segment.glob(f"*{wal.SUFFIX}")):
            dataset = stream.name[: -len(wal.SUFFIX)]
            if dataset in datasets.DATASETS:
                tables, _cut = wal.read_stream(str(stream), dataset)
                rows += sum(t.num_rows for t in tables)
    return rows


# -- one partition --------------------------------------------------------------------------


def migrate_partition(
    old: Path,
    root: str,
    table: DeltaTable,
    partition: layout.Partition,
    *,
    clock_ms: Callable[[], int] = wall_clock_ms,
    row_group_rows: int = compaction.ROW_GROUP_ROWS,
    file_rows: int = compaction.FILE_ROWS,
) -> PartitionMigration:
    """Migrate one old partition in one commit, unless an earlier run committed it."""
    if delta.committed_segment(table, app_id(partition)) is not None:
        return PartitionMigration(partition, "done")
    try:
        paths = legacy.data_files(old, partition)
        if not paths:
            return PartitionMigration(partition, "empty")
        rows = read_partition(paths, partition)
    except (OSError, pa.ArrowException) as exc:
        return PartitionMigration(partition, "failed", error=f"cannot read it: {exc}")
    spec = datasets.get(partition.dataset)
    merged = dedupe_on_key(rows, spec.key).sort_by(spec.sort_keys)
    result = PartitionMigration(
        partition,
        "migrated",
        files_before=len(paths),
        rows_read=rows.num_rows,
        rows_written=merged.num_rows,
        bytes_before=sum(path.stat().st_size for path in paths),
    )
    fs = pafs.LocalFileSystem()
    options = {
        **parquet_format.write_options(partition.dataset, compacted=True),
        "row_group_size": row_group_rows,
    }
    count = max(1, math.ceil(merged.num_rows / file_rows))
    per_file = math.ceil(merged.num_rows / count)
    adds: list[AddAction] = []
    written: list[str] = []
    try:
        for name in output_names([p.name for p in paths], count, clock_ms):
            part = merged.slice(len(adds) * per_file, per_file)
            action = delta.write_file(fs, root, partition, part, name, options, fsync=os.fsync)
            adds.append(action)
            written.append(delta.file_path(root, partition.dataset, action.path))
        delta.commit(
            table,
            partition.dataset,
            adds,
            app_id=app_id(partition),
            version=MIGRATED,
            metadata={"jex.operation": "migrate", "jex.partition": partition.path},
        )
    except (OSError, pa.ArrowException, DeltaError, StorageError) as exc:
        if not _committed_anyway(table, partition):
            for path in written:  # never committed: no reader can see them
                with contextlib.suppress(OSError):
                    fs.delete_file(path)
            result.status, result.error = "failed", f"cannot write it: {exc}"
            return result
        log.warning("%s: committed, but then: %s", partition.path, exc)
    result.files_after = len(adds)
    result.bytes_after = sum(a.size for a in adds)
    table.update_incremental()
    committed = committed_rows(table, {a.path for a in adds})
    if committed != merged.num_rows:
        result.status = "failed"
        result.error = (
            f"the table holds {committed} row(s) in the files just committed, "
            f"{merged.num_rows} were written"
        )
    return result


def _committed_anyway(table: DeltaTable, partition: layout.Partition) -> bool:
    """Whether the commit went through although something after it failed (a post-commit
    hook): then its files must stay."""
    with contextlib.suppress(DeltaError, OSError):
        table.update_incremental()
        return delta.committed_segment(table, app_id(partition)) == MIGRATED
    return False


def read_partition(paths: list[Path], partition: layout.Partition) -> pa.Table:
    """The rows of an old partition's files, in creation order, with the dataset's
    columns (a column an older file lacks is null; ``market`` is the partition's)."""
    spec = datasets.get(partition.dataset)
    rows = pads.dataset([str(p) for p in paths], schema=spec.schema, format="parquet").to_table()
    market = pa.array([partition.market] * rows.num_rows, pa.string())
    return rows.set_column(
        rows.schema.get_field_index("market"), spec.schema.field("market"), market
    )


def committed_rows(table: DeltaTable, paths: set[str]) -> int:
    """Rows the table's log records for the files ``paths`` (relative to the table)."""
    actions = pa.table(table.get_add_actions(flatten=True))
    if not actions.num_rows:
        return 0
    mine = actions.filter(pc.is_in(actions["path"], pa.array(sorted(paths), pa.string())))
    return int(pc.sum(mine["num_records"]).as_py() or 0)


def output_names(inputs: list[str], count: int, clock_ms: Callable[[], int]) -> list[str]:
    """Names of one compaction's complete output (``part-<stamp>-<set>-cNN.parquet``,
    which compaction leaves alone), stamped with the newest input's time so that files
    flushed later sort after them (readers order rows of one time by file name)."""
    stamps = [
        name[len(layout.PART_PREFIX) :].split("-")[0]
        for name in inputs
        if name.startswith(layout.PART_PREFIX)
    ]
    valid = [s for s in stamps if len(s) == 18 and s[8] == "T" and (s[:8] + s[9:]).isdigit()]
    stamp = (
        max(valid)
        if valid
        else layout.part_name(clock_ms())[len(layout.PART_PREFIX) :].split("-")[0]
    )
    token = secrets.token_hex(4)
    return [
        f"{layout.PART_PREFIX}{stamp}-{token}-c{index:02d}{layout.PARQUET_SUFFIX}"
        for index in range(count)
    ]

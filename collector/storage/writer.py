"""The archive writer: buffers rows per dataset and flushes each as one Delta commit.

Guarantees, each kept by a mechanism named where it happens:

* no reader sees a partial file or a partial flush: a flush writes one file per
  partition and adds all of a dataset's files in one atomic Delta commit
  (:mod:`collector.storage.delta`); a file is invisible until that commit;
* no row is duplicated by a flush: a batch is de-duplicated on the dataset's key, and
  a dataset's commit either happened whole or not at all;
* nothing received is lost by a failed flush (full disk, permissions, a store that
  refuses the commit): the dataset's rows go back into the buffer, the files written
  for it are deleted, and the error says where and why;
* nothing received is lost by ``kill -9`` (with ``wal=True``): every table is
  appended to the write-ahead log (:mod:`collector.storage.wal`) before ``add``
  returns; each commit records the log segment it covers as a Delta application
  transaction (writer id, segment), and :meth:`ArchiveWriter.recover` replays exactly
  the segments that no commit records, without reading the archive;
* a failed fsync stops the writer (:class:`FatalStorageError`) instead of being
  retried: after one, the kernel may have dropped the data and a retry can
  falsely succeed.

Data files are written through ``pyarrow.fs`` and committed through ``deltalake``, so
an object store can replace the local disk without touching the jobs.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from collector import datasets
from collector.errors import FatalStorageError, StorageError
from collector.memory import release_memory
from collector.ops.metrics import Metrics
from collector.storage import delta, layout, parquet_format
from collector.storage.groups import distinct, first_of_each
from collector.storage.location import Archive
from collector.storage.wal import WAL_DIR, WriteAheadLog
from collector.units import DAY_MS, wall_clock_ms

log = logging.getLogger(__name__)


@dataclass
class FlushResult:
    files: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    errors: list[StorageError] = field(default_factory=list)


@dataclass
class Recovery:
    """What :meth:`ArchiveWriter.recover` found in the write-ahead log."""

    segments: int = 0
    replayed: dict[str, int] = field(default_factory=dict)  # rows read from the log
    restored: dict[str, int] = field(default_factory=dict)  # of those, rows not yet archived
    flush: FlushResult = field(default_factory=FlushResult)


class ArchiveWriter:
    """Buffers Arrow tables per dataset; :meth:`flush` writes them out.

    ``add`` may be called from the event loop while ``flush`` runs in a worker
    thread: the buffer is swapped under a lock, so a row is either in the
    batch being written or in the next one, never in both.

    ``wal=True`` (the daemon; only one process per archive may use it, see
    :mod:`collector.storage.lock`) logs every added table to ``<root>/_wal`` first;
    call :meth:`recover` before the first ``add`` and :meth:`sync` about every
    second. ``fsync`` is injectable so that tests can make it fail.
    """

    def __init__(
        self,
        root: str | Path | Archive,
        *,
        filesystem: pafs.FileSystem | None = None,
        clock_ms: Callable[[], int] = wall_clock_ms,
        fsync: Callable[[int], None] = os.fsync,
        wal: bool | WriteAheadLog = False,
        state_dir: str | Path | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        """``root``: the archive (a local folder or ``s3://bucket/prefix``). ``wal=True``
        keeps the write-ahead log in ``<state_dir>/_wal`` (a local folder; by default the
        archive's, which must then be local)."""
        self.archive = Archive.of(root)
        self.fs = filesystem or self.archive.filesystem()
        # A Python wrapper over the local disk (tests inject faults that way) is local too.
        self._local = isinstance(self.fs, pafs.LocalFileSystem) or self.fs.type_name == "py::local"
        self.root = self.archive.uri  # what deltalake opens
        self.fs_root = self.archive.fs_path()  # where pyarrow writes the data files
        self._clock_ms = clock_ms
        self._fsync = fsync
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._buffers: dict[str, list[pa.Table]] = defaultdict(list)
        self._fatal: FatalStorageError | None = None
        if not self.archive.remote:
            self.fs.create_dir(self.fs_root, recursive=True)
        if wal is True:
            if state_dir is None and self.archive.remote:
                raise ValueError("the write-ahead log of an object-store archive needs a state_dir")
            local = Path(state_dir) if state_dir is not None else self.archive.path
            wal = WriteAheadLog(f"{local.resolve()}/{WAL_DIR}", fsync=fsync)
        self.wal: WriteAheadLog | None = wal or None
        self.writer_id = self.wal.writer_id() if self.wal is not None else None
        self._tables: dict[str, DeltaTable] = {}
        self.metrics = metrics or Metrics()
        self.metrics.watch_buffers(self.buffered_rows)
        if self.wal is not None:
            self.metrics.watch_wal(self.wal.size_bytes)

    # -- buffering -------------------------------------------------------------------------

    def add(self, dataset: str, table: pa.Table) -> None:
        """Queue rows of ``dataset``; the table must have the dataset's schema."""
        schema = datasets.get(dataset).schema
        if not table.schema.equals(schema):
            raise StorageError(
                f"rows do not match the {dataset} schema:\n{table.schema}\nexpected:\n{schema}",
                dataset=dataset,
            )
        if table.num_rows:
            with self._lock:
                # Logged under the buffer lock: the rows land in the segment that belongs to
                # the buffer they join. A failed append only loses the log copy (logged).
                if self.wal is not None:
                    self.wal.append(dataset, table)
                self._buffers[dataset].append(table)

    def buffered_rows(self) -> dict[str, int]:
        with self._lock:
            return {name: sum(t.num_rows for t in ts) for name, ts in self._buffers.items() if ts}

    # -- flushing --------------------------------------------------------------------------

    def flush(self) -> FlushResult:
        """Write every buffered row; rows that could not be written stay buffered.

        Raises :class:`FatalStorageError` when an fsync fails, and at every call after
        that: the write-ahead log is then left alone for the next start to replay.
        """
        with self._flush_lock:
            if self._fatal is not None:
                raise self._fatal
            started = time.perf_counter()
            segment = None
            with self._lock:
                pending, self._buffers = self._buffers, defaultdict(list)
                if self.wal is not None:
                    segment = self.wal.rotate()
            try:
                result = self._write_pending(pending, segment)
            except FatalStorageError as exc:
                self._fatal = exc
                raise
            if self.wal is not None and not result.errors:
                # Every row of the older segments is in the archive now (or was already).
                self.wal.delete_older()
            if pending:
                self.metrics.flushed(time.perf_counter() - started)
                release_memory()
            return result

    def _write_pending(
        self, pending: dict[str, list[pa.Table]], segment: int | None = None
    ) -> FlushResult:
        result = FlushResult()
        for name, tables in pending.items():
            if not tables:
                continue
            rows = pa.concat_tables(tables)
            try:
                paths, groups = self._commit_dataset(name, rows, segment)
            except FatalStorageError:
                raise
            except StorageError as exc:
                with self._lock:
                    self._buffers[name][:0] = [rows]
                result.errors.append(exc)
                self.metrics.flush_failed(name)
                log.error(
                    "%s (rows kept in memory, will retry at the next flush)",
                    exc,
                    extra={"dataset": name, "error": str(exc)},
                )
                continue
            result.files += paths
            for partition, part in groups:
                result.rows[name] += part.num_rows
                self.metrics.written(name, partition.market, part.num_rows)
        return result

    def _commit_dataset(
        self, name: str, rows: pa.Table, segment: int | None
    ) -> tuple[list[str], list[tuple[layout.Partition, pa.Table]]]:
        """Write one file per partition of ``rows`` and add them all in one Delta commit
        (tagged with the write-ahead log's ``segment`` when there is one). On failure the
        files written are deleted (no reader ever saw them) and StorageError is raised."""
        spec = datasets.get(name)
        groups = _split_partitions(name, rows)
        options = parquet_format.write_options(name, compacted=False)
        written: list[str] = []
        adds = []
        try:
            # The table first: a data folder never exists without its _delta_log, so a
            # crash before the first commit does not leave what looks like the layout
            # before Delta Lake (which the next start would refuse).
            table = self._table(name)
            for partition, part in groups:
                part = dedupe_on_key(part, spec.key).sort_by(spec.sort_keys)
                action = delta.write_file(
                    self.fs,
                    self.fs_root,
                    partition,
                    part,
                    layout.part_name(self._clock_ms()),
                    options,
                    fsync=self._fsync_checked if self._local else None,
                )
                written.append(delta.file_path(self.fs_root, name, action.path))
                adds.append(action)
            delta.commit(
                table,
                name,
                adds,
                app_id=self.writer_id if segment is not None else None,
                version=segment,
                metadata={"jex.operation": "flush"},
            )
        except (OSError, pa.ArrowException, DeltaError, StorageError) as exc:
            for path in written:  # never committed: no reader saw them
                self._discard(path)
            self._tables.pop(name, None)
            if isinstance(exc, FatalStorageError):
                raise
            raise _storage_error(name, f"{self.root}/{name}", exc) from exc
        return written, groups

    def _table(self, name: str) -> DeltaTable:
        table = self._tables.get(name)
        if table is None:
            table = self._tables[name] = delta.ensure_table(self.root, name)
        else:
            # A commit builds on the snapshot it is given; starting from the latest saves
            # a retry (and this writer's own earlier commit, whose application transaction
            # it would otherwise conflict with).
            table.update_incremental()
        return table

    def _fsync_checked(self, fd: int) -> None:
        # No retry: after a failed fsync the kernel may have dropped the pages it could not
        # write, and a second fsync can succeed without them ever reaching the disk.
        try:
            self._fsync(fd)
        except OSError as exc:
            raise FatalStorageError(
                f"fsync of a new data file under {self.root} failed: {exc.strerror or exc}",
                path=self.root,
            ) from exc

    def _discard(self, path: str) -> None:
        with contextlib.suppress(OSError, FileNotFoundError):
            self.fs.delete_file(path)

    # -- the write-ahead log ---------------------------------------------------------------

    def recover(self) -> Recovery:
        """Replay the write-ahead log left by an earlier process, then flush.

        Call before the first ``add``. Each dataset's table records, as an application
        transaction, the last segment this writer committed to it: the rows of later
        segments are restored, those of earlier ones are already in the table (the crash
        came after the commit, before the segment was deleted). No data is read. Rows
        that fail to flush stay buffered, and the log is kept.
        """
        recovery = Recovery()
        if self.wal is None or self.writer_id is None:
            return recovery
        writer_id = self.writer_id
        committed = {
            name: delta.committed_segment(delta.open_table(self.root, name), writer_id)
            for name in datasets.DATASETS
        }
        # New segments are numbered above every one a table records.
        self.wal.advance(max((v for v in committed.values() if v is not None), default=0))
        replay = self.wal.replay()
        recovery.segments = len(replay.segments)
        for segment in sorted(replay.by_segment):
            for name, tables in replay.by_segment[segment].items():
                rows = sum(t.num_rows for t in tables)
                recovery.replayed[name] = recovery.replayed.get(name, 0) + rows
                done = committed.get(name)
                recovery.restored.setdefault(name, 0)
                if done is not None and segment <= done:
                    continue
                recovery.restored[name] = recovery.restored.get(name, 0) + rows
                with self._lock:
                    self._buffers[name].extend(tables)
        if replay.segments:
            log.info(
                "write-ahead log: replayed %d segment(s) left by the previous run: %s row(s), "
                "%s not yet in the archive",
                len(replay.segments),
                sum(recovery.replayed.values()),
                sum(recovery.restored.values()),
            )
        recovery.flush = self.flush()
        return recovery

    def sync(self) -> None:
        """fsync the write-ahead log's recent appends (about every second; see wal.py)."""
        if self.wal is None or self._fatal is not None:
            return
        try:
            self.wal.sync()
        except FatalStorageError as exc:
            self._fatal = exc
            raise

    def close(self) -> None:
        """Close the write-ahead log's files (segments stay for the next start if needed)."""
        if self.wal is not None:
            self.wal.close()


def _storage_error(dataset: str, where: str, exc: BaseException) -> StorageError:
    """A failed write or commit as a StorageError that says where, why and what to do."""
    if isinstance(exc, delta.ConflictError):
        return exc
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    full = getattr(exc, "errno", None) == 28 or "No space" in str(exc)
    hint = " (the disk is full: free space or move storage.uri)" if full else ""
    return StorageError(
        f"cannot write {dataset} to {where}: {reason}{hint}", dataset=dataset, path=where
    )


def _split_partitions(name: str, table: pa.Table) -> list[tuple[layout.Partition, pa.Table]]:
    """Cut rows of one dataset into (market, UTC date of the event time) partitions."""
    dataset = datasets.get(name)
    days = pc.divide(
        pc.cast(pc.cast(table.column(dataset.time_column), pa.int64()), pa.int64()),
        pa.scalar(DAY_MS, pa.int64()),
    )
    keyed = table.append_column("__day", days)
    groups: list[tuple[layout.Partition, pa.Table]] = []
    for values in distinct(keyed, ("market", "__day")):
        market, day = str(values[0]), int(values[1])
        mask = pc.and_(pc.equal(keyed["market"], market), pc.equal(keyed["__day"], day))
        rows = keyed.filter(mask).drop_columns(["__day"])
        groups.append((layout.Partition(name, market, layout.date_of_ms(day * DAY_MS)), rows))
    groups.sort(key=lambda group: group[0])
    return groups


def dedupe_on_key(table: pa.Table, key: tuple[str, ...]) -> pa.Table:
    """Keep the first row of each key; rows with a null key column (recent trades) all stay."""
    if table.num_rows < 2:
        return table
    rows = pa.array(range(table.num_rows), pa.int64())
    complete = functools.reduce(pc.and_kleene, [pc.is_valid(table[k]) for k in key])
    if isinstance(complete, pa.ChunkedArray):
        complete = complete.combine_chunks()
    keyed = table.select(list(key)).filter(complete)
    firsts = pc.take(rows.filter(complete), first_of_each(keyed, key))
    keep = pa.concat_arrays([firsts, rows.filter(pc.invert(complete))])
    if len(keep) == table.num_rows:
        return table
    return table.take(pc.take(keep, pc.sort_indices(keep)))

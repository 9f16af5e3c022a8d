"""The archive writer: buffers rows per dataset and flushes them as atomic Parquet files.

Guarantees, each kept by a mechanism named where it happens:

* no reader sees a partial file: a file is written under a temporary name that
  no ``*.parquet`` glob matches, made durable, then renamed into place;
* no row is duplicated by a flush: a batch is de-duplicated on the dataset's key,
  and a partition that was written is never written again after a later failure;
* nothing received is lost by a failed flush (full disk, permissions): the rows
  of every partition not yet written go back into the buffer and the error says
  where and why;
* nothing received is lost by ``kill -9`` (with ``wal=True``): every table is
  appended to the write-ahead log (:mod:`collector.storage.wal`) before ``add``
  returns, and :meth:`ArchiveWriter.recover` replays it at the next start,
  dropping the rows that had already reached the archive;
* a failed fsync stops the writer (:class:`FatalStorageError`) instead of being
  retried: after one, the kernel may have dropped the data and a retry can
  falsely succeed.

All file access goes through ``pyarrow.fs`` so that an object store can replace
the local disk without touching the jobs.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from collector import datasets
from collector.errors import FatalStorageError, StorageError
from collector.metrics import Metrics
from collector.storage import layout, parquet_format, partitions
from collector.storage.wal import WAL_DIR, WriteAheadLog

log = logging.getLogger(__name__)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


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
        root: str | Path,
        *,
        filesystem: pafs.FileSystem | None = None,
        clock_ms: Callable[[], int] = _wall_ms,
        fsync: Callable[[int], None] = os.fsync,
        wal: bool | WriteAheadLog = False,
        metrics: Metrics | None = None,
    ) -> None:
        self.fs = filesystem or pafs.LocalFileSystem()
        # A Python wrapper over the local disk (tests inject faults that way) is local too.
        self._local = isinstance(self.fs, pafs.LocalFileSystem) or self.fs.type_name == "py::local"
        self.root = str(Path(root).resolve()) if self._local else str(root).rstrip("/")
        self._clock_ms = clock_ms
        self._fsync = fsync
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._buffers: dict[str, list[pa.Table]] = defaultdict(list)
        self._fatal: FatalStorageError | None = None
        self.fs.create_dir(self.root, recursive=True)
        if wal is True:
            if not self._local:
                raise ValueError("the write-ahead log needs a local data directory")
            wal = WriteAheadLog(f"{self.root}/{WAL_DIR}", fsync=fsync)
        self.wal: WriteAheadLog | None = wal or None
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
            with self._lock:
                pending, self._buffers = self._buffers, defaultdict(list)
                if self.wal is not None:
                    self.wal.rotate()
            try:
                result = self._write_pending(pending)
            except FatalStorageError as exc:
                self._fatal = exc
                raise
            if self.wal is not None and not result.errors:
                # Every row of the older segments is in the archive now (or was already).
                self.wal.delete_older()
            if pending:
                self.metrics.flushed(time.perf_counter() - started)
            return result

    def _write_pending(self, pending: dict[str, list[pa.Table]]) -> FlushResult:
        result = FlushResult()
        for name, tables in pending.items():
            if not tables:
                continue
            groups = _split_partitions(name, pa.concat_tables(tables))
            for index, (partition, rows) in enumerate(groups):
                try:
                    path = self._write_partition(partition, rows)
                except FatalStorageError:
                    raise
                except StorageError as exc:
                    unwritten = [table for _, table in groups[index:]]
                    with self._lock:
                        self._buffers[name][:0] = unwritten
                    result.errors.append(exc)
                    self.metrics.flush_failed(name)
                    log.error(
                        "%s (rows kept in memory, will retry at the next flush)",
                        exc,
                        extra={"dataset": name, "market": partition.market, "error": str(exc)},
                    )
                    break
                result.files.append(path)
                result.rows[name] += rows.num_rows
                self.metrics.written(name, partition.market, rows.num_rows)
        return result

    def _write_partition(self, partition: layout.Partition, rows: pa.Table) -> str:
        dataset = datasets.get(partition.dataset)
        rows = dedupe_on_key(rows, dataset.key).sort_by(dataset.sort_keys)
        logical = f"{self.root}/{partition.path}"
        final_name = layout.part_name(self._clock_ms())
        temp: str | None = None
        try:
            with self._partition_dir(partition) as directory:
                final = f"{directory}/{final_name}"
                temp = f"{directory}/{layout.temp_name(final_name)}"
                self._write_parquet(partition.dataset, rows, temp)
                # fsync the data before the rename: otherwise a power cut can leave the new
                # name pointing at a file whose blocks never reached the disk.
                self._fsync_file(temp)
                self.fs.move(temp, final)
                # fsync the directory after the rename so the new name itself is durable.
                self._fsync_dir(directory)
        except OSError as exc:
            if temp is not None:
                self._discard(temp)
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            hint = (
                " (the disk is full: free space or move storage.data_dir)"
                if (getattr(exc, "errno", None) == 28 or "No space" in str(exc))
                else ""
            )
            raise StorageError(
                f"cannot write {partition.dataset} to {logical}: {reason}{hint}",
                dataset=partition.dataset,
                path=logical,
            ) from exc
        return f"{logical}/{final_name}"

    @contextlib.contextmanager
    def _partition_dir(self, partition: layout.Partition) -> Iterator[str]:
        """The directory a new file of ``partition`` is renamed into, valid for the block.

        On the local disk the partition is a symlink to its current generation
        (:mod:`collector.storage.partitions`): the block holds the partition lock shared,
        so compaction cannot swap generations between our rename and its flip, and the
        file lands in the generation readers see. Other filesystems have plain folders.
        """
        if self._local:
            with partitions.writing(self.root, partition) as generation:
                yield str(generation)
        else:
            directory = f"{self.root}/{partition.path}"
            self.fs.create_dir(directory, recursive=True)
            yield directory

    def _write_parquet(self, dataset: str, rows: pa.Table, path: str) -> None:
        # The stream is opened and closed here, not by pq.write_table: when a write fails
        # (full disk), write_table leaves its stream to the garbage collector, and until
        # then the deleted temporary file keeps holding the disk space we are short of.
        sink = self.fs.open_output_stream(path)
        try:
            pq.write_table(rows, sink, **parquet_format.write_options(dataset, compacted=False))
            sink.close()  # may fail too (buffered bytes, full disk): then the file is discarded
        finally:
            if not sink.closed:
                with contextlib.suppress(OSError):
                    sink.close()

    def _fsync_file(self, path: str) -> None:
        if self._local:
            fd = os.open(path, os.O_RDONLY)
            try:
                self._fsync_or_stop(fd, path)
            finally:
                os.close(fd)

    def _fsync_dir(self, path: str) -> None:
        if self._local:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            try:
                self._fsync_or_stop(fd, path)
            finally:
                os.close(fd)

    def _fsync_or_stop(self, fd: int, path: str) -> None:
        # No retry: after a failed fsync the kernel may have dropped the pages it could not
        # write, and a second fsync can succeed without them ever reaching the disk.
        try:
            self._fsync(fd)
        except OSError as exc:
            raise FatalStorageError(
                f"fsync of {path} failed: {exc.strerror or exc}", path=path
            ) from exc

    def _discard(self, path: str) -> None:
        with contextlib.suppress(OSError, FileNotFoundError):
            self.fs.delete_file(path)

    def remove_orphans(self) -> list[str]:
        """Delete temporary files left by a crash mid-write; they were never visible."""
        removed: list[str] = []
        if self._local:
            # Walked partition by partition: a recursive listing follows each date=
            # symlink and also enters the generation behind it, finding a file twice.
            temps = [str(path) for path in partitions.current_temp_files(self.root)]
        else:
            selector = pafs.FileSelector(self.root, recursive=True, allow_not_found=True)
            temps = [
                info.path
                for info in self.fs.get_file_info(selector)
                if info.type == pafs.FileType.File and layout.is_temp_name(info.base_name)
            ]
        for path in temps:
            self._discard(path)
            removed.append(path)
        if removed:
            log.warning("removed %d unfinished temporary file(s) from a previous run", len(removed))
        return removed

    # -- the write-ahead log ---------------------------------------------------------------

    def recover(self) -> Recovery:
        """Replay the write-ahead log left by an earlier process, then flush.

        Call before the first ``add``. Rows are de-duplicated on the dataset key, and
        rows the archive already holds are dropped (the crash may have come after a
        flush wrote them but before it deleted their segment), so replaying never
        duplicates. Rows that fail to flush stay buffered, and the log is kept.
        """
        recovery = Recovery()
        if self.wal is None:
            return recovery
        replay = self.wal.replay()
        recovery.segments = len(replay.segments)
        for name, tables in replay.tables.items():
            spec = datasets.get(name)
            rows = dedupe_on_key(pa.concat_tables(tables), spec.key) if tables else None
            if rows is None or not rows.num_rows:
                continue
            fresh = pa.concat_tables(
                [
                    self._unarchived(partition, part)
                    for partition, part in _split_partitions(name, rows)
                ]
            )
            recovery.replayed[name] = rows.num_rows
            recovery.restored[name] = fresh.num_rows
            if fresh.num_rows:
                with self._lock:
                    self._buffers[name].insert(0, fresh)
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

    def _unarchived(self, partition: layout.Partition, rows: pa.Table) -> pa.Table:
        """The rows of one partition that its files do not hold yet.

        Compared on the key, or on every column for rows whose key has a null (recent
        trades without an id); only archived rows within the replayed time range are read.
        """
        spec = datasets.get(partition.dataset)
        directory = f"{self.root}/{partition.path}"
        selector = pafs.FileSelector(directory, allow_not_found=True)
        files = [
            info.path
            for info in self.fs.get_file_info(selector)
            if info.type == pafs.FileType.File and info.base_name.endswith(layout.PARQUET_SUFFIX)
        ]
        if not files:
            return rows
        times = rows.column(spec.time_column)
        earliest, latest = pc.min(times), pc.max(times)
        time = pads.field(spec.time_column)
        try:
            archived = pads.dataset(
                files, schema=spec.schema, format="parquet", filesystem=self.fs
            ).to_table(filter=(time >= earliest) & (time <= latest))
        except (OSError, pa.ArrowException) as exc:
            raise StorageError(
                f"cannot read {directory} to check the write-ahead log's rows against it: "
                f"{exc}; move the damaged file out of the archive and start again",
                dataset=partition.dataset,
                path=directory,
            ) from exc
        if not archived.num_rows:
            return rows
        indexed = rows.append_column("__row", pa.array(range(rows.num_rows), pa.int64()))
        on_key = " AND ".join(f"a.{k} = r.{k}" for k in spec.key)
        on_all = " AND ".join(f"a.{c} IS NOT DISTINCT FROM r.{c}" for c in spec.column_names)
        complete = " AND ".join(f"r.{k} IS NOT NULL" for k in spec.key)
        with duckdb.connect() as connection:
            connection.register("replayed", indexed)
            connection.register("archived", archived)
            # Column names come from the dataset registry, never from data.
            keep = connection.execute(
                f"SELECT __row FROM replayed r WHERE CASE WHEN {complete} "  # noqa: S608
                f"THEN NOT EXISTS (SELECT 1 FROM archived a WHERE {on_key}) "
                f"ELSE NOT EXISTS (SELECT 1 FROM archived a WHERE {on_all}) END "
                "ORDER BY __row"
            ).fetchall()
        return rows.take(pa.array([row for (row,) in keep], pa.int64()))

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


def _split_partitions(name: str, table: pa.Table) -> list[tuple[layout.Partition, pa.Table]]:
    """Cut rows of one dataset into (market, UTC date of the event time) partitions."""
    dataset = datasets.get(name)
    days = pc.divide(
        pc.cast(pc.cast(table.column(dataset.time_column), pa.int64()), pa.int64()),
        pa.scalar(86_400_000, pa.int64()),
    )
    keyed = table.append_column("__day", days)
    groups: list[tuple[layout.Partition, pa.Table]] = []
    pairs = keyed.select(["market", "__day"]).group_by(["market", "__day"]).aggregate([])
    for market, day in zip(
        pairs.column("market").to_pylist(), pairs.column("__day").to_pylist(), strict=True
    ):
        mask = pc.and_(pc.equal(keyed["market"], market), pc.equal(keyed["__day"], day))
        rows = keyed.filter(mask).drop_columns(["__day"])
        groups.append((layout.Partition(name, market, layout.date_of_ms(day * 86_400_000)), rows))
    groups.sort(key=lambda group: group[0])
    return groups


def dedupe_on_key(table: pa.Table, key: tuple[str, ...]) -> pa.Table:
    """Keep the first row of each key; rows with a null key column (recent trades) all stay."""
    if table.num_rows < 2:
        return table
    indexed = table.append_column("__row", pa.array(range(table.num_rows), pa.int64()))
    complete = functools.reduce(pc.and_kleene, [pc.is_valid(indexed[k]) for k in key])
    firsts = (
        indexed.filter(complete)
        .group_by(list(key), use_threads=False)
        .aggregate([("__row", "min")])
    )
    keep = pa.concat_arrays(
        [
            firsts.column("__row_min").combine_chunks(),
            indexed.filter(pc.invert(complete)).column("__row").combine_chunks(),
        ]
    )
    if len(keep) == table.num_rows:
        return table
    return table.take(pc.take(keep, pc.sort_indices(keep)))

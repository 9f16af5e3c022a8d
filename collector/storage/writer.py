"""The archive writer: buffers rows per dataset and flushes them as atomic Parquet files.

Guarantees, each kept by a mechanism named where it happens:

* no reader sees a partial file: a file is written under a temporary name that
  no ``*.parquet`` glob matches, made durable, then renamed into place;
* no row is duplicated by a flush: a batch is de-duplicated on the dataset's key,
  and a partition that was written is never written again after a later failure;
* nothing received is lost by a failed flush (full disk, permissions): the rows
  of every partition not yet written go back into the buffer and the error says
  where and why.

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

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from collector import datasets
from collector.errors import StorageError
from collector.storage import layout, partitions

log = logging.getLogger(__name__)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class FlushResult:
    files: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    errors: list[StorageError] = field(default_factory=list)


class ArchiveWriter:
    """Buffers Arrow tables per dataset; :meth:`flush` writes them out.

    ``add`` may be called from the event loop while ``flush`` runs in a worker
    thread: the buffer is swapped under a lock, so a row is either in the
    batch being written or in the next one, never in both.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        filesystem: pafs.FileSystem | None = None,
        clock_ms: Callable[[], int] = _wall_ms,
    ) -> None:
        self.fs = filesystem or pafs.LocalFileSystem()
        self._local = isinstance(self.fs, pafs.LocalFileSystem)
        self.root = str(Path(root).resolve()) if self._local else str(root).rstrip("/")
        self._clock_ms = clock_ms
        self._lock = threading.Lock()
        self._buffers: dict[str, list[pa.Table]] = defaultdict(list)
        self.fs.create_dir(self.root, recursive=True)

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
                self._buffers[dataset].append(table)

    def buffered_rows(self) -> dict[str, int]:
        with self._lock:
            return {name: sum(t.num_rows for t in ts) for name, ts in self._buffers.items() if ts}

    # -- flushing --------------------------------------------------------------------------

    def flush(self) -> FlushResult:
        """Write every buffered row; rows that could not be written stay buffered."""
        with self._lock:
            pending, self._buffers = self._buffers, defaultdict(list)
        result = FlushResult()
        for name, tables in pending.items():
            if not tables:
                continue
            groups = _split_partitions(name, pa.concat_tables(tables))
            for index, (partition, rows) in enumerate(groups):
                try:
                    path = self._write_partition(partition, rows)
                except StorageError as exc:
                    unwritten = [table for _, table in groups[index:]]
                    with self._lock:
                        self._buffers[name][:0] = unwritten
                    result.errors.append(exc)
                    log.error("%s (rows kept in memory, will retry at the next flush)", exc)
                    break
                result.files.append(path)
                result.rows[name] += rows.num_rows
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
                pq.write_table(rows, temp, filesystem=self.fs, compression="zstd")
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

    def _fsync_file(self, path: str) -> None:
        if self._local:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _fsync_dir(self, path: str) -> None:
        if self._local:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

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

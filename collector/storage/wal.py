"""The write-ahead log: rows handed to the writer are on disk before ``add`` returns.

Layout: ``<data_dir>/_wal/<segment>/<dataset>.arrows``, one Arrow IPC stream per
dataset and segment (``_wal`` matches no dataset's glob). The writer appends every
table it buffers to the current segment and starts a new segment at each flush, so a
segment holds exactly the rows of the buffers swapped out by one flush (plus rows a
failed flush put back, which stay in their older segment). Once a flush has written
every partition, the older segments are deleted; at start-up whatever segments are
left are read back (:meth:`WriteAheadLog.replay`) and flushed again.

Durability, and what each mechanism is for:

* every append is one ``writev`` straight to the file (no user-space buffer), so rows
  survive ``kill -9`` the moment ``add`` returns;
* :meth:`WriteAheadLog.sync` fsyncs the files and directories written since its last
  call; the daemon calls it every :data:`SYNC_EVERY_S` seconds, which bounds what a
  power cut can lose to about that much (fsync on every add would cost a disk flush
  per job round);
* a failed append (full disk) is cut back with ``ftruncate`` to the last whole
  record, so a later append never follows half a record and replay reads everything
  before the failure; the rows stay in the writer's memory;
* a record cut by a crash mid-write (or a tail lost by a power cut) ends the file
  early at replay: what is readable is kept and the cut is logged;
* a failed fsync raises :class:`FatalStorageError`: retrying it is unsafe.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import secrets
import shutil
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.ipc as ipc

from collector import datasets
from collector.errors import FatalStorageError, StorageError
from collector.storage.files import WAL_DIR as WAL_DIR
from collector.storage.files import fsync_dir, write_atomically

log = logging.getLogger(__name__)

SUFFIX = ".arrows"
WRITER_ID_FILE = "writer-id"
#: Seconds between fsyncs of the log: a power cut loses at most about this much.
SYNC_EVERY_S = 1.0

Writev = Callable[[int, Sequence[pa.Buffer]], int]


@dataclass
class _File:
    """One dataset's stream in one segment, open for appending."""

    fd: int
    path: str
    size: int  # bytes up to the end of the last whole record
    dirty: bool = True
    broken: bool = False  # a failed append could not be cut back: no more appends


@dataclass
class Replay:
    """What :meth:`WriteAheadLog.replay` read: tables per dataset, and from where."""

    tables: dict[str, list[pa.Table]] = field(default_factory=lambda: defaultdict(list))
    segments: list[int] = field(default_factory=list)
    #: The same tables by segment, then dataset: the writer keeps only the segments a
    #: table's application transaction says it has not committed.
    by_segment: dict[int, dict[str, list[pa.Table]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    cut_bytes: int = 0

    @property
    def rows(self) -> dict[str, int]:
        return {name: sum(t.num_rows for t in ts) for name, ts in self.tables.items()}


class WriteAheadLog:
    """Segments of append-only Arrow streams under ``directory``.

    The caller (:class:`~collector.storage.writer.ArchiveWriter`) decides when to
    :meth:`rotate` and when older segments may go (:meth:`delete_older`). Only one
    process may use a directory: the daemon's archive lock guarantees it.
    """

    def __init__(
        self,
        directory: str,
        *,
        fsync: Callable[[int], None] = os.fsync,
        writev: Writev = os.writev,
    ) -> None:
        self.directory = directory
        self._fsync = fsync
        self._writev = writev
        self._mutex = threading.Lock()
        self._current: int | None = None  # chosen by replay() or the first append
        self._files: dict[int, dict[str, _File]] = defaultdict(dict)
        self._owned: set[int] = set()  # segments this process wrote or replayed
        self._dirs_to_sync: set[str] = set()
        self._failing = False

    # -- appending -------------------------------------------------------------------------

    def append(self, dataset: str, table: pa.Table) -> bool:
        """Append rows to the current segment; False (and one logged error) if that failed.

        A failure leaves the file as it was before the call, so replay is unaffected.
        """
        records = [batch.serialize() for batch in table.to_batches()]
        with self._mutex:
            segment = self._segment()
            try:
                file = self._files[segment].get(dataset)
                if file is None:
                    file = self._create(segment, dataset, table.schema)
                if file.broken:
                    return False
                self._write(file, records)
            except OSError as exc:
                self._report_failure(exc)
                return False
            if self._failing:
                self._failing = False
                log.warning("write-ahead log %s: appends work again", self.directory)
            return True

    def _segment(self) -> int:
        if self._current is None:
            existing = self._on_disk()
            self._current = max(existing, default=0) + 1
        self._owned.add(self._current)
        return self._current

    def _create(self, segment: int, dataset: str, schema: pa.Schema) -> _File:
        directory = self._segment_dir(segment)
        if not os.path.isdir(directory):
            if not os.path.isdir(self.directory):
                self._dirs_to_sync.add(os.path.dirname(self.directory))  # the new _wal's name
            os.makedirs(directory, exist_ok=True)
            self._dirs_to_sync.add(self.directory)  # the new segment's name
        path = f"{directory}/{dataset}{SUFFIX}"
        fd = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o644
        )
        file = _File(fd, path, 0)
        try:
            self._write(file, [schema.serialize()])
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        self._files[segment][dataset] = file
        self._dirs_to_sync.add(directory)  # the new file's name
        return file

    def _write(self, file: _File, records: list[pa.Buffer]) -> None:
        total = sum(record.size for record in records)
        try:
            written = self._writev(file.fd, records)
            if written < total:  # a short write: send the rest (raises if the disk is full)
                rest = memoryview(b"".join(record.to_pybytes() for record in records))[written:]
                while rest:
                    rest = rest[os.write(file.fd, rest) :]
        except OSError:
            # Cut back to the last whole record: a later append must not follow half of one.
            try:
                os.ftruncate(file.fd, file.size)
            except OSError as exc:
                file.broken = True
                log.error(
                    "cannot cut %s back to its last whole record (%s): no more appends to it; "
                    "its rows until then are replayed, later ones are kept in memory only",
                    file.path,
                    exc.strerror or exc,
                )
            raise
        file.size += total
        file.dirty = True

    def _report_failure(self, exc: OSError) -> None:
        if self._failing:
            return
        self._failing = True
        hint = (
            " (the disk is full: free space or move storage.uri)"
            if exc.errno == errno.ENOSPC
            else ""
        )
        log.error(
            "cannot append to the write-ahead log in %s: %s%s; received rows are kept in "
            "memory until the next flush but would be lost by a crash until then "
            "(logged once until appends work again)",
            self.directory,
            exc.strerror or exc,
            hint,
        )

    def size_bytes(self) -> int:
        """Bytes in the segments this process has open (for the metrics)."""
        with self._mutex:
            return sum(file.size for files in self._files.values() for file in files.values())

    # -- segments --------------------------------------------------------------------------

    def rotate(self) -> int:
        """Start a new segment: appends from now on go there (called as buffers are swapped).

        Returns the segment just closed: the buffers swapped out hold its rows and those
        of older segments, and the flush's commits are tagged with it.
        """
        with self._mutex:
            closed = self._segment()
            self._current = closed + 1
            return closed

    def advance(self, floor: int) -> None:
        """Number new segments above ``floor``: a segment number the archive already
        records as committed must never be used again (the log may have been emptied)."""
        with self._mutex:
            if self._current is None:
                self._current = max(self._on_disk(), default=0) + 1
            self._current = max(self._current, floor + 1)

    def writer_id(self) -> str:
        """This log's writer id (made once, kept in the log's directory): the
        application id of the writer's Delta commits."""
        path = f"{self.directory}/{WRITER_ID_FILE}"
        try:
            with open(path, encoding="ascii") as file:
                text = file.read().strip()
            if text:
                return text
        except FileNotFoundError:
            pass
        os.makedirs(self.directory, exist_ok=True)
        text = f"jex-collector-{secrets.token_hex(8)}"
        write_atomically(path, (text + "\n").encode("ascii"))
        return text

    def delete_older(self) -> None:
        """Delete the segments before the current one (their rows are all in the archive)."""
        with self._mutex:
            current = self._segment()
            doomed = sorted(s for s in self._owned if s < current)
            for segment in doomed:
                for file in self._files.pop(segment, {}).values():
                    os.close(file.fd)
                self._owned.discard(segment)
        for segment in doomed:
            # Deleting is not fsynced: a deletion lost by a power cut replays rows that the
            # replay then finds in the archive and drops.
            shutil.rmtree(self._segment_dir(segment), ignore_errors=True)

    def sync(self) -> None:
        """fsync what was appended since the last call, and new names; failure is fatal."""
        with self._mutex:
            # Duplicated descriptors: a concurrent delete_older may close the originals.
            pending = [
                (os.dup(file.fd), file.path)
                for files in self._files.values()
                for file in files.values()
                if file.dirty
            ]
            for files in self._files.values():
                for file in files.values():
                    file.dirty = False
            directories, self._dirs_to_sync = sorted(self._dirs_to_sync), set()
        try:
            while pending:
                fd, path = pending[-1]
                self._fsync_fd(fd, path)
                os.close(fd)
                pending.pop()
            for directory in directories:
                with contextlib.suppress(FileNotFoundError):  # deleted meanwhile
                    fsync_dir(directory, fsync=functools.partial(self._fsync_fd, path=directory))
        finally:
            for fd, _ in pending:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _fsync_fd(self, fd: int, path: str) -> None:
        try:
            self._fsync(fd)
        except OSError as exc:
            raise FatalStorageError(
                f"fsync of the write-ahead log {path} failed: {exc.strerror or exc}",
                path=path,
            ) from exc

    def close(self) -> None:
        """Close every file; segments stay on disk (what they hold may still be needed)."""
        with self._mutex:
            for files in self._files.values():
                for file in files.values():
                    with contextlib.suppress(OSError):
                        os.close(file.fd)
            self._files.clear()

    # -- replay ----------------------------------------------------------------------------

    def replay(self) -> Replay:
        """Read every segment left by an earlier process; call before the first append.

        The segments read are deleted by the next :meth:`delete_older`. Unreadable tails
        (a record cut by a crash) are logged and skipped.
        """
        with self._mutex:
            existing = self._on_disk()
            if self._current is None:
                self._current = max(existing, default=0) + 1
            segments = [s for s in existing if s < self._current]
            self._owned.update(segments)
        replay = Replay(segments=segments)
        for segment in segments:
            directory = self._segment_dir(segment)
            for name in sorted(os.listdir(directory)):
                if not name.endswith(SUFFIX):
                    continue
                dataset = name[: -len(SUFFIX)]
                if dataset not in datasets.DATASETS:
                    log.warning(
                        "write-ahead log: ignoring %s/%s (no such dataset)", directory, name
                    )
                    continue
                tables, cut = read_stream(f"{directory}/{name}", dataset)
                replay.tables[dataset].extend(tables)
                replay.by_segment[segment][dataset].extend(tables)
                replay.cut_bytes += cut
        return replay

    def _on_disk(self) -> list[int]:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return sorted(int(name) for name in names if name.isdigit())

    def _segment_dir(self, segment: int) -> str:
        return f"{self.directory}/{segment:012d}"


def read_stream(path: str, dataset: str) -> tuple[list[pa.Table], int]:
    """The whole records of one log file, and how many bytes after them were unreadable."""
    schema = datasets.get(dataset).schema
    with open(path, "rb") as handle:
        data = handle.read()
    source = pa.BufferReader(data)
    good_end = 0
    tables: list[pa.Table] = []
    problem = ""
    try:
        reader = ipc.MessageReader.open_stream(source)
        written_schema = ipc.read_schema(reader.read_next_message())
        good_end = source.tell()
        while True:
            batch = ipc.read_record_batch(reader.read_next_message(), written_schema)
            tables.append(pa.Table.from_batches([batch]))
            good_end = source.tell()
    except StopIteration:
        pass  # the end of the file, or a zeroed tail (power cut): an end-of-stream marker
    except (OSError, pa.ArrowException) as exc:
        problem = str(exc)
    cut = len(data) - good_end
    if cut:
        log.warning(
            "write-ahead log %s: kept %d row(s); the last %d byte(s) were cut by a crash "
            "or a power cut mid-write and are skipped%s",
            path,
            sum(t.num_rows for t in tables),
            cut,
            f" ({problem})" if problem else "",
        )
    if tables and not tables[0].schema.equals(schema):
        try:
            tables = [t.select(schema.names).cast(schema) for t in tables]
        except (KeyError, pa.ArrowException) as exc:
            raise StorageError(
                f"the write-ahead log {path} holds {dataset} rows of another schema that "
                f"cannot be converted ({exc}); move the file out of the archive to start",
                path=path,
            ) from exc
    return tables, cut

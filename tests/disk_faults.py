"""A local disk that can be switched to "full" (ENOSPC) or to failing fsyncs, for tests.

Passed to the writer as dependencies (a ``pyarrow.fs`` filesystem, ``writev`` for the
write-ahead log, ``fsync``), never patched in.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from collector.storage.wal import WriteAheadLog
from collector.storage.writer import ArchiveWriter


def enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class Disk:
    """Switches shared by the filesystem wrapper, ``writev`` and ``fsync`` below."""

    def __init__(self) -> None:
        self.full = False
        self.fsync_fails = False
        self.log_enospc = 0  # write-ahead log appends refused
        self.file_enospc = 0  # Parquet writes refused
        self.fsyncs = 0

    def writev(self, fd: int, buffers: Sequence[Any]) -> int:
        if self.full:
            # Half of the first buffer gets out before the disk fills: a torn record.
            first = memoryview(buffers[0]).cast("B")
            os.write(fd, first[: max(1, len(first) // 2)])
            self.log_enospc += 1
            raise enospc()
        return os.writev(fd, buffers)

    def fsync(self, fd: int) -> None:
        self.fsyncs += 1
        if self.fsync_fails:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        os.fsync(fd)

    def filesystem(self) -> pafs.PyFileSystem:
        return pafs.PyFileSystem(_Handler(self))

    def writer(self, root: object, **kwargs: Any) -> ArchiveWriter:
        """An ArchiveWriter with a write-ahead log, every write going through this disk."""
        root_path = os.path.realpath(str(root))
        log = WriteAheadLog(f"{root_path}/_wal", fsync=self.fsync, writev=self.writev)
        return ArchiveWriter(
            root_path, filesystem=self.filesystem(), fsync=self.fsync, wal=log, **kwargs
        )


class _FillingStream:
    """A Parquet output stream that writes a few bytes, then hits a full disk."""

    closed = False

    def __init__(self, inner: pa.NativeFile, disk: Disk) -> None:
        self.inner = inner
        self.disk = disk

    def write(self, data: Any) -> int:
        if self.disk.full:
            self.inner.write(bytes(memoryview(data).cast("B")[:3]))
            self.disk.file_enospc += 1
            raise enospc()
        return int(self.inner.write(data))

    def flush(self) -> None:
        self.inner.flush()

    def close(self) -> None:
        self.inner.close()
        self.closed = True


class _Handler(pafs.FileSystemHandler):
    """The local filesystem, except that writes fail with ENOSPC while the disk is full."""

    def __init__(self, disk: Disk) -> None:
        self.disk = disk
        self.base = pafs.LocalFileSystem()

    def __eq__(self, other: object) -> bool:
        return self is other

    def __ne__(self, other: object) -> bool:
        return self is not other

    def get_type_name(self) -> str:
        return "local"  # the writer treats "py::local" as the local disk (fsync, WAL)

    def normalize_path(self, path: str) -> str:
        return str(self.base.normalize_path(path))

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return list(self.base.get_file_info(paths))

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        return list(self.base.get_file_info(selector))

    def create_dir(self, path: str, recursive: bool) -> None:
        self.base.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        self.base.delete_dir(path)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self.base.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self) -> None:
        raise NotImplementedError

    def delete_file(self, path: str) -> None:
        self.base.delete_file(path)

    def move(self, src: str, dest: str) -> None:
        self.base.move(src, dest)

    def copy_file(self, src: str, dest: str) -> None:
        self.base.copy_file(src, dest)

    def open_input_stream(self, path: str) -> pa.NativeFile:
        return self.base.open_input_stream(path)

    def open_input_file(self, path: str) -> pa.NativeFile:
        return self.base.open_input_file(path)

    def open_output_stream(self, path: str, metadata: dict[str, str]) -> pa.NativeFile:
        return pa.PythonFile(_FillingStream(self.base.open_output_stream(path), self.disk), "w")

    def open_append_stream(self, path: str, metadata: dict[str, str]) -> pa.NativeFile:
        return pa.PythonFile(_FillingStream(self.base.open_append_stream(path), self.disk), "w")

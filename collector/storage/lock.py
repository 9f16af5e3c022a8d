"""One collecting daemon per archive: an exclusive ``flock`` on ``<data_dir>/.collector.lock``.

Two daemons on one archive would fetch every row twice and, worse, each would replay
and delete the other's write-ahead log. ``flock`` is used because the kernel drops the
lock when its holder dies, even by ``kill -9``: a crash never leaves a stale lock to
clean up by hand. The file also holds the holder's pid, for the error message only.

Backfill, repair and compaction do not take the lock (they write only whole atomic
files and may run next to the daemon); they can ask :func:`daemon_pid` whether a
daemon is running.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

from collector.errors import ArchiveLockedError
from collector.storage.files import LOCK_NAME as LOCK_NAME

#: How long :meth:`ArchiveLock.acquire` keeps trying: a probe by :func:`daemon_pid`
#: holds a shared lock for a few microseconds, which must not look like a daemon.
ACQUIRE_WAIT_S = 1.0


def lock_path(data_dir: str | Path) -> Path:
    return Path(data_dir).resolve() / LOCK_NAME


class ArchiveLock:
    """The daemon's lock on its archive, held from :meth:`acquire` until :meth:`release`."""

    def __init__(self, data_dir: str | Path) -> None:
        self.path = lock_path(data_dir)
        self._fd: int | None = None

    def acquire(self, wait_s: float = ACQUIRE_WAIT_S) -> None:
        """Take the lock or raise :class:`ArchiveLockedError` naming the holder's pid."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    pid = _read_pid(fd)
                    os.close(fd)
                    directory = self.path.parent
                    raise ArchiveLockedError(
                        f"another jex-collector (pid {pid or '?'}) is already collecting into "
                        f"{directory}; stop it or use another --data-dir",
                        pid=pid,
                        path=str(directory),
                    ) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the only descriptor releases the flock
            self._fd = None

    def __enter__(self) -> ArchiveLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


def daemon_pid(data_dir: str | Path) -> int | None:
    """The pid of the daemon collecting into ``data_dir``, or None when none is.

    Returns 0 when a daemon holds the lock but has not written its pid yet. A
    non-blocking shared lock is tried: it fails only while a daemon holds its
    exclusive one. The answer can be stale the moment it is returned.
    """
    try:
        fd = os.open(lock_path(data_dir), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return 0
    return int(text) if text.isdigit() else 0

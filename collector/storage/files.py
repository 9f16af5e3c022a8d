"""Files on a local disk: the names the collector reserves beside the tables, writing a
file whole (atomically) and fsyncing a folder.

Reserved names, under the archive (or the state dir, ``storage.state_dir``):

* :data:`STATE_DIR` (``_state/``): the daemons' state files, the exchange's pause, the
  damaged files' record;
* :data:`QUARANTINE_DIR` (``_quarantine/``): payloads the collector could not read, and
  data files a repair set aside;
* :data:`WAL_DIR` (``_wal/``): the write-ahead log (in the state dir);
* :data:`LOCK_NAME` (``.collector.lock``): the collecting daemon's lock.

A file being written is first a temporary file beside its final name,
``.<name>.<pid>.<random>.tmp`` (:func:`temp_path`): hidden, never read as data, and the
pid tells a cleaner whether its writer still lives.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path

STATE_DIR = "_state"
QUARANTINE_DIR = "_quarantine"
WAL_DIR = "_wal"
LOCK_NAME = ".collector.lock"

#: A temporary file's name starts with this (hidden) and ends with :data:`TEMP_SUFFIX`.
TEMP_PREFIX = "."
TEMP_SUFFIX = ".tmp"


def temp_path(path: str | Path) -> Path:
    """A fresh temporary name beside ``path``: ``.<name>.<pid>.<random>.tmp``."""
    path = Path(path)
    return path.with_name(
        f"{TEMP_PREFIX}{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
    )


def write_atomically(path: str | Path, data: bytes | str, *, fsync: bool = True) -> None:
    """Write ``data`` (``str`` as UTF-8) to ``path`` whole: a temporary file in the same
    folder, renamed over ``path``; a reader sees the old content or the new, never a part.

    ``fsync`` (the default): the file is fsynced before the rename and the folder after
    it, so that after a power cut ``path`` holds the new content. Without it, a power
    cut may leave the old content, or none. The folder must exist. On any failure the
    temporary file is removed and the error raised.
    """
    path = Path(path)
    body = data.encode("utf-8") if isinstance(data, str) else data
    temp = temp_path(path)
    try:
        with open(temp, "wb") as handle:
            handle.write(body)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    if fsync:
        fsync_dir(path.parent)


def fsync_dir(path: str | Path, *, fsync: Callable[[int], None] = os.fsync) -> None:
    """fsync the folder ``path``: the names created, renamed or removed in it last a
    power cut. ``fsync`` is called with the folder's descriptor (injectable, for callers
    that check its failure). Raises FileNotFoundError when there is no such folder."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fsync(fd)
    finally:
        os.close(fd)

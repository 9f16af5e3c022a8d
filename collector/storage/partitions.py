"""Partition directories on the local disk: generations, the symlink flip, and the locks.

A partition ``<dataset>/market=M/date=D`` is a symlink to a *generation* directory next
to it, ``market=M/.date=D.g<N>``::

    trades/market=spot/date=2026-01-05   -> .date=2026-01-05.g2
    trades/market=spot/.date=2026-01-05.g2/part-....parquet
    trades/market=spot/.date=2026-01-05.g1/...        (retired, deleted after a grace period)
    trades/market=spot/.date=2026-01-05.lock          (the partition lock)

Readers glob ``market=*/date=*/*.parquet``: the glob follows the symlink, and no
``date=*`` pattern matches a dot name, so a reader lists exactly one generation.
Compaction writes a new generation beside the current one and then replaces the
symlink in one ``rename``: a listing sees the old set of files or the new one, never
both and never neither. (A scan that listed the old generation and opens one of its
files after the flip gets "No such file or directory"; see the README's Compaction
section.)

Locks, with ``fcntl.flock`` on ``market=M/.date=D.lock``: writers hold it shared while
they add a file (temp name, rename, fsync), so any number of writers run at once;
compaction holds it exclusive only for its last step (list what arrived meanwhile,
hard-link it into the new generation, flip). A lock dies with its process, so a
``kill -9`` never leaves one behind.

Archives written before generations existed have plain ``date=D`` directories. The
writer keeps writing into them; compaction converts them (:func:`convert_plain`).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import re
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from collector.storage import layout

log = logging.getLogger(__name__)

_GENERATION = re.compile(r"^\.date=(?P<date>\d{4}-\d{2}-\d{2})\.g(?P<number>\d+)$")
_DATE_LINK = re.compile(r"^date=(?P<date>\d{4}-\d{2}-\d{2})$")
# A flip or a conversion makes a symlink under a temporary name first; after a conversion
# the same kind of name holds the retired plain directory (see convert_plain).
_TEMPORARY = re.compile(r"^\.date=(?P<date>\d{4}-\d{2}-\d{2})\.tmp-[0-9a-f]+$")


def generation_name(date: str, number: int) -> str:
    return f".date={date}.g{number}"


def link_name(date: str) -> str:
    return f"date={date}"


def lock_name(date: str) -> str:
    return f".date={date}.lock"


def temporary_name(date: str) -> str:
    return f".date={date}.tmp-{secrets.token_hex(4)}"


def market_dir(root: str | Path, partition: layout.Partition) -> Path:
    return Path(root) / partition.dataset / f"market={partition.market}"


@dataclass(frozen=True)
class Current:
    """Where a partition's visible files are.

    ``number`` is the generation number, or None for a plain directory (an archive
    from before generations, or a ``date=D`` symlink that points elsewhere).
    """

    directory: Path
    number: int | None


# -- locks --------------------------------------------------------------------------------


@contextlib.contextmanager
def locked(root: str | Path, partition: layout.Partition, *, exclusive: bool) -> Iterator[None]:
    """Hold the partition's lock: shared for writers, exclusive for compaction's flip."""
    directory = market_dir(root, partition)
    directory.mkdir(parents=True, exist_ok=True)
    with flock(directory / lock_name(partition.date.isoformat()), exclusive=exclusive):
        yield


@contextlib.contextmanager
def flock(path: Path, *, exclusive: bool, blocking: bool = True) -> Iterator[bool]:
    """``fcntl.flock`` on ``path`` (created if missing); yields False when ``blocking``
    is off and someone else holds a conflicting lock.

    Each call opens the file anew, so two threads of one process exclude each other
    just as two processes do (flock locks belong to the open file, not the process).
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        operation = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        try:
            fcntl.flock(fd, operation | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# -- resolving and creating ---------------------------------------------------------------


def current(root: str | Path, partition: layout.Partition) -> Current | None:
    """The partition's visible directory, or None when it does not exist."""
    return _current(market_dir(root, partition), partition.date.isoformat())


def _current(directory: Path, date: str) -> Current | None:
    link = directory / link_name(date)
    try:
        info = os.lstat(link)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode):
        target = os.readlink(link)
        match = _GENERATION.match(target)
        if match and match["date"] == date:
            return Current(directory / target, int(match["number"]))
        return Current(link, None)  # a symlink someone else made: use it as it is
    if stat.S_ISDIR(info.st_mode):
        return Current(link, None)
    raise NotADirectoryError(errno.ENOTDIR, "partition path is not a directory", str(link))


@contextlib.contextmanager
def writing(root: str | Path, partition: layout.Partition) -> Iterator[Path]:
    """Yield the directory a new file of ``partition`` goes into, under the shared lock.

    Creates the partition (generation 0 and its ``date=D`` symlink) when it does not
    exist. The directory stays the partition's current one until the block ends, so a
    file renamed into it before then is in the generation readers see; compaction's
    flip waits for the block to end.
    """
    directory = market_dir(root, partition)
    date = partition.date.isoformat()
    with locked(root, partition, exclusive=False):
        yield _resolve_or_create(directory, date)


def _resolve_or_create(directory: Path, date: str) -> Path:
    for _ in range(3):
        found = _current(directory, date)
        if found is not None:
            return found.directory
        generation = directory / generation_name(date, 0)
        # An existing generation 0 without a link is the state an interrupted conversion
        # leaves (convert_plain's fallback): it is complete, so adopting it is right.
        generation.mkdir(exist_ok=True)
        try:
            os.symlink(generation.name, directory / link_name(date))
        except FileExistsError:
            continue  # another writer created the partition first: use theirs
        fsync_dir(directory)
        return generation
    raise FileExistsError(errno.EEXIST, "partition keeps changing", str(directory))


# -- compaction's steps (the caller holds the archive's compaction lock) --------------------


def convert_plain(root: str | Path, partition: layout.Partition, *, flip_time_s: float) -> Current:
    """Turn a plain ``date=D`` directory into generation 0 behind a symlink.

    The caller holds the partition lock exclusively. Generation 0 gets hard links of
    every file, then the directory and a symlink to generation 0 are swapped with
    ``renameat2(RENAME_EXCHANGE)`` in one step: a reader mid-scan keeps finding every
    file it listed under the same names. Where the kernel or filesystem cannot exchange
    (not Linux, or EINVAL), the fallback is two renames, and for the moment between
    them the partition is missing from a listing; a crash there leaves generation 0
    without its link, which the next writer or compaction pass adopts. This happens
    once per partition, the first time it is compacted.
    """
    directory = market_dir(root, partition)
    date = partition.date.isoformat()
    found = _current(directory, date)
    if found is None:
        raise FileNotFoundError(errno.ENOENT, "no such partition", str(directory))
    if found.number is not None or found.directory.is_symlink():
        return found
    plain = found.directory
    generation = directory / generation_name(date, 0)
    if generation.exists():
        shutil.rmtree(generation)  # an earlier conversion stopped halfway; start again
    generation.mkdir()
    for name in sorted(os.listdir(plain)):
        source = plain / name
        if source.is_file() and not source.is_symlink() and not layout.is_temp_name(name):
            os.link(source, generation / name)
    fsync_dir(generation)
    temporary = directory / temporary_name(date)
    _make_link(temporary, generation.name, flip_time_s)
    # Either way the old plain directory ends under a temporary name, deleted (like a
    # retired generation) once the grace period has passed.
    if not _exchange(temporary, plain):
        os.rename(plain, directory / temporary_name(date))
        os.replace(temporary, plain)
    fsync_dir(directory)
    return Current(generation, 0)


def new_generation(root: str | Path, partition: layout.Partition) -> Path:
    """Create an empty generation numbered above every existing one (flipped or not)."""
    directory = market_dir(root, partition)
    date = partition.date.isoformat()
    numbers = [number for name, number in _generations(directory) if name == date]
    generation = directory / generation_name(date, max(numbers, default=-1) + 1)
    generation.mkdir()
    return generation


def flip(
    root: str | Path, partition: layout.Partition, generation: Path, *, flip_time_s: float
) -> None:
    """Point ``date=D`` at ``generation`` atomically and make that durable.

    The caller holds the partition lock exclusively. The new link carries the flip
    time as its own mtime: the generations it retires expire ``grace`` after it.
    """
    directory = market_dir(root, partition)
    date = partition.date.isoformat()
    temporary = directory / temporary_name(date)
    _make_link(temporary, generation.name, flip_time_s)
    os.replace(temporary, directory / link_name(date))
    fsync_dir(directory)


def _make_link(path: Path, target: str, time_s: float) -> None:
    os.symlink(target, path)
    # The link's own mtime records when it replaced the previous one (set before the
    # rename, so no crash can leave a flipped link without it).
    os.utime(path, (time_s, time_s), follow_symlinks=False)


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False if unsupported."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(second))


# -- listing and cleaning -----------------------------------------------------------------


def list_partitions(root: str | Path, dataset: str) -> list[layout.Partition]:
    """Every partition of ``dataset``, plain or generational, sorted."""
    found = []
    for directory in sorted((Path(root) / dataset).glob("market=*")):
        for name in sorted(os.listdir(directory)):
            match = _DATE_LINK.match(name)
            if match and (directory / name).is_dir():
                with contextlib.suppress(ValueError):
                    found.append(layout.Partition.from_path(f"{dataset}/{directory.name}/{name}"))
    return found


def switch_marks(root: str | Path) -> dict[tuple[str, str], int]:
    """An identity for every partition of the archive: its ``date=D`` entry's inode.

    A flip or a conversion replaces the entry, so its inode changes; adding files to
    a partition does not. Reading these before and after a query tells whether any
    partition was switched while it ran (:func:`collector.catalog.query` retries
    then). Only ``readdir`` is needed: no ``stat`` per partition.
    """
    marks: dict[tuple[str, str], int] = {}
    for dataset_dir in _subdirectories(str(root), lambda name: not name.startswith(".")):
        for directory in _subdirectories(dataset_dir, lambda name: name.startswith("market=")):
            with contextlib.suppress(FileNotFoundError), os.scandir(directory) as entries:
                for entry in entries:
                    if entry.name.startswith("date="):
                        marks[(directory, entry.name)] = entry.inode()
    return marks


def _subdirectories(path: str, wanted: Callable[[str], bool]) -> list[str]:
    try:
        with os.scandir(path) as entries:
            return [e.path for e in entries if wanted(e.name) and e.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []


def switched(before: dict[tuple[str, str], int], after: dict[tuple[str, str], int]) -> bool:
    """Whether a partition seen in ``before`` was switched (or removed) by ``after``;
    partitions created meanwhile do not count (readers may or may not see new files)."""
    return any(after.get(key) != inode for key, inode in before.items())


def is_data_file(name: str) -> bool:
    """A finished data file: not a temporary (hidden) file, not a lock or a folder."""
    return name.endswith(layout.PARQUET_SUFFIX) and not name.startswith(".")


def data_files(directory: Path) -> list[str]:
    """Names of the finished data files in a partition directory, in creation order."""
    return sorted(name for name in os.listdir(directory) if is_data_file(name))


def data_file_sizes(directory: Path) -> list[tuple[Path, int]]:
    """(path, bytes) of each finished data file in a partition directory. A file removed
    while it is listed is left out; a directory that is gone raises FileNotFoundError
    (a compaction switched the partition: resolve it again)."""
    found: list[tuple[Path, int]] = []
    with os.scandir(directory) as entries:
        for entry in entries:
            if is_data_file(entry.name):
                with contextlib.suppress(FileNotFoundError):
                    found.append((Path(entry.path), entry.stat().st_size))
    return found


def current_temp_files(root: str | Path) -> list[Path]:
    """Temporary files in the directories writers write to (each partition's current one).

    Each file once: symlinked partitions are visited through their link only. Retired
    and unfinished generations are left to compaction's cleanup, which deletes them
    whole (and a generation being written by a running compaction is not touched).
    """
    found = []
    for partition_dir in sorted(Path(root).glob("*/market=*/date=*")):
        if partition_dir.is_dir():
            found += [
                partition_dir / name
                for name in sorted(os.listdir(partition_dir))
                if layout.is_temp_name(name)
            ]
    return found


def remove_leftovers(
    root: str | Path, dataset: str, market: str, *, now_s: float, grace_s: float
) -> list[Path]:
    """Delete what no reader can see any more, in one ``market=M`` directory.

    * generations older than the current one, and plain directories replaced by a
      conversion, once ``grace_s`` has passed since the current link was made (its
      mtime: the latest flip);
    * generations newer than the current one, and any generation of a partition still
      in plain form: a compaction that never flipped;
    * temporary symlinks of an interrupted flip or conversion.

    A generation 0 without a ``date=D`` link is what an interrupted fallback conversion
    leaves; it gets its link back instead. The caller holds the archive's compaction
    lock, so no generation is being made meanwhile; writers only ever write into a
    partition's current directory, which is never deleted here.
    """
    directory = Path(root) / dataset / f"market={market}"
    if not directory.is_dir():
        return []
    leftovers: dict[str, tuple[list[int], list[Path]]] = {}
    for name in os.listdir(directory):
        path = directory / name
        if (match := _GENERATION.match(name)) and path.is_dir() and not path.is_symlink():
            leftovers.setdefault(match["date"], ([], []))[0].append(int(match["number"]))
        elif match := _TEMPORARY.match(name):
            leftovers.setdefault(match["date"], ([], []))[1].append(path)
    removed: list[Path] = []
    for date, (numbers, temporaries) in sorted(leftovers.items()):
        removed += _clean_partition(directory, date, numbers, temporaries, now_s, grace_s)
    return removed


def _clean_partition(
    directory: Path,
    date: str,
    numbers: list[int],
    temporaries: list[Path],
    now_s: float,
    grace_s: float,
) -> list[Path]:
    doomed = [path for path in temporaries if path.is_symlink()]
    found = _current(directory, date)
    if found is None and 0 in numbers:
        log.warning("restoring %s/%s (an interrupted conversion)", directory, link_name(date))
        with contextlib.suppress(FileExistsError):  # a writer restored it first
            os.symlink(generation_name(date, 0), directory / link_name(date))
        fsync_dir(directory)
        found = _current(directory, date)
    if found is None:
        log.warning("%s: generations of %s without a %s link; left alone", directory, date, date)
        return _delete(directory, doomed)
    flipped_s = os.lstat(directory / link_name(date)).st_mtime
    expired = now_s - flipped_s >= grace_s
    live = found.number
    for number in numbers:
        never_flipped = live is None or number > live
        retired = live is not None and number < live
        if never_flipped or (retired and expired):
            doomed.append(directory / generation_name(date, number))
    if expired:
        doomed += [path for path in temporaries if path.is_dir() and not path.is_symlink()]
    return _delete(directory, doomed)


def _delete(directory: Path, paths: list[Path]) -> list[Path]:
    for path in paths:
        if path.is_symlink():
            path.unlink()
        else:
            shutil.rmtree(path)
    if paths:
        fsync_dir(directory)
    return paths


def _generations(directory: Path) -> list[tuple[str, int]]:
    found = []
    for name in os.listdir(directory):
        match = _GENERATION.match(name)
        if match and (directory / name).is_dir() and not (directory / name).is_symlink():
            found.append((match["date"], int(match["number"])))
    return found


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""Which partitions and files compaction rewrites, and what it names its output.

* A closed partition (its UTC date ended over :data:`CLOSED_AFTER_S` ago) is rewritten
  whole once, unless it already is one file or one earlier full compaction's complete
  output (:func:`already_compact`).
* An open partition's flush files are merged into one once there are
  :data:`OPEN_FLUSH_FILES`; once it has :data:`OPEN_MERGED_FILES` merged files, the
  whole partition is rewritten (:func:`open_choice`).
* Beside a daemon, only partitions closed by the daemon's own rule are rewritten whole
  (:func:`closed_before_beside_daemon`).

Output files are named ``part-<stamp>-<random>-c<NN>.parquet`` (``-m<NN>``: an open
partition's merged flush files), stamped with the newest input's time
(:func:`output_names`). :mod:`collector.storage.compaction` does the rewriting and
re-exports the public names of this module.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from collections.abc import Callable
from pathlib import Path

from collector.storage import delta, layout
from collector.storage.location import is_remote
from collector.units import DAY_MS

#: How long a partition's date must have been over before it counts as closed: late
#: flushes and the last klines of the day land within this time.
CLOSED_AFTER_S = 3600.0
#: An open partition's flush files are merged into one once there are this many.
OPEN_FLUSH_FILES = 30
#: An open partition is rewritten whole once it has this many merged files.
OPEN_MERGED_FILES = 8

# part-<stamp>-<random>-c<NN>.parquet: the files of one full compaction share stamp and
# random; -m<NN> marks an open partition's merged flush files.
COMPACTED = re.compile(
    r"^part-(?P<stamp>\d{8}T\d{9})-(?P<set>[0-9a-f]{8})-(?P<kind>[cm])(?P<seq>\d{2})\.parquet$"
)
STAMP = re.compile(r"^part-(?P<stamp>\d{8}T\d{9})-")


def daemon_running(data_dir: str | Path) -> bool:
    """Whether a collector daemon holds ``<data_dir>/.collector.lock`` (exclusively)."""
    from collector.storage import lock

    return lock.daemon_pid(data_dir) is not None


def open_choice(
    found: list[delta.DataFile], flush_files: int, merged_files: int
) -> list[delta.DataFile]:
    """The files of an open partition to merge now: none, its flush files, or all."""
    flushes = [f for f in found if not COMPACTED.match(Path(f.path).name)]
    merged = len(found) - len(flushes)
    if len(flushes) < flush_files:
        return []
    if merged + 1 >= merged_files:
        return found
    return flushes


def day_end_ms(date: dt.date) -> int:
    return (date - dt.date(1970, 1, 1)).days * DAY_MS + DAY_MS


def closed_before_ms(now_ms: int, closed_after_s: float = CLOSED_AFTER_S) -> int:
    """The ``closed_before_ms`` that selects partitions closed at ``now_ms``."""
    return now_ms - int(closed_after_s * 1000)


def closed_before_beside_daemon(data_dir: str | Path, now_ms: int) -> int | None:
    """The ``closed_before_ms`` of a compaction started beside the daemon: the daemon's
    own (:func:`closed_before_ms`) when one is or may be collecting into ``data_dir``
    (it holds the archive's lock, or the archive is on an object store, where daemons on
    other hosts hold no local lock); None (every partition whole) when none can be."""
    if is_remote(data_dir) or daemon_running(data_dir):
        return closed_before_ms(now_ms)
    return None


def already_compact(found: list[delta.DataFile]) -> bool:
    """One file, or exactly the complete output of one earlier full compaction."""
    if len(found) <= 1:
        return True
    matches = [COMPACTED.match(Path(f.path).name) for f in found]
    if not all(m is not None and m["kind"] == "c" for m in matches):
        return False
    sets = {(m["stamp"], m["set"]) for m in matches if m}
    sequence = sorted(int(m["seq"]) for m in matches if m)
    return len(sets) == 1 and sequence == list(range(len(found)))


def output_names(
    inputs: list[str], count: int, kind: str, clock_ms: Callable[[], int]
) -> list[str]:
    """Names that sort where the inputs did: before any file flushed later.

    Readers that need arrival order among rows of the same time (the newest recent
    trades, ``catalog.last_recent_trades``) order by file name: the outputs carry the
    time stamp of the newest input, and a file flushed after it has a later one.
    """
    stamp = None
    for name in sorted(inputs, reverse=True):
        if match := STAMP.match(name):
            stamp = match["stamp"]
            break
    if stamp is None:
        stamp = layout.part_name(clock_ms())[len(layout.PART_PREFIX) :].split("-")[0]
    token = secrets.token_hex(4)
    return [
        f"{layout.PART_PREFIX}{stamp}-{token}-{kind}{index:02d}{layout.PARQUET_SUFFIX}"
        for index in range(count)
    ]

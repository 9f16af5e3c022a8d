"""Row counts, time ranges and sizes of the archive, from the Delta log's file statistics.

What ``jex-collector status`` shows per dataset and market comes from each table's
log (:func:`collector.storage.delta.files`): every file of the table's latest version
with its size, row count and the min/max of the dataset's time column, as the writer
and compaction recorded them in the file's add action. No data file is opened, so
today's figures cost the same with 50 flush files as with 50,000. Files the log does
not name (written but never committed, or replaced and awaiting vacuum) are not
counted. Only a file committed without statistics (not one the collector wrote) has
its Parquet footer read.

Damaged files (:func:`check_files`, :func:`record_damaged`, :func:`damaged`): a data file
the log names whose footer cannot be read, or whose size differs from the one the log
recorded (a truncated file), is left out of the collector's reads
(:func:`collector.read.catalog.readable`) and recorded in ``_state/damaged.json``, so that
``status`` and ``verify`` name it until ``verify --repair`` sets it aside.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from collector import datasets
from collector.errors import CollectorError
from collector.storage import delta, layout
from collector.storage.files import STATE_DIR
from collector.storage.location import Archive

log = logging.getLogger(__name__)

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MILLISECONDS = '"timeUnit":"milliseconds"'


@dataclass
class FileSummary:
    rows: int
    first_ms: int | None
    last_ms: int | None
    size: int


@dataclass
class GroupSummary:
    """One dataset and market: its partitions' files, rows and event times."""

    dataset: str
    market: str
    partitions: int = 0
    files: int = 0
    bytes: int = 0
    rows_total: int = 0
    rows_today: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    unreadable: int = 0  # files whose footer could not be read (counted in files, bytes)
    #: Files whose size on disk is not the log's (truncated) or that are gone.
    damaged: list[DamagedFile] = field(default_factory=list)

    def add(self, summary: FileSummary, today: bool) -> None:
        self.files += 1
        self.bytes += summary.size
        self.rows_total += summary.rows
        if today:
            self.rows_today += summary.rows
        if summary.first_ms is not None:
            self.first_ms = _min(self.first_ms, summary.first_ms)
        if summary.last_ms is not None:
            self.last_ms = _max(self.last_ms, summary.last_ms)


def summarize(data_dir: str | Path, today: dt.date) -> dict[tuple[str, str], GroupSummary]:
    """Every dataset and market with at least one file, keyed (dataset, market);
    ``rows_today`` counts the partition of the UTC date ``today``.

    One read of each table's log (its last checkpoint and the commits after it).
    """
    root = Archive.of(data_dir).uri
    groups: dict[tuple[str, str], GroupSummary] = {}
    for name, table in delta.tables(root):
        seen: set[layout.Partition] = set()
        for file in delta.files(table, name):
            partition = file.partition
            group = groups.setdefault(
                (name, partition.market), GroupSummary(name, partition.market)
            )
            if partition not in seen:
                seen.add(partition)
                group.partitions += 1
            summary = _from_log(file)
            path = Path(delta.file_path(root, name, file.path))
            problem = _size_problem(path, file.size)
            if problem is not None:
                group.damaged.append(DamagedFile(name, file.path, problem))
            if summary is None:
                summary = read_footer(name, path, file.size)
            if summary is None:
                group.files += 1
                group.bytes += file.size
                group.unreadable += 1
            else:
                group.add(summary, partition.date == today)
    return groups


def _size_problem(path: Path, size: int) -> str | None:
    """What is wrong with a local data file by its size alone (one ``stat``), or None."""
    try:
        on_disk = path.stat().st_size
    except FileNotFoundError:
        return "the log names it but it is not there"
    except OSError as exc:
        return f"cannot be looked at ({exc})"
    if on_disk != size:
        return f"{on_disk} bytes on disk, {size} in the table's log (truncated?)"
    return None


def _from_log(file: delta.DataFile) -> FileSummary | None:
    """The file's figures from its add action, or None when the log lacks them (rows,
    or a time range for a file that has rows)."""
    if file.rows < 0:
        return None
    if file.rows > 0 and (file.min_time_ms is None or file.max_time_ms is None):
        return None
    return FileSummary(file.rows, file.min_time_ms, file.max_time_ms, file.size)


def read_footer(dataset: str, path: Path, size: int) -> FileSummary | None:
    """Rows and time range of one file from its footer (None when it cannot be read).

    A file whose row groups carry no statistics for the time column (not one the
    collector wrote) has that column read instead.
    """
    time_column = datasets.get(dataset).time_column
    try:
        metadata = pq.read_metadata(path)
        index = metadata.schema.names.index(time_column)
        # The collector writes milliseconds: the raw int64 statistics are the times.
        raw_ms = _MILLISECONDS in metadata.schema.column(index).logical_type.to_json()
        first: int | None = None
        last: int | None = None
        for number in range(metadata.num_row_groups):
            group = metadata.row_group(number)
            if group.num_rows == 0:
                continue
            stats = group.column(index).statistics
            if stats is None or not stats.has_min_max:
                return _read_times(path, time_column, metadata.num_rows, size)
            low, high = (
                (stats.min_raw, stats.max_raw) if raw_ms else (_ms(stats.min), _ms(stats.max))
            )
            first = _min(first, low)
            last = _max(last, high)
        return FileSummary(metadata.num_rows, first, last, size)
    except (OSError, ValueError) as exc:
        # Gone (vacuumed after a compaction replaced it) or not Parquet: left out.
        log.warning("status: cannot read the footer of %s: %s", path, exc)
        return None


def _read_times(path: Path, column: str, rows: int, size: int) -> FileSummary:
    times = pq.read_table(path, columns=[column])[column]
    bounds = pc.min_max(times)
    return FileSummary(rows, _ms(bounds["min"].as_py()), _ms(bounds["max"].as_py()), size)


def _ms(value: object) -> int | None:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return (value - _EPOCH) // dt.timedelta(milliseconds=1)
    return None


def _min(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


# -- damaged files ----------------------------------------------------------------------

#: Where the archive records the damaged files found by any reader (relative to it).
DAMAGED_FILE = f"{STATE_DIR}/damaged.json"


@dataclass(frozen=True)
class DamagedFile:
    """A data file of a table's current version that cannot be read. ``path`` is
    relative to the table (as in its log); ``reason`` says what is wrong."""

    dataset: str
    path: str
    reason: str
    found_at: str = ""

    @property
    def name(self) -> str:
        """``trades/market=spot/date=…/part-….parquet``: the file within the archive."""
        return f"{self.dataset}/{self.path}"

    def line(self) -> str:
        return f"damaged file {self.name}: {self.reason}"


def check_files(
    archive: str | Path | Archive, dataset: str, candidates: Iterable[delta.DataFile]
) -> list[DamagedFile]:
    """The ``candidates`` (files of ``dataset``'s table) that are missing, have another
    size than the log recorded, or whose Parquet footer cannot be read. One size lookup
    per file, and one footer read per file of the right size."""
    where = Archive.of(archive)
    fs = where.filesystem()
    files = list(candidates)
    paths = [where.fs_path(dataset, file.path) for file in files]
    try:
        infos = fs.get_file_info(paths)
    except OSError as exc:
        log.warning("cannot look at the files of %s: %s", dataset, exc)
        return []
    found = []
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    for file, path, info in zip(files, paths, infos, strict=True):
        reason: str | None = None
        if info.type != pafs.FileType.File:
            reason = "the log names it but it is not there"
        elif info.size != file.size:
            reason = f"{info.size} bytes on disk, {file.size} in the table's log (truncated?)"
        if reason is None:
            try:
                with fs.open_input_file(path) as source:
                    pq.read_metadata(source)
            except (OSError, ValueError) as exc:
                reason = f"unreadable Parquet footer ({_first_line(exc)})"
        if reason is not None:
            found.append(DamagedFile(dataset, file.path, reason, now))
    return found


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def record_damaged(archive: str | Path | Archive, found: Iterable[DamagedFile]) -> None:
    """Add ``found`` to the archive's record of damaged files (best effort: a read-only
    archive keeps no record, and its readers log the files instead)."""
    where = Archive.of(archive)
    known = {(f.dataset, f.path): f for f in recorded_damaged(where)}
    added = False
    for file in found:
        if (file.dataset, file.path) not in known:
            known[(file.dataset, file.path)] = file
            added = True
    if not added:
        return
    body = {"files": [asdict(f) for f in sorted(known.values(), key=lambda f: f.name)]}
    try:
        where.write_bytes(DAMAGED_FILE, json.dumps(body, indent=1).encode())
    except (OSError, CollectorError) as exc:
        log.warning("could not record the damaged files in %s: %s", DAMAGED_FILE, exc)


def recorded_damaged(archive: str | Path | Archive) -> list[DamagedFile]:
    """Every file the archive's record names (also files since set aside or replaced)."""
    where = Archive.of(archive)
    try:
        raw = where.read_bytes(DAMAGED_FILE)
        entries = [] if raw is None else json.loads(raw)["files"]
        return [
            DamagedFile(str(e["dataset"]), str(e["path"]), str(e["reason"]), str(e["found_at"]))
            for e in entries
            if e.get("dataset") in datasets.DATASETS
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("cannot read %s/%s: %s", where.uri, DAMAGED_FILE, exc)
        return []


def damaged(
    archive: str | Path | Archive, *, also: Iterable[DamagedFile] = ()
) -> list[DamagedFile]:
    """The recorded damaged files (and ``also``) that are still in their table's current
    version, once each, by name."""
    where = Archive.of(archive)
    unique = {f.name: f for f in [*recorded_damaged(where), *also]}
    found = sorted(unique.values(), key=lambda f: f.name)
    current: dict[str, set[str]] = {}
    for name in sorted({f.dataset for f in found}):
        table = delta.open_table(where.uri, name)
        current[name] = set() if table is None else {f.path for f in delta.files(table, name)}
    return [f for f in found if f.path in current[f.dataset]]


def forget_damaged(archive: str | Path | Archive, gone: Iterable[DamagedFile]) -> None:
    """Drop ``gone`` (set aside) from the archive's record."""
    where = Archive.of(archive)
    names = {(f.dataset, f.path) for f in gone}
    kept = [f for f in recorded_damaged(where) if (f.dataset, f.path) not in names]
    body = {"files": [asdict(f) for f in kept]}
    where.write_bytes(DAMAGED_FILE, json.dumps(body, indent=1).encode())

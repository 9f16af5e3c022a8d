"""Damaged data files: found, left out of this process's reads, and recorded.

A file of a table's current version that DuckDB cannot read (a truncated file, a bad
page) would stop every read of its table. :func:`readable` runs a read again without it:
:func:`find_damaged` checks the table's files (:func:`collector.storage.footers.check_files`),
remembers the damaged ones for the process (:func:`left_out_paths`, which
:func:`collector.read.catalog.source_sql` reads around with :func:`readable_files_sql`),
logs them and records them in the archive (``_state/damaged.json``);
:func:`damaged_files` lists them. :mod:`collector.read.catalog` re-exports the public names.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from collector import datasets
from collector.read.duck_setup import DUCKDB_TYPES, path_literal, table_path
from collector.storage import delta, footers
from collector.storage.location import Archive

# The damaged files' warnings keep the logger of collector.read.catalog, where they were
# logged before (``jex-collector query`` quiets that logger).
log = logging.getLogger("collector.read.catalog")

T = TypeVar("T")

#: Files found damaged by this process, per table location: left out of every view and
#: read made here (:func:`readable`), so one damaged file never stops a read.
_damaged: dict[str, dict[str, footers.DamagedFile]] = {}
_damaged_lock = threading.Lock()
#: Reads tried again after damaged files were found: more than one damaged file found
#: one at a time (files the footers pass but DuckDB cannot read) take one each.
READ_ATTEMPTS = 4


def duckdb_read_errors() -> tuple[type[BaseException], ...]:
    """DuckDB's errors when a Parquet file cannot be read (a truncated file, a bad page).
    DuckDB is imported here, not with the module: a daemon reads with pyarrow alone."""
    import duckdb

    return (duckdb.IOException, duckdb.InvalidInputException)


def left_out_paths(data_dir: str | Path | Archive, dataset: str) -> set[str]:
    """The files of ``dataset``'s table (paths relative to it) this process left out."""
    with _damaged_lock:
        return set(_damaged.get(table_path(data_dir, dataset), {}))


def readable_files_sql(
    data_dir: str | Path | Archive, dataset: str, left_out: set[str]
) -> str | None:
    """A SELECT over the files of the table's current version but ``left_out``; None
    when the version holds none of them (set aside by a repair, or compacted away)."""
    spec = datasets.get(dataset)
    columns = ", ".join(spec.column_names)
    table = delta.open_table(Archive.of(data_dir).uri, dataset)
    files = [] if table is None else delta.files(table, dataset)
    if not any(f.path in left_out for f in files):
        return None
    paths = [
        path_literal(delta.file_path(Archive.of(data_dir).uri, dataset, f.path))
        for f in files
        if f.path not in left_out
    ]
    if not paths:
        empty = ", ".join(f"CAST(NULL AS {DUCKDB_TYPES[c.type]}) AS {c.name}" for c in spec.columns)
        return f"SELECT {empty}, CAST(NULL AS DATE) AS date WHERE false"
    # Paths from the table's log, each checked and quoted by path_literal.
    return (
        f"SELECT {columns}, date FROM read_parquet([{', '.join(paths)}], "  # noqa: S608
        "hive_partitioning = true, hive_types = {'market': VARCHAR, 'date': DATE})"
    )


def damaged_files(data_dir: str | Path | Archive) -> list[footers.DamagedFile]:
    """The damaged files of the archive that are still in their tables: found by this
    process, or recorded in the archive by another one
    (:func:`collector.storage.footers.damaged`)."""
    archive = Archive.of(data_dir)
    with _damaged_lock:
        mine = [
            file
            for name in datasets.DATASETS
            for file in _damaged.get(table_path(archive, name), {}).values()
        ]
    return footers.damaged(archive, also=mine)


def find_damaged(
    data_dir: str | Path | Archive, names: Iterable[str], error: BaseException | None = None
) -> list[footers.DamagedFile]:
    """Look for damaged files in the tables ``names`` (their footers and sizes), after
    ``error`` (a failed read, which may name the file); the new ones are left out of
    this process's reads from now on, logged and recorded in the archive."""
    archive = Archive.of(data_dir)
    found: list[footers.DamagedFile] = []
    for name in names:
        table = delta.open_table(archive.uri, name)
        if table is None:
            continue
        known = left_out_paths(archive, name)
        files = [f for f in delta.files(table, name) if f.path not in known]
        bad = footers.check_files(archive, name, files)
        if not bad and error is not None:
            # The footer is fine but a page is not: the reader's message names the file.
            text = str(error)
            base = table_path(archive, name) + "/"
            bad = [
                footers.DamagedFile(name, f.path, f"unreadable ({text.splitlines()[0]})")
                for f in files
                if base + f.path in text
            ]
        found += bad
    if found:
        with _damaged_lock:
            for file in found:
                _damaged.setdefault(table_path(archive, file.dataset), {})[file.path] = file
        for file in found:
            log.warning(
                "%s: left out of every read; `jex-collector verify --repair` sets it aside "
                "and fetches its rows again where the exchange still has them",
                file.line(),
            )
        footers.record_damaged(archive, found)
    return found


def readable(
    data_dir: str | Path | Archive,
    names: Iterable[str],
    read: Callable[[], T],
    *,
    errors: tuple[type[BaseException], ...] | None = None,
) -> T:
    """``read()`` (which makes its own connection), tried again without the damaged
    files of the tables ``names`` when it cannot read one (``errors``: DuckDB's by
    default): a damaged file is left out, logged and recorded, never the end of the
    read. Raises the error when no damaged file explains it."""
    tables = tuple(names)
    caught = duckdb_read_errors() if errors is None else errors
    for attempt in range(1, READ_ATTEMPTS + 1):
        try:
            return read()
        except caught as exc:
            if attempt == READ_ATTEMPTS or not find_damaged(data_dir, tables, exc):
                raise
    raise AssertionError("unreachable")

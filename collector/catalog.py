"""DuckDB access to the archive: one view per dataset, and reads the collector needs.

``<data_dir>/archive.duckdb`` holds only views over the Parquet files (no data),
so it is cheap to rebuild. It is rebuilt under a temporary name and renamed into
place: a DuckDB CLI or notebook holding the old file open is never disturbed,
and never blocks the rebuild.

SQL text is built only from names in :mod:`collector.datasets` and the archive's
own directory (quoted); values go in as bound parameters.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa

from collector import datasets, derived
from collector.errors import ConfigError, StorageError
from collector.storage import layout, partitions

log = logging.getLogger(__name__)

T = TypeVar("T")

DB_NAME = "archive.duckdb"
#: Attempts at a read during which compaction keeps switching partitions.
SWITCH_RETRIES = 10

_DUCKDB_TYPES: dict[pa.DataType, str] = {
    pa.string(): "VARCHAR",
    pa.float64(): "DOUBLE",
    pa.int64(): "BIGINT",
    pa.int16(): "SMALLINT",
    pa.bool_(): "BOOLEAN",
    datasets.TIMESTAMP: "TIMESTAMPTZ",
}


def sql_string(value: str) -> str:
    """A SQL string literal of text from the dataset registry (view comments)."""
    return "'" + value.replace("'", "''") + "'"


def path_literal(path: str | Path) -> str:
    """The one way a path (or a glob) enters SQL text: validated, then quoted.

    View DDL cannot take bound parameters, so the archive's location is written into
    the view. Only an absolute path without control characters is accepted; quotes
    are doubled, which is all a DuckDB string literal needs (backslashes are literal).
    """
    text = str(path)
    if not text.startswith("/"):
        raise ValueError(f"expected an absolute path in SQL, got {text!r}")
    if any(ord(char) < 32 or ord(char) == 127 for char in text):
        raise ValueError(f"a path with control characters cannot be used in SQL: {text!r}")
    return sql_string(text)


def has_files(data_dir: str | Path, dataset: str) -> bool:
    base = Path(data_dir) / dataset
    return base.is_dir() and any(base.glob(f"market=*/date=*/*{layout.PARQUET_SUFFIX}"))


def source_sql(data_dir: str | Path, dataset: str) -> str:
    """A SELECT over the dataset's files (or an empty, typed SELECT when it has none)."""
    spec = datasets.get(dataset)
    if not has_files(data_dir, dataset):
        columns = ", ".join(
            f"CAST(NULL AS {_DUCKDB_TYPES[c.type]}) AS {c.name}" for c in spec.columns
        )
        return f"SELECT {columns}, CAST(NULL AS DATE) AS date WHERE false"
    glob = layout.dataset_glob(str(Path(data_dir).resolve()), dataset)
    columns = ", ".join(spec.column_names)
    # No union_by_name: it makes DuckDB open every file's footer at every query, before
    # the market and date filters skip folders (a query for one hour of a month-old
    # archive went 1.9x slower, bench/views.py). It is not needed: the writer refuses
    # rows that do not have the registry's schema and compaction casts to it, so every
    # file has the same columns. If a column is ever added to a dataset, the older files
    # lack it and DuckDB refuses the mix: rewrite them, or bring union_by_name back.
    return (
        # Names come from the dataset registry; the path is checked and quoted by path_literal.
        f"SELECT {columns}, date FROM read_parquet({path_literal(glob)}, "  # noqa: S608
        "hive_partitioning = true, hive_types = {'market': VARCHAR, 'date': DATE})"
    )


def connect(data_dir: str | Path, *, derived_views: bool = True) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with every dataset as a view (always current), and
    the derived views of ``queries/views`` (:mod:`collector.derived`).

    Creating a derived view binds the dataset views it reads again (listing their files),
    which costs as much as creating those; and a broken ``queries/views`` file (a
    ConfigError) must not stop verify or a backfill: the collector's own reads, which
    need none, pass ``derived_views=False``.
    """
    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'")
    for name in datasets.DATASETS:
        connection.execute(f"CREATE VIEW {name} AS {source_sql(data_dir, name)}")
    if derived_views:
        derived.install(connection)
    return connection


def write_views(data_dir: str | Path) -> Path:
    """(Re)write ``<data_dir>/archive.duckdb`` with one view per dataset and the derived
    views; return its path."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    final = data_dir / DB_NAME
    temp = data_dir / f".{DB_NAME}.{os.getpid()}.tmp"
    _remove_dead_temp_files(data_dir)
    for stale in (temp, Path(f"{temp}.wal")):
        stale.unlink(missing_ok=True)
    connection = duckdb.connect(str(temp))
    broken: ConfigError | None = None
    try:
        for name, spec in datasets.DATASETS.items():
            connection.execute(f"CREATE OR REPLACE VIEW {name} AS {source_sql(data_dir, name)}")
            connection.execute(f"COMMENT ON VIEW {name} IS {sql_string(spec.doc)}")
        try:
            derived.install(connection)
        except ConfigError as exc:
            # A broken queries/views file (someone's edit) must not take the dataset
            # views away: the file is written with them and the views installed before
            # the broken one, and the error is raised after.
            broken = exc
        connection.execute("CHECKPOINT")
    finally:
        connection.close()
    os.replace(temp, final)
    if broken is not None:
        raise broken
    return final


def _remove_dead_temp_files(data_dir: Path) -> None:
    """Temporary view files of processes that died mid-rebuild (kill -9): never read, but
    they would pile up. A live process's file (another CLI rebuilding now) is left alone."""
    for path in data_dir.glob(f".{DB_NAME}.*.tmp*"):
        pid = path.name.removeprefix(f".{DB_NAME}.").split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            path.unlink(missing_ok=True)
        except PermissionError:
            pass  # alive, another user's


def query(
    data_dir: str | Path,
    sql: str,
    params: dict[str, Any] | None = None,
    *,
    derived_views: bool = True,
) -> pa.Table:
    """Run ``sql`` against the views and return an Arrow table (``derived_views``: as
    for :func:`connect`)."""

    def run() -> pa.Table:
        with connect(data_dir, derived_views=derived_views) as connection:
            return connection.sql(sql, params=params or None).to_arrow_table()

    return consistently(data_dir, run)


def consistently(data_dir: str | Path, run: Callable[[], T]) -> T:
    """``run()`` (reads through DuckDB) so that it sees each partition either as it was
    before a compaction or as it is after, never a mix.

    DuckDB lists a partition's files, then looks at each through the ``date=D`` link:
    when compaction switches the link in between, a listed file can be missing (an
    error) or be skipped (a silent hole). So the partitions' links are noted before
    and after, and a read during which one was switched, or that found a file gone,
    is run again; compaction switches each partition about once a day, so a second
    run is all it takes.
    """
    root = Path(data_dir)
    for attempt in range(1, SWITCH_RETRIES + 1):
        before = partitions.switch_marks(root)
        try:
            result = run()
        except duckdb.IOException as exc:
            if "No such file or directory" not in str(exc):
                raise
            log.info("a partition was compacted under a query (attempt %d): %s", attempt, exc)
            continue
        if not partitions.switched(before, partitions.switch_marks(root)):
            return result
        log.info("a partition was compacted under a query (attempt %d); again", attempt)
    raise StorageError(
        f"the archive in {data_dir} kept being compacted under the query "
        f"({SWITCH_RETRIES} attempts); run it again",
        path=str(data_dir),
    )


def max_by_group(
    data_dir: str | Path, dataset: str, column: str, group: tuple[str, ...]
) -> dict[tuple[Any, ...], Any]:
    """``max(column)`` per group over the archived files: where each job resumes.

    Times come back as milliseconds since the epoch.
    """
    spec = datasets.get(dataset)
    for name in (column, *group):
        if name not in spec.column_names:
            raise ValueError(f"{dataset} has no column {name!r}")
    if not has_files(data_dir, dataset):
        return {}
    keys = ", ".join(group)
    is_time = spec.schema.field(column).type == datasets.TIMESTAMP
    aggregate = f"epoch_ms(max({column}))" if is_time else f"max({column})"
    sql = (
        # Names only, all checked against the dataset registry above.
        f"SELECT {keys}, {aggregate} FROM {dataset} "  # noqa: S608
        f"WHERE {column} IS NOT NULL GROUP BY {keys}"
    )

    def run() -> list[Any]:
        with connect(data_dir, derived_views=False) as connection:
            return connection.execute(sql).fetchall()

    rows = consistently(data_dir, run)
    return {tuple(row[:-1]): row[-1] for row in rows}


def last_recent_trades(
    data_dir: str | Path, per_symbol: int
) -> dict[tuple[str, str], list[tuple[int, float, float]]]:
    """The newest ``per_symbol`` trades without an id, per market and symbol, oldest first.

    These came from the recent-trades endpoint; a restarted job compares its first poll
    with them so that it does not store the overlap again. Rows keep the order the
    exchange sent them in: files sort by name in creation order, and a file's rows are
    stably sorted by time.
    """
    if not has_files(data_dir, "trades"):
        return {}
    glob = layout.dataset_glob(str(Path(data_dir).resolve()), "trades")

    def run() -> list[Any]:
        with connect(data_dir, derived_views=False) as connection:
            return connection.execute(
                "SELECT market, symbol, epoch_ms(time), price, qty FROM ("
                "  SELECT *, row_number() OVER (PARTITION BY market, symbol"
                "    ORDER BY time DESC, filename DESC, file_row_number DESC) AS newest"
                "  FROM read_parquet($glob, filename = true, file_row_number = true)"
                "  WHERE trade_id IS NULL"
                ") WHERE newest <= $n ORDER BY market, symbol, newest DESC",
                {"glob": glob, "n": per_symbol},
            ).fetchall()

    rows = consistently(data_dir, run)
    found: dict[tuple[str, str], list[tuple[int, float, float]]] = {}
    for market, symbol, time_ms, price, qty in rows:
        found.setdefault((market, symbol), []).append((time_ms, price, qty))
    return found

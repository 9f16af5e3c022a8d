"""DuckDB access to the archive: one view per dataset, and reads the collector needs.

Each dataset's view reads its Delta table (:mod:`collector.storage.delta`) through
DuckDB's ``delta`` extension (the table attached with ``ATTACH … (TYPE delta)`` in
:func:`connect`, ``delta_scan`` in ``archive.duckdb``): a query sees one version of the table,
so a compaction or a flush committed while it runs is either wholly in it or not at
all, and the files it reads stay on disk until :func:`collector.storage.delta.vacuum`
deletes them (``delta.RETENTION_HOURS`` after they were replaced, longer than a query
runs). Every connection made here loads the
extension (:func:`load_delta`).

``<data_dir>/archive.duckdb`` holds only views over the tables (no data), so it is
cheap to rebuild. It is rebuilt under a temporary name and renamed into place: a
DuckDB CLI or notebook holding the old file open is never disturbed, and never blocks
the rebuild. Whoever opens it needs the extension too (``INSTALL delta; LOAD delta;``
in the DuckDB CLI).

SQL text is built only from names in :mod:`collector.datasets` and the archive's
own directory (quoted); values go in as bound parameters.

The extensions, SQL literals and S3 secret are in :mod:`collector.read.duck_setup`, the
damaged files' bookkeeping (:func:`readable`, :func:`damaged_files`) in
:mod:`collector.read.damaged`; this module re-exports their public names.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from collector import datasets
from collector.errors import ConfigError
from collector.read import derived
from collector.read.damaged import READ_ATTEMPTS as READ_ATTEMPTS
from collector.read.damaged import damaged_files as damaged_files
from collector.read.damaged import find_damaged as find_damaged
from collector.read.damaged import left_out_paths, readable_files_sql
from collector.read.damaged import readable as readable
from collector.read.duck_setup import DUCKDB_TYPES, aws_environment
from collector.read.duck_setup import extension_file as extension_file
from collector.read.duck_setup import load_delta as load_delta
from collector.read.duck_setup import load_extension as load_extension
from collector.read.duck_setup import path_literal as path_literal
from collector.read.duck_setup import sql_string as sql_string
from collector.read.duck_setup import table_path as table_path
from collector.read.duck_setup import use_object_store as use_object_store
from collector.read.scan import last_recent_trades as last_recent_trades
from collector.read.scan import max_by_group as max_by_group
from collector.storage import delta
from collector.storage.location import Archive

#: DuckDB's errors when a Parquet file cannot be read (a truncated file, a bad page).
READ_ERRORS = (duckdb.IOException, duckdb.InvalidInputException)

if TYPE_CHECKING:
    import pyarrow.dataset as pads
    from deltalake import DeltaTable

log = logging.getLogger(__name__)

DB_NAME = "archive.duckdb"


def has_files(data_dir: str | Path | Archive, dataset: str) -> bool:
    """Whether ``dataset``'s table exists and its current version has a data file."""
    return delta.has_rows(Archive.of(data_dir).uri, dataset)


def source_sql(data_dir: str | Path | Archive, dataset: str, *, attached: str | None = None) -> str:
    """A SELECT over the dataset's table (or an empty, typed SELECT when there is none).

    ``attached`` names the table attached in the connection's database
    (:func:`_attach`); without it the SELECT reads ``delta_scan(path)``, which a view
    in a database file can keep.
    """
    spec = datasets.get(dataset)
    if not delta.is_table(Archive.of(data_dir).uri, dataset):
        columns = ", ".join(
            f"CAST(NULL AS {DUCKDB_TYPES[c.type]}) AS {c.name}" for c in spec.columns
        )
        return f"SELECT {columns}, CAST(NULL AS DATE) AS date WHERE false"
    columns = ", ".join(spec.column_names)
    # Names come from the dataset registry; the path is checked and quoted by path_literal.
    # The table's partition columns (market, date) come from its log, not the files.
    left_out = left_out_paths(data_dir, dataset)
    readable_sql = readable_files_sql(data_dir, dataset, left_out) if left_out else None
    if readable_sql is not None:
        return readable_sql
    if attached is not None:
        return f"SELECT {columns}, date FROM {attached}.{attached}"  # noqa: S608
    location = path_literal(table_path(data_dir, dataset))
    return f"SELECT {columns}, date FROM delta_scan({location})"  # noqa: S608


_database: duckdb.DuckDBPyConnection | None = None
_database_lock = threading.Lock()
_attached: dict[str, str] = {}
#: The AWS_* settings the shared database's S3 secret was made from (use_object_store),
#: or None before the first one: made again when the environment changes.
_object_store: list[tuple[str, ...] | None] = [None]


def _shared_database() -> duckdb.DuckDBPyConnection:
    """The process's in-memory DuckDB database, with the ``delta`` extension loaded once.

    Loading the extension costs about 0.2 s (DuckDB checks the signature of its 26 MB
    binary) for every new database; a connection made with ``cursor()`` shares the
    database and its loaded extensions and costs about 10 ms. Each keeps its own TEMP
    views and session settings, so concurrent readers (the daemon's jobs in threads)
    never see each other's views.
    """
    global _database
    with _database_lock:
        if _database is None:
            database = duckdb.connect()
            try:
                load_delta(database)
            except BaseException:
                database.close()
                raise
            _database = database
        return _database


def _attach(data_dir: str | Path | Archive, dataset: str) -> str | None:
    """The alias under which ``dataset``'s table is attached to the shared database
    (``ATTACH … (TYPE delta)``, once per table and process), or None when the archive
    has no such table yet.

    An attached Delta table is read like ``delta_scan``: every query (or transaction)
    sees the table's latest version, so views over it see new commits. It binds about
    2 ms faster a query than ``delta_scan``, which resolves the table again each time
    (``bench/views.py``).
    """
    archive = Archive.of(data_dir)
    if not delta.is_table(archive.uri, dataset):
        return None
    where = table_path(archive, dataset)
    if archive.remote:
        _shared_object_store()
    database = _shared_database()
    with _database_lock:
        alias = _attached.get(where)
        if alias is None:
            alias = f"jex_{dataset}_{len(_attached)}"
            database.execute(f"ATTACH {path_literal(where)} AS {alias} (TYPE delta)")
            _attached[where] = alias
        return alias


def _shared_object_store() -> None:
    database = _shared_database()
    with _database_lock:
        if _object_store[0] != aws_environment():
            use_object_store(database)


def connect(
    data_dir: str | Path,
    *,
    derived_views: bool = True,
    only: tuple[str, ...] | None = None,
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the ``delta`` extension loaded, the time zone set to
    UTC, every dataset as a view (each query reads its table's latest version), and the
    derived views of ``queries/views`` (:mod:`collector.read.derived`). Close it when done.

    The views are TEMP views of this connection, on the process's shared in-memory
    database (:func:`_shared_database`). Creating a derived view binds the dataset views
    it reads again (reading their tables' logs), which costs as much as creating those;
    and a broken ``queries/views`` file (a ConfigError) must not stop verify or a
    backfill: the collector's own reads, which need none, pass ``derived_views=False``.
    ``only`` names the datasets to make views of.
    """
    connection = _shared_database().cursor()
    try:
        connection.execute("SET SESSION TimeZone = 'UTC'")
        for name in datasets.DATASETS if only is None else only:
            datasets.get(name)  # a registry name, never anything else, reaches the SQL
            attached = _attach(data_dir, name)
            connection.execute(
                f"CREATE TEMP VIEW {name} AS {source_sql(data_dir, name, attached=attached)}"
            )
        if derived_views:
            derived.install(connection, temporary=True)
    except BaseException:
        connection.close()
        raise
    return connection


def connect_read_only(
    data_dir: str | Path, *, derived_views: bool = True
) -> duckdb.DuckDBPyConnection:
    """A connection of its own database, like :func:`connect`, that can read the archive
    and nothing else: what ``jex-collector query`` runs a user's SQL on.

    Each dataset's view reads its table's current version through an Arrow dataset
    (:func:`arrow_dataset`, registered with DuckDB, so DuckDB itself never opens a
    file), then
    DuckDB's ``enable_external_access`` is turned off and ``lock_configuration`` on: SQL
    on this connection cannot read or write a file (``read_text``, ``read_parquet``,
    ``COPY … TO``), ``ATTACH`` a database, ``INSTALL`` or ``LOAD`` an extension, or turn
    either setting back. DuckDB's own ``allowed_directories`` would keep its faster
    Parquet reader, but it lets SQL write into the allowed folder as well as read it.

    The settings are database-wide, so this is never the shared database of
    :func:`connect` (the daemon's and loaders' reads stay as they are). Each view sees
    the table version of the moment the connection was made.
    """
    archive = Archive.of(data_dir)
    connection = duckdb.connect()
    try:
        connection.execute("SET TimeZone = 'UTC'")
        for name, spec in datasets.DATASETS.items():
            table = delta.open_table(archive.uri, name)
            if table is None:
                select = source_sql(archive, name)
            else:
                source = f"jex_source_{name}"
                connection.register(source, arrow_dataset(archive, name, table))
                columns = ", ".join(spec.column_names)
                # Names from the dataset registry only.
                select = f"SELECT {columns}, date FROM {source}"  # noqa: S608
            connection.execute(f"CREATE TEMP VIEW {name} AS {select}")
        if derived_views:
            derived.install(connection, temporary=True)
        connection.execute("SET enable_external_access = false")
        connection.execute("SET lock_configuration = true")
    except BaseException:
        connection.close()
        raise
    return connection


def arrow_dataset(
    data_dir: str | Path | Archive,
    dataset: str,
    table: DeltaTable | None = None,
    *,
    leave_out: Collection[str] = (),
) -> pads.Dataset:
    """The files of ``dataset``'s current table version (but those in ``leave_out``,
    paths relative to the table) as one pyarrow dataset with the table's columns, the
    partition columns read from the paths as Delta writes them.

    Made here rather than by deltalake's ``to_pyarrow_dataset``, whose file statistics
    turn a filter on a column without bounds in the log (the collector records none for
    floats) into no rows at all.
    """
    import pyarrow.dataset as pads  # loads pandas too: only when a query needs it

    archive = Archive.of(data_dir)
    table = table or delta.open_table(archive.uri, dataset)
    found = [] if table is None else delta.files(table, dataset)
    base = archive.fs_path(dataset)
    paths = [f"{base}/{file.path}" for file in found if file.path not in leave_out]
    return pads.dataset(
        paths,
        schema=delta.table_schema(dataset),
        format="parquet",
        filesystem=archive.filesystem(),
        partitioning=pads.partitioning(_PARTITION_SCHEMA, flavor="hive"),
        partition_base_dir=base,
    )


_PARTITION_SCHEMA = pa.schema([("market", pa.string()), ("date", pa.date32())])


def write_views(data_dir: str | Path | Archive, target: str | Path | None = None) -> Path:
    """(Re)write ``target`` (default ``<data_dir>/archive.duckdb``; required for an
    archive on an object store, since a DuckDB file cannot live there) with one view per
    dataset and the derived views; return its path. Reading it needs DuckDB's ``delta``
    extension loaded, and for an ``s3://`` archive ``httpfs`` and an S3 secret too (no
    credential is ever written into the file)."""
    archive = Archive.of(data_dir)
    if target is None:
        if archive.remote:
            raise ValueError(f"where to write the views of {archive.uri}: give a local file")
        target = archive.path / DB_NAME
    final = Path(target).resolve()
    folder = final.parent
    folder.mkdir(parents=True, exist_ok=True)
    temp = folder / f".{final.name}.{os.getpid()}.tmp"
    _remove_dead_temp_files(folder, final.name)
    for stale in (temp, Path(f"{temp}.wal")):
        stale.unlink(missing_ok=True)
    connection = duckdb.connect(str(temp))
    broken: ConfigError | None = None
    try:
        # Creating a view binds it: delta_scan must be there, and times read as UTC.
        connection.execute("SET TimeZone = 'UTC'")
        load_delta(connection)
        if archive.remote:
            use_object_store(connection)  # a TEMPORARY secret: not stored in the file
        for name, spec in datasets.DATASETS.items():
            connection.execute(f"CREATE OR REPLACE VIEW {name} AS {source_sql(archive, name)}")
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


def _remove_dead_temp_files(folder: Path, name: str = DB_NAME) -> None:
    """Temporary view files of processes that died mid-rebuild (kill -9): never read, but
    they would pile up. A live process's file (another CLI rebuilding now) is left alone."""
    for path in folder.glob(f".{name}.*.tmp*"):
        pid = path.name.removeprefix(f".{name}.").split(".", 1)[0]
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
    only: tuple[str, ...] | None = None,
) -> pa.Table:
    """Run ``sql`` against the views and return an Arrow table (``derived_views`` and
    ``only``: as for :func:`connect`)."""

    def read() -> pa.Table:
        with connect(data_dir, derived_views=derived_views, only=only) as connection:
            return connection.sql(sql, params=params or None).to_arrow_table()

    return readable(data_dir, datasets.DATASETS if only is None else only, read)

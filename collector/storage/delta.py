"""The archive's tables: one Delta Lake table per dataset, through ``deltalake`` (delta-rs).

``<root>/<dataset>/`` is a Delta table partitioned by ``market`` and ``date`` (the UTC
date of the dataset's time column)::

    trades/_delta_log/00000000000000000042.json        (the commits; checkpoints)
    trades/market=spot/date=2026-01-05/part-....parquet

The partition values live in the log and in the path, not in the files. A data file
is written with pyarrow under its final name (so :mod:`collector.storage.parquet_format`
decides every encoding), and becomes visible only when a commit names it: a file
without a commit (a crash before it) is invisible to every Delta reader and removed by
:func:`vacuum`. What the format gives, and this module uses instead of code of ours:

* atomic commits: a flush adds all its files of one dataset in one commit; a
  compaction removes exactly the files it read and adds their replacement in one;
* optimistic concurrency: appends never conflict with each other or with a
  compaction (a file appended meanwhile stays); two compactions of the same files
  conflict, and the second one fails (:class:`ConflictError`) without changing anything;
* application transactions: each commit of the daemon's writer carries
  ``(writer id, write-ahead-log segment)``, so a restart knows which segments are in
  the table without reading any data (:func:`committed_segment`);
* snapshots: a reader sees one table version; replaced files stay until
  :func:`vacuum` deletes them after the retention period (the grace period for
  readers that are still scanning an older version).

Only names from :mod:`collector.datasets` and validated dates reach a path.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import DeltaTable
from deltalake import Schema as DeltaSchema
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from deltalake.transaction import (
    AddAction,
    CommitProperties,
    PostCommitHookProperties,
    RemoveAction,
    Transaction,
)

from collector import datasets
from collector.errors import StorageError
from collector.storage import layout
from collector.units import wall_clock_ms

log = logging.getLogger(__name__)

PARTITION_BY = ["market", "date"]
LOG_DIR = "_delta_log"
#: Hours a replaced or unreferenced file is kept before :func:`vacuum` deletes it: longer
#: than any query over the archive runs (a reader holding an older version still finds
#: its files), short enough that a day's flush files do not pile up.
RETENTION_HOURS = 1
#: Table properties set at creation. Checkpoints every 100 commits keep a reader's log
#: replay short; log entries older than six hours are deleted after a checkpoint (the
#: archive never needs time travel further back than the retention above, and a day of
#: the daemon's commits measured 115-155 MB of log over the tables, bench/README.md).
TABLE_CONFIGURATION: dict[str, str | None] = {
    "delta.checkpointInterval": "100",
    "delta.logRetentionDuration": "interval 6 hours",
    "delta.deletedFileRetentionDuration": f"interval {RETENTION_HOURS} hours",
    "delta.enableExpiredLogCleanup": "true",
}


#: Tries of a commit that only adds files (see :func:`commit`).
APPEND_ATTEMPTS = 5


class ConflictError(StorageError):
    """A commit lost to a concurrent one that removed files it read (another compaction)."""


# -- schemas ----------------------------------------------------------------------------


def table_schema(dataset: str) -> pa.Schema:
    """The table's columns as readers see them: the dataset's columns, then ``date``."""
    schema = datasets.get(dataset).schema
    return schema.append(pa.field("date", pa.date32(), nullable=False))


def file_schema(dataset: str) -> pa.Schema:
    """The columns inside each data file: the dataset's, less the partition column."""
    schema = datasets.get(dataset).schema
    return schema.remove(schema.get_field_index("market"))


def delta_schema(dataset: str) -> DeltaSchema:
    return DeltaSchema.from_arrow(table_schema(dataset))


# -- where tables are ---------------------------------------------------------------------


def table_uri(root: str | Path, dataset: str) -> str:
    """Where the dataset's table is: a local path, or an object store's URI."""
    datasets.get(dataset)
    location = f"{str(root).rstrip('/')}/{dataset}"
    if "%" in location:
        # delta-rs decodes percent escapes in paths and URLs alike (a folder "a%20b" is
        # taken for "a b"), so such a table could be created but never found again.
        raise StorageError(
            f"the archive path {root} contains '%', which deltalake cannot use; "
            "rename the folder or choose another storage.uri",
            dataset=dataset,
            path=str(root),
        )
    return location


def is_table(root: str | Path, dataset: str) -> bool:
    return DeltaTable.is_deltatable(table_uri(root, dataset))


def open_table(root: str | Path, dataset: str) -> DeltaTable | None:
    """The dataset's table at its latest version, or None when it was never written."""
    try:
        return DeltaTable(table_uri(root, dataset))
    except TableNotFoundError:
        return None


def has_rows(root: str | Path, dataset: str) -> bool:
    """Whether the dataset's table exists and holds at least one file."""
    table = open_table(root, dataset)
    return table is not None and bool(table.file_uris())


def ensure_table(root: str | Path, dataset: str) -> DeltaTable:
    """Open the dataset's table, creating it (empty) when it does not exist yet."""
    table = open_table(root, dataset)
    if table is not None:
        return table
    try:
        return DeltaTable.create(
            table_uri(root, dataset),
            delta_schema(dataset),
            mode="ignore",  # another writer created it first: use theirs
            partition_by=PARTITION_BY,
            name=dataset,
            description=datasets.get(dataset).doc,
            configuration=TABLE_CONFIGURATION,
        )
    except (DeltaError, OSError) as exc:
        raise StorageError(
            f"cannot create the {dataset} table in {root}: {exc}",
            dataset=dataset,
            path=table_uri(root, dataset),
        ) from exc


# -- files --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataFile:
    """One file of a table's current version."""

    partition: layout.Partition
    path: str  # relative to the table
    size: int
    rows: int
    min_time_ms: int | None
    max_time_ms: int | None


def partition_values(partition: layout.Partition) -> dict[str, str | None]:
    return {"market": partition.market, "date": partition.date.isoformat()}


def files(
    table: DeltaTable,
    dataset: str,
    *,
    market: str | None = None,
    date: dt.date | None = None,
) -> list[DataFile]:
    """The files of the table's version, from its log only (no file is opened), in
    creation order (file names start with their UTC creation time)."""
    spec = datasets.get(dataset)
    actions = pa.table(table.get_add_actions(flatten=True))
    if not actions.num_rows:
        return []
    columns = actions.column_names
    time_min = f"min.{spec.time_column}"
    time_max = f"max.{spec.time_column}"
    found = []
    for row in actions.to_pylist():
        row_market = row["partition.market"]
        row_date = row["partition.date"]
        if isinstance(row_date, str):
            row_date = dt.date.fromisoformat(row_date)
        if (market is not None and row_market != market) or (date is not None and row_date != date):
            continue
        found.append(
            DataFile(
                layout.Partition(dataset, row_market, row_date),
                row["path"],
                int(row["size_bytes"]),
                int(row["num_records"]) if row.get("num_records") is not None else -1,
                _ms(row.get(time_min)) if time_min in columns else None,
                _ms(row.get(time_max)) if time_max in columns else None,
            )
        )
    found.sort(key=lambda f: (f.partition, Path(f.path).name))
    return found


def _ms(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return int(value.timestamp() * 1000)
    return None


def list_partitions(table: DeltaTable, dataset: str) -> list[layout.Partition]:
    return sorted({file.partition for file in files(table, dataset)})


def file_path(root: str | Path, dataset: str, relative: str) -> str:
    return f"{table_uri(root, dataset)}/{relative}"


def write_file(
    fs: pafs.FileSystem,
    root: str,
    partition: layout.Partition,
    rows: pa.Table,
    name: str,
    options: dict[str, Any],
    *,
    fsync: Any = None,
) -> AddAction:
    """Write ``rows`` (the dataset's columns, all of ``partition``) as one data file and
    return the action that adds it. Nothing is visible until that action is committed.

    ``fsync`` (local disks): called with the file's descriptor before returning, so a
    commit never names a file whose bytes are not on disk.
    """
    dataset = partition.dataset
    relative = f"market={partition.market}/date={partition.date.isoformat()}/{name}"
    path = file_path(root, dataset, relative)
    body = rows.drop_columns(["market"]).cast(file_schema(dataset))
    if fs.type_name != "s3":  # an object store has no folders (pyarrow would add markers)
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    try:
        sink = fs.open_output_stream(path)
        try:
            pq.write_table(body, sink, **options)
            sink.close()  # may fail too (buffered bytes, full disk)
        finally:
            # Closed here, not left to the garbage collector: until then a deleted
            # half-written file keeps holding the disk space we are short of.
            if not sink.closed:
                with contextlib.suppress(OSError):
                    sink.close()
        if fsync is not None:
            fd = os.open(path, os.O_RDONLY)
            try:
                fsync(fd)
            finally:
                os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            fs.delete_file(path)  # never committed, so never seen; only the space is freed
        raise
    size = fs.get_file_info(path).size
    return AddAction(
        relative,
        int(size or 0),
        partition_values(partition),
        wall_clock_ms(),
        True,
        stats_json(body),
    )


def stats_json(rows: pa.Table) -> str:
    """Delta file statistics that readers skip files by: rows, null counts, and the
    bounds of every column but the floats (a filter on a price rarely skips a file, and
    their bounds made 20% (trades) to 55% (ticker_24hr) of a file's statistics, which
    every commit and checkpoint carries)."""
    minimum: dict[str, Any] = {}
    maximum: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    for name in rows.column_names:
        column = rows.column(name)
        nulls[name] = column.null_count
        kind = column.type
        if column.null_count == len(column) or not (
            pa.types.is_integer(kind) or pa.types.is_timestamp(kind) or pa.types.is_string(kind)
        ):
            continue
        bounds = pc.min_max(column)
        low, high = bounds["min"].as_py(), bounds["max"].as_py()
        if pa.types.is_timestamp(kind):
            low, high = _iso(low), _iso(high)
        elif _unbounded(kind, low, high):
            continue
        minimum[name], maximum[name] = low, high
    return json.dumps(
        {
            "numRecords": rows.num_rows,
            "minValues": minimum,
            "maxValues": maximum,
            "nullCount": nulls,
        }
    )


def _unbounded(kind: pa.DataType, low: Any, high: Any) -> bool:
    """Bounds that are better left out: long strings."""
    return pa.types.is_string(kind) and (len(low) > 32 or len(high) > 32)


def _iso(value: dt.datetime) -> str:
    return (
        value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{value.microsecond // 1000:03d}Z"
    )


def remove_action(file: DataFile) -> RemoveAction:
    return RemoveAction(
        file.path,
        True,
        wall_clock_ms(),
        size=file.size,
        partition_values=partition_values(file.partition),
    )


# -- commits ------------------------------------------------------------------------------


def commit(
    table: DeltaTable,
    dataset: str,
    adds: Sequence[AddAction],
    removes: Sequence[RemoveAction] = (),
    *,
    app_id: str | None = None,
    version: int | None = None,
    metadata: dict[str, Any] | None = None,
) -> None:
    """One atomic commit adding ``adds`` and removing ``removes``.

    With ``app_id``/``version`` the commit also records that application transaction
    (see :func:`committed_segment`). A commit that removes files and loses to one that
    removed them first raises :class:`ConflictError`; nothing is then changed. A commit
    that only adds files is tried again on the newer version.
    """
    transactions = (
        [Transaction(app_id, version)] if app_id is not None and version is not None else None
    )
    # A commit that only adds files depends on nothing it read, but deltalake checks it
    # as if it had read the whole table: when a compaction's commit (which removes files)
    # lands between this snapshot and this commit, it is refused. Committing the same
    # files again on the newer snapshot is then exactly right. A commit that removes
    # files is never retried: what it removes may be gone.
    attempts = 1 if removes else APPEND_ATTEMPTS
    for attempt in range(1, attempts + 1):
        try:
            table.create_write_transaction(
                [*removes, *adds],
                mode="append",
                schema=delta_schema(dataset),
                partition_by=PARTITION_BY,
                commit_properties=CommitProperties(
                    custom_metadata=metadata, app_transactions=transactions
                ),
                post_commithook_properties=PostCommitHookProperties(
                    create_checkpoint=True, cleanup_expired_logs=True
                ),
            )
            return
        except CommitFailedError as exc:
            if attempt < attempts:
                log.info(
                    "%s: a compaction committed under this append (attempt %d); again",
                    dataset,
                    attempt,
                )
                table.update_incremental()
                continue
            raise ConflictError(
                f"{dataset}: a concurrent commit changed the files this one replaces: "
                f"{str(exc).splitlines()[0]}",
                dataset=dataset,
                path=table.table_uri,
            ) from exc


def committed_segment(table: DeltaTable | None, app_id: str) -> int | None:
    """The last write-ahead-log segment the writer ``app_id`` committed to ``table``."""
    if table is None:
        return None
    return table.transaction_version(app_id)


# -- housekeeping -------------------------------------------------------------------------


def vacuum(
    table: DeltaTable, retention_hours: float = RETENTION_HOURS, *, full: bool = True
) -> list[str]:
    """Delete files no version within the retention needs: replaced by a compaction,
    and with ``full``, never committed (a crash between writing a file and committing
    it; found by listing the table's folders, not only the log's removals)."""
    return table.vacuum(
        retention_hours=max(0, math.ceil(retention_hours)),
        dry_run=False,
        enforce_retention_duration=False,
        full=full,
        post_commithook_properties=PostCommitHookProperties(create_checkpoint=False),
    )


def checkpoint(table: DeltaTable) -> None:
    """Write a checkpoint and delete log entries past the log retention."""
    table.create_checkpoint()
    table.cleanup_metadata()


def log_size(root: str | Path, dataset: str) -> tuple[int, int]:
    """(files, bytes) in a local table's ``_delta_log``."""
    directory = Path(table_uri(root, dataset)) / LOG_DIR
    count = size = 0
    for entry in os.scandir(directory) if directory.is_dir() else ():
        if entry.is_file():
            count += 1
            size += entry.stat().st_size
    return count, size


def tables(root: str | Path) -> Iterable[tuple[str, DeltaTable]]:
    """Every dataset's table that exists, in registry order."""
    for name in datasets.DATASETS:
        table = open_table(root, name)
        if table is not None:
            yield name, table

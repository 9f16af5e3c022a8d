"""Reading a dataset's Delta table with pyarrow into the loaders' frames
(:mod:`collector.read.loaders` documents the behaviour): the files from the table's log,
row groups chosen by their statistics, and the conversion to the loaders' dtypes.

The rows are never whole in Arrow memory: row groups are read at most two ahead of the
one consumed, and each batch is copied into the frame's numpy arrays, then dropped. What
a load frees goes back to the system when the process has grown by more than half again
the frame built so far (:class:`Budget`), so a load peaks at the frame and a little more
(``bench/README.md``, "Loaders' peak memory")."""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import cast

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from deltalake import DeltaTable

from collector import datasets
from collector.read import load_checks
from collector.read.frames import Budget, to_frame
from collector.read.load_args import Names, TimeLike, columns_of, markets_of, range_of, symbols_of
from collector.storage import delta, layout, legacy
from collector.storage.location import Archive

#: String columns with few distinct values: read as Arrow dictionaries, so they become
#: pandas ``category`` without millions of Python strings.
CATEGORY_COLUMNS = ("market", "symbol", "side", "interval")


def load_frame(
    spec: datasets.Dataset,
    *,
    market: Names | None = None,
    symbols: Names | None = None,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    columns: Iterable[str] | None = None,
    data_dir: str | Path = "data",
    where: pc.Expression | None = None,
    check: load_checks.Check | None = None,
) -> pd.DataFrame:
    """The loaders' frame of ``spec``'s rows (:mod:`collector.read.loaders`): the
    arguments checked, the rows read (also matching ``where``), the symbols asked checked
    against the archive when one has no row, then ``check`` run on what the load found."""
    budget = Budget()
    markets = markets_of(spec, market)
    wanted = columns_of(spec, columns)
    names = symbols_of(symbols)
    start_ms, end_ms = range_of(start, end)
    archive = Archive.of(data_dir)
    if not archive.remote:
        if not archive.path.is_dir():
            raise FileNotFoundError(
                f"no archive at {data_dir}: the directory does not exist (check data_dir)"
            )
        legacy.refuse_legacy(archive.path)  # one line naming `jex-collector migrate`
    table = delta.open_table(archive.uri, spec.name)
    if table is None:
        raise load_checks.no_table(archive, spec.name)
    conditions = [] if where is None else [where]
    time = pc.field(spec.time_column)
    if start_ms is not None:
        conditions.append(time >= pa.scalar(start_ms, datasets.TIMESTAMP))
    if end_ms is not None:
        conditions.append(time < pa.scalar(end_ms, datasets.TIMESTAMP))
    if names is not None:
        symbol = pc.field("symbol")
        conditions.append(symbol == names[0] if len(names) == 1 else symbol.isin(names))
    condition = None
    for part in conditions:
        condition = part if condition is None else condition & part
    found = files(table, spec.name, markets, start_ms, end_ms)
    del table  # the log's memory, before the rows come
    rows = read(archive, found, spec, [spec.time_column, *wanted], condition)
    frame, loaded = to_frame(rows, spec, budget)
    if names is not None:
        load_checks.check_symbols(archive, spec, markets, names, loaded.values["symbol"])
    if check is not None:
        check(archive, markets, names, loaded)
    return frame


@dataclasses.dataclass
class Read:
    """A read's record batches, in the archive's order (partition date, market, file,
    row), and a bound on their rows (those of the row groups kept)."""

    schema: pa.Schema
    batches: Iterator[pa.RecordBatch]
    most_rows: int


def read(
    archive: Archive,
    found: list[delta.DataFile],
    spec: datasets.Dataset,
    columns: list[str],
    condition: pc.Expression | None,
    memory_pool: pa.MemoryPool | None = None,
) -> Read:
    """The rows of the ``found`` files matching ``condition`` (which holds the time range
    too), with ``columns``, as record batches read while they are consumed, their Arrow
    memory from ``memory_pool`` (default :data:`MEMORY_POOL`)."""
    full = read_schema(spec)
    schema = pa.schema([full.field(name) for name in columns])
    if not found:
        return Read(schema, iter(()), 0)
    fragments, most_rows = scan(archive, found, spec, condition)
    pool = memory_pool or MEMORY_POOL
    return Read(schema, _read_ahead(fragments, full, columns, condition, pool), most_rows)


def _read_ahead(
    fragments: list[pads.Fragment],
    schema: pa.Schema,
    columns: list[str],
    condition: pc.Expression | None,
    pool: pa.MemoryPool,
) -> Iterator[pa.RecordBatch]:
    """The rows of ``fragments`` (row groups) matching ``condition``, in order, with
    ``columns`` of ``schema``, read by :data:`READ_AHEAD` threads at most that many row
    groups ahead of the batches consumed. Arrow's own scan bounds what it reads ahead by
    bytes (up to a GiB), not by its readahead counts, when its consumer is the slower."""

    def rows_of(fragment: pads.Fragment) -> pa.Table:
        return fragment.to_table(
            schema=schema,
            columns=columns,
            filter=condition,
            use_threads=False,  # the threads are the row groups'
            memory_pool=pool,
        )

    with ThreadPoolExecutor(READ_AHEAD, thread_name_prefix="load") as workers:
        pending: collections.deque[Future[pa.Table]] = collections.deque()
        for fragment in fragments:
            pending.append(workers.submit(rows_of, fragment))
            if len(pending) > READ_AHEAD:
                yield from _batches(pending.popleft().result())
        while pending:
            yield from _batches(pending.popleft().result())


def _batches(rows: pa.Table) -> list[pa.RecordBatch]:
    """The table's batches; a row group whose rows were all filtered out still gives
    one, empty, as Arrow's dataset scan does (its dictionaries make categories)."""
    if rows.num_rows or not all(column.num_chunks for column in rows.columns):
        return cast(list[pa.RecordBatch], rows.to_batches())
    return [pa.RecordBatch.from_arrays([c.chunk(0) for c in rows.columns], schema=rows.schema)]


#: Row groups read at once, ahead of the one whose batches are consumed: two cores busy.
READ_AHEAD = 2

#: The allocator of a read's batches: the C library's, whose free pages
#: :func:`collector.memory.release_memory` can hand back to the system. Arrow's default
#: pool (mimalloc) keeps tens of MB in its threads' huge pages whatever the read's size,
#: which a one-day load's frame does not dwarf (``bench/README.md``).
MEMORY_POOL = pa.system_memory_pool()


def scan(
    archive: Archive,
    files: list[delta.DataFile],
    spec: datasets.Dataset,
    condition: pc.Expression | None,
) -> tuple[list[pads.Fragment], int]:
    """Fragments of ``files``, one per row group that ``condition`` may match, and the
    rows of those row groups (the most they can return).

    Each fragment's partition expression is its file's market (the column the files do
    not hold: the scan fills it in from there). An explicit schema: files written by
    different steps (the writer, compaction) may store a string column plainly or
    dictionary-encoded; this unifies them. Row groups are chosen by their statistics
    against the plain schema first: Arrow does not prune row groups by a column read as
    a dictionary (``symbol == 'X'`` against statistics kept as strings), and reading
    ``market``/``symbol`` as dictionaries is what makes them cheap pandas categories.
    """
    schema = read_schema(spec)
    filesystem = archive.filesystem()
    root = archive.fs_path()
    file_format = pads.ParquetFileFormat(
        read_options=pads.ParquetReadOptions(
            dictionary_columns=[name for name in schema.names if name in CATEGORY_COLUMNS]
        )
    )
    plain_format = pads.ParquetFileFormat()
    fragments = []
    most_rows = 0
    for file in files:
        path = delta.file_path(root, spec.name, file.path)
        market = pc.field("market") == pa.scalar(file.partition.market)
        fragment = plain_format.make_fragment(path, filesystem)
        if condition is None:
            groups, doubtful = fragment.row_groups, set()
        else:
            groups = fragment.subset(condition).row_groups
            # Row groups whose statistics show every row matches: their fragment carries
            # the condition as its guarantee, so the scan does not evaluate it row by row.
            doubtful = {group.id for group in fragment.subset(~condition).row_groups}
        whole: dict[bool, pads.ParquetFileFragment] = {}
        for group in groups:
            certain = condition is not None and group.id not in doubtful
            if certain not in whole:  # its footer read once, shared by its row groups
                whole[certain] = file_format.make_fragment(
                    path, filesystem, partition_expression=market & condition if certain else market
                )
                whole[certain].ensure_complete_metadata()
            fragments.append(whole[certain].subset(row_group_ids=[group.id]))
            most_rows += group.num_rows
    return fragments, most_rows


def files(
    table: DeltaTable,
    dataset: str,
    markets: list[str],
    start_ms: int | None,
    end_ms: int | None,
) -> list[delta.DataFile]:
    """Files of the table's latest version that may hold rows of ``markets`` in
    ``[start_ms, end_ms)``, by date, then market, then creation.

    From the Delta log alone: a file is left out by its partition (market, date) or,
    when the log has its time range, by that range.
    """
    first = None if start_ms is None else layout.date_of_ms(start_ms)
    last = None if end_ms is None else layout.date_of_ms(end_ms - 1)
    rank = {market: index for index, market in enumerate(markets)}
    only = markets[0] if len(markets) == 1 else None
    found = []
    for file in delta.files(table, dataset, market=only):
        date = file.partition.date
        if file.partition.market not in rank:
            continue
        if (first is not None and date < first) or (last is not None and date > last):
            continue
        if outside(file, start_ms, end_ms):
            continue
        found.append(file)
    return sorted(
        found, key=lambda f: (f.partition.date, rank[f.partition.market], Path(f.path).name)
    )


def outside(file: delta.DataFile, start_ms: int | None, end_ms: int | None) -> bool:
    """Whether the log's time range of ``file`` shows none of its rows is in range."""
    if start_ms is not None and file.max_time_ms is not None and file.max_time_ms < start_ms:
        return True
    return end_ms is not None and file.min_time_ms is not None and file.min_time_ms >= end_ms


def read_schema(spec: datasets.Dataset) -> pa.Schema:
    schema = spec.schema
    for name in CATEGORY_COLUMNS:
        index = schema.get_field_index(name)
        if index >= 0:
            field = schema.field(index)
            schema = schema.set(index, field.with_type(pa.dictionary(pa.int32(), pa.string())))
    return schema

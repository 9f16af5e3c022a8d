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
import ctypes
import dataclasses
import functools
import mmap
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from deltalake import DeltaTable

from collector import datasets
from collector.read import load_checks
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
#: :func:`give_back` can hand back to the system. Arrow's default pool (mimalloc) keeps
#: tens of MB in its threads' huge pages whatever the read's size, which a one-day
#: load's frame does not dwarf (``bench/README.md``).
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


def to_frame(
    rows: Read, spec: datasets.Dataset, budget: Budget | None = None
) -> tuple[pd.DataFrame, load_checks.Found]:
    """A read's rows as a DataFrame with the loaders' dtypes, indexed by the time column
    and sorted by it (stable: equal times keep the archive's order), and what it found.

    Each batch is copied into the frame's arrays as it arrives, then dropped. The arrays
    are sized by the read's bound on rows (pages never written take no memory) and cut
    to the rows found; rows out of time order are then put in order a column at a time,
    checking ``budget`` (one from the start of the load) as the frame grows. Every column
    is a new, writable array, as pandas' own conversion gives.
    """
    budget = budget or Budget()
    nullable = {c.name for c in spec.columns if c.nullable}
    columns: dict[str, _Column] = {
        field.name: _column_for(field.type, field.name in nullable, rows.most_rows)
        for field in rows.schema
    }
    row_bytes = sum(column.row_bytes for column in columns.values())
    count = 0
    for batch in rows.batches:
        stop = count + batch.num_rows
        for name, column in columns.items():
            columns[name] = column.add(batch.column(name), count, stop)
        count = stop
        del batch
        budget.check(count * row_bytes)
    time_column = columns.pop(spec.time_column)
    assert isinstance(time_column, _Numbers)  # timestamps never leave _Numbers
    times = _rows(time_column.array, count, None)
    del time_column
    order = None if _in_order(times) else np.argsort(times, kind="stable")
    if order is not None:
        times = times[order]
    kind = rows.schema.field(spec.time_column).type
    index = pd.DatetimeIndex(_timestamps(times, kind), name=spec.time_column, copy=False)
    present = {
        name: column.present()
        for name, column in columns.items()
        if isinstance(column, _Categories)
    }
    values = {}
    for name in list(columns):
        values[name] = columns.pop(name).pandas(count, order)
        budget.check(count * row_bytes)
    frame = pd.DataFrame(values, index=index, copy=False)
    return frame, load_checks.Found(count, present)


class _Column:
    """A column of the frame being built from a read's batches."""

    #: Bytes a row takes in the column while the frame is built.
    row_bytes = 0

    def add(self, chunk: pa.Array, start: int, stop: int) -> _Column:
        """Take rows ``start:stop`` from ``chunk``; the column to use from now on."""
        raise NotImplementedError

    def pandas(self, count: int, order: np.ndarray | None) -> Any:
        """The first ``count`` rows as pandas values, in ``order`` when given."""
        raise NotImplementedError


def _column_for(kind: pa.DataType, nullable: bool, most_rows: int) -> _Column:
    if pa.types.is_dictionary(kind):
        return _Categories(kind, most_rows)
    # Arrow turns int64 with nulls into float64 and bool with nulls into object: the
    # dtype would depend on the values. Nullable ones become pandas' masked arrays
    # whatever they hold.
    if nullable and kind in (pa.int64(), pa.bool_()):
        return _Masked(kind, most_rows)
    if pa.types.is_timestamp(kind) or pa.types.is_floating(kind):
        return _Numbers(kind, most_rows)
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        return _Numbers(kind, most_rows, nulls=False)
    return _Chunks(kind)


class _Numbers(_Column):
    """Numbers, bools or timestamps (their int64) in one numpy array; a float's null is
    NaN, a timestamp's NaT. With ``nulls=False`` (ints, bools) a chunk with nulls turns
    the column into :class:`_Chunks`, for Arrow's own conversion of the whole."""

    def __init__(self, kind: pa.DataType, most_rows: int, *, nulls: bool = True) -> None:
        self.kind = kind
        self.nulls = nulls
        self.timestamps = pa.types.is_timestamp(kind)
        dtype = np.dtype(np.int64) if self.timestamps else np.dtype(_pandas_dtype(kind))
        self.array = np.empty(most_rows, dtype)
        self.row_bytes = dtype.itemsize

    def add(self, chunk: pa.Array, start: int, stop: int) -> _Column:
        if chunk.null_count and not self.nulls:
            return _Chunks(self.kind, [pa.array(self.array[:start], self.kind), chunk])
        self.array = _room(self.array, stop)
        values = chunk.to_numpy(zero_copy_only=False)
        self.array[start:stop] = values.view(np.int64) if self.timestamps else values
        return self

    def pandas(self, count: int, order: np.ndarray | None) -> Any:
        values = _rows(self.array, count, order)
        del self.array
        return _timestamps(values, self.kind) if self.timestamps else values


class _Masked(_Column):
    """A nullable int64 or bool column as pandas' masked array (``Int64``, ``boolean``);
    built here, as pandas' own ``__from_arrow__`` is several times slower."""

    def __init__(self, kind: pa.DataType, most_rows: int) -> None:
        self.boolean = kind == pa.bool_()
        self.array = np.empty(most_rows, bool if self.boolean else np.int64)
        self.mask = np.zeros(most_rows, bool)  # written only where a chunk has nulls
        self.row_bytes = self.array.itemsize + 1

    def add(self, chunk: pa.Array, start: int, stop: int) -> _Column:
        self.array, self.mask = _room(self.array, stop), _room(self.mask, stop)
        if chunk.null_count:
            self.mask[start:stop] = chunk.is_null().to_numpy(zero_copy_only=False)
            chunk = pc.fill_null(chunk, False if self.boolean else 0)
        self.array[start:stop] = chunk.to_numpy(zero_copy_only=False)
        return self

    def pandas(self, count: int, order: np.ndarray | None) -> Any:
        values, mask = _rows(self.array, count, order), _rows(self.mask, count, order)
        del self.array, self.mask
        if self.boolean:
            return pd.arrays.BooleanArray(values, mask)
        return pd.arrays.IntegerArray(values, mask)


class _Categories(_Column):
    """A dictionary column as a pandas ``Categorical`` whose categories are the values
    present, in the order Arrow's conversion of the whole column gives: each chunk's
    dictionary (cut to the values the chunk uses) merged in, new values last."""

    def __init__(self, kind: pa.DictionaryType, most_rows: int) -> None:
        self.kind = kind
        self.codes = np.empty(most_rows, np.int32)
        self.categories: dict[Any, int] = {}
        self.held: set[Any] = set()
        self.row_bytes = 4

    def add(self, chunk: pa.Array, start: int, stop: int) -> _Column:
        self.codes = _room(self.codes, stop)
        values = chunk.dictionary.to_pylist()
        mapping = np.full(len(values), -1, np.int32)
        kept, held = _dictionary_use(chunk)
        for position in kept:
            mapping[position] = self.categories.setdefault(values[position], len(self.categories))
        self.held.update(values[position] for position in held)
        indices = chunk.indices
        if chunk.null_count:
            codes = mapping[pc.fill_null(indices, 0).to_numpy()]
            codes[chunk.is_null().to_numpy(zero_copy_only=False)] = -1
            self.codes[start:stop] = codes
        elif np.array_equal(mapping, np.arange(len(mapping))):
            self.codes[start:stop] = indices.to_numpy()
        else:
            self.codes[start:stop] = mapping[indices.to_numpy()]
        return self

    def present(self) -> set[str]:
        """The values some row holds (a category may have none)."""
        return {value for value in self.held if value is not None}

    def pandas(self, count: int, order: np.ndarray | None) -> Any:
        codes = _rows(self.codes, count, order)
        del self.codes
        # The dtype of Arrow's own conversion (the categories' dtype included: object when
        # there are none), from the dictionary without rows.
        dictionary = pa.array(list(self.categories), self.kind.value_type)
        dtype = (
            pa.DictionaryArray.from_arrays(
                pa.array([], self.kind.index_type), dictionary, ordered=self.kind.ordered
            )
            .to_pandas()
            .dtype
        )
        return pd.Categorical.from_codes(codes, dtype=dtype)


class _Chunks(_Column):
    """Any other column (strings, ...): its chunks kept, converted by Arrow at the end."""

    def __init__(self, kind: pa.DataType, chunks: list[pa.Array] | None = None) -> None:
        self.kind = kind
        self.chunks = chunks or []

    def add(self, chunk: pa.Array, start: int, stop: int) -> _Column:
        self.chunks.append(chunk)
        return self

    def pandas(self, count: int, order: np.ndarray | None) -> Any:
        column = pa.chunked_array(self.chunks, self.kind)
        del self.chunks
        if order is not None:
            column = column.take(order)
        return column.to_pandas().array


def _room(array: np.ndarray, rows: int) -> np.ndarray:
    """``array``, grown in place (new entries zero) to hold ``rows`` when it is shorter:
    the rare case, as a read's bound on rows is exact or high."""
    if rows > len(array):
        array.resize(max(rows, 2 * len(array)), refcheck=False)
    return array


def _rows(array: np.ndarray, count: int, order: np.ndarray | None) -> np.ndarray:
    """The first ``count`` entries of ``array`` (cut in place: the rest was never
    written), in ``order`` when given (a new array; the old one goes)."""
    if len(array) != count:
        array.resize(count, refcheck=False)
    return array if order is None else array[order]


def _in_order(times: np.ndarray) -> bool:
    """Whether ``times`` never goes backwards (a block of rows at a time)."""
    for start in range(0, len(times) - 1, _BLOCK):
        stop = min(start + _BLOCK, len(times) - 1)
        if not (times[start + 1 : stop + 1] >= times[start:stop]).all():
            return False
    return True


#: Rows at a time for a check that needs a temporary array per row.
_BLOCK = 1 << 16


def _timestamps(values: np.ndarray, kind: pa.TimestampType) -> Any:
    """Timestamps of ``kind`` from their int64 (NaT for a null), without a copy, with the
    very dtype (time zone object included) Arrow's own conversion gives."""
    return pd.array(values, dtype=_pandas_dtype(kind), copy=False)


@functools.cache
def _pandas_dtype(kind: pa.DataType) -> Any:
    """The dtype Arrow's own conversion gives a column of ``kind``."""
    return pa.chunked_array([], kind).to_pandas().dtype


def _dictionary_use(chunk: pa.DictionaryArray) -> tuple[Iterable[int], list[int]]:
    """The positions in the chunk's dictionary of the values to make categories of, and
    of those its rows hold. The first: all of them, in order, unless some value is
    unused (a null counting as a value, as in Arrow's own check) and the dictionary has
    more than one, then those used in order of first use, as Arrow's re-encoding gives:
    so the categories are the values present, as a dictionary read from Parquet holds
    every value of its row group, filtered out or not (a row group at a symbol's
    boundary)."""
    size = len(chunk.dictionary)
    if size > 1:
        used = pc.unique(chunk.indices)
        held = cast(list[int], used.drop_null().to_pylist())
        return (held if len(used) < size else range(size)), held
    return range(size), [0] if size and len(chunk) > chunk.null_count else []


class Budget:
    """A load's allowance of resident memory: the process may grow, from the start of
    the load, by half again the frame built so far; past that, :func:`give_back`.

    What a load frees (batches copied, columns replaced by sorted ones) stays in the C
    library's per-thread arenas, where later batches only partly reuse it. Handing it
    back after every batch instead makes each batch fault its pages in again, which
    slows a large load down a lot (``bench/README.md``). A check reads
    ``/proc/self/statm`` (microseconds); a no-op where the C library is not glibc.
    """

    #: The growth allowed, as a multiple of the frame built so far.
    FACTOR = 1.5

    def __init__(self) -> None:
        self.start = _resident() if _TRIM is not None else 0

    def check(self, built: int) -> None:
        """Give back the free pages if the process has grown past the allowance for a
        frame of ``built`` bytes."""
        if _TRIM is not None and _resident() - self.start > self.FACTOR * built:
            give_back()


def give_back() -> None:
    """Hand the free pages of the C library's heap (glibc's ``malloc_trim``: Arrow's own
    ``release_unused`` of its system pool does not trim) and of Arrow's default pool (the
    files' read buffers) back to the system."""
    if _TRIM is not None:
        _TRIM(0)
    pa.default_memory_pool().release_unused()


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` (None elsewhere: musl, macOS, Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return cast(Callable[[int], int], ctypes.CDLL(None).malloc_trim)
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()
_PAGE = mmap.PAGESIZE


def _resident() -> int:
    """The process's resident memory, in bytes."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE

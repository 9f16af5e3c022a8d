"""The loaders' frames built from a read's batches: each batch copied into numpy arrays
as it arrives, then dropped, with the dtypes Arrow's own conversion gives
(:func:`to_frame`, used by :mod:`collector.read.arrow_read`), and the resident memory a
load may grow by before it gives freed pages back (:class:`Budget`)."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from collector import datasets
from collector.memory import malloc_trim, release_memory, resident_bytes
from collector.read import load_checks

if TYPE_CHECKING:
    from collector.read.arrow_read import Read


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
    the load, by half again the frame built so far; past that,
    :func:`collector.memory.release_memory`.

    What a load frees (batches copied, columns replaced by sorted ones) stays in the C
    library's per-thread arenas, where later batches only partly reuse it. Handing it
    back after every batch instead makes each batch fault its pages in again, which
    slows a large load down a lot (``bench/README.md``). A check reads
    ``/proc/self/statm`` (microseconds); a no-op where the C library is not glibc.
    """

    #: The growth allowed, as a multiple of the frame built so far.
    FACTOR = 1.5

    def __init__(self) -> None:
        self.start = resident_bytes() if malloc_trim() is not None else 0

    def check(self, built: int) -> None:
        """Give back the free pages if the process has grown past the allowance for a
        frame of ``built`` bytes."""
        if malloc_trim() is not None and resident_bytes() - self.start > self.FACTOR * built:
            release_memory()

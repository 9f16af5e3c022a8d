"""Grouping rows with sorts and compares, not ``Table.group_by``.

pyarrow's ``group_by`` runs on Acero, and importing ``pyarrow.acero`` imports
``pyarrow.dataset`` and pandas: about 50 MB of a daemon's memory for the few small
groupings it does per flush (dedupe on the key, split into partitions). The same answers
come from ``sort_indices`` and comparing each sorted row with the one before it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

SortKeys = Sequence[tuple[str, str]]


def first_of_each(table: pa.Table, keys: Sequence[str], order: SortKeys = ()) -> pa.Array:
    """The row numbers (ascending) of the first row of each distinct ``keys`` value, the
    first being the smallest by ``order`` then by row number. Null key values are values
    like any other (one group)."""
    if table.num_rows == 0:
        return pa.array([], pa.int64())
    rows = pa.array(range(table.num_rows), pa.int64())
    indexed = table.select(list(keys) + [c for c, _ in order if c not in keys])
    indexed = indexed.append_column("__row", rows)
    sorting = [(k, "ascending") for k in keys] + list(order) + [("__row", "ascending")]
    ordered = indexed.take(pc.sort_indices(indexed, sort_keys=sorting))
    changed = [_changes(ordered.column(k).combine_chunks()) for k in keys]
    starts = functools.reduce(pc.or_, changed) if changed else _changes(None, ordered.num_rows)
    firsts = ordered.column("__row").combine_chunks().filter(starts)
    return pc.take(firsts, pc.sort_indices(firsts))


def _changes(values: pa.Array | None, length: int = 0) -> pa.Array:
    """True where a sorted row's value differs from the row before (the first: True)."""
    if values is None:
        return pa.array([True] + [False] * (length - 1))
    if len(values) == 0:
        return pa.array([], pa.bool_())
    previous, current = values.slice(0, len(values) - 1), values.slice(1)
    differs = pc.not_equal(current, previous)
    # A null next to a value differs; two nulls do not (not_equal gives null for both).
    either_null = pc.xor(pc.is_null(current), pc.is_null(previous))
    differs = pc.or_(pc.fill_null(differs, False), either_null)
    return pa.concat_arrays([pa.array([True]), differs])


def distinct(table: pa.Table, keys: Sequence[str]) -> list[tuple[Any, ...]]:
    """The distinct values of ``keys`` in ``table``, sorted."""
    firsts = table.select(list(keys)).take(first_of_each(table, keys))
    values = sorted(zip(*(firsts.column(k).to_pylist() for k in keys), strict=True))
    return list(values)

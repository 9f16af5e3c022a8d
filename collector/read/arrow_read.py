"""Reading a dataset's Delta table with pyarrow into the loaders' frames
(:mod:`collector.read.loaders` documents the behaviour): the files from the table's log,
row groups chosen by their statistics, and the Arrow-to-pandas conversion with the
loaders' dtypes."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from pathlib import Path
from typing import cast

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
    against the archive when one has no row, then ``check`` run on the Arrow table."""
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
    rows = read(
        archive,
        table,
        spec,
        markets=markets,
        columns=wanted,
        start_ms=start_ms,
        end_ms=end_ms,
        condition=condition,
    )
    if names is not None:
        found = load_checks.values_in(rows, "symbol") if rows.num_rows else set()
        load_checks.check_symbols(archive, spec, markets, names, found)
    if check is not None:
        check(archive, markets, names, rows)
    return to_frame(rows, spec)


def read(
    archive: Archive,
    table: DeltaTable,
    spec: datasets.Dataset,
    *,
    markets: list[str],
    columns: list[str],
    start_ms: int | None,
    end_ms: int | None,
    condition: pc.Expression | None,
) -> pa.Table:
    """The rows of ``table`` in ``markets`` and ``[start_ms, end_ms)`` matching
    ``condition`` (which holds the time range too), with the time column and ``columns``."""
    found = files(table, spec.name, markets, start_ms, end_ms)
    if not found:
        return empty(spec, columns)
    return scan(archive, found, spec, condition).to_table(
        columns=[spec.time_column, *columns], filter=condition, use_threads=True
    )


def empty(spec: datasets.Dataset, columns: list[str]) -> pa.Table:
    """No rows, with the columns and types of a read."""
    return read_schema(spec).empty_table().select([spec.time_column, *columns])


def scan(
    archive: Archive,
    files: list[delta.DataFile],
    spec: datasets.Dataset,
    condition: pc.Expression | None,
) -> pads.Dataset:
    """A dataset over ``files`` reading only the row groups ``condition`` may match.

    Each file is a fragment whose partition expression is its market (the column the
    files do not hold: the scan fills it in from there). An explicit schema: files
    written by different steps (the writer, compaction) may store a string column
    plainly or dictionary-encoded; this unifies them. Row groups are chosen by their
    statistics against the plain schema first: Arrow does not prune row groups by a
    column read as a dictionary (``symbol == 'X'`` against statistics kept as strings),
    and reading ``market``/``symbol`` as dictionaries is what makes them cheap pandas
    categories.
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
    for file in files:
        path = delta.file_path(root, spec.name, file.path)
        market = pc.field("market") == pa.scalar(file.partition.market)
        if condition is None:
            fragments.append(
                file_format.make_fragment(path, filesystem, partition_expression=market)
            )
            continue
        fragment = plain_format.make_fragment(path, filesystem)
        kept = [group.id for group in fragment.subset(condition).row_groups]
        # Row groups whose statistics show every row matches: their fragment carries
        # the condition as its guarantee, so the scan does not evaluate it row by row.
        doubtful = {group.id for group in fragment.subset(~condition).row_groups}
        for certain, run in itertools.groupby(kept, key=lambda group: group not in doubtful):
            fragments.append(
                file_format.make_fragment(
                    path,
                    filesystem,
                    partition_expression=market & condition if certain else market,
                    row_groups=list(run),
                )
            )
    return pads.FileSystemDataset(fragments, schema, file_format)


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


def to_frame(table: pa.Table, spec: datasets.Dataset) -> pd.DataFrame:
    """The Arrow table as a DataFrame with the loaders' dtypes, indexed and sorted."""
    nullable = {c.name for c in spec.columns if c.nullable}
    # Arrow turns int64 with nulls into float64 and bool with nulls into object: the
    # dtype would depend on the values. Nullable ones become pandas' masked arrays
    # whatever they hold (built here: pandas' own __from_arrow__ is several times slower).
    masked = {
        name: _masked_array(table.column(name))
        for name in table.column_names
        if name in nullable and table.schema.field(name).type in (pa.int64(), pa.bool_())
    }
    order = table.column_names
    table = table.drop_columns(list(masked))
    for name in table.column_names:
        if pa.types.is_dictionary(table.schema.field(name).type):
            index = table.schema.get_field_index(name)
            table = table.set_column(index, name, _used_dictionaries(table.column(name)))
    plain = table.to_pandas(split_blocks=True, self_destruct=True)
    columns = {name: masked[name] if name in masked else plain[name] for name in order}
    frame = pd.DataFrame(columns, copy=False).set_index(spec.time_column)
    if not frame.index.is_monotonic_increasing:
        times = cast(pd.DatetimeIndex, frame.index).asi8
        frame = frame.take(np.argsort(times, kind="stable"))
    return frame


def _masked_array(column: pa.ChunkedArray) -> pd.api.extensions.ExtensionArray:
    mask = column.is_null().to_numpy(zero_copy_only=False)
    if column.type == pa.bool_():
        values = pc.fill_null(column, False).to_numpy(zero_copy_only=False)
        return pd.arrays.BooleanArray(values, mask)
    values = pc.fill_null(column, 0).to_numpy()
    return pd.arrays.IntegerArray(values, mask)


def _used_dictionaries(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """The column with each chunk's dictionary cut to the values it uses, so that the
    categories are the values present: a dictionary read from Parquet holds every value
    of its row group, filtered out or not. Only chunks with unused values are re-encoded
    (a row group at a symbol's boundary)."""
    chunks = []
    for chunk in column.chunks:
        if len(chunk.dictionary) > 1 and len(pc.unique(chunk.indices)) < len(chunk.dictionary):
            chunk = chunk.dictionary_decode().dictionary_encode()
        chunks.append(chunk)
    return pa.chunked_array(chunks, type=column.type)

"""pandas loaders: one call from the archive to a typed, time-indexed DataFrame.

``load(dataset, ...)`` reads any dataset; ``load_trades``, ``load_klines``, ... are the
same call for one dataset, with that dataset's own options. Every loader takes:

* ``market``: a market name or several (default: every market of the dataset);
* ``symbols``: a symbol name or several (default: all);
* ``start`` (inclusive) and ``end`` (exclusive, like ``jex-collector backfill --end``):
  strings, ``datetime`` or ``pandas.Timestamp``; naive values are UTC;
* ``columns``: the columns to read (default: all); the time column is always read;
* ``data_dir``: the archive (default ``data``).

The result is indexed by the dataset's time column (``datasets.get(name).time_column``,
also the index name) as a UTC ``DatetimeIndex`` with millisecond precision, sorted by
time; rows with equal times keep the archive's order (partition date, then file, then
row). Column dtypes:

=====================================  =========================================
Arrow (``collector.datasets``)          pandas
=====================================  =========================================
``market``, ``symbol``, ``side``,       ``category``
``interval``
other strings                           pandas' default string dtype
float64                                 ``float64`` (null: NaN)
int64, int16                            ``int64``, ``int16``; nullable int64
                                        columns (``trade_id``, precisions) are
                                        pandas ``Int64`` (null: ``<NA>``)
bool (``is_buyer_maker``, nullable)     pandas ``boolean`` (null: ``<NA>``)
timestamp[ms, UTC]                      ``datetime64[ms, UTC]`` (null: NaT)
=====================================  =========================================

Only what is asked is read: the files come from the dataset's Delta table log
(:func:`collector.storage.delta.files`), which names each file's partition and the
range of its time column, so files of other markets, of dates outside ``[start, end)``
or with no time inside it are never opened; symbol, time and column filters are pushed
down to Parquet, which skips row groups by their statistics. ``market`` is not inside
the files: each file's market comes from the log, as a guarantee of its fragment.

A load reads one version of the table: a compaction committing meanwhile replaces
files in a later version, and the files it replaced stay on disk for the table's
retention period (:data:`collector.storage.delta.RETENTION_HOURS`), so a load returns
every row exactly once.

An empty range, or an archive without the dataset, gives an empty frame with the same
columns and dtypes as a non-empty one; a ``data_dir`` that does not exist is an error.
"""

from __future__ import annotations

import itertools
import logging
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypedDict, Unpack, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from collector import datasets
from collector.config import KLINE_INTERVALS
from collector.read.load_args import (
    Names,
    TimeLike,
    columns_of,
    dataset_of,
    markets_of,
    symbols_of,
    to_ms,
)
from collector.read.research import depth_wide
from collector.storage import delta, layout, legacy
from collector.storage.location import Archive

log = logging.getLogger(__name__)

#: String columns with few distinct values: read as Arrow dictionaries, so they become
#: pandas ``category`` without millions of Python strings.
CATEGORY_COLUMNS = ("market", "symbol", "side", "interval")


class LoadOptions(TypedDict, total=False):
    """The keyword arguments every typed loader shares with :func:`load`."""

    market: Names | None
    symbols: Names | None
    start: TimeLike | None
    end: TimeLike | None
    columns: Iterable[str] | None
    data_dir: str | Path


def load(
    dataset: str,
    *,
    market: Names | None = None,
    symbols: Names | None = None,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    columns: Iterable[str] | None = None,
    data_dir: str | Path = "data",
) -> pd.DataFrame:
    """Rows of ``dataset`` as a DataFrame indexed by its time column (see the module doc)."""
    return _load(
        dataset_of(dataset),
        market=market,
        symbols=symbols,
        start=start,
        end=end,
        columns=columns,
        data_dir=data_dir,
    )


def load_trades(**options: Unpack[LoadOptions]) -> pd.DataFrame:
    """Trades, indexed by ``time``. ``trade_id`` is ``Int64`` and ``is_buyer_maker``
    ``boolean``: both are null for rows from the recent-trades endpoint."""
    return load("trades", **options)


def load_klines(*, interval: str | None = None, **options: Unpack[LoadOptions]) -> pd.DataFrame:
    """Klines, indexed by ``open_time``; ``interval`` (``1m``, ``1h``, ...) selects one
    interval (default: all, told apart by the ``interval`` column)."""
    if interval is None:
        return load("klines", **options)
    if interval not in KLINE_INTERVALS:
        raise ValueError(
            f"unknown kline interval {interval!r}; intervals are: {', '.join(KLINE_INTERVALS)}"
        )
    return _load(dataset_of("klines"), where=pc.field("interval") == interval, **options)


def load_depth(
    *, levels: int | None = None, wide: bool = False, **options: Unpack[LoadOptions]
) -> pd.DataFrame:
    """Order-book snapshots, indexed by ``received_at``.

    Long form (default): one row per side and level. ``levels=N`` keeps the best N
    levels of each side (filtered in Parquet). ``wide=True``: one row per snapshot
    (market, symbol, time) with ``update_id``, then ``bid_price_0..N-1``,
    ``bid_qty_0..N-1``, ``ask_price_0..N-1``, ``ask_qty_0..N-1`` (N = ``levels``, or
    the deepest level found); a level a snapshot lacks is NaN. ``columns=`` applies to
    the long form only.
    """
    where = None
    if levels is not None:
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
            raise ValueError(f"levels must be a positive number of levels, got {levels!r}")
        where = pc.field("level") < levels
    if wide and options.get("columns") is not None:
        raise ValueError("load_depth(wide=True) takes no columns=; select from its result")
    depth = _load(dataset_of("depth"), where=where, **options)
    return depth_wide(depth, levels) if wide else depth


def load_book_ticker(**options: Unpack[LoadOptions]) -> pd.DataFrame:
    """Best bid and ask (``book_ticker``), indexed by ``received_at``."""
    return load("book_ticker", **options)


def load_ticker_24hr(**options: Unpack[LoadOptions]) -> pd.DataFrame:
    """24-hour ticker statistics (``ticker_24hr``), indexed by ``received_at``; the last
    price alone is :func:`load_ticker_price`."""
    return load("ticker_24hr", **options)


def load_ticker_price(**options: Unpack[LoadOptions]) -> pd.DataFrame:
    """Last price per symbol (``ticker_price``), indexed by ``received_at``."""
    return load("ticker_price", **options)


def load_avg_price(**options: Unpack[LoadOptions]) -> pd.DataFrame:
    """Average price (``avg_price``), indexed by ``received_at``."""
    return load("avg_price", **options)


def load_indices_price(**options: Unpack[LoadOptions]) -> pd.DataFrame:
    """Futures last, index and mark price (``indices_price``), indexed by ``received_at``."""
    return load("indices_price", **options)


def load_funding_rate(**options: Unpack[LoadOptions]) -> pd.DataFrame:
    """Futures funding rate history (``funding_rate``), indexed by ``time``."""
    return load("funding_rate", **options)


def _deprecated(old: str, new: Callable[..., pd.DataFrame]) -> Callable[..., pd.DataFrame]:
    """``old``, the first release's name of ``new``: kept for one release, with a warning."""

    def alias(**options: Unpack[LoadOptions]) -> pd.DataFrame:
        warnings.warn(
            f"{old} is deprecated and goes in the next release; use {new.__name__}",
            DeprecationWarning,
            stacklevel=2,
        )
        return new(**options)

    alias.__name__ = alias.__qualname__ = old
    alias.__doc__ = f"Deprecated: :func:`{new.__name__}` (one loader name per dataset)."
    return alias


#: The first release's names (deprecated: one loader name per dataset).
load_tickers = _deprecated("load_tickers", load_ticker_24hr)
load_indices = _deprecated("load_indices", load_indices_price)
load_funding = _deprecated("load_funding", load_funding_rate)


def load_protection_fund(**options: Unpack[LoadOptions]) -> pd.DataFrame:
    """Futures protection fund balance (``protection_fund``), indexed by ``time``."""
    return load("protection_fund", **options)


def load_instruments(**options: Unpack[LoadOptions]) -> pd.DataFrame:
    """Instrument lists, one row per refresh, indexed by ``received_at``."""
    return load("instruments", **options)


def load_contract_info(**options: Unpack[LoadOptions]) -> pd.DataFrame:
    """Futures contract details (``contract_info``), indexed by ``received_at``."""
    return load("contract_info", **options)


def __getattr__(name: str) -> Any:
    """``load_<dataset>`` for every dataset of the registry (``load_ticker_24hr``,
    ``load_funding_rate``, ...): the functions above where a dataset has options of its
    own, else :func:`load` for that dataset. Made on first use, then kept."""
    dataset = name.removeprefix("load_")
    if name == dataset or dataset not in datasets.DATASETS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    spec = datasets.get(dataset)

    def loader(**options: Unpack[LoadOptions]) -> pd.DataFrame:
        return load(dataset, **options)

    loader.__name__ = loader.__qualname__ = name
    loader.__doc__ = (
        f"{spec.doc} Rows of ``{dataset}`` indexed by ``{spec.time_column}``; the options "
        "are :func:`load`'s."
    )
    globals()[name] = loader
    return loader


# -- reading --------------------------------------------------------------------------------


def _load(
    spec: datasets.Dataset,
    *,
    market: Names | None = None,
    symbols: Names | None = None,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    columns: Iterable[str] | None = None,
    data_dir: str | Path = "data",
    where: pc.Expression | None = None,
) -> pd.DataFrame:
    markets = markets_of(spec, market)
    wanted = columns_of(spec, columns)
    start_ms = None if start is None else to_ms(start, "start")
    end_ms = None if end is None else to_ms(end, "end")
    archive = Archive.of(data_dir)
    if not archive.remote:
        if not archive.path.is_dir():
            raise FileNotFoundError(
                f"no archive at {data_dir}: the directory does not exist (check data_dir)"
            )
        legacy.refuse_legacy(archive.path)  # one line naming `jex-collector migrate`
    read_schema = _read_schema(spec)
    projection = [spec.time_column, *wanted]
    if start_ms is not None and end_ms is not None and start_ms >= end_ms:
        return _frame(read_schema.empty_table().select(projection), spec)
    conditions = [] if where is None else [where]
    time = pc.field(spec.time_column)
    if start_ms is not None:
        conditions.append(time >= pa.scalar(start_ms, datasets.TIMESTAMP))
    if end_ms is not None:
        conditions.append(time < pa.scalar(end_ms, datasets.TIMESTAMP))
    names = symbols_of(symbols)
    if names is not None:
        symbol = pc.field("symbol")
        conditions.append(symbol == names[0] if len(names) == 1 else symbol.isin(names))
    condition = None
    for part in conditions:
        condition = part if condition is None else condition & part
    files = _files(archive.uri, spec.name, markets, start_ms, end_ms)
    if not files:
        return _frame(read_schema.empty_table().select(projection), spec)
    table = _scan(archive, files, spec, condition).to_table(
        columns=projection, filter=condition, use_threads=True
    )
    return _frame(table, spec)


def _scan(
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
    schema = _read_schema(spec)
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


def _files(
    root: str, dataset: str, markets: list[str], start_ms: int | None, end_ms: int | None
) -> list[delta.DataFile]:
    """Files of the table's latest version that may hold rows of ``markets`` in
    ``[start_ms, end_ms)``, by date, then market, then creation.

    From the Delta log alone: a file is left out by its partition (market, date) or,
    when the log has its time range, by that range.
    """
    table = delta.open_table(root, dataset)
    if table is None:
        return []
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
        if _outside(file, start_ms, end_ms):
            continue
        found.append(file)
    return sorted(
        found, key=lambda f: (f.partition.date, rank[f.partition.market], Path(f.path).name)
    )


def _outside(file: delta.DataFile, start_ms: int | None, end_ms: int | None) -> bool:
    """Whether the log's time range of ``file`` shows none of its rows is in range."""
    if start_ms is not None and file.max_time_ms is not None and file.max_time_ms < start_ms:
        return True
    return end_ms is not None and file.min_time_ms is not None and file.min_time_ms >= end_ms


def _read_schema(spec: datasets.Dataset) -> pa.Schema:
    schema = spec.schema
    for name in CATEGORY_COLUMNS:
        index = schema.get_field_index(name)
        if index >= 0:
            field = schema.field(index)
            schema = schema.set(index, field.with_type(pa.dictionary(pa.int32(), pa.string())))
    return schema


def _frame(table: pa.Table, spec: datasets.Dataset) -> pd.DataFrame:
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

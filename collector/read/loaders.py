"""pandas loaders: one call from the archive to a typed, time-indexed DataFrame.

``load(dataset, ...)`` reads any dataset; ``load_trades``, ``load_klines``, ... are the
same call for one dataset, with that dataset's own options. Every loader takes:

* ``market``: a market name or several (default: every market of the dataset);
* ``symbols``: a symbol name or several (default: all);
* ``start`` (inclusive) and ``end`` (exclusive, like ``jex-collector backfill --end``):
  strings, ``datetime`` or ``pandas.Timestamp``; naive values are UTC;
* ``columns``: the columns to read (default: all); the time column and the key columns
  (``market``, ``symbol`` and the rest of the dataset's key, ``datasets.get(name).key``)
  are always read, the key columns first;
* ``data_dir``: the archive (default ``data``).

Options are keywords (``inspect.signature`` and ``help()`` list them); a keyword that
is no option is a TypeError naming the one meant (``symbol=`` -> ``symbols=``).

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

A load holds little beside the frame it returns: the rows are copied into the frame's
arrays batch by batch as the scan reads them, and what the load frees goes back to the
system once the process has grown by half again the frame built so far
(:mod:`collector.read.arrow_read`; ``bench/README.md`` has the figures).

A load reads one version of the table: a compaction committing meanwhile replaces
files in a later version, and the files it replaced stay on disk for the table's
retention period (:data:`collector.storage.delta.RETENTION_HOURS`), so a load returns
every row exactly once.

A range without rows gives an empty frame with the same columns and dtypes as a
non-empty one. Mistakes are errors that name what exists (:mod:`collector.read.load_checks`),
never an empty frame: an unknown dataset, market, column or kline interval; ``start``
after or equal to ``end``; a ``data_dir`` that does not exist, or holds no table of the
dataset (``no trades in <dir>; datasets there: ...``); a symbol not archived in the
markets asked (the symbols archived there are listed, checked only when the symbol has
no rows in the result); ``load_klines`` without ``interval`` when the selection holds
several intervals.
"""

from __future__ import annotations

import functools
import inspect
import textwrap
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.compute as pc

from collector import datasets
from collector.config import KLINE_INTERVALS
from collector.read import load_checks
from collector.read.arrow_read import CATEGORY_COLUMNS as CATEGORY_COLUMNS
from collector.read.arrow_read import load_frame
from collector.read.load_args import Names, TimeLike, dataset_of, explained
from collector.read.research import depth_wide


@explained
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
    return load_frame(
        dataset_of(dataset),
        market=market,
        symbols=symbols,
        start=start,
        end=end,
        columns=columns,
        data_dir=data_dir,
    )


@explained
def load_trades(
    *,
    market: Names | None = None,
    symbols: Names | None = None,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    columns: Iterable[str] | None = None,
    data_dir: str | Path = "data",
) -> pd.DataFrame:
    """Trades, indexed by ``time``. ``trade_id`` is ``Int64`` and ``is_buyer_maker``
    ``boolean``: both are null for rows from the recent-trades endpoint. The options are
    :func:`load`'s."""
    return load(
        "trades",
        market=market,
        symbols=symbols,
        start=start,
        end=end,
        columns=columns,
        data_dir=data_dir,
    )


@explained
def load_klines(
    *,
    interval: str | None = None,
    market: Names | None = None,
    symbols: Names | None = None,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    columns: Iterable[str] | None = None,
    data_dir: str | Path = "data",
) -> pd.DataFrame:
    """Klines, indexed by ``open_time``, of one ``interval`` (``1m``, ``1h``, ...).

    ``interval`` may be left out when the archive holds one interval for the selection;
    when it holds several, leaving it out is a ValueError listing them (rows of several
    intervals would mix in one frame), and an interval it does not hold for the
    selection is one too. The other options are :func:`load`'s.
    """
    spec = dataset_of("klines")
    options: dict[str, Any] = {
        "market": market,
        "symbols": symbols,
        "start": start,
        "end": end,
        "columns": columns,
        "data_dir": data_dir,
    }
    if interval is None:
        return load_frame(spec, check=load_checks.one_interval, **options)
    if interval not in KLINE_INTERVALS:
        raise ValueError(
            f"unknown kline interval {interval!r}; intervals are: {', '.join(KLINE_INTERVALS)}"
        )
    check = load_checks.interval_held(interval)
    return load_frame(spec, where=pc.field("interval") == interval, check=check, **options)


@explained
def load_depth(
    *,
    levels: int | None = None,
    wide: bool = False,
    market: Names | None = None,
    symbols: Names | None = None,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    columns: Iterable[str] | None = None,
    data_dir: str | Path = "data",
) -> pd.DataFrame:
    """Order-book snapshots, indexed by ``received_at``.

    Long form (default): one row per side and level. ``levels=N`` keeps the best N
    levels of each side (filtered in Parquet). ``wide=True``: one row per snapshot
    (market, symbol, time) with ``update_id``, then ``bid_price_0..N-1``,
    ``bid_qty_0..N-1``, ``ask_price_0..N-1``, ``ask_qty_0..N-1`` (N = ``levels``, or
    the deepest level found); a level a snapshot lacks is NaN. ``columns=`` applies to
    the long form only. The other options are :func:`load`'s.
    """
    where = None
    if levels is not None:
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
            raise ValueError(f"levels must be a positive number of levels, got {levels!r}")
        where = pc.field("level") < levels
    if wide and columns is not None:
        raise ValueError("load_depth(wide=True) takes no columns=; select from its result")
    depth = load_frame(
        dataset_of("depth"),
        where=where,
        market=market,
        symbols=symbols,
        start=start,
        end=end,
        columns=columns,
        data_dir=data_dir,
    )
    return depth_wide(depth, levels) if wide else depth


@explained
def load_book_ticker(
    *,
    market: Names | None = None,
    symbols: Names | None = None,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    columns: Iterable[str] | None = None,
    data_dir: str | Path = "data",
) -> pd.DataFrame:
    """Best bid and ask (``book_ticker``), indexed by ``received_at``.
    The options are :func:`load`'s."""
    return load(
        "book_ticker",
        market=market,
        symbols=symbols,
        start=start,
        end=end,
        columns=columns,
        data_dir=data_dir,
    )


@explained
def load_ticker_24hr(
    *,
    market: Names | None = None,
    symbols: Names | None = None,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    columns: Iterable[str] | None = None,
    data_dir: str | Path = "data",
) -> pd.DataFrame:
    """24-hour ticker statistics (``ticker_24hr``), indexed by ``received_at``; the last
    price alone is :func:`load_ticker_price`.
    The options are :func:`load`'s."""
    return load(
        "ticker_24hr",
        market=market,
        symbols=symbols,
        start=start,
        end=end,
        columns=columns,
        data_dir=data_dir,
    )


@explained
def load_ticker_price(
    *,
    market: Names | None = None,
    symbols: Names | None = None,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    columns: Iterable[str] | None = None,
    data_dir: str | Path = "data",
) -> pd.DataFrame:
    """Last price per symbol (``ticker_price``), indexed by ``received_at``.
    The options are :func:`load`'s."""
    return load(
        "ticker_price",
        market=market,
        symbols=symbols,
        start=start,
        end=end,
        columns=columns,
        data_dir=data_dir,
    )


@explained
def load_avg_price(
    *,
    market: Names | None = None,
    symbols: Names | None = None,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    columns: Iterable[str] | None = None,
    data_dir: str | Path = "data",
) -> pd.DataFrame:
    """Average price (``avg_price``), indexed by ``received_at``.
    The options are :func:`load`'s."""
    return load(
        "avg_price",
        market=market,
        symbols=symbols,
        start=start,
        end=end,
        columns=columns,
        data_dir=data_dir,
    )


@explained
def load_indices_price(
    *,
    market: Names | None = None,
    symbols: Names | None = None,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    columns: Iterable[str] | None = None,
    data_dir: str | Path = "data",
) -> pd.DataFrame:
    """Futures last, index and mark price (``indices_price``), indexed by
    ``received_at``.
    The options are :func:`load`'s."""
    return load(
        "indices_price",
        market=market,
        symbols=symbols,
        start=start,
        end=end,
        columns=columns,
        data_dir=data_dir,
    )


@explained
def load_funding_rate(
    *,
    market: Names | None = None,
    symbols: Names | None = None,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    columns: Iterable[str] | None = None,
    data_dir: str | Path = "data",
) -> pd.DataFrame:
    """Futures funding rate history (``funding_rate``), indexed by ``time``.
    The options are :func:`load`'s."""
    return load(
        "funding_rate",
        market=market,
        symbols=symbols,
        start=start,
        end=end,
        columns=columns,
        data_dir=data_dir,
    )


@explained
def load_protection_fund(
    *,
    market: Names | None = None,
    symbols: Names | None = None,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    columns: Iterable[str] | None = None,
    data_dir: str | Path = "data",
) -> pd.DataFrame:
    """Futures protection fund balance (``protection_fund``), indexed by ``time``.
    The options are :func:`load`'s."""
    return load(
        "protection_fund",
        market=market,
        symbols=symbols,
        start=start,
        end=end,
        columns=columns,
        data_dir=data_dir,
    )


@explained
def load_instruments(
    *,
    market: Names | None = None,
    symbols: Names | None = None,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    columns: Iterable[str] | None = None,
    data_dir: str | Path = "data",
) -> pd.DataFrame:
    """Instrument lists, one row per refresh, indexed by ``received_at``.
    The options are :func:`load`'s."""
    return load(
        "instruments",
        market=market,
        symbols=symbols,
        start=start,
        end=end,
        columns=columns,
        data_dir=data_dir,
    )


@explained
def load_contract_info(
    *,
    market: Names | None = None,
    symbols: Names | None = None,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    columns: Iterable[str] | None = None,
    data_dir: str | Path = "data",
) -> pd.DataFrame:
    """Futures contract details (``contract_info``), indexed by ``received_at``.
    The options are :func:`load`'s."""
    return load(
        "contract_info",
        market=market,
        symbols=symbols,
        start=start,
        end=end,
        columns=columns,
        data_dir=data_dir,
    )


def _deprecated(old: str, new: Callable[..., pd.DataFrame]) -> Callable[..., pd.DataFrame]:
    """``old``, the first release's name of ``new``: kept for one release, with a warning
    (a wrong keyword is a TypeError first). Its signature is ``new``'s."""

    @functools.wraps(new)
    def alias(**options: Any) -> pd.DataFrame:
        warnings.warn(
            f"{old} is deprecated and goes in the next release; use {new.__name__}",
            DeprecationWarning,
            stacklevel=2,
        )
        return new(**options)

    alias.__name__ = alias.__qualname__ = old
    alias.__doc__ = f"Deprecated: :func:`{new.__name__}` (one loader name per dataset)."
    return explained(alias)


#: The first release's names (deprecated: one loader name per dataset).
load_tickers = _deprecated("load_tickers", load_ticker_24hr)
load_indices = _deprecated("load_indices", load_indices_price)
load_funding = _deprecated("load_funding", load_funding_rate)

#: The options every loader shares, as :func:`load` takes them after ``dataset``.
SHARED_OPTIONS = inspect.signature(load_trades)

_OPTIONS_DOC = """

Options (keywords):

* ``market``: a market name or several (default: {markets});
* ``symbols``: a symbol name or several (default: all); a symbol not archived in the
  markets asked is a ValueError listing those that are;
* ``start`` (inclusive) and ``end`` (exclusive): strings, ``datetime`` or
  ``pandas.Timestamp``, naive values UTC; ``start`` must be before ``end``;
* ``columns``: the columns to read (default: all); the time column and the key
  columns ({key}) are always read;
* ``data_dir``: the archive (default ``data``).

{columns}
"""


def __getattr__(name: str) -> Any:
    """``load_<dataset>`` for every dataset of the registry (``load_ticker_24hr``,
    ``load_funding_rate``, ...): the functions above where there is one, else
    :func:`load` for that dataset, with the shared options as its signature. Made on
    first use, then kept."""
    dataset = name.removeprefix("load_")
    if name == dataset or dataset not in datasets.DATASETS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    spec = datasets.get(dataset)

    def loader(**options: Any) -> pd.DataFrame:
        return load(dataset, **options)

    loader.__name__ = loader.__qualname__ = name
    loader.__signature__ = SHARED_OPTIONS  # type: ignore[attr-defined]
    loader.__doc__ = f"{spec.doc} Rows of ``{dataset}`` indexed by ``{spec.time_column}``." + (
        _OPTIONS_DOC.format(
            markets=", ".join(spec.markets),
            columns=textwrap.fill(f"Columns: {', '.join(spec.column_names)}.", 88),
            key=", ".join(k for k in spec.key if k != spec.time_column),
        )
    )
    checked = explained(loader)
    globals()[name] = checked
    return checked

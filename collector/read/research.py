"""Helpers for backtests over the loaders' frames: bars from trades, depth in wide form,
the top of the book, and trades joined with the book they met.

They take and return frames shaped like the loaders' (a UTC ``DatetimeIndex``, sorted,
``market`` and ``symbol`` columns), and work per (market, symbol) when several are
present: the same symbol name exists in several markets.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

import numpy as np
import pandas as pd

from collector.config import KLINE_INTERVALS
from collector.read.load_args import TimeLike

#: Levels of each side summed by :func:`book_top`'s imbalance (as the SQL view depth_top).
TOP_LEVELS = 5
_KEYS = ("market", "symbol")


def trades_to_bars(
    trades: pd.DataFrame,
    interval: str | dt.timedelta = "1min",
    *,
    fill: bool = False,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    wide: str | None = None,
) -> pd.DataFrame:
    """Time bars from trades (as :func:`collector.read.loaders.load_trades` returns them).

    ``interval`` is a fixed length: ``"1min"``, ``"5min"``, ``"1h"``, ``"1D"`` (also the
    kline spellings ``"1m"``, ``"1h"``, ``"1d"``, ``"1w"``) or a ``timedelta``. Bars are
    aligned on multiples of it since 1970-01-01 UTC, as the exchange's klines (up to a
    day) are, and indexed by their start (``open_time``). Columns: ``open``, ``high``,
    ``low``, ``close``, ``volume`` (sum of qty), ``vwap`` (sum of price * qty / volume),
    ``trade_count`` and ``partial``; ``open`` and ``close`` are the first and last
    trades in the frame's order (time, then archive order).

    Series: with several markets or symbols, bars are made per (market, symbol), each
    series from its own first to its last trade, and the result keeps ``market`` and
    ``symbol`` columns, sorted by time and then by (market, symbol). Nothing ever
    crosses from one series to another.

    Every bar from a series' first trade to its last is present: a bar without trades
    has ``volume`` 0 and ``trade_count`` 0; its prices and vwap are NaN (no price is
    made up) unless ``fill=True``, which gives it the series' previous close as
    ``open``, ``high``, ``low`` and ``close`` (vwap stays NaN). Do not ``ffill()`` the
    ``close`` column of a frame of several series yourself: that would carry one
    symbol's price into another's bars; use ``fill=True`` (or
    ``bars.groupby(["market", "symbol"], observed=True)["close"].ffill()``).

    ``partial`` is True for a series' first bar when the trades may not cover its start,
    and for its last bar when they may not cover its end: pass the ``start`` and ``end``
    the trades were loaded with (``load_trades(start=..., end=...)``) and a bar inside
    ``[start, end)`` is whole; without them, the first bar is whole only when the
    series' first trade is at its very start, and the last bar only when its last trade
    is in its last millisecond (without ``end``, the last bar may still be forming).
    Bars between the first and last are always whole.

    ``wide="close"`` (or another bar column) returns that column in wide form: one row
    per bar time, one column per symbol (per (market, symbol) when there are several
    markets); a symbol without a bar at a time is NaN there, or with ``fill=True`` its
    previous value.
    """
    step = _interval(interval)
    index = _time_index(trades, "trades")
    keys = [name for name in _KEYS if name in trades.columns]
    price = trades["price"].to_numpy(dtype=float)
    qty = trades["qty"].to_numpy(dtype=float)
    frame = pd.DataFrame(
        {"price": price, "qty": qty, "notional": price * qty, "time": index},
        index=index.floor(step).rename("open_time"),
    )
    for name in keys:
        frame[name] = trades[name].to_numpy()
    grouped = frame.groupby([*keys, "open_time"], sort=True, observed=True)
    bars = grouped["price"].agg(["first", "max", "min", "last", "count"])
    bars.columns = pd.Index(["open", "high", "low", "close", "trade_count"])
    sums = grouped[["qty", "notional"]].sum()
    bars["volume"] = sums["qty"]
    bars["vwap"] = sums["notional"] / sums["qty"]
    times = grouped["time"].agg(["min", "max"])
    bars["first_trade"], bars["last_trade"] = times["min"], times["max"]
    series = [bars] if not keys else [part for _, part in bars.groupby(level=keys, observed=True)]
    window = (_bound(start, "start"), _bound(end, "end"))
    filled = [_fill_empty_bars(part, step, keys, fill, window) for part in series]
    columns = [*keys, "open", "high", "low", "close", "volume", "vwap", "trade_count", "partial"]
    if not filled:
        result = pd.DataFrame(
            {name: pd.Series(dtype=float) for name in columns},
            index=pd.DatetimeIndex([], dtype=index.dtype, name="open_time"),
        )
        result["trade_count"] = result["trade_count"].astype(np.int64)
        result["partial"] = result["partial"].astype(bool)
    else:
        result = pd.concat(filled)[columns]
    for name in keys:
        result[name] = result[name].astype(trades[name].dtype)
    result = result.iloc[np.argsort(cast(pd.DatetimeIndex, result.index).asi8, kind="stable")]
    return result if wide is None else _bars_wide(result, wide, keys, fill)


def _fill_empty_bars(
    bars: pd.DataFrame,
    step: pd.Timedelta,
    keys: list[str],
    fill: bool,
    window: tuple[pd.Timestamp | None, pd.Timestamp | None],
) -> pd.DataFrame:
    """One series' bars with the bars without trades added, ``partial`` set."""
    times = bars.index.get_level_values("open_time")
    labels = {name: bars.index.get_level_values(name)[0] for name in keys}
    full = pd.date_range(times[0], times[-1], freq=step, name="open_time")
    first_trade, last_trade = bars["first_trade"].iloc[0], bars["last_trade"].iloc[-1]
    part = bars.reset_index(level=keys, drop=True) if keys else bars
    part = part.reindex(full).drop(columns=["first_trade", "last_trade"])
    part["volume"] = part["volume"].fillna(0.0)
    part["trade_count"] = part["trade_count"].fillna(0).astype(np.int64)
    if fill:
        close = part["close"].ffill()
        for name in ("open", "high", "low"):
            part[name] = part[name].fillna(close)
        part["close"] = close
    start, end = window
    covered_from = first_trade if start is None else start
    covered_to = last_trade + pd.Timedelta(milliseconds=1) if end is None else end
    partial = np.zeros(len(part), dtype=bool)
    partial[0] |= full[0] < covered_from
    partial[-1] |= full[-1] + step > covered_to
    part["partial"] = partial
    for name, value in labels.items():
        part[name] = value
    return part


def _bars_wide(bars: pd.DataFrame, column: str, keys: list[str], fill: bool) -> pd.DataFrame:
    """One bar column in wide form: a column per symbol (per market and symbol when
    there are several markets), a row per bar time."""
    values = [name for name in bars.columns if name not in keys]
    if column not in values:
        raise ValueError(f"wide={column!r} is not a bar column; bar columns: {', '.join(values)}")
    several_markets = "market" in keys and bars["market"].nunique() > 1
    by = [name for name in keys if name != "market" or several_markets]
    if not by:
        return bars[[column]]
    frame = bars.reset_index()
    for name in by:
        frame[name] = frame[name].astype(str)
    wide = frame.pivot(index="open_time", columns=by, values=column)
    wide.columns.names = by if len(by) > 1 else [by[0]]
    return wide.ffill() if fill else wide


def _bound(value: TimeLike | None, what: str) -> pd.Timestamp | None:
    if value is None:
        return None
    stamp = pd.Timestamp(value)
    if pd.isna(stamp):
        raise ValueError(f"{what}={value!r} is not a time")
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def depth_wide(depth: pd.DataFrame, levels: int | None = None) -> pd.DataFrame:
    """Long depth rows (as :func:`collector.read.loaders.load_depth` returns them) as one row
    per snapshot (``load_depth(wide=True)`` is this).

    A snapshot is one (market, symbol, time); columns are ``market``, ``symbol``,
    ``update_id`` and ``bid_price_i``, ``bid_qty_i``, ``ask_price_i``, ``ask_qty_i`` for
    the first ``levels`` levels (default: the deepest present). Missing levels are NaN.
    """
    time_name = depth.index.name or "received_at"
    count = int(depth["level"].max()) + 1 if levels is None and len(depth) else levels or 0
    keys = [depth[c] for c in ("market", "symbol") if c in depth.columns]
    grouped = depth.groupby([*keys, depth.index], sort=False, observed=True)
    snapshot = grouped.ngroup().to_numpy()
    heads = grouped.head(1)
    out: dict[str, Any] = {c: heads[c].to_numpy() for c in ("market", "symbol") if c in depth}
    if "update_id" in depth.columns:
        out["update_id"] = heads["update_id"].to_numpy()
    level = depth["level"].to_numpy()
    side = depth["side"].to_numpy()
    n = len(heads)
    for side_name in ("bid", "ask"):
        on_side = (side == side_name) & (level < count)
        rows, where = snapshot[on_side], level[on_side].astype(np.intp)
        for column in ("price", "qty"):
            values = np.full((n, count), np.nan)
            values[rows, where] = depth[column].to_numpy(dtype=float)[on_side]
            for i in range(count):
                out[f"{side_name}_{column}_{i}"] = values[:, i]
    wide = pd.DataFrame(out, index=pd.Index(heads.index, name=time_name))
    for name in ("market", "symbol"):
        if name in wide.columns:
            wide[name] = wide[name].astype(depth[name].dtype)
    return wide


def book_top(depth: pd.DataFrame, levels: int = TOP_LEVELS) -> pd.DataFrame:
    """The top of the book per snapshot, from depth rows (long, as
    :func:`collector.read.loaders.load_depth` returns them, or its ``wide=True`` form).

    Columns, the same as the SQL view ``depth_top``: ``market``, ``symbol``, ``best_bid``,
    ``best_ask`` (level 0 of each side, NaN when the side is empty), ``bid_qty_0``,
    ``ask_qty_0`` (their quantities), ``mid`` ((bid + ask) / 2), ``spread`` (ask - bid),
    ``spread_bps`` (spread / mid * 1e4), ``bid_depth`` and ``ask_depth`` (the quantity on
    the best ``levels`` levels of each side, default 5; 0 for an empty side) and
    ``imbalance`` = (bid_depth - ask_depth) / (bid_depth + ask_depth), from -1 (only asks)
    to 1 (only bids); NaN when the book is empty.
    """
    if levels < 1:
        raise ValueError(f"levels must be at least 1, got {levels}")
    wide = depth if "bid_price_0" in depth.columns else depth_wide(depth, levels)
    _time_index(wide, "depth")
    top = pd.DataFrame(index=wide.index)
    for name in _KEYS:
        if name in wide.columns:
            top[name] = wide[name]
    top["best_bid"] = wide["bid_price_0"]
    top["best_ask"] = wide["ask_price_0"]
    top["bid_qty_0"] = wide["bid_qty_0"]
    top["ask_qty_0"] = wide["ask_qty_0"]
    top["mid"] = (top["best_bid"] + top["best_ask"]) / 2
    top["spread"] = top["best_ask"] - top["best_bid"]
    top["spread_bps"] = top["spread"] / top["mid"] * 1e4
    for side in ("bid", "ask"):
        names = [f"{side}_qty_{i}" for i in range(levels) if f"{side}_qty_{i}" in wide.columns]
        top[f"{side}_depth"] = wide[names].sum(axis=1, min_count=0)
    total = top["bid_depth"] + top["ask_depth"]
    top["imbalance"] = (top["bid_depth"] - top["ask_depth"]) / total.where(total != 0)
    return top


def trades_with_book(
    trades: pd.DataFrame, book: pd.DataFrame, *, tolerance: str | dt.timedelta | None = None
) -> pd.DataFrame:
    """Each trade with the last book snapshot strictly before it, of the same market and
    symbol (``pandas.merge_asof``).

    ``book`` is one row per snapshot: :func:`book_top`, ``load_depth(wide=True)`` or
    ``load_book_ticker()``. A snapshot taken at exactly the trade's millisecond does not
    count: its ``received_at`` is when the response arrived, and it may already show the
    trade (a backtest must not look ahead). The result is the trades frame (same index
    and order) with the snapshot's columns added and ``book_time``, the snapshot's time;
    a trade before any snapshot (or older than ``tolerance``, e.g. ``"10s"``) gets NaN.
    Columns both frames have (other than market and symbol) take a ``_book`` suffix.
    """
    trades_index = _time_index(trades, "trades")
    _time_index(book, "book")
    keys = [name for name in _KEYS if name in trades.columns and name in book.columns]
    time_name = trades_index.name or "time"
    left = trades.reset_index(names=time_name)
    right = book.reset_index(names="book_time")
    for name in keys:  # merge_asof needs equal key dtypes; categories differ per frame
        dtype = pd.CategoricalDtype(
            left[name]
            .astype("category")
            .cat.categories.union(right[name].astype("category").cat.categories)
        )
        left[name] = left[name].astype(dtype)
        right[name] = right[name].astype(dtype)
    options: dict[str, Any] = {}
    if tolerance is not None:
        options["tolerance"] = pd.Timedelta(tolerance)
    merged = pd.merge_asof(
        left,
        right,
        left_on=time_name,
        right_on="book_time",
        by=keys or None,
        direction="backward",
        allow_exact_matches=False,
        suffixes=("", "_book"),
        **options,
    )
    for name in keys:
        merged[name] = merged[name].astype(trades[name].dtype)
    return merged.set_index(time_name)


def _interval(interval: str | dt.timedelta) -> pd.Timedelta:
    if isinstance(interval, str) and interval in KLINE_INTERVALS:
        return pd.Timedelta(milliseconds=KLINE_INTERVALS[interval])
    try:
        step = pd.Timedelta(interval)
    except ValueError:
        raise ValueError(
            f"interval {interval!r} is not a fixed length such as '1min', '5min', '1h' or '1D'"
        ) from None
    if pd.isna(step) or step <= pd.Timedelta(0):
        raise ValueError(f"interval must be a positive length, got {interval!r}")
    return step


def _time_index(frame: pd.DataFrame, what: str) -> pd.DatetimeIndex:
    index = frame.index
    if not isinstance(index, pd.DatetimeIndex) or index.tz is None:
        raise ValueError(f"{what} must be indexed by UTC times, as the loaders return them")
    if not index.is_monotonic_increasing:
        raise ValueError(f"{what} must be sorted by time, as the loaders return them")
    return index

"""The loaders' arguments checked and normalized: dataset, markets, symbols, columns,
times, and the keywords themselves; every error names what exists."""

from __future__ import annotations

import datetime as dt
import difflib
import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import ParamSpec, TypeVar

import pandas as pd

from collector import datasets

TimeLike = str | dt.datetime | dt.date | pd.Timestamp
Names = str | Iterable[str]

P = ParamSpec("P")
R = TypeVar("R")

#: Keywords a researcher may try (the command line's spelling, other libraries'), with
#: the loaders' option meant.
KEYWORD_HINTS = {
    "symbol": "symbols",
    "markets": "market",
    "column": "columns",
    "cols": "columns",
    "start_time": "start",
    "end_time": "end",
    "since": "start",
    "until": "end",
    "begin": "start",
    "stop": "end",
    "path": "data_dir",
    "data": "data_dir",
    "archive": "data_dir",
    "datadir": "data_dir",
    "data_path": "data_dir",
    "intervals": "interval",
    "level": "levels",
}


def explained(func: Callable[P, R]) -> Callable[P, R]:
    """``func`` with errors for a wrong call that say what was meant: an unknown keyword
    names the option it resembles (``symbol=`` -> ``symbols=``) and every option; a
    value passed by position names the keywords. ``inspect.signature`` of the result is
    ``func``'s."""
    signature = inspect.signature(func)
    options = list(signature.parameters)
    positional = sum(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        for p in signature.parameters.values()
    )
    name = func.__name__

    @functools.wraps(func)
    def checked(*args: P.args, **kwargs: P.kwargs) -> R:
        if len(args) > positional or not set(kwargs) <= set(options):
            explain_call(name, options, positional, args, kwargs)
        return func(*args, **kwargs)

    return checked


def explain_call(
    name: str,
    options: list[str],
    positional: int,
    args: tuple[object, ...],
    kwargs: Mapping[str, object],
) -> None:
    """Raise the TypeError that says what a call of ``name`` with ``args`` and
    ``kwargs`` should have been."""
    keywords = ", ".join(f"{option}=" for option in options[positional:])
    if len(args) > positional:
        raise TypeError(
            f"{name}() takes its options by keyword ({keywords}), "
            f"got {len(args)} positional argument{'s' if len(args) != 1 else ''}"
        )
    for key in kwargs:
        if key in options:
            continue
        hint = KEYWORD_HINTS.get(key.lower())
        if hint not in options:
            close = difflib.get_close_matches(key, options, n=1)
            hint = close[0] if close else None
        meant = f"; did you mean {hint}=?" if hint else ""
        raise TypeError(
            f"{name}() got an unexpected keyword argument {key!r}{meant} (its options: {keywords})"
        )


def dataset_of(name: str) -> datasets.Dataset:
    try:
        return datasets.get(name)
    except KeyError:
        raise ValueError(
            f"unknown dataset {name!r}; datasets are: {', '.join(datasets.DATASETS)}"
        ) from None


def names_of(value: Names, what: str) -> list[str]:
    names = [value] if isinstance(value, str) else list(value)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"{what} must be names (str), got {name!r}")
    return names


def markets_of(spec: datasets.Dataset, market: Names | None) -> list[str]:
    if market is None:
        return list(spec.markets)
    names = names_of(market, "market")
    for name in names:
        if name not in datasets.MARKETS:
            raise ValueError(f"unknown market {name!r}; markets are: {', '.join(datasets.MARKETS)}")
        if name not in spec.markets:
            raise ValueError(
                f"{spec.name} exists only for {', '.join(spec.markets)}, not for {name!r}"
            )
    return [m for m in spec.markets if m in names]


def symbols_of(symbols: Names | None) -> list[str] | None:
    if symbols is None:
        return None
    names = names_of(symbols, "symbols")
    if not names:
        raise ValueError("symbols= is empty; leave it out to read every symbol")
    return names


def columns_of(spec: datasets.Dataset, columns: Iterable[str] | None) -> list[str]:
    """The columns to read besides the time column: all, or the key columns (``market``,
    ``symbol`` and the rest of the dataset's key, in the dataset's order) then those asked,
    in the order asked. Without its key a row cannot be told apart from the others."""
    if columns is None:
        return [name for name in spec.column_names if name != spec.time_column]
    names = names_of(columns, "columns")
    unknown = [name for name in names if name not in spec.column_names]
    if unknown:
        raise ValueError(
            f"{spec.name} has no column {', '.join(map(repr, unknown))}; "
            f"its columns are: {', '.join(spec.column_names)}"
        )
    keys = [name for name in spec.column_names if name in spec.key]
    return [name for name in dict.fromkeys([*keys, *names]) if name != spec.time_column]


def range_of(start: TimeLike | None, end: TimeLike | None) -> tuple[int | None, int | None]:
    """``[start, end)`` in milliseconds; ValueError when it is empty by construction."""
    start_ms = None if start is None else to_ms(start, "start")
    end_ms = None if end is None else to_ms(end, "end")
    if start_ms is not None and end_ms is not None and start_ms >= end_ms:
        if start_ms == end_ms:
            raise ValueError(
                f"start={start!r} equals end={end!r}: the range [start, end) is empty "
                "(end is exclusive)"
            )
        raise ValueError(f"start={start!r} is after end={end!r}: swap them")
    return start_ms, end_ms


def to_ms(value: TimeLike, what: str) -> int:
    """Milliseconds since the epoch, rounded up (a row at t is in [start, end) exactly
    when t >= start and t < end, for t in whole milliseconds)."""
    if isinstance(value, int | float):  # pandas would read a number as nanoseconds
        raise TypeError(
            f"{what}={value!r}: pass a string, datetime or pandas.Timestamp "
            "(milliseconds since the epoch: pandas.Timestamp(ms, unit='ms', tz='UTC'))"
        )
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}={value!r} is not a time: {exc}") from None
    if pd.isna(stamp):
        raise ValueError(f"{what}={value!r} is not a time")
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return -(-stamp.value // 1_000_000)

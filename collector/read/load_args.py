"""The loaders' arguments checked and normalized: dataset, markets, symbols, columns,
times; every error names what exists."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import pandas as pd

from collector import datasets

TimeLike = str | dt.datetime | dt.date | pd.Timestamp
Names = str | Iterable[str]


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
    if columns is None:
        return [name for name in spec.column_names if name != spec.time_column]
    names = names_of(columns, "columns")
    unknown = [name for name in names if name not in spec.column_names]
    if unknown:
        raise ValueError(
            f"{spec.name} has no column {', '.join(map(repr, unknown))}; "
            f"its columns are: {', '.join(spec.column_names)}"
        )
    return list(dict.fromkeys(name for name in names if name != spec.time_column))


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

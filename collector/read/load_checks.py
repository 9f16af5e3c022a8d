"""What the archive holds, asked only when a load looks like a mistake: the datasets of
an archive without the one asked, the symbols of a market when a symbol asked has no
rows, the kline intervals of a selection. Each check raises a ValueError (or
FileNotFoundError) that names what exists, so an empty frame never hides a typo.

A load that finds rows for every symbol asked costs nothing here: the archive's
symbols (a DuckDB ``SELECT DISTINCT`` over the dataset, :mod:`collector.read.catalog`)
are read only when a symbol asked is missing from the result.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable

from collector import datasets
from collector.config import KLINE_INTERVALS
from collector.read import catalog
from collector.storage import delta
from collector.storage.location import Archive

#: At most this many names in an error; the rest are counted.
SHOWN_NAMES = 30


def no_table(archive: Archive, dataset: str) -> FileNotFoundError:
    """The error for an archive without ``dataset``'s table, naming the tables it has."""
    there = [name for name, _ in delta.tables(archive.uri)]
    return FileNotFoundError(
        f"no {dataset} in {archive.uri}; datasets there: {', '.join(there) or 'none'}"
    )


@dataclasses.dataclass(frozen=True)
class Found:
    """What a load found: its rows, and the values they hold in each category column
    (``market``, ``symbol``, ...; a category without rows is not among them)."""

    rows: int
    values: dict[str, set[str]]


def check_symbols(
    archive: Archive,
    spec: datasets.Dataset,
    markets: list[str],
    asked: list[str],
    found: set[str],
) -> None:
    """Raise when a symbol ``asked`` (not among those ``found`` by the load) is not
    archived in ``markets`` at all: the error names the symbols archived there (the
    upper-case spelling first when only the case differs) and the other markets that hold
    the symbol. A symbol archived there but without rows in the load's time range is no
    error (the range is the researcher's choice)."""
    missing = [name for name in asked if name not in found]
    if not missing:
        return
    held = archived(archive, spec.name, ("market", "symbol"))
    here = sorted({symbol for market, symbol in held if market in markets})
    unknown = [name for name in missing if name not in here]
    if not unknown:
        return
    every = list(markets) == list(spec.markets)
    where = spec.name if every else f"{spec.name} of {' or '.join(markets)}"
    lines = []
    for name in unknown:
        elsewhere = sorted({market for market, symbol in held if symbol == name})
        hint = _closest(name, here)
        lines.append(
            f"no symbol {name!r} in {where}"
            + (f" (did you mean {hint!r}?)" if hint else "")
            + (f" (it is archived for {', '.join(elsewhere)})" if elsewhere else "")
        )
    there = f"symbols archived: {_listed(here)}" if here else f"the archive holds no {where}"
    raise ValueError("; ".join([*lines, there]))


def check_interval(
    archive: Archive, markets: list[str], symbols: list[str] | None, interval: str
) -> None:
    """Raise when no kline of ``interval`` is archived for the selection, naming the
    intervals that are."""
    held = _intervals(archive, markets, symbols)
    if interval not in held:
        raise ValueError(
            f"no {interval} klines are archived for {_selection(markets, symbols)}; "
            f"intervals there: {', '.join(held) or 'none'}"
        )


#: A check of what a load found, given the archive, the markets and the symbols asked.
Check = Callable[[Archive, list[str], list[str] | None, Found], None]


def interval_held(interval: str) -> Check:
    """The check of a load of ``interval``'s klines: when it found none,
    :func:`check_interval`."""

    def check(
        archive: Archive, markets: list[str], symbols: list[str] | None, found: Found
    ) -> None:
        if not found.rows:
            check_interval(archive, markets, symbols, interval)

    return check


def one_interval(
    archive: Archive, markets: list[str], symbols: list[str] | None, found: Found
) -> None:
    """Raise when a load of every interval found several (their rows would mix)."""
    intervals = found.values["interval"]
    if len(intervals) > 1:
        held = _ordered(intervals)
        raise ValueError(
            f"the archive holds klines of several intervals for {_selection(markets, symbols)} "
            f"({', '.join(held)}): pass interval=, e.g. load_klines(interval={held[0]!r}, ...)"
        )


def archived(archive: Archive, dataset: str, columns: tuple[str, ...]) -> set[tuple[str, ...]]:
    """The distinct values of ``columns`` in ``dataset`` (DuckDB over its table)."""
    names = ", ".join(columns)
    for name in columns:
        if name not in datasets.get(dataset).column_names:
            raise ValueError(f"{dataset} has no column {name!r}")
    # Names from the dataset registry only (checked above).
    sql = f"SELECT DISTINCT {names} FROM {dataset}"  # noqa: S608
    table = catalog.query(archive.uri, sql, derived_views=False, only=(dataset,))
    return set(zip(*(table.column(name).to_pylist() for name in columns), strict=True))


def _intervals(archive: Archive, markets: list[str], symbols: list[str] | None) -> list[str]:
    held = archived(archive, "klines", ("market", "symbol", "interval"))
    return _ordered(
        {
            interval
            for market, symbol, interval in held
            if market in markets and (symbols is None or symbol in symbols)
        }
    )


def _ordered(intervals: set[str]) -> list[str]:
    return sorted(intervals, key=lambda name: (KLINE_INTERVALS.get(name, 0), name))


def _selection(markets: list[str], symbols: list[str] | None) -> str:
    what = " or ".join(markets)
    return what if symbols is None else f"{', '.join(symbols)} in {what}"


def _closest(name: str, names: list[str]) -> str | None:
    for candidate in names:
        if candidate.upper() == name.upper():
            return candidate
    close = difflib.get_close_matches(name.upper(), names, n=1, cutoff=0.75)
    return close[0] if close else None


def _listed(names: list[str]) -> str:
    if len(names) <= SHOWN_NAMES:
        return ", ".join(names)
    return f"{', '.join(names[:SHOWN_NAMES])}, ... ({len(names)} in all)"

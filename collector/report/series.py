"""The report's other reads: the archive's time span, the symbols to chart, resampled price
and funding series (aggregated in DuckDB, never row by row in Python), and the bytes on
disk per dataset and date partition.

SQL text is built from registry names only; markets, symbols and times are bound.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from collector import datasets
from collector.report.coverage import execute, window_filter, window_params
from collector.report.model import (
    DiskUse,
    FundingChart,
    PriceChart,
    Series,
    Window,
    nice_step_ms,
)
from collector.storage import delta
from collector.storage.location import Archive


def archive_span(connection: Any) -> tuple[int, int] | None:
    """The first and last event time (ms) over every dataset, or None when it is empty."""
    parts = [
        f"SELECT epoch_ms(min({spec.time_column})) AS low, "  # noqa: S608
        f"epoch_ms(max({spec.time_column})) AS high FROM {name}"
        for name, spec in datasets.DATASETS.items()
    ]
    row = connection.execute(
        f"SELECT min(low), max(high) FROM ({' UNION ALL '.join(parts)})"  # noqa: S608
    ).fetchone()
    if row is None or row[0] is None:
        return None
    return int(row[0]), int(row[1])


def first_snapshot(connection: Any) -> int | None:
    """The time (ms) of the first live snapshot: the earliest ``received_at`` of the
    snapshot datasets (the registry's ``kind``), or None when there is none. Paged
    series (klines, trades, funding) reach back to whatever was backfilled; this is
    when collecting began."""
    parts = [
        f"SELECT epoch_ms(min({spec.time_column})) AS low FROM {name}"  # noqa: S608
        for name, spec in datasets.DATASETS.items()
        if spec.kind == "snapshot"
    ]
    row = connection.execute(
        f"SELECT min(low) FROM ({' UNION ALL '.join(parts)})"  # noqa: S608
    ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def datasets_with_rows(connection: Any, window: Window) -> set[str]:
    found = set()
    for name, spec in datasets.DATASETS.items():
        row = execute(
            connection,
            f"SELECT 1 FROM {name} WHERE {window_filter(spec.time_column)} LIMIT 1",  # noqa: S608
            window_params(window),
        ).fetchone()
        if row:
            found.add(name)
    return found


def missing_datasets(connection: Any, without_rows_in_window: set[str]) -> set[str]:
    """Of the enabled datasets without rows in the window, those to flag: the snapshot
    datasets (polled all along), and the others (paged series and listings, which may
    have nothing new for hours) only when the archive holds none of their rows."""
    return {
        name
        for name in without_rows_in_window
        if datasets.get(name).kind == "snapshot"
        or connection.execute(f"SELECT 1 FROM {name} LIMIT 1").fetchone() is None  # noqa: S608
    }


def chart_symbols(connection: Any, window: Window, wanted: Sequence[str]) -> list[tuple[str, str]]:
    """(market, symbol) pairs to chart: each of ``wanted`` in every market that has it
    (``MARKET/SYMBOL`` picks one market), or else the most traded symbol per market
    (the one with the most depth snapshots where a market has no trades)."""
    params = window_params(window)
    present = execute(
        connection,
        "SELECT market, symbol, sum(n) FROM ("  # noqa: S608 (names only; values bound)
        f"  SELECT market, symbol, count(*) AS n FROM trades WHERE {window_filter('time')}"
        "   GROUP BY ALL"
        "  UNION ALL"
        "  SELECT market, symbol, 0 FROM depth"
        f"  WHERE {window_filter('received_at')} GROUP BY ALL"
        ") GROUP BY ALL ORDER BY 3 DESC, 1, 2",
        params,
    ).fetchall()
    order = {market: index for index, market in enumerate(datasets.MARKETS)}
    if wanted:
        chosen = []
        for item in wanted:
            market, _, symbol = item.rpartition("/")
            matches = [(m, s) for m, s, _ in present if s == symbol and (not market or m == market)]
            if not matches:
                known = sorted({f"{m}/{s}" for m, s, _ in present})
                raise LookupError(
                    f"--symbol {item}: no trades or depth in the report's window; "
                    f"symbols with prices: {', '.join(known) or 'none'}"
                )
            chosen += [pair for pair in matches if pair not in chosen]
        return sorted(chosen, key=lambda pair: (order.get(pair[0], 9), pair[1]))
    best: dict[str, str] = {}
    for market, symbol, _ in present:  # ordered by trades, most first
        best.setdefault(market, symbol)
    return sorted(best.items(), key=lambda pair: order.get(pair[0], 9))


def price_chart(connection: Any, window: Window, market: str, symbol: str) -> PriceChart:
    """Mid (depth), last (trades) and, for contracts, mark and index (indices_price) of
    one symbol, resampled to a round step giving about 400 points over the span where any
    of them has data."""
    params = {**window_params(window), "market": market, "symbol": symbol}
    sources = [
        ("trades", "time"),
        ("depth", "received_at"),
        ("indices_price", "received_at"),
    ]
    span = execute(
        connection,
        "SELECT min(low), max(high) FROM ("  # noqa: S608
        + " UNION ALL ".join(
            f"SELECT epoch_ms(min({time})) AS low, epoch_ms(max({time})) AS high "  # noqa: S608
            f"FROM {name} "
            f"WHERE market = $market AND symbol = $symbol AND {window_filter(time)}"
            for name, time in sources
        )
        + ")",
        params,
    ).fetchone()
    if span is None or span[0] is None:
        return PriceChart(market, symbol, 0, [])
    step = nice_step_ms(int(span[1]) - int(span[0]))
    params["step"] = step
    where = "market = $market AND symbol = $symbol AND "
    series = [
        _series(
            connection,
            "mid",
            "SELECT (epoch_ms(received_at) // $step) * $step AS b, avg(mid) "  # noqa: S608
            "FROM depth_top "
            f"WHERE {where}{window_filter('received_at')} GROUP BY b ORDER BY b",
            params,
        ),
        _series(
            connection,
            "last",
            "SELECT (epoch_ms(time) // $step) * $step AS b, arg_max(price, time) "  # noqa: S608
            "FROM trades "
            f"WHERE {where}{window_filter('time')} GROUP BY b ORDER BY b",
            params,
        ),
    ]
    if market == "contract":
        for name, column in (("mark", "mark_price"), ("index", "index_price")):
            series.append(
                _series(
                    connection,
                    name,
                    f"SELECT (epoch_ms(received_at) // $step) * $step AS b, "  # noqa: S608
                    f"avg({column}) FROM indices_price "
                    f"WHERE {where}{window_filter('received_at')} GROUP BY b ORDER BY b",
                    params,
                )
            )
    return PriceChart(market, symbol, step, [s for s in series if s.times_ms])


def _series(connection: Any, name: str, sql: str, params: dict[str, Any]) -> Series:
    rows = execute(connection, sql, params).fetchall()
    return Series(name, [int(b) for b, _ in rows], [float(v) for _, v in rows])


def funding_chart(connection: Any, window: Window) -> FundingChart:
    """Funding rate per contract symbol over ``window``, averaged per round step (about
    600 points per symbol)."""
    params = window_params(window)
    params["step"] = nice_step_ms(window.end_ms - window.start_ms, 600)
    rows = execute(
        connection,
        "SELECT symbol, (epoch_ms(time) // $step) * $step AS b, avg(funding_rate) "  # noqa: S608
        f"FROM funding_rate WHERE {window_filter('time')} GROUP BY ALL ORDER BY symbol, b",
        params,
    ).fetchall()
    by_symbol: dict[str, tuple[list[int], list[float]]] = {}
    for symbol, bucket, rate in rows:
        times, values = by_symbol.setdefault(symbol, ([], []))
        times.append(int(bucket))
        values.append(float(rate))
    return FundingChart(
        [Series(s, t, v) for s, (t, v) in by_symbol.items()], window.start_ms, window.end_ms
    )


def disk_use(data_dir: str | Path, window: Window | None = None) -> DiskUse:
    """Bytes of the data files of every table's latest version (what the views read),
    per dataset and date, from each table's Delta log (no file is opened); ``window``
    limits the dates of ``bytes_by_date`` (the totals are the whole archive's). Files
    replaced by compaction and awaiting vacuum, the Delta logs, the write-ahead log and
    the quarantine are not counted."""
    by_date: dict[str, dict[dt.date, int]] = {}
    files = 0
    total = 0
    for name, table in delta.tables(Archive.of(data_dir).uri):
        for file in delta.files(table, name):
            date = file.partition.date
            files += 1
            total += file.size
            if window is None or window.first_date <= date <= window.last_date:
                dates = by_date.setdefault(name, {})
                dates[date] = dates.get(date, 0) + file.size
    return DiskUse(by_date, files, total)

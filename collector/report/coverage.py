"""Coverage per dataset: for every (market, symbol[, interval]) row and time cell, the share
of the expected observations that the archive holds, and the gaps.

What is expected depends on the dataset:

* snapshots (depth, tickers, indices, instruments, contract_info): one per job interval
  (``every`` of the schedule) from the row's first snapshot to its last; a gap is a
  silence longer than :data:`~collector.report.model.SNAPSHOT_GAP_INTERVALS` intervals;
* trade ids (trades with ids): every id between the first and the last archived one; a
  gap is a hole in the ids. A cell without rows inside a stretch of contiguous ids is
  complete: nothing happened then. Trade ids are the only ids the exchange documents
  as consecutive;
* funding_rate: one event per funding interval (the rule of :mod:`collector.check.verify`:
  ``contract_info``'s interval, or the shortest spacing); a gap is a spacing longer
  than :data:`collector.check.verify.FUNDING_GAP_INTERVALS` intervals;
* protection_fund: no spacing and no id sequence is guaranteed: rows are shown, no gap
  is claimed;
* trades without ids (the recent-trades fallback): a cell with no trade between cells
  with trades is a gap;
* klines: every open time on the interval's grid from the first to the last.

Everything is aggregated in DuckDB; Python receives one row per cell and per gap, never
the rows themselves. SQL text is built from registry names and the fixed interval table
only; times and symbols are bound parameters.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from collector import datasets
from collector.check import verify
from collector.config import KLINE_INTERVALS
from collector.report.model import (
    SNAPSHOT_GAP_INTERVALS,
    DatasetCoverage,
    Gap,
    RowCoverage,
    Window,
    format_duration,
    to_datetime,
)

#: Gaps fetched per dataset (the longest); all are counted.
MAX_GAPS = 5_000
#: Column holding the id of the datasets whose ids must be contiguous (the registry's
#: ``consecutive_ids`` rule; the key's last column).
ID_COLUMNS = {
    d.name: d.key[-1] for d in datasets.DATASETS.values() if d.continuity == "consecutive_ids"
}


def _unit(dataset: str) -> str:
    return datasets.get(dataset).unit


RowKey = tuple[str, str, str | None]


def window_params(window: Window) -> dict[str, Any]:
    """Bound parameters of :func:`window_filter`, plus the cell grid."""
    return {
        "start": to_datetime(window.start_ms),
        "end": to_datetime(window.end_ms),
        "first_date": window.first_date,
        "last_date": window.last_date,
        "origin": window.origin_ms,
        "cell": window.cell_ms,
    }


def execute(connection: Any, sql: str, params: Mapping[str, Any]) -> Any:
    """``connection.execute`` with only the parameters ``sql`` names (DuckDB refuses
    extra ones), so one dict of window parameters serves every query."""
    names = set(re.findall(r"\$(\w+)", sql))
    return connection.execute(sql, {k: v for k, v in params.items() if k in names})


def window_filter(time_column: str) -> str:
    """Rows in the window; the ``date`` terms let DuckDB skip whole partitions."""
    return (
        f"{time_column} >= $start AND {time_column} < $end "
        "AND date >= $first_date AND date <= $last_date"
    )


def dataset_coverage(
    connection: Any, dataset: str, window: Window, every_s: float | None
) -> DatasetCoverage:
    """Coverage of one dataset in ``window``; ``every_s`` is its job's interval (None when
    the schedule has no job for it: the median spacing of its snapshots is used)."""
    rule = datasets.get(dataset).continuity  # what the exchange guarantees (the registry)
    if rule == "open_times":
        return _klines(connection, window)
    if rule == "funding_interval":
        return _funding(connection, window)
    if rule == "unique":
        return _snapshots(connection, dataset, window, None, claim_gaps=False)
    if rule == "consecutive_ids":
        return _ids(connection, dataset, ID_COLUMNS[dataset], window)
    return _snapshots(connection, dataset, window, every_s)


@dataclass
class _Cells:
    """Per-row cell counts as they come from SQL."""

    present: dict[RowKey, dict[int, int]] = field(default_factory=lambda: defaultdict(dict))
    first: dict[RowKey, int] = field(default_factory=dict)
    last: dict[RowKey, int] = field(default_factory=dict)

    def add(self, key: RowKey, cell: int, count: int, low: int, high: int) -> None:
        self.present[key][cell] = count
        self.first[key] = min(low, self.first.get(key, low))
        self.last[key] = max(high, self.last.get(key, high))

    def rows(self) -> list[RowKey]:
        order = {market: index for index, market in enumerate(datasets.MARKETS)}
        return sorted(
            self.present,
            key=lambda k: (order.get(k[0], 9), k[0], k[1], _interval_order(k[2])),
        )

    def in_range(self, key: RowKey, window: Window) -> range:
        return range(window.cell_of(self.first[key]), window.cell_of(self.last[key]) + 1)


def _interval_order(interval: str | None) -> int:
    return KLINE_INTERVALS.get(interval or "", 0)


def _overlap(low: int, high: int, cell_low: int, cell_high: int) -> int:
    return max(0, min(high, cell_high) - max(low, cell_low))


def _mark_gaps(rows: dict[RowKey, RowCoverage], gaps: list[Gap], window: Window) -> None:
    """Outline the cells a gap covers: those it lies within, or overlaps by at least
    1% (a silence that begins 10 s before the hour does not mark the hour before)."""
    for gap in gaps:
        row = rows.get((gap.market, gap.symbol, gap.interval))
        if row is None:
            continue
        low = max(0, window.cell_of(gap.from_ms))
        high = min(window.cells - 1, window.cell_of(max(gap.from_ms, gap.to_ms - 1)))
        for cell in range(low, high + 1):
            start = window.cell_start(cell)
            overlap = _overlap(gap.from_ms, gap.to_ms, start, start + window.cell_ms)
            if low == high or overlap >= window.cell_ms / 100:
                row.gap_cells.add(cell)


def _gap_total(found: list[tuple[Any, ...]]) -> int:
    return int(found[0][-1]) if found else 0


# -- snapshots ------------------------------------------------------------------------------


def _funding(connection: Any, window: Window) -> DatasetCoverage:
    """Funding events against the funding interval (the largest of the series', as
    verify judges them: see :func:`collector.check.verify.funding_intervals_sql`)."""
    row = connection.execute(
        f"SELECT max(interval_ms) FROM ({verify.funding_intervals_sql()})"  # noqa: S608
    ).fetchone()
    interval_ms = int(row[0]) if row and row[0] else None
    return _snapshots(
        connection,
        "funding_rate",
        window,
        None if interval_ms is None else interval_ms / 1000,
        gap_intervals=verify.FUNDING_GAP_INTERVALS,
        source="the funding interval",
    )


def _snapshots(
    connection: Any,
    dataset: str,
    window: Window,
    every_s: float | None,
    *,
    gap_intervals: float = SNAPSHOT_GAP_INTERVALS,
    source: str = "the job's interval",
    claim_gaps: bool = True,
) -> DatasetCoverage:
    """Snapshots (and funding events) against one every ``every_s`` (None: their median
    spacing); ``claim_gaps`` False: rows and cells shown, no gap claimed (a dataset
    whose spacing nothing guarantees)."""
    spec = datasets.get(dataset)
    params = window_params(window)
    # One snapshot is one received_at per market and symbol (depth has a row per level).
    events = (
        f"SELECT DISTINCT market, symbol, epoch_ms({spec.time_column}) AS t "  # noqa: S608
        f"FROM {dataset} WHERE {window_filter(spec.time_column)}"
    )
    cells = _Cells()
    for market, symbol, cell, count, low, high in execute(
        connection,
        f"SELECT market, symbol, (t - $origin) // $cell, count(*), min(t), max(t) "  # noqa: S608
        f"FROM ({events}) GROUP BY ALL",
        params,
    ).fetchall():
        cells.add((market, symbol, None), int(cell), int(count), int(low), int(high))
    unit = _unit(dataset)
    if not cells.present:
        return DatasetCoverage(dataset, unit, "", [], [], 0)
    spacing = (
        f"SELECT market, symbol, t, lead(t) OVER (PARTITION BY market, symbol "  # noqa: S608
        f"ORDER BY t) AS next_t FROM ({events})"
    )
    if every_s is None:
        median = execute(
            connection,
            f"SELECT median(next_t - t) FROM ({spacing}) WHERE next_t > t",  # noqa: S608
            params,
        ).fetchone()
        interval_ms = int(median[0]) if median and median[0] else 60_000
        source = f"about every {format_duration(interval_ms)} (the median spacing: no job)"
    else:
        interval_ms = max(1, round(every_s * 1000))
        source = f"one every {format_duration(interval_ms)} ({source})"
    # No gap is longer than the window: claim_gaps False finds none.
    threshold = gap_intervals * interval_ms if claim_gaps else window.end_ms - window.start_ms
    found = execute(
        connection,
        f"SELECT market, symbol, t, next_t, count(*) OVER () FROM ({spacing}) "  # noqa: S608
        "WHERE next_t - t > $threshold ORDER BY next_t - t DESC, market, symbol, t "
        "LIMIT $limit",
        {**params, "threshold": threshold, "limit": MAX_GAPS},
    ).fetchall()
    gaps = [
        Gap(
            market,
            symbol,
            None,
            int(low),
            int(high),
            _silence(unit, int(high) - int(low), interval_ms),
        )
        for market, symbol, low, high, _ in found
    ]
    rows: dict[RowKey, RowCoverage] = {}
    for key in cells.rows():
        first, last = cells.first[key], cells.last[key]
        fraction: list[float | None] = [None] * window.cells
        for cell in cells.in_range(key, window):
            low = window.cell_start(cell)
            expected = _overlap(first, last, low, low + window.cell_ms) / interval_ms
            present = cells.present[key].get(cell, 0)
            fraction[cell] = 1.0 if expected <= 1 and present else min(1.0, present / expected)
        count = sum(cells.present[key].values())
        rows[key] = RowCoverage(*key, first, last, count, fraction)
    _mark_gaps(rows, gaps, window)
    if not claim_gaps:
        rule = (
            f"Archived {unit} per cell; the exchange guarantees neither their spacing nor "
            "consecutive ids, so no gap is claimed (about every "
            f"{format_duration(interval_ms)} is their median spacing)."
        )
    else:
        rule = (
            f"{unit.capitalize()} archived against {source}, from each row's first to its "
            f"last. Gap: none for more than {gap_intervals:g} intervals."
        )
    return DatasetCoverage(dataset, unit, rule, list(rows.values()), gaps, _gap_total(found))


def _silence(unit: str, length_ms: int, interval_ms: int) -> str:
    if unit == "snapshots":
        return (
            f"no snapshot for {format_duration(length_ms)} "
            f"(expected every {format_duration(interval_ms)})"
        )
    # Events on a fixed interval (funding): the spacing in intervals, less one, are missing.
    missing = max(1, round(length_ms / interval_ms) - 1)
    return f"{missing:,} {unit if missing != 1 else unit.rstrip('s')} missing"


# -- ids ------------------------------------------------------------------------------------


def _ids(connection: Any, dataset: str, id_column: str, window: Window) -> DatasetCoverage:
    spec = datasets.get(dataset)
    time = spec.time_column
    params = window_params(window)
    where = window_filter(time)
    cells = _Cells()
    with_ids: set[RowKey] = set()
    for market, symbol, cell, count, ids, low, high in execute(
        connection,
        f"SELECT market, symbol, (epoch_ms({time}) - $origin) // $cell AS cell, "  # noqa: S608
        f"count(DISTINCT {id_column}) + count(*) FILTER (WHERE {id_column} IS NULL), "
        f"count({id_column}), epoch_ms(min({time})), epoch_ms(max({time})) "
        f"FROM {dataset} WHERE {where} GROUP BY ALL",
        params,
    ).fetchall():
        key: RowKey = (market, symbol, None)
        cells.add(key, int(cell), int(count), int(low), int(high))
        if ids:
            with_ids.add(key)
    if not cells.present:
        return DatasetCoverage(dataset, _unit(dataset), "", [], [], 0)
    word = id_column.replace("_", " ")
    # Holes: consecutive archived ids (in id order) more than one apart. Duplicates
    # follow each other with a difference of 0, so they are no hole.
    holes = (
        f"SELECT market, symbol, prev_t, t, id - prev_id - 1 AS missing FROM ("  # noqa: S608
        f"  SELECT market, symbol, {id_column} AS id, epoch_ms({time}) AS t,"
        f"    lag({id_column}) OVER w AS prev_id, lag(epoch_ms({time})) OVER w AS prev_t"
        f"  FROM {dataset} WHERE {id_column} IS NOT NULL AND {where}"
        f"   WINDOW w AS (PARTITION BY market, symbol ORDER BY {id_column})"
        ") WHERE id - prev_id > 1"
    )
    execute(connection, f"CREATE OR REPLACE TEMP TABLE report_holes AS {holes}", params)
    try:
        # Missing ids per cell: a hole inside one cell counts there, in SQL (there may be
        # many); a hole spanning cells is spread over them by time, in Python (at most
        # about one per cell boundary and row).
        missing: dict[RowKey, dict[int, float]] = defaultdict(lambda: defaultdict(float))
        for market, symbol, cell, count in execute(
            connection,
            "SELECT market, symbol, (t - $origin) // $cell, sum(missing) FROM report_holes "
            "WHERE (least(t, prev_t) - $origin) // $cell = (greatest(t, prev_t) - $origin) "
            "// $cell GROUP BY ALL",
            params,
        ).fetchall():
            missing[(market, symbol, None)][int(cell)] += float(count)
        spanning = execute(
            connection,
            "SELECT market, symbol, least(t, prev_t), greatest(t, prev_t), missing "
            "FROM report_holes WHERE (least(t, prev_t) - $origin) // $cell "
            "<> (greatest(t, prev_t) - $origin) // $cell",
            params,
        ).fetchall()
        for market, symbol, low, high, count in spanning:
            _spread(missing[(market, symbol, None)], int(low), int(high), float(count), window)
        found = execute(
            connection,
            "SELECT market, symbol, least(t, prev_t), greatest(t, prev_t), missing, "
            "count(*) OVER () FROM report_holes "
            "ORDER BY missing DESC, market, symbol, t LIMIT $limit",
            {"limit": MAX_GAPS},
        ).fetchall()
    finally:
        connection.execute("DROP TABLE IF EXISTS report_holes")
    gaps = [
        Gap(
            market,
            symbol,
            None,
            int(low),
            int(high),
            f"{int(count):,} {word}{'s' if count != 1 else ''} missing",
        )
        for market, symbol, low, high, count, _ in found
    ]
    gap_count = _gap_total(found)
    empty_runs = _empty_runs(connection, dataset, time, id_column, window, with_ids)
    gaps += empty_runs
    gap_count += len(empty_runs)
    rows: dict[RowKey, RowCoverage] = {}
    for key in cells.rows():
        fraction: list[float | None] = [None] * window.cells
        for cell in cells.in_range(key, window):
            present = cells.present[key].get(cell, 0)
            if key in with_ids:
                lost = missing[key].get(cell, 0.0)
                # No row and no hole: the ids run on across the cell, nothing happened.
                fraction[cell] = 1.0 if present + lost == 0 else present / (present + lost)
            else:
                fraction[cell] = 1.0 if present else 0.0
        rows[key] = RowCoverage(
            *key, cells.first[key], cells.last[key], sum(cells.present[key].values()), fraction
        )
    _mark_gaps(rows, gaps, window)
    rule = (
        f"Archived {word}s against every id from each row's first to its last (ids are "
        f"contiguous per symbol); {_a(window.by)} without rows inside contiguous ids is "
        "complete. Gap: a hole in the ids"
    )
    if dataset == "trades":
        rule += (
            f"; for trades without ids (no API key), {_a(window.by)} without a trade between trades"
        )
    return DatasetCoverage(
        dataset, _unit(dataset), rule + ".", list(rows.values()), gaps, gap_count
    )


def _a(cell: str) -> str:
    return "an hour" if cell == "hour" else f"a {cell}"


def _spread(into: dict[int, float], low: int, high: int, count: float, window: Window) -> None:
    """Share ``count`` missing ids among the cells of ``[low, high]`` by time."""
    span = max(1, high - low)
    for cell in range(max(0, window.cell_of(low)), min(window.cells, window.cell_of(high) + 1)):
        start = window.cell_start(cell)
        into[cell] += count * _overlap(low, high, start, start + window.cell_ms) / span


def _empty_runs(
    connection: Any,
    dataset: str,
    time: str,
    id_column: str,
    window: Window,
    with_ids: set[RowKey],
) -> list[Gap]:
    """Trades without ids: stretches between two trades that hold a whole empty cell."""
    if dataset != "trades":
        return []
    found = execute(
        connection,
        f"SELECT market, symbol, t, next_t FROM ("  # noqa: S608
        f"  SELECT market, symbol, epoch_ms({time}) AS t,"
        f"    lead(epoch_ms({time})) OVER (PARTITION BY market, symbol ORDER BY {time}) AS next_t"
        f"  FROM {dataset} WHERE {id_column} IS NULL AND {window_filter(time)}"
        ") WHERE (next_t - $origin) // $cell - (t - $origin) // $cell >= 2 "
        "ORDER BY next_t - t DESC LIMIT $limit",
        {**window_params(window), "limit": MAX_GAPS},
    ).fetchall()
    return [
        Gap(
            market,
            symbol,
            None,
            int(low),
            int(high),
            f"no trade for {format_duration(int(high) - int(low))} (no ids to check)",
        )
        for market, symbol, low, high in found
        if (market, symbol, None) not in with_ids
    ]


# -- klines ---------------------------------------------------------------------------------


def _klines(connection: Any, window: Window) -> DatasetCoverage:
    params = window_params(window)
    # The interval lengths come from the fixed table, not from the data.
    steps = ", ".join(f"('{name}', {ms})" for name, ms in KLINE_INTERVALS.items())
    events = (
        "SELECT DISTINCT market, symbol, interval, epoch_ms(open_time) AS t, step "  # noqa: S608
        f"FROM klines JOIN (VALUES {steps}) AS steps(name, step) ON interval = name "
        f"WHERE {window_filter('open_time')}"
    )
    cells = _Cells()
    step_of: dict[RowKey, int] = {}
    for market, symbol, interval, step, cell, count, low, high in execute(
        connection,
        f"SELECT market, symbol, interval, step, (t - $origin) // $cell, count(*), "  # noqa: S608
        f"min(t), max(t) FROM ({events}) GROUP BY ALL",
        params,
    ).fetchall():
        key = (market, symbol, interval)
        cells.add(key, int(cell), int(count), int(low), int(high))
        step_of[key] = int(step)
    if not cells.present:
        return DatasetCoverage("klines", "klines", "", [], [], 0)
    found = execute(
        connection,
        "SELECT market, symbol, interval, t + step, next_t, (next_t - t) // step - 1, "  # noqa: S608
        "count(*) OVER () FROM ("
        "  SELECT market, symbol, interval, t, step,"
        "    lead(t) OVER (PARTITION BY market, symbol, interval ORDER BY t) AS next_t"
        f"  FROM ({events})"
        ") WHERE next_t - t > step "
        "ORDER BY next_t - t DESC, market, symbol, interval, t LIMIT $limit",
        {**params, "limit": MAX_GAPS},
    ).fetchall()
    gaps = [
        Gap(
            market,
            symbol,
            interval,
            int(low),
            int(high),
            f"{int(count):,} {interval} kline{'s' if count != 1 else ''} missing",
        )
        for market, symbol, interval, low, high, count, _ in found
    ]
    rows: dict[RowKey, RowCoverage] = {}
    for key in cells.rows():
        first, last, step = cells.first[key], cells.last[key], step_of[key]
        fraction: list[float | None] = [None] * window.cells
        for cell in cells.in_range(key, window):
            low = max(first, window.cell_start(cell))
            high = min(last, window.cell_start(cell) + window.cell_ms - 1)
            expected = (high - first) // step - math.ceil((low - first) / step) + 1
            present = cells.present[key].get(cell, 0)
            fraction[cell] = min(1.0, present / expected) if expected > 0 else 1.0
        rows[key] = RowCoverage(*key, first, last, sum(cells.present[key].values()), fraction)
    _mark_gaps(rows, gaps, window)
    rule = (
        "Archived klines against every open time of the interval from each row's first "
        "kline to its last. Gap: missing open times."
    )
    return DatasetCoverage("klines", "klines", rule, list(rows.values()), gaps, _gap_total(found))


def all_coverage(
    connection: Any, window: Window, every_s: Mapping[str, float | None]
) -> list[DatasetCoverage]:
    """Coverage of every dataset of the registry, in registry order."""
    return [
        dataset_coverage(connection, name, window, every_s.get(name)) for name in datasets.DATASETS
    ]

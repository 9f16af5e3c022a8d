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

The cell grid and window queries shared by the rules are in
:mod:`collector.report.coverage_cells`, the id-keyed coverage in
:mod:`collector.report.coverage_ids`; this module chooses the rule from the registry and
re-exports the names other modules import from it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from collector import datasets
from collector.check import verify
from collector.config import KLINE_INTERVALS
from collector.report.coverage_cells import MAX_GAPS as MAX_GAPS
from collector.report.coverage_cells import Cells, RowKey, gap_total, mark_gaps, overlap, unit_of
from collector.report.coverage_cells import execute as execute
from collector.report.coverage_cells import window_filter as window_filter
from collector.report.coverage_cells import window_params as window_params
from collector.report.coverage_ids import ids_coverage
from collector.report.model import (
    SNAPSHOT_GAP_INTERVALS,
    DatasetCoverage,
    Gap,
    RowCoverage,
    Window,
    format_duration,
)
from collector.units import MINUTE_MS

#: Column holding the id of the datasets whose ids must be contiguous (the registry's
#: ``consecutive_ids`` rule; the key's last column).
ID_COLUMNS = {
    d.name: d.key[-1] for d in datasets.DATASETS.values() if d.continuity == "consecutive_ids"
}


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
        return ids_coverage(connection, dataset, ID_COLUMNS[dataset], window)
    return _snapshots(connection, dataset, window, every_s)


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
    cells = Cells()
    for market, symbol, cell, count, low, high in execute(
        connection,
        f"SELECT market, symbol, (t - $origin) // $cell, count(*), min(t), max(t) "  # noqa: S608
        f"FROM ({events}) GROUP BY ALL",
        params,
    ).fetchall():
        cells.add((market, symbol, None), int(cell), int(count), int(low), int(high))
    unit = unit_of(dataset)
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
        interval_ms = int(median[0]) if median and median[0] else MINUTE_MS
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
            expected = overlap(first, last, low, low + window.cell_ms) / interval_ms
            present = cells.present[key].get(cell, 0)
            fraction[cell] = 1.0 if expected <= 1 and present else min(1.0, present / expected)
        count = sum(cells.present[key].values())
        rows[key] = RowCoverage(*key, first, last, count, fraction)
    mark_gaps(rows, gaps, window)
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
    return DatasetCoverage(dataset, unit, rule, list(rows.values()), gaps, gap_total(found))


def _silence(unit: str, length_ms: int, interval_ms: int) -> str:
    if unit == "snapshots":
        return (
            f"no snapshot for {format_duration(length_ms)} "
            f"(expected every {format_duration(interval_ms)})"
        )
    # Events on a fixed interval (funding): the spacing in intervals, less one, are missing.
    missing = max(1, round(length_ms / interval_ms) - 1)
    return f"{missing:,} {unit if missing != 1 else unit.rstrip('s')} missing"


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
    cells = Cells()
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
    mark_gaps(rows, gaps, window)
    rule = (
        "Archived klines against every open time of the interval from each row's first "
        "kline to its last. Gap: missing open times."
    )
    return DatasetCoverage("klines", "klines", rule, list(rows.values()), gaps, gap_total(found))


def all_coverage(
    connection: Any, window: Window, every_s: Mapping[str, float | None]
) -> list[DatasetCoverage]:
    """Coverage of every dataset of the registry, in registry order."""
    return [
        dataset_coverage(connection, name, window, every_s.get(name)) for name in datasets.DATASETS
    ]

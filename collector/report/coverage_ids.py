"""Coverage of the datasets whose ids must be contiguous (the registry's
``consecutive_ids`` rule: trades with ids): every id between the first and the last
archived one is expected; a gap is a hole in the ids. A cell without rows inside a
stretch of contiguous ids is complete: nothing happened then. Trades without ids (the
recent-trades fallback): a cell with no trade between cells with trades is a gap.

:func:`collector.report.coverage.dataset_coverage` chooses this rule from the registry.
Aggregated in DuckDB; SQL text is built from registry names only, times are bound
parameters.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from collector import datasets
from collector.report.coverage_cells import (
    MAX_GAPS,
    Cells,
    RowKey,
    execute,
    gap_total,
    mark_gaps,
    overlap,
    unit_of,
    window_filter,
    window_params,
)
from collector.report.model import DatasetCoverage, Gap, RowCoverage, Window, format_duration


def ids_coverage(connection: Any, dataset: str, id_column: str, window: Window) -> DatasetCoverage:
    spec = datasets.get(dataset)
    time = spec.time_column
    params = window_params(window)
    where = window_filter(time)
    cells = Cells()
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
        return DatasetCoverage(dataset, unit_of(dataset), "", [], [], 0)
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
    gap_count = gap_total(found)
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
    mark_gaps(rows, gaps, window)
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
        dataset, unit_of(dataset), rule + ".", list(rows.values()), gaps, gap_count
    )


def _a(cell: str) -> str:
    return "an hour" if cell == "hour" else f"a {cell}"


def _spread(into: dict[int, float], low: int, high: int, count: float, window: Window) -> None:
    """Share ``count`` missing ids among the cells of ``[low, high]`` by time."""
    span = max(1, high - low)
    for cell in range(max(0, window.cell_of(low)), min(window.cells, window.cell_of(high) + 1)):
        start = window.cell_start(cell)
        into[cell] += count * overlap(low, high, start, start + window.cell_ms) / span


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

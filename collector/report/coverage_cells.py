"""The coverage report's cell grid and window queries, shared by every dataset's rule in
:mod:`collector.report.coverage` (and by :mod:`collector.report.series`): the bound
parameters and filter of the report's window, per-row cell counts as they come from
SQL, and the cells a gap outlines.

SQL text is built from registry names only; times are bound parameters.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from collector import datasets
from collector.config import KLINE_INTERVALS
from collector.report.model import Gap, RowCoverage, Window, to_datetime

#: Gaps fetched per dataset (the longest); all are counted.
MAX_GAPS = 5_000

RowKey = tuple[str, str, str | None]


def unit_of(dataset: str) -> str:
    return datasets.get(dataset).unit


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


@dataclass
class Cells:
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


def overlap(low: int, high: int, cell_low: int, cell_high: int) -> int:
    return max(0, min(high, cell_high) - max(low, cell_low))


def mark_gaps(rows: dict[RowKey, RowCoverage], gaps: list[Gap], window: Window) -> None:
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
            covered = overlap(gap.from_ms, gap.to_ms, start, start + window.cell_ms)
            if low == high or covered >= window.cell_ms / 100:
                row.gap_cells.add(cell)


def gap_total(found: list[tuple[Any, ...]]) -> int:
    return int(found[0][-1]) if found else 0

"""What the coverage report shows, as plain data: the time window and its cells, coverage
per dataset (rows, cells, gaps), price and funding series, and disk use. Pure: no I/O.

Times are milliseconds since the epoch (UTC) throughout; the page formats them.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Literal

from collector.units import DAY_MS as DAY_MS
from collector.units import HOUR_MS as HOUR_MS
from collector.units import MINUTE_MS, SECOND_MS

#: ``--by auto`` switches from hour to day cells above this span.
AUTO_DAY_ABOVE_MS = 3 * DAY_MS
#: ``--by auto`` takes minute cells up to this span (at most 120 columns).
AUTO_MINUTE_UP_TO_MS = 2 * HOUR_MS
#: The default window: from the first live snapshot (or with ``since_history``, the
#: oldest row) to the newest row, or its newest 30 days when it is longer.
DEFAULT_SPAN_MS = 30 * DAY_MS
#: A snapshot dataset has a gap where consecutive snapshots are further apart than this
#: many of its job's intervals (three polls missed in a row).
SNAPSHOT_GAP_INTERVALS = 3

By = Literal["minute", "hour", "day", "auto"]
_CELLS = {"minute": MINUTE_MS, "hour": HOUR_MS, "day": DAY_MS}


@dataclass(frozen=True)
class Window:
    """The report's time range ``[start_ms, end_ms)`` cut into cells of ``cell_ms``
    aligned on UTC minutes, hours or days (the first cell starts at ``origin_ms``)."""

    start_ms: int
    end_ms: int
    cell_ms: int

    @classmethod
    def choose(cls, start_ms: int, end_ms: int, by: By | str = "auto") -> Window:
        if by not in ("minute", "hour", "day", "auto"):
            raise ValueError(
                f"expected minute, hour, day or auto for the heat-map columns, got {by!r}"
            )
        if end_ms <= start_ms:
            raise ValueError("the report window is empty: --end must be after --start")
        if by == "auto":
            span = end_ms - start_ms
            by = (
                "day"
                if span > AUTO_DAY_ABOVE_MS
                else "minute"
                if span <= AUTO_MINUTE_UP_TO_MS
                else "hour"
            )
        return cls(start_ms, end_ms, _CELLS[by])

    @property
    def by(self) -> str:
        """``minute``, ``hour`` or ``day``: what one cell is."""
        return next((name for name, ms in _CELLS.items() if ms == self.cell_ms), "hour")

    @property
    def origin_ms(self) -> int:
        return self.start_ms - self.start_ms % self.cell_ms

    @property
    def cells(self) -> int:
        return max(1, math.ceil((self.end_ms - self.origin_ms) / self.cell_ms))

    def cell_of(self, time_ms: int) -> int:
        return (time_ms - self.origin_ms) // self.cell_ms

    def cell_start(self, cell: int) -> int:
        return self.origin_ms + cell * self.cell_ms

    @property
    def first_date(self) -> dt.date:
        return date_of(self.start_ms)

    @property
    def last_date(self) -> dt.date:
        return date_of(self.end_ms - 1)


def date_of(time_ms: int) -> dt.date:
    return dt.date(1970, 1, 1) + dt.timedelta(days=time_ms // DAY_MS)


def to_datetime(time_ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(time_ms / 1000, tz=dt.UTC)


def default_window(
    archive_first_ms: int,
    archive_last_ms: int,
    start_ms: int | None,
    end_ms: int | None,
    live_first_ms: int | None = None,
) -> tuple[int, int]:
    """``[start, end)``: what was asked, else from ``live_first_ms`` (the first live
    snapshot; None: the oldest row, backfilled history included) to the newest row, or
    its newest 30 days when it is longer. A first snapshot at or after an asked end
    is passed over (the window then starts at the oldest row)."""
    end = end_ms if end_ms is not None else archive_last_ms + 1
    if start_ms is not None:
        return start_ms, end
    first = live_first_ms if live_first_ms is not None and live_first_ms < end else archive_first_ms
    return max(first, end - DEFAULT_SPAN_MS), end


@dataclass(frozen=True)
class Gap:
    """A stretch with nothing archived where something should be.

    ``from_ms`` and ``to_ms`` bound the silent period (for snapshots and ids, the
    times of the rows before and after it; for klines, the missing open times);
    ``detail`` says what is missing, in words.
    """

    market: str
    symbol: str
    interval: str | None
    from_ms: int
    to_ms: int
    detail: str


@dataclass
class RowCoverage:
    """One heat-map row: a market and symbol (and kline interval).

    ``fraction[c]`` is the share of the observations expected in cell ``c`` that are
    archived, from 0 to 1, or None outside the row's first to last row (nothing was
    expected there: not yet collected, or delisted). ``gap_cells`` are the cells a
    listed gap touches.
    """

    market: str
    symbol: str
    interval: str | None
    first_ms: int
    last_ms: int
    #: Observations archived in the window (snapshots, trades, klines, ...: the unit).
    observed: int
    fraction: list[float | None]
    gap_cells: set[int] = field(default_factory=set)

    @property
    def label(self) -> str:
        return " ".join(p for p in (self.market, self.symbol, self.interval) if p)


@dataclass
class DatasetCoverage:
    dataset: str
    #: What one observation is, plural: ``snapshots``, ``trades``, ``klines``, ...
    unit: str
    #: How the fraction is counted, in words (the caption under the map).
    rule: str
    rows: list[RowCoverage]
    gaps: list[Gap]
    #: Gaps found in all (``gaps`` may be cut to the first few thousand).
    gap_count: int

    @property
    def empty(self) -> bool:
        return not self.rows


@dataclass(frozen=True)
class Series:
    """A resampled price series: bucket start times and values (NaN where empty)."""

    name: str
    times_ms: list[int]
    values: list[float]


@dataclass
class PriceChart:
    market: str
    symbol: str
    step_ms: int
    series: list[Series]


@dataclass
class FundingChart:
    """Funding rates per contract symbol (``series`` name is the symbol; one panel
    each), over ``[start_ms, end_ms)``: the window's, or the funding history up to the
    window's end when the window starts at the first live snapshot (a window of
    minutes holds one funding event at most)."""

    series: list[Series]
    start_ms: int = 0
    end_ms: int = 0


@dataclass
class DiskUse:
    """Bytes and files each dataset's table holds now (its latest version), per dataset
    and date."""

    bytes_by_date: dict[str, dict[dt.date, int]]
    files: int
    total_bytes: int


@dataclass
class Report:
    data_dir: str
    generated_ms: int
    window: Window
    archive_first_ms: int
    archive_last_ms: int
    coverage: list[DatasetCoverage]
    prices: list[PriceChart]
    funding: FundingChart
    disk: DiskUse
    #: Datasets whose job is enabled in the configuration but that have no rows in the window.
    missing_datasets: list[str] = field(default_factory=list)
    #: Where the window starts and why, in words (the header shows it).
    window_rule: str = ""

    @property
    def verdict(self) -> str:
        """One line: how many gaps in how many datasets, or that there are none."""
        with_gaps = [c for c in self.coverage if c.gap_count]
        total = sum(c.gap_count for c in with_gaps)
        parts = []
        if total:
            parts.append(
                f"{total:,} gap{'s' if total != 1 else ''} in {len(with_gaps)} "
                f"dataset{'s' if len(with_gaps) != 1 else ''} "
                f"({', '.join(c.dataset for c in with_gaps)})"
            )
        else:
            parts.append("no gaps: every dataset is complete from its first row to its last")
        if self.missing_datasets:
            parts.append(f"no rows at all in {', '.join(self.missing_datasets)}")
        return "; ".join(parts)

    @property
    def healthy(self) -> bool:
        return not self.missing_datasets and not any(c.gap_count for c in self.coverage)


def nice_step_ms(span_ms: int, points: int = 400) -> int:
    """A round resampling step (1 s, 5 s, 10 s, ... 1 d) giving at most about ``points``
    buckets over ``span_ms``."""
    for step in _NICE_STEPS:
        if span_ms / step <= points:
            return step
    return _NICE_STEPS[-1]


_NICE_STEPS = [
    SECOND_MS,
    5 * SECOND_MS,
    10 * SECOND_MS,
    30 * SECOND_MS,
    MINUTE_MS,
    5 * MINUTE_MS,
    15 * MINUTE_MS,
    30 * MINUTE_MS,
    HOUR_MS,
    4 * HOUR_MS,
    12 * HOUR_MS,
    DAY_MS,
]


def format_duration(ms: int) -> str:
    """``4 h 3 min``, ``2 min 10 s``, ``850 ms``: the two largest units."""
    if ms < 1000:
        return f"{ms} ms"
    seconds = ms // 1000
    units = [("d", 86_400), ("h", 3_600), ("min", 60), ("s", 1)]
    parts = []
    for name, size in units:
        if seconds >= size:
            parts.append(f"{seconds // size} {name}")
            seconds %= size
        if len(parts) == 2:
            break
    return " ".join(parts)

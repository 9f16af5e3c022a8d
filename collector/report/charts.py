"""The report's pictures, drawn with matplotlib's Agg renderer into PNG bytes.

Figures are made with ``matplotlib.figure.Figure`` directly (no pyplot): no global
state, no display, nothing to close. Colours are fixed per market, per dataset and per
price series, so the same thing has the same colour on every chart of the page.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib import colors as mcolors
from matplotlib import dates as mdates
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from collector import datasets
from collector.report.model import (
    DAY_MS,
    HOUR_MS,
    DatasetCoverage,
    DiskUse,
    FundingChart,
    PriceChart,
    Series,
    Window,
    to_datetime,
)
from collector.units import MINUTE_MS

MARKET_COLORS = {"spot": "#1f77b4", "option": "#7b3fa0", "contract": "#d9480f"}
SERIES_STYLES: dict[str, dict[str, Any]] = {
    "mid": {"linewidth": 2.2},  # in the market's colour
    "last": {"color": "#222222", "linewidth": 1.0, "alpha": 0.85},
    "mark": {"color": "#2b9348", "linewidth": 1.6, "linestyle": "--"},
    "index": {"color": "#868e96", "linewidth": 1.6, "linestyle": ":"},
}
_TAB20 = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#aec7e8",
    "#ffbb78",
]
DATASET_COLORS = {name: _TAB20[i % len(_TAB20)] for i, name in enumerate(datasets.DATASETS)}
SYMBOL_COLORS = ["#d9480f", "#1f77b4", "#2b9348", "#7b3fa0", "#c2255c", "#495057"]

#: Coverage colours: fraction below 0.5, 0.5-0.9, 0.9-0.99, 0.99 and above.
COVERAGE_BOUNDS = [0.0, 0.5, 0.9, 0.99, 1.0001]
COVERAGE_COLORS = ["#d7191c", "#fdae61", "#a6d96a", "#1a9641"]
COVERAGE_LABELS = ["under 50%", "50-90%", "90-99%", "99-100%"]
NOT_EXPECTED = "#e9ecef"
GAP_EDGE = "#67000d"  # dark red: visible on a red cell as on a green one

WIDTH_IN = 12.3
DPI = 100


def png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    FigureCanvasAgg(figure)  # Agg, whatever backend pyplot would pick
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _times(values: Sequence[int]) -> np.ndarray:
    return np.array(values, dtype="datetime64[ms]")


def _with_breaks(series: Series, step_ms: int) -> tuple[np.ndarray, np.ndarray]:
    """The series with a NaN where buckets are missing, so the line breaks there
    instead of drawing a straight line over the hole."""
    times = np.array(series.times_ms, dtype=np.int64)
    values = np.array(series.values, dtype=float)
    if len(times) > 1 and step_ms:
        breaks = np.nonzero(np.diff(times) > 1.5 * step_ms)[0]
        times = np.insert(times, breaks + 1, times[breaks] + step_ms)
        values = np.insert(values, breaks + 1, np.nan)
    return times.astype("datetime64[ms]"), values


def _date_axis(axes: Axes) -> None:
    locator = mdates.AutoDateLocator(minticks=4, maxticks=10)  # type: ignore[no-untyped-call]
    axes.xaxis.set_major_locator(locator)
    formatter = mdates.ConciseDateFormatter(locator)  # type: ignore[no-untyped-call]
    axes.xaxis.set_major_formatter(formatter)
    axes.grid(True, color="#dee2e6", linewidth=0.8)
    axes.set_axisbelow(True)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)


# -- coverage -------------------------------------------------------------------------------


def heatmap(coverage: DatasetCoverage, window: Window) -> bytes:
    """Rows (market, symbol[, interval]) by cells of the window, coloured by the share of
    expected observations archived; cells a gap touches are outlined in red.

    Every map has the same margins, so that the time axes of the maps stacked on the
    page line up: an outage shows as one column down the page. The legend is the
    page's (:data:`COVERAGE_LEGEND`), once."""
    rows = coverage.rows
    row_in, left_in, right_in, top_in = 0.24, 2.3, 0.45, 0.08
    bottom_in = 0.32 if window.cell_ms == DAY_MS else 0.5  # one or two lines of labels
    height = top_in + bottom_in + row_in * len(rows)
    figure = Figure(figsize=(WIDTH_IN, height), dpi=DPI)
    axes = figure.add_axes(
        (
            left_in / WIDTH_IN,
            bottom_in / height,
            1 - (left_in + right_in) / WIDTH_IN,
            row_in * len(rows) / height,
        )
    )
    grid = np.array(
        [[np.nan if v is None else v for v in row.fraction] for row in rows], dtype=float
    )
    cmap = mcolors.ListedColormap(COVERAGE_COLORS).with_extremes(bad=NOT_EXPECTED)
    norm = mcolors.BoundaryNorm(COVERAGE_BOUNDS, cmap.N)
    axes.imshow(
        np.ma.masked_invalid(grid),
        cmap=cmap,
        norm=norm,
        aspect="auto",
        interpolation="nearest",
        extent=(0, window.cells, len(rows), 0),
    )
    # Cell borders, when cells are wide enough to see them.
    if window.cells <= 120:
        axes.vlines(range(1, window.cells), 0, len(rows), colors="white", linewidth=0.6)
    axes.hlines(range(1, len(rows)), 0, window.cells, colors="white", linewidth=0.6)
    for index in range(1, len(rows)):
        if rows[index].market != rows[index - 1].market:
            axes.axhline(index, color="#343a40", linewidth=1.4)
    for index, row in enumerate(rows):
        for first, last in _runs(sorted(row.gap_cells)):
            axes.add_patch(
                Rectangle(
                    (first + 0.04, index + 0.08),
                    last - first + 0.92,
                    0.84,
                    fill=False,
                    edgecolor=GAP_EDGE,
                    linewidth=2.2,
                    zorder=3,
                )
            )
    axes.set_yticks([i + 0.5 for i in range(len(rows))])
    axes.set_yticklabels([row.label for row in rows], fontsize=9 if len(rows) <= 40 else 7)
    for label, row in zip(axes.get_yticklabels(), rows, strict=True):
        label.set_color(MARKET_COLORS.get(row.market, "#212529"))
    ticks, labels = cell_ticks(window)
    axes.set_xticks(ticks)
    axes.set_xticklabels(labels, fontsize=9)
    axes.set_xlim(0, window.cells)
    axes.tick_params(length=3)
    return png(figure)


#: The heat maps' colours, for the page's legend: (colour, words, outlined).
COVERAGE_LEGEND = [
    *((color, label, False) for color, label in zip(COVERAGE_COLORS, COVERAGE_LABELS, strict=True)),
    (NOT_EXPECTED, "nothing expected: before a row's first or after its last observation", False),
    ("#ffffff", "gap (listed under the map)", True),
]


def _runs(cells: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for cell in cells:
        if runs and runs[-1][1] == cell - 1:
            runs[-1] = (runs[-1][0], cell)
        else:
            runs.append((cell, cell))
    return runs


#: Labelled tick spacings (ms) of the heat maps' time axes, finest first.
_TICK_STEPS = [
    MINUTE_MS,
    2 * MINUTE_MS,
    5 * MINUTE_MS,
    10 * MINUTE_MS,
    15 * MINUTE_MS,
    30 * MINUTE_MS,
    *(hours * HOUR_MS for hours in (1, 2, 3, 6, 12, 24, 48, 168, 336, 672)),
    10_000 * DAY_MS,
]


def cell_ticks(window: Window) -> tuple[list[float], list[str]]:
    """At most about 16 labelled cell starts, on round minutes, hours or days (UTC)."""
    cells = window.cells
    step_ms = next(
        s for s in _TICK_STEPS if s % window.cell_ms == 0 and cells * window.cell_ms / s <= 16
    )
    every = step_ms // window.cell_ms
    if step_ms >= DAY_MS:
        fmt = "%b %d"
    elif window.cell_ms < HOUR_MS:
        fmt = "%H:%M\n%b %d"
    else:
        fmt = "%H:00\n%b %d"
    ticks, labels = [], []
    previous_day = None
    for cell in range(cells + 1):
        start = to_datetime(window.cell_start(cell))
        # Counted from the epoch, so that every 48 h or 7 d is a fixed UTC grid.
        if (window.cell_start(cell) // window.cell_ms) % every:
            continue
        text = start.strftime(fmt)
        if "\n" in fmt and previous_day == start.date():
            text = text.split("\n")[0]  # the date once per day
        previous_day = start.date()
        ticks.append(float(cell))
        labels.append(text)
    return ticks, labels


# -- prices, funding, disk -----------------------------------------------------------------


def price_figure(charts: Sequence[PriceChart]) -> bytes:
    """One panel per symbol of a market: mid, last, and mark and index for contracts."""
    figure = Figure(figsize=(WIDTH_IN, 3.4 * len(charts) + 0.3), dpi=DPI, layout="constrained")
    for index, chart in enumerate(charts):
        axes = figure.add_subplot(len(charts), 1, index + 1)
        color = MARKET_COLORS.get(chart.market, "#212529")
        for series in chart.series:
            style = dict(SERIES_STYLES.get(series.name, {}))
            if series.name == "last":
                # A step without a trade is no missing data: the last price holds.
                times, values = _times(series.times_ms), np.array(series.values)
                style["drawstyle"] = "steps-post"
            else:
                times, values = _with_breaks(series, chart.step_ms)
            if series.name == "mid":
                style["color"] = color
            axes.plot(times, values, label=_SERIES_LABELS.get(series.name, series.name), **style)
        if len(charts) > 1:  # the page's heading names a single one
            axes.set_title(
                f"{chart.market} {chart.symbol}",
                loc="right",
                color=color,
                fontsize=13,
                fontweight="bold",
            )
        axes.set_ylabel("price")
        axes.ticklabel_format(axis="y", useOffset=False, style="plain")
        _date_axis(axes)
        times_ms = {t for series in chart.series for t in series.times_ms}
        if len(times_ms) == 1:  # one point (a window of seconds): a few steps around it
            (only,) = times_ms
            pad = 5 * max(chart.step_ms, 1000)
            axes.set_xlim(_times([only - pad])[0], _times([only + pad])[0])
        axes.legend(loc="lower left", bbox_to_anchor=(0, 1.0), fontsize=10, ncol=4, frameon=False)
    return png(figure)


_SERIES_LABELS = {
    "mid": "mid (depth: best bid + best ask) / 2",
    "last": "last trade",
    "mark": "mark price",
    "index": "index price",
}


def funding_plot(chart: FundingChart) -> Figure:
    """Small multiples: one panel per contract symbol, each with its own y scale and a
    zero line, on one shared time axis (two columns above four contracts)."""
    count = len(chart.series)
    columns = 1 if count <= 4 else 2
    rows = math.ceil(count / columns)
    figure = Figure(figsize=(WIDTH_IN, 1.9 * rows + 0.4), dpi=DPI, layout="constrained")
    axes_grid = figure.subplots(rows, columns, sharex=True, squeeze=False)
    for index, axes in enumerate(axes_grid.flat):
        if index >= count:
            axes.set_visible(False)
            continue
        series = chart.series[index]
        color = SYMBOL_COLORS[index % len(SYMBOL_COLORS)]
        axes.axhline(0, color="#495057", linewidth=0.8)
        times, values = _times(series.times_ms), np.array(series.values) * 100
        if len(times) == 1:
            axes.plot(times, values, "o", color=color, markersize=5)
        else:
            axes.step(times, values, where="post", color=color, linewidth=1.4)
        axes.set_title(series.name, loc="left", color=color, fontsize=12, fontweight="bold")
        axes.set_ylabel("% / interval", fontsize=9)
        axes.tick_params(labelsize=9)
        if chart.end_ms > chart.start_ms:
            axes.set_xlim(_times([chart.start_ms])[0], _times([chart.end_ms])[0])
        _date_axis(axes)
    return figure


def funding_figure(chart: FundingChart) -> bytes:
    return png(funding_plot(chart))


def disk_figure(disk: DiskUse) -> bytes:
    """Stacked bars: bytes of each dataset's live files per date partition."""
    dates = sorted({d for by_date in disk.bytes_by_date.values() for d in by_date})
    largest = max(
        (sum(by_date.get(d, 0) for by_date in disk.bytes_by_date.values()) for d in dates),
        default=0,
    )
    unit, scale = next(
        (u, s)
        for u, s in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3), ("bytes", 1.0))
        if largest >= s or s == 1.0
    )
    figure = Figure(figsize=(WIDTH_IN, 4.2), dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    positions = np.arange(len(dates))
    bottom = np.zeros(len(dates))
    for name in datasets.DATASETS:
        by_date = disk.bytes_by_date.get(name)
        if not by_date:
            continue
        values = np.array([by_date.get(d, 0) / scale for d in dates])
        axes.bar(
            positions, values, bottom=bottom, color=DATASET_COLORS[name], label=name, width=0.8
        )
        bottom += values
    axes.set_xlim(-0.6, max(len(dates), 10) - 0.4)  # a few dates keep slim bars
    every = max(1, len(dates) // 16 + (1 if len(dates) % 16 else 0))
    axes.set_xticks(positions[::every])
    axes.set_xticklabels([d.strftime("%b %d") for d in dates][::every], fontsize=9)
    axes.set_ylabel(f"{unit} on disk")
    axes.grid(True, axis="y", color="#dee2e6")
    axes.set_axisbelow(True)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    figure.legend(loc="outside right upper", fontsize=9, frameon=False)
    return png(figure)

"""The coverage report (``jex-collector report``): one self-contained HTML page showing where
the archive has holes, the prices it holds, funding rates and its size on disk.

    report = make_report("data", settings=config.load("schedules.yaml"))
    write_html(page.render(report), Path("report.html"))

Modules: :mod:`.model` (the data shown, pure), :mod:`.coverage` (expected against
archived rows, in DuckDB), :mod:`.series` (span, symbols, prices, funding, disk),
:mod:`.charts` (matplotlib, Agg) and :mod:`.page` (the HTML).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from collector import datasets
from collector.config import Settings
from collector.errors import CollectorError
from collector.read import catalog
from collector.report import coverage, page, series
from collector.report.model import (
    DEFAULT_SPAN_MS,
    By,
    Report,
    Window,
    default_window,
    to_datetime,
)
from collector.storage.files import write_atomically
from collector.storage.location import Archive
from collector.units import wall_clock_ms

log = logging.getLogger(__name__)

__all__ = ["EmptyArchiveError", "generate", "make_report", "write_html"]


class EmptyArchiveError(CollectorError):
    """There is nothing to report: no archive, no rows, or none in the asked window."""


def make_report(
    data_dir: str | Path,
    *,
    settings: Settings | None = None,
    symbols: Sequence[str] = (),
    start_ms: int | None = None,
    end_ms: int | None = None,
    by: By | str = "auto",
    since_history: bool = False,
    clock_ms: Callable[[], int] = wall_clock_ms,
) -> Report:
    """Read the archive and compute everything the page shows.

    ``settings`` gives each snapshot job's interval (what coverage expects) and the
    enabled jobs (a dataset without rows is then flagged); without it, intervals are
    the median spacing of the snapshots. ``symbols`` chooses the price charts
    (``SYMBOL`` in every market that has it, or ``MARKET/SYMBOL``). ``[start_ms,
    end_ms)`` defaults to the first live snapshot (the earliest ``received_at`` of the
    snapshot datasets) to the newest row; ``since_history`` starts it at the oldest
    row instead, backfilled history included; either way at most the newest 30 days.
    With the window from the first snapshot, the funding chart still shows the funding
    history up to the window's end (:func:`funding_window`).
    Raises :class:`EmptyArchiveError` when there is nothing to show and LookupError
    for a symbol without prices.
    """
    archive = Archive.of(data_dir)
    root = archive.uri
    if not archive.remote and not archive.path.is_dir():
        raise EmptyArchiveError(
            f"no archive at {data_dir}: pass --data-dir, or run the collector first "
            "(jex-collector run)"
        )
    started = time.perf_counter()

    def read() -> Report:
        with catalog.connect(root) as connection:
            span = series.archive_span(connection)
            if span is None:
                raise EmptyArchiveError(
                    f"the archive in {root} holds no rows yet: run the collector first "
                    "(jex-collector run), then the report"
                )
            live = (
                None if since_history or start_ms is not None else series.first_snapshot(connection)
            )
            window = Window.choose(*default_window(*span, start_ms, end_ms, live), by)
            present = series.datasets_with_rows(connection, window)
            if not present:
                raise EmptyArchiveError(
                    f"no rows between {to_datetime(window.start_ms):%Y-%m-%d %H:%M} and "
                    f"{to_datetime(window.end_ms):%Y-%m-%d %H:%M} UTC; the archive spans "
                    f"{to_datetime(span[0]):%Y-%m-%d %H:%M} to "
                    f"{to_datetime(span[1]):%Y-%m-%d %H:%M}"
                )
            every = {name: job.every for name, job in settings.jobs.items()} if settings else {}
            enabled = set(settings.enabled_jobs()) if settings else set()
            return Report(
                data_dir=root,
                generated_ms=clock_ms(),
                window=window,
                archive_first_ms=span[0],
                archive_last_ms=span[1],
                coverage=coverage.all_coverage(connection, window, every),
                prices=[
                    series.price_chart(connection, window, market, symbol)
                    for market, symbol in series.chart_symbols(connection, window, symbols)
                ],
                funding=series.funding_chart(connection, funding_window(window, span, live)),
                # The chart shows the window's dates; the header's totals are the archive's.
                disk=series.disk_use(root, window),
                missing_datasets=sorted(series.missing_datasets(connection, enabled - present)),
                window_rule=window_rule(window, span, live, start_ms),
            )

    # A damaged data file is left out of the report's reads (and logged), not its end.
    report = catalog.readable(root, datasets.DATASETS, read)
    log.info("report data read in %.1f s", time.perf_counter() - started)
    return report


def funding_window(window: Window, span: tuple[int, int], live: int | None) -> Window:
    """The funding chart's span: the window's; when the window starts at the first live
    snapshot, the funding history before it too (the newest 30 days up to its end):
    funding events are paged history, and a window of minutes holds one at most."""
    if live is None or live >= window.end_ms:
        return window
    start = max(span[0], window.end_ms - DEFAULT_SPAN_MS)
    return Window.choose(start, window.end_ms) if start < window.start_ms else window


def window_rule(window: Window, span: tuple[int, int], live: int | None, asked: int | None) -> str:
    """Where the window starts and why, in words (the page's header)."""
    if asked is not None:
        return "from --start"
    if live is not None and live < window.end_ms:
        if window.start_ms > live:
            return f"the newest 30 days (collecting began {_minute(live)} UTC)"
        if span[0] < live:
            return (
                f"from the first live snapshot; backfilled history since {_minute(span[0])} "
                "UTC is left out (an earlier --start shows it)"
            )
        return "from the first live snapshot"
    if window.start_ms > span[0]:
        return "the newest 30 days, backfilled history included"
    return "from the oldest row, backfilled history included"


def _minute(time_ms: int) -> str:
    return f"{to_datetime(time_ms):%Y-%m-%d %H:%M}"


def write_html(text: str, out: str | Path) -> Path:
    """Write ``text`` to ``out`` atomically: a temporary file beside it, fsynced, renamed
    over it; a reader (a browser reloading) sees the old page or the new one."""
    out = Path(out)
    write_atomically(out, text)
    return out


def generate(
    data_dir: str | Path,
    out: str | Path,
    *,
    settings: Settings | None = None,
    symbols: Sequence[str] = (),
    start_ms: int | None = None,
    end_ms: int | None = None,
    by: By | str = "auto",
    since_history: bool = False,
) -> Report:
    """:func:`make_report`, rendered and written to ``out``; the report is returned."""
    report = make_report(
        data_dir,
        settings=settings,
        symbols=symbols,
        start_ms=start_ms,
        end_ms=end_ms,
        by=by,
        since_history=since_history,
    )
    started = time.perf_counter()
    write_html(page.render(report), out)
    log.info("report drawn and written to %s in %.1f s", out, time.perf_counter() - started)
    return report

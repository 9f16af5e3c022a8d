"""The commands' tables on the terminal (rich), and values made plain for CSV and JSON."""

from __future__ import annotations

import datetime as dt
from typing import Any


def plain(value: Any) -> Any:
    """A date or datetime as ISO text; anything else as it is."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def print_table(columns: list[str], rows: list[tuple[Any, ...]], max_rows: int) -> None:
    """``rows`` under ``columns``, at most ``max_rows`` of them, then their count."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from collector.logs import escape_controls

    def cell(value: Any) -> Text:
        # Text, not a str: rich would read "[...]" in a value as its markup; and control
        # characters (an ESC from a value the exchange sent) are shown escaped.
        return Text("" if value is None else escape_controls(str(plain(value))))

    table = Table(show_lines=False)
    for column in columns:
        table.add_column(cell(column))
    for row in rows[:max_rows]:
        table.add_row(*(cell(v) for v in row))
    console = Console()
    console.print(table)
    more = len(rows) - max_rows
    console.print(
        f"{len(rows)} row(s)" + (f", {more} not shown (use --format csv)" if more > 0 else "")
    )


def print_findings(shown: list[Any]) -> None:
    """``verify``: one row per group checked."""
    columns = [
        "dataset",
        "market",
        "symbol",
        "interval",
        "rows",
        "first",
        "last",
        "duplicates",
        "holes",
        "first holes",
    ]
    rows = [
        (
            f.dataset,
            f.market,
            f.symbol,
            f.interval or "",
            f.rows,
            f.first,
            f.last,
            f.duplicates,
            f.holes,
            " ".join(f"{a}..{b}" for a, b in f.hole_ranges),
        )
        for f in shown
    ]
    print_table(columns, rows, max_rows=10_000)


def print_compaction(groups: list[Any], summary: str) -> None:
    """``compact``: one row per dataset and market, then the summary."""
    from rich.console import Console
    from rich.table import Table

    table = Table("dataset", "market", "compacted", "files", "rows", "duplicates", "MB")
    for g in groups:
        table.add_row(
            g.dataset,
            g.market,
            f"{g.partitions} of {g.partitions + g.unchanged}",
            f"{g.files_before} -> {g.files_after}",
            f"{g.rows_before} -> {g.rows_after}",
            str(g.duplicates_removed),
            f"{g.bytes_before / 1e6:.1f} -> {g.bytes_after / 1e6:.1f}",
        )
    console = Console()
    console.print(table)
    console.print(summary)


def print_status(report: Any) -> None:
    """``status``: the daemon, the datasets and the verdict (:mod:`collector.ops.status_table`)."""
    from rich.console import Console

    from collector.ops import status_table

    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = 120  # a pipe or a file: wide enough for one line per row
    for part in status_table.render(report):
        console.print(part)

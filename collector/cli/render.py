"""The commands' tables (rich), and values made plain for CSV and JSON.

On a terminal a table fits its width; anywhere else (a pipe, a file, a notebook, CI)
nothing is cut: the console is as wide as the longest row needs. Floats are shown
rounded to :data:`SIGNIFICANT` digits in tables; CSV and JSON keep them exact.
"""

from __future__ import annotations

import datetime as dt
import math
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

#: Width of the console when standard output is not a terminal: no row is that long,
#: so none is wrapped or cut.
UNLIMITED_WIDTH = 1_000_000
#: Significant digits of a float in a table (0.37999999999988177 shows as 0.38).
SIGNIFICANT = 10


def plain(value: Any) -> Any:
    """A date or datetime as ISO text; anything else as it is."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def shown(value: Any) -> str:
    """A value as a table cell: floats rounded to :data:`SIGNIFICANT` digits (printed
    the shortest way that reads back as the rounded number), None as nothing."""
    if value is None:
        return ""
    if isinstance(value, float) and math.isfinite(value):
        return repr(float(f"{value:.{SIGNIFICANT}g}"))
    return str(plain(value))


def console(*, highlight: bool = True) -> Console:
    """The console of a command's table: the terminal's width, or unlimited elsewhere."""
    from rich.console import Console

    out = Console(highlight=highlight)
    if not stdout_is_terminal():
        out.width = UNLIMITED_WIDTH
    return out


def stdout_is_terminal() -> bool:
    """Whether standard output is a terminal, asked of the stream itself: rich's
    ``is_terminal`` also says yes to FORCE_COLOR (set in many CI runners) in a pipe."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def print_table(columns: list[str], rows: list[tuple[Any, ...]], max_rows: int) -> None:
    """``rows`` under ``columns``, at most ``max_rows`` of them, then their count."""
    from rich.table import Table
    from rich.text import Text

    from collector.logs import escape_controls

    def cell(value: Any) -> Text:
        # Text, not a str: rich would read "[...]" in a value as its markup; and control
        # characters (an ESC from a value the exchange sent) are shown escaped.
        return Text(escape_controls(shown(value)))

    table = Table(show_lines=False)
    for column in columns:
        table.add_column(cell(column))
    for row in rows[:max_rows]:
        table.add_row(*(cell(v) for v in row))
    out = console()
    out.print(table)
    more = len(rows) - max_rows
    out.print(
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
    out = console()
    out.print(table)
    out.print(summary)


def print_status(report: Any) -> None:
    """``status``: the daemon, the datasets and the verdict (:mod:`collector.ops.status_table`)."""
    from collector.ops import status_table

    out = console(highlight=False)
    for part in status_table.render(report):
        out.print(part)


def cookbook_lines(files: list[Any], folder: Any) -> list[str]:
    """``query --list``: per SQL file (:class:`collector.read.sqlfiles.SqlFile`) its
    name and title, its question, and its parameters as ``--param`` options with their
    defaults; then how to run one."""
    lines = []
    for file in files:
        lines.append(f"{file.path.name}: {file.title}")
        if file.question:
            lines.append(f"  {file.question}")
        options = [
            (f"--param {p.name}={'…' if p.default is None else p.default}", p) for p in file.params
        ]
        width = max((len(option) for option, _ in options), default=0)
        for option, param in options:
            notes = ["required"] if param.default is None else []
            notes += [param.description] if param.description else []
            lines.append(f"  {option:<{width}}  {'; '.join(notes)}".rstrip())
        if not options:
            lines.append("  (no parameters)")
    lines.append(
        f"{len(files)} file(s) in {folder}; run one with: jex-collector query --file "
        f"{folder}/NAME.sql [--param NAME=VALUE ...] (a parameter not given takes its default)"
    )
    return lines

"""The commands that read the archive: ``query``, ``report`` and ``schema``."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import click

from collector.cli import common, errors, render
from collector.cli.errors import exits, fail
from collector.cli.options import config_option, data_dir_option, parse_params, time_ms


@click.command()
@click.argument("sql", required=False)
@click.option(
    "--file",
    "sql_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Run this SQL file (e.g. queries/hourly_vwap.sql) instead of SQL text.",
)
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="A named parameter ($NAME in the SQL), bound as a string; repeatable.",
)
@config_option
@data_dir_option
@click.option(
    "--format",
    "output",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)
@click.option(
    "--max-rows",
    type=int,
    default=200,
    show_default=True,
    help="Rows shown in table format (csv and json print all).",
)
@click.option(
    "--list",
    "list_cookbook",
    is_flag=True,
    help="List the cookbook (the SQL files of queries/): name, question, parameters.",
)
@click.option(
    "--unsafe-allow-files",
    is_flag=True,
    help="Let the SQL read and write any file this user can (COPY … TO, read_csv, "
    "ATTACH, INSTALL): only for SQL you trust. Without it the SQL reads the archive's "
    "views and nothing else.",
)
def query(
    sql: str | None,
    sql_file: Path | None,
    params: tuple[str, ...],
    config_path: Path,
    data_dir: str | None,
    output: str,
    max_rows: int,
    list_cookbook: bool,
    unsafe_allow_files: bool,
) -> None:
    """Run SQL (text or --file) on the archive's views and print the result.

    Parameters are bound by DuckDB, never pasted into the SQL; a file's header declares
    them with their defaults (`-- param: symbol = BTCUSDT`). The SQL can read the
    archive's views only: DuckDB's file access, ATTACH, INSTALL/LOAD and its settings
    are locked (--unsafe-allow-files lifts that). --list shows the cookbook's files.
    """
    from collector.read import catalog, sqlfiles

    if list_cookbook:
        if sql is not None or sql_file is not None or params:
            fail("--list takes no SQL, --file or --param", 2)
        with exits(*errors.SQL_FILE):
            files = sqlfiles.cookbook()
            folder = sqlfiles.queries_dir()
        for line in render.cookbook_lines(files, folder):
            click.echo(line)
        return
    given = parse_params(params)
    if (sql is None) == (sql_file is None):
        fail("give either SQL text or --file, not both or neither", 2)
    if sql_file is not None:
        with exits(*errors.SQL_FILE):
            parsed = sqlfiles.read(sql_file)
            bound = parsed.bind(given)
        sql = parsed.text
    else:
        bound = given
    assert sql is not None
    directory = common.archive_dir(config_path, data_dir)

    open_archive = catalog.connect if unsafe_allow_files else catalog.connect_read_only

    def run() -> tuple[list[str], list[Any]]:
        with open_archive(directory) as connection:
            cursor = connection.execute(sql, bound or None)
            return [d[0] for d in cursor.description or []], cursor.fetchall()

    with exits(*errors.query_rules()):
        columns, rows = run()
    if output == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows([[render.plain(v) for v in row] for row in rows])
    elif output == "json":
        for row in rows:
            click.echo(
                json.dumps(
                    dict(zip(columns, map(render.plain, row), strict=True)), ensure_ascii=False
                )
            )
    else:
        render.print_table(columns, rows, max_rows)


@click.command()
@config_option
@data_dir_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("report.html"),
    show_default=True,
    help="The HTML file to write (atomically).",
)
@click.option(
    "--symbol",
    "symbols",
    multiple=True,
    metavar="[MARKET/]SYMBOL",
    help="Symbol of the price charts (repeatable; default: the most traded per market).",
)
@click.option("--start", default=None, help="Start: 2026-11-24, 2026-11-24T08:00 (UTC) or ms.")
@click.option("--end", default=None, help="End, exclusive (default: the newest row).")
@click.option(
    "--by",
    type=click.Choice(["minute", "hour", "day", "auto"]),
    default="auto",
    show_default=True,
    help="Heat-map columns (auto: minutes up to 2 hours, hours up to 3 days, then days).",
)
@click.option(
    "--since-history",
    is_flag=True,
    help="Start at the oldest row (backfilled history), not at the first live snapshot.",
)
def report(
    config_path: Path,
    data_dir: str | None,
    out: Path,
    symbols: tuple[str, ...],
    start: str | None,
    end: str | None,
    by: str,
    since_history: bool,
) -> None:
    """Write a self-contained HTML coverage report: gaps per dataset, prices, funding, size.

    The window defaults to the first live snapshot up to the newest row (at most the
    newest 30 days); --since-history or an earlier --start shows the backfilled history.
    Snapshot coverage is counted against the job intervals of --config (measured from
    the data when the file does not exist).
    """
    from collector import report as coverage_report
    from collector.read import catalog

    directory = common.archive_dir(config_path, data_dir)
    settings = common.settings(config_path) if config_path.exists() else None
    common.quiet_damaged_log()
    with exits(*errors.REPORT, out=out):
        result = coverage_report.generate(
            directory,
            out,
            settings=settings,
            symbols=symbols,
            start_ms=time_ms(start, "--start") if start else None,
            end_ms=time_ms(end, "--end") if end else None,
            by=by,
            since_history=since_history,
        )
    click.echo(f"wrote {out}: {result.verdict}")
    for file in catalog.damaged_files(directory):
        click.echo(
            f"{file.line()} (left out of the report; `verify --repair` sets it aside)", err=True
        )


@click.command()
def schema() -> None:
    """Print every dataset's columns, types and meaning (Markdown)."""
    from collector import datasets

    click.echo(datasets.markdown(), nl=False)

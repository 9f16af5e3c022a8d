"""The commands that look after the archive: ``status``, ``verify``, ``compact``,
``views`` and ``migrate``."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
from pathlib import Path

import click

from collector.cli import common, errors, render
from collector.cli.errors import exits, fail
from collector.cli.options import (
    config_option,
    data_dir_option,
    json_option,
    local_target,
    state_dir_option,
)


@click.command()
@config_option
@data_dir_option
@state_dir_option
@json_option(help="The status as one JSON document.")
def status(config_path: Path, data_dir: str | None, state_dir: Path | None, as_json: bool) -> None:
    """Whether the daemon runs and its jobs succeed, and per dataset and market what the
    archive holds. Exits 1 when a job has not succeeded within three of its intervals,
    the daemon is not running, or it never ran on this archive; 2 when there is no
    archive (neither a dataset's table nor a daemon's state)."""
    from collector.ops import status as health

    directory = common.data_dir(config_path, data_dir)
    common.require_archive(directory, daemon_state=True)
    with exits(*errors.STATUS, directory=directory):
        result = health.overview(directory, now=dt.datetime.now(dt.UTC), state_dir=state_dir)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
    else:
        render.print_status(result)
    sys.exit(0 if result.healthy else 1)


@click.command()
@config_option
@data_dir_option
@json_option(help="One JSON object per line.")
@click.option("--all", "show_all", is_flag=True, help="Also list groups without problems.")
@click.option(
    "--repair",
    is_flag=True,
    help="Backfill the holes found and remove duplicate rows, then check again.",
)
@click.option("--base-url", default=None, help="Exchange URL for --repair.")
def verify(
    config_path: Path,
    data_dir: str | None,
    as_json: bool,
    show_all: bool,
    repair: bool,
    base_url: str | None,
) -> None:
    """Check every dataset for duplicate keys and holes, and every data file it reads;
    exit 1 when there are any (a damaged file is named and left out of the checks)."""
    from collector.check import repair as checks

    directory = common.archive_dir(config_path, data_dir)
    common.quiet_damaged_log()
    checked = checks.check(directory)
    if repair and not checked.ok:
        settings = common.settings(config_path, data_dir=directory, base_url=base_url)
        with exits(*errors.REPAIR):
            result, checked = asyncio.run(checks.repair_then_check(settings, checked))
        for line in result.lines():
            click.echo(line)
    findings, damaged, problems = checked.findings, checked.damaged, checked.problems
    if as_json:
        for finding in findings:
            click.echo(json.dumps(finding.as_dict()))
        for file in damaged:
            click.echo(json.dumps({"damaged_file": file.name, "reason": file.reason}))
    else:
        for file in damaged:
            click.echo(f"{file.line()} (left out; `verify --repair` sets it aside)")
        shown = findings if show_all else problems
        if shown:
            render.print_findings(shown)
        rows = sum(f.rows for f in findings)
        click.echo(
            f"{len(findings)} group(s), {rows} row(s): "
            f"{sum(f.duplicates for f in findings)} duplicate(s), "
            f"{sum(f.holes for f in findings)} hole(s)"
            + (f", {len(damaged)} damaged file(s)" if damaged else "")
        )
    if problems or damaged:
        sys.exit(1)


@click.command()
@config_option
@data_dir_option
@click.option(
    "--all",
    "include_open",
    is_flag=True,
    help="Compact every partition whole, today's too, also while the daemon runs (safe: "
    "a compaction that loses to a concurrent one changes nothing). Without it, while "
    "the daemon runs: closed partitions whole and today's merged as the daemon does.",
)
@click.option(
    "--retention",
    "retention_hours",
    type=click.FloatRange(min=0),
    default=None,
    help="Hours a replaced file is kept for readers still scanning an older version "
    "before vacuum deletes it (default: the table's, "
    "collector.storage.delta.RETENTION_HOURS).",
)
@json_option(help="One JSON object per dataset and market.")
def compact(
    config_path: Path,
    data_dir: str | None,
    include_open: bool,
    retention_hours: float | None,
    as_json: bool,
) -> None:
    """Merge each partition's small files into few sorted ones, then vacuum and checkpoint
    each table; readers never see it half-done."""
    from collector.storage import compaction, delta

    directory = common.archive_dir(config_path, data_dir)
    closed_before = None
    if not include_open:
        now_ms = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
        closed_before = compaction.closed_before_beside_daemon(directory, now_ms)
    if closed_before is not None:
        click.echo(
            "a daemon is or may be running: compacting closed partitions (dates that ended over "
            f"{compaction.CLOSED_AFTER_S / 3600:g} h ago) whole and today's as it does "
            "(--all: every partition whole)",
            err=True,
        )
    with exits(*errors.COMPACT, directory=directory):
        report = compaction.compact_archive(
            directory,
            closed_before_ms=closed_before,
            open_partitions=True,
            retention_hours=delta.RETENTION_HOURS if retention_hours is None else retention_hours,
        )
    groups = sorted(report.groups.values(), key=lambda g: (g.dataset, g.market))
    if as_json:
        for group in groups:
            click.echo(json.dumps(group.as_dict()))
    else:
        render.print_compaction(groups, report.summary())
    if report.errors:
        for error in report.errors:
            click.echo(f"error: {error}", err=True)
        fail(f"{len(report.errors)} compaction step(s) failed (those partitions are unchanged)", 1)


@click.command()
@config_option
@data_dir_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The DuckDB file to write (default: <data_dir>/archive.duckdb; for an s3:// "
    "archive, archive.duckdb in the current directory).",
)
def views(config_path: Path, data_dir: str | None, out: Path | None) -> None:
    """Write archive.duckdb: one view per dataset, and the derived views."""
    from collector.read import catalog
    from collector.storage.location import Archive

    directory = common.archive_dir(config_path, data_dir)
    remote = Archive.of(directory).remote
    if out is None and remote:
        out = Path(catalog.DB_NAME)
    with exits(*errors.views_rules(), where=out or Path(directory) / catalog.DB_NAME):
        path = catalog.write_views(directory, out)
    click.echo(f"wrote {path}")
    if remote:
        click.echo(
            "to read it: duckdb "
            f"{path}, then LOAD httpfs; LOAD delta; and a secret from your environment, e.g. "
            "CREATE SECRET (TYPE s3, KEY_ID '…', SECRET '…', ENDPOINT 'host:port', "
            "URL_STYLE 'path', USE_SSL false); no credential is stored in the file"
        )


@click.command()
@click.option(
    "--from",
    "source",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The archive in the layout before Delta Lake (only read).",
)
@click.option(
    "--to",
    "target",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    callback=lambda _ctx, _param, value: local_target(value),
    help="Where the Delta tables go (created; may already hold tables, even with a "
    "daemon collecting into them).",
)
@click.option(
    "--ignore-wal",
    is_flag=True,
    help="Migrate although the old write-ahead log holds rows never written to Parquet "
    "(those rows are left out).",
)
@click.option("--quiet", is_flag=True, help="No line per partition, only the summary.")
def migrate(source: Path, target: Path, ignore_wal: bool, quiet: bool) -> None:
    """Convert an archive from the layout before Delta Lake into one Delta table per
    dataset: one commit per partition, rows de-duplicated and sorted, counts checked.

    Resumable: run it again after an interruption and it skips partitions already
    committed. The old archive is not changed; remove it once the new one serves you.
    """
    from collector.storage import migrate as migration

    def progress(result: migration.PartitionMigration) -> None:
        if not quiet or result.status == "failed":
            click.echo(result.line(), err=result.status == "failed")

    with exits(*errors.MIGRATE):
        report = migration.migrate_archive(source, target, ignore_wal=ignore_wal, progress=progress)
    for note in report.skipped:
        click.echo(f"skipped: {note}", err=True)
    if report.not_copied:
        click.echo(
            f"not copied from {source}: {', '.join(report.not_copied)} (the daemon makes "
            "its state, write-ahead log, quarantine and views anew)"
        )
    click.echo(f"migrate {source} -> {target}: {report.summary()}")
    if not report.errors:
        click.echo(
            f"next: collect into {target} (storage.uri or --data-dir); {source} is "
            "unchanged, delete it when you no longer need it"
        )
    if report.errors:
        fail(
            f"{len(report.errors)} partition(s) failed (see above); the same command "
            "tries again those that were not committed",
            1,
        )

"""The ``jex-collector`` command line. Thin: it turns the library's errors into messages
and exit codes (0 fine, 1 a failure, 2 a usage or configuration error)."""

from __future__ import annotations

import sys


def _by_ctrl_c(exc: BaseException | None) -> bool:
    """Whether ``exc`` is, or was caused by, a Ctrl-C (an extension module interrupted
    while it loads raises its own error from the KeyboardInterrupt)."""
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, KeyboardInterrupt):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


try:
    import asyncio
    import csv
    import datetime as dt
    import json
    import logging
    import os
    import traceback
    from pathlib import Path
    from typing import Any, NoReturn

    import click
    from pydantic import SecretStr

    from collector import __version__, config
    from collector.errors import CollectorError, ConfigError, LegacyArchiveError
    from collector.read import catalog
except BaseException as exc:  # Ctrl-C while Python loads the program: nothing began yet
    if _by_ctrl_c(exc):
        sys.exit(130)
    raise

log = logging.getLogger("collector")

SIM_DEMO_KEY = "sim-demo-key"

_config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("schedules.yaml"),
    show_default=True,
    help="The schedule and settings file.",
)
_data_dir_option = click.option(
    "--data-dir",
    type=str,
    default=None,
    help="The archive: a directory, or s3://bucket/prefix (endpoint and credentials from "
    "the AWS_* environment variables). Default: storage.uri of the config.",
)
_state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="This host's state (write-ahead log, pause file, lock); storage.state_dir. "
    "Default: the archive directory (a local archive), <archive>/_local/<shard> (a local "
    "archive's shard), ~/.local/state/jex-collector/<bucket>/<prefix>/<shard> (s3://).",
)
_shard_option = click.option(
    "--shard",
    default=None,
    help="Run only this shard's share of the schedule (the shards: section).",
)
_log_level_option = click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
_log_format_option = click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one object per line with dataset, market, symbol, rows, duration_ms, error.",
)


def _fail(message: str, status: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(status)


def _setup_logging(
    level: str, log_format: str = "text", settings: config.Settings | None = None
) -> None:
    """Log to standard error; the settings' API key and secret are redacted from every line."""
    from collector import logs

    secrets = (settings.api_key, settings.api_secret) if settings is not None else ()
    logs.setup(level, log_format, secrets=[s.get_secret_value() for s in secrets if s])


def _settings(config_path: Path, **overrides: Any) -> config.Settings:
    try:
        return config.load(config_path, overrides=overrides)
    except ConfigError as exc:
        _fail(str(exc), 2)


def _data_dir(config_path: Path, data_dir: str | None) -> str:
    """The archive the command works on (a local path or an ``s3://`` URI, checked); an
    archive in the layout before Delta Lake is refused with the command that converts it."""
    from collector.storage.location import Archive

    if data_dir is not None:
        directory = data_dir
    elif not config_path.exists():
        directory = "data"
    else:
        directory = str(_settings(config_path).storage.data_dir)
    try:
        Archive.of(directory)
    except ConfigError as exc:
        _fail(f"--data-dir: {exc}", 2)
    _refuse_legacy(directory)
    return directory


def _require_archive(directory: str) -> None:
    """Exit 1 naming the place when ``directory`` holds no archive."""
    from collector.storage import delta
    from collector.storage.location import Archive

    archive = Archive.of(directory)
    if archive.remote:
        found = any(delta.is_table(archive.uri, name) for name in _dataset_names())
    else:
        found = archive.path.is_dir()
    if not found:
        _fail(f"no archive at {directory} (check --data-dir or storage.uri)", 1)


def _dataset_names() -> tuple[str, ...]:
    from collector import datasets

    return tuple(datasets.DATASETS)


def _refuse_legacy(directory: str | Path) -> None:
    from collector.storage import legacy

    try:
        legacy.refuse_legacy(directory)
    except LegacyArchiveError as exc:
        _fail(str(exc), 2)


class _Cli(click.Group):
    """The command group; called as a program (the ``jex-collector`` script, ``python -m
    collector``), it ends the process through :func:`_exit_now`. ``CliRunner`` calls
    :meth:`main` instead, so tests keep their process."""

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        try:
            self.main(*args, **kwargs)
            code = 0
        except SystemExit as exc:
            code = _exit_code(exc.code)
        except KeyboardInterrupt:
            click.echo("interrupted (Ctrl-C)", err=True)
            code = 130
        except Exception:  # a bug: the traceback, as Python would print it
            traceback.print_exc()
            code = 1
        _exit_now(code)


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    click.echo(str(code), err=True)  # sys.exit("message") prints it and exits 1
    return 1


def _exit_now(code: int) -> NoReturn:
    """Flush everything, then end the process without the interpreter's finalization.

    deltalake (delta-rs) and pyarrow keep native thread pools that are torn down while
    the interpreter finalizes; the two race there and the process sometimes aborts with
    "terminate called without an active exception" (SIGABRT, exit 134) after its work
    is done (delta-rs issue 2184, arrow issue 34314). ``os._exit`` skips finalization,
    so what is not flushed here would be lost: standard streams and log handlers are.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (| head): the output is lost
            code = code or 1
    logging.shutdown()
    os._exit(code)


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="jex-collector")
def main() -> None:
    """Archive every JEX market dataset into partitioned Parquet, queryable with DuckDB."""


@main.command()
@_config_option
@_data_dir_option
@_state_dir_option
@_shard_option
@click.option("--base-url", default=None, help="Exchange URL (overrides exchange.base_url).")
@click.option(
    "--sim", is_flag=True, help="Start the built-in exchange simulator and collect from it."
)
@click.option("--sim-seed", type=int, default=1, show_default=True, help="Simulator seed.")
@click.option(
    "--duration",
    type=float,
    default=None,
    help="Stop after this many seconds (default: run until SIGTERM or Ctrl-C).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Serve Prometheus metrics at http://ADDR:PORT/metrics (default: not served).",
)
@click.option(
    "--metrics-addr",
    default=None,
    help="Address the metrics are served on (default 127.0.0.1; 0.0.0.0 for every interface).",
)
@_log_level_option
@_log_format_option
def run(
    config_path: Path,
    data_dir: str | None,
    state_dir: Path | None,
    shard: str | None,
    base_url: str | None,
    sim: bool,
    sim_seed: int,
    duration: float | None,
    metrics_port: int | None,
    metrics_addr: str | None,
    log_level: str,
    log_format: str,
) -> None:
    """Run the collector daemon (Ctrl-C or SIGTERM flushes and exits 0)."""
    try:
        _run(
            config_path, data_dir, state_dir, shard, base_url, sim, sim_seed, duration,
            metrics_port, metrics_addr, log_level, log_format,
        )  # fmt: skip
    except BaseException as exc:
        if isinstance(exc, SystemExit) or not _by_ctrl_c(exc):
            raise
        # Ctrl-C before the daemon's own handler was installed (its first second):
        # nothing was collected yet, so there is nothing to flush.
        _fail("interrupted (Ctrl-C) before the daemon began collecting; nothing was written", 130)


def _run(
    config_path: Path,
    data_dir: str | None,
    state_dir: Path | None,
    shard: str | None,
    base_url: str | None,
    sim: bool,
    sim_seed: int,
    duration: float | None,
    metrics_port: int | None,
    metrics_addr: str | None,
    log_level: str,
    log_format: str,
) -> None:
    settings = _settings(
        config_path, data_dir=data_dir, base_url=base_url, state_dir=state_dir, shard=shard
    )
    _setup_logging(log_level, log_format, settings)
    _refuse_legacy(settings.storage.data_dir)
    if metrics_addr is not None and metrics_port is None:
        _fail("--metrics-addr needs --metrics-port", 2)
    from collector.ops.metrics import DEFAULT_ADDR

    address = None if metrics_port is None else (metrics_addr or DEFAULT_ADDR, metrics_port)
    server = None
    if sim:
        server, settings = _start_sim(settings, sim_seed)
    from collector.collect.daemon import Daemon

    try:
        asyncio.run(Daemon(settings, metrics_address=address).run(duration))
    except ConfigError as exc:
        _fail(str(exc), 2)
    except CollectorError as exc:
        _fail(str(exc), 1)
    except OSError as exc:
        # The archive or the state dir cannot be written (read-only, wrong owner, a file
        # where a folder belongs): the daemon cannot do anything useful.
        _fail(
            f"cannot write {exc.filename or settings.storage.data_dir}: {_os_reason(exc)}. "
            "The collector writes its archive (--data-dir, storage.uri) and its state dir "
            "(--state-dir): make them writable by this user, or choose other folders",
            1,
        )
    finally:
        if server is not None:
            server.stop()


def _start_sim(settings: config.Settings, seed: int) -> tuple[Any, config.Settings]:
    """Start the simulator in-process; settings that point at it (with a demo API key)."""
    from collector.sim import SimExchange, SimServer

    server = SimServer(SimExchange(seed=seed))
    server.start()
    update: dict[str, Any] = {
        "exchange": settings.exchange.model_copy(update={"base_url": server.base_url})
    }
    if settings.api_key is None:
        update["api_key"] = SecretStr(SIM_DEMO_KEY)
    log.info("simulator (seed %d) listening on %s", seed, server.base_url)
    return server, settings.model_copy(update=update)


@main.command()
@_config_option
@_data_dir_option
@_shard_option
@click.option("--base-url", default=None, help="Exchange URL (overrides exchange.base_url).")
@click.option("--sim", is_flag=True, help="Plan against the built-in simulator's instruments.")
@click.option("--json", "as_json", is_flag=True, help="The plan as JSON.")
def plan(
    config_path: Path,
    data_dir: str | None,
    shard: str | None,
    base_url: str | None,
    sim: bool,
    as_json: bool,
) -> None:
    """Print what the schedule costs in request weight against the exchange's limits, and
    in disk per day; say what to change when it does not fit.

    Asks the exchange for its instruments and limits (three requests of weight 1) and
    for each traded symbol's trades of the last 24 hours (one of weight 1 per symbol).
    Exits 1 when the schedule does not fit (the daemon then stretches or refuses, as
    exchange.on_over_budget says)."""
    from collector.plan.table import format_report, report_dict

    settings = _settings(config_path, data_dir=data_dir, base_url=base_url, shard=shard)
    server = None
    if sim:
        server, settings = _start_sim(settings, 1)
    try:
        result, disk_plan = asyncio.run(_plan(settings))
    except CollectorError as exc:
        _fail(f"cannot read the exchange's instruments and limits: {exc}", 1)
    finally:
        if server is not None:
            server.stop()
    if as_json:
        click.echo(json.dumps(report_dict(result, disk_plan), indent=2))
    else:
        click.echo(format_report(result, disk_plan))
    sys.exit(0 if result.fits else 1)


async def _plan(settings: config.Settings) -> Any:
    from collector.exchange import endpoints, instruments
    from collector.exchange.client import JexClient
    from collector.plan.disk import plan_disk
    from collector.plan.schedule import make_plan

    async with JexClient.from_settings(settings) as client:
        await client.sync_clock()
        info = await client.get(endpoints.EXCHANGE_INFO)
        options = await client.get(endpoints.OPTION_INFO)
        limits = instruments.rate_limits(info.payload)
        _, listing = instruments.instruments(info.payload, options.payload, info.received_at)
        now = client.clock.now_ms()

        def names(job: config.JobSettings, market: str) -> list[str]:
            return [s for s in listing.active(market, now) if job.wants(s)]

        result = make_plan(
            settings,
            lambda job, market: len(names(job, market)),
            has_api_key=client.has_api_key,
            weight_limit=limits.weight_per_minute or client.budget.limit,
            raw_limit=limits.raw_requests,
            raw_interval_ms=limits.raw_interval_ms,
        )
        return result, await plan_disk(settings, result, client, names)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8900, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option(
    "--weight-limit",
    type=int,
    default=1200,
    show_default=True,
    help="Request weight per minute before 429s.",
)
@click.option(
    "--fault",
    "faults",
    multiple=True,
    metavar="KIND=P",
    help="Inject a fault with probability P per request (repeatable; also settable at run "
    "time with POST /_sim/faults). Kinds: error_500, unavailable_503, truncated_json, slow, "
    "connection_reset, unknown_field, missing_field, number_for_string, empty_list, "
    "duplicate_trades, unknown_symbol, bad_symbol (see collector/sim/faults.py); "
    "slow_seconds=S sets the delay of slow (default 15).",
)
@_log_level_option
@_log_format_option
def sim(
    host: str,
    port: int,
    seed: int,
    weight_limit: int,
    faults: tuple[str, ...],
    log_level: str,
    log_format: str,
) -> None:
    """Serve the JEX exchange simulator (deterministic under --seed)."""
    _setup_logging(log_level, log_format)
    from collector.sim import Faults, SimExchange
    from collector.sim.server import run_forever

    switches: dict[str, float] = {}
    for item in faults:
        kind, _, probability = item.partition("=")
        try:
            switches[kind] = float(probability)
        except ValueError:
            _fail(f"--fault {item!r}: expected KIND=PROBABILITY, e.g. error_500=0.05", 2)
    try:
        fault_switches = Faults.from_dict({**switches, "seed": seed})
    except (ValueError, TypeError) as exc:
        _fail(f"--fault: {exc}", 2)
    click.echo(f"JEX simulator (seed {seed}) on http://{host}:{port}  (Ctrl-C stops)", err=True)
    run_forever(
        SimExchange(seed=seed), host, port, weight_limit=weight_limit, faults=fault_switches
    )


@main.command()
def schema() -> None:
    """Print every dataset's columns, types and meaning (Markdown)."""
    from collector import datasets

    click.echo(datasets.markdown(), nl=False)


@main.command()
@_config_option
@_data_dir_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The DuckDB file to write (default: <data_dir>/archive.duckdb; for an s3:// "
    "archive, archive.duckdb in the current directory).",
)
def views(config_path: Path, data_dir: str | None, out: Path | None) -> None:
    """Write archive.duckdb: one view per dataset, and the derived views."""
    from collector.storage.location import Archive

    directory = _data_dir(config_path, data_dir)
    remote = Archive.of(directory).remote
    if out is None and remote:
        out = Path(catalog.DB_NAME)
    import duckdb

    try:
        path = catalog.write_views(directory, out)
    except ConfigError as exc:  # a queries/views file that does not install
        _fail(str(exc), 2)
    except (OSError, duckdb.IOException, duckdb.PermissionException) as exc:
        where = out or Path(directory) / catalog.DB_NAME
        _fail(
            f"cannot write the views to {where}: {_os_reason(exc)}. The folder must be "
            "writable by this user (a read-only archive: write them elsewhere with --out)",
            1,
        )
    click.echo(f"wrote {path}")
    if remote:
        click.echo(
            "to read it: duckdb "
            f"{path}, then LOAD httpfs; LOAD delta; and a secret from your environment, e.g. "
            "CREATE SECRET (TYPE s3, KEY_ID '…', SECRET '…', ENDPOINT 'host:port', "
            "URL_STYLE 'path', USE_SSL false); no credential is stored in the file"
        )


@main.command()
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
@_config_option
@_data_dir_option
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
    unsafe_allow_files: bool,
) -> None:
    """Run SQL (text or --file) on the archive's views and print the result.

    Parameters are bound by DuckDB, never pasted into the SQL; a file's header declares
    them with their defaults (`-- param: symbol = BTCUSDT`). The SQL can read the
    archive's views only: DuckDB's file access, ATTACH, INSTALL/LOAD and its settings
    are locked (--unsafe-allow-files lifts that).
    """
    import duckdb

    from collector.read import sqlfiles

    given = _params(params)
    if (sql is None) == (sql_file is None):
        _fail("give either SQL text or --file, not both or neither", 2)
    if sql_file is not None:
        try:
            parsed = sqlfiles.read(sql_file)
            bound = parsed.bind(given)
        except ConfigError as exc:
            _fail(str(exc), 2)
        sql = parsed.text
    else:
        bound = given
    assert sql is not None
    directory = _data_dir(config_path, data_dir)

    open_archive = catalog.connect if unsafe_allow_files else catalog.connect_read_only

    def run() -> tuple[list[str], list[Any]]:
        with open_archive(directory) as connection:
            cursor = connection.execute(sql, bound or None)
            return [d[0] for d in cursor.description or []], cursor.fetchall()

    try:
        columns, rows = run()
    except ConfigError as exc:
        _fail(str(exc), 2)
    except duckdb.PermissionException as exc:
        _fail(
            f"query refused: {_first_line(exc)}. `query` reads the archive's views only; "
            "SQL that reads or writes other files, attaches databases or installs "
            "extensions needs --unsafe-allow-files (only for SQL you trust)",
            1,
        )
    except (duckdb.Error, CollectorError) as exc:
        _fail(f"query failed: {exc}", 1)
    if output == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows([[_plain(v) for v in row] for row in rows])
    elif output == "json":
        for row in rows:
            click.echo(
                json.dumps(dict(zip(columns, map(_plain, row), strict=True)), ensure_ascii=False)
            )
    else:
        _print_table(columns, rows, max_rows)


def _os_reason(exc: BaseException) -> str:
    """The reason of a failed file operation without its Python dress."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return _first_line(exc)


def _quiet_damaged_log() -> None:
    """The command names damaged files itself, once each: the reads' log line would
    say it again."""
    logging.getLogger("collector.read.catalog").setLevel(logging.ERROR)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _params(pairs: tuple[str, ...]) -> dict[str, str]:
    """``--param NAME=VALUE`` pairs as a dict (the value may contain ``=``)."""
    found: dict[str, str] = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not name.strip():
            _fail(f"--param {pair!r}: expected NAME=VALUE", 2)
        found[name.strip()] = value
    return found


def _time_ms(value: str, option: str) -> int:
    """Milliseconds from an ISO date or datetime (naive means UTC) or a number of ms."""
    if value.isdigit():
        return int(value)
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        _fail(
            f"{option} {value!r}: expected a date (2026-11-24), a UTC datetime "
            "(2026-11-24T08:00) or milliseconds since the epoch",
            2,
        )
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp() * 1000)


@main.command()
@_config_option
@_data_dir_option
@click.option("--base-url", default=None, help="Exchange URL (overrides exchange.base_url).")
@click.option(
    "--dataset",
    required=True,
    type=click.Choice(["trades", "klines", "funding_rate", "protection_fund"]),
)
@click.option(
    "--market",
    "markets",
    multiple=True,
    type=click.Choice(["spot", "option", "contract"]),
    help="Markets (default: the dataset's job's markets).",
)
@click.option(
    "--symbol",
    "symbols",
    multiple=True,
    help="Symbols or glob patterns (default: every listed symbol).",
)
@click.option(
    "--interval", "intervals", multiple=True, help="klines: intervals (default: the klines job's)."
)
@click.option("--start", required=True, help="Start: 2026-11-24, 2026-11-24T08:00 (UTC) or ms.")
@click.option("--end", default=None, help="End, exclusive (default: now).")
@_log_level_option
@_log_format_option
def backfill(
    config_path: Path,
    data_dir: str | None,
    base_url: str | None,
    dataset: str,
    markets: tuple[str, ...],
    symbols: tuple[str, ...],
    intervals: tuple[str, ...],
    start: str,
    end: str | None,
    log_level: str,
    log_format: str,
) -> None:
    """Fill a time range of a dataset, fetching only what the archive lacks (resumable)."""
    from collector.collect.backfill_run import run_backfill

    settings = _settings(config_path, data_dir=data_dir, base_url=base_url)
    _setup_logging(log_level, log_format, settings)
    _refuse_legacy(settings.storage.data_dir)
    start_ms = _time_ms(start, "--start")
    end_ms = None if end is None else _time_ms(end, "--end")
    if end_ms is not None and end_ms <= start_ms:
        _fail("--end must be after --start", 2)
    try:
        result = asyncio.run(
            run_backfill(
                settings,
                dataset,
                markets=markets,
                symbols=symbols,
                intervals=intervals,
                start_ms=start_ms,
                end_ms=end_ms,
            )
        )
    except CollectorError as exc:
        _fail(str(exc), 1)
    for note in result.skipped:
        click.echo(f"skipped: {note}", err=True)
    click.echo(f"backfill {dataset}: {result.rows} row(s) added, {result.pages} request(s)")


@main.command()
@_config_option
@_data_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
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
    from collector.check import verify as checks

    directory = _data_dir(config_path, data_dir)
    _quiet_damaged_log()
    findings = checks.verify(directory)
    damaged = catalog.damaged_files(directory)
    if repair and (damaged or any(not f.ok for f in findings)):
        from collector.check.repair import repair as run_repair

        settings = _settings(config_path, data_dir=directory, base_url=base_url)
        try:
            report = asyncio.run(run_repair(settings, findings, damaged))
        except CollectorError as exc:
            _fail(f"repair stopped: {exc}", 1)
        for line in report.set_aside:
            click.echo(f"repair: set aside the damaged file {line}")
        for dataset, removed in sorted(report.duplicates_removed.items()):
            click.echo(f"repair: removed {removed} duplicate row(s) from {dataset}")
        for dataset, added in sorted(report.rows_added.items()):
            click.echo(f"repair: added {added} missing row(s) to {dataset}")
        for note in report.skipped:
            click.echo(f"repair: skipped {note}")
        findings = checks.verify(directory)
        damaged = catalog.damaged_files(directory)
    problems = [f for f in findings if not f.ok]
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
            _print_findings(shown)
        rows = sum(f.rows for f in findings)
        click.echo(
            f"{len(findings)} group(s), {rows} row(s): "
            f"{sum(f.duplicates for f in findings)} duplicate(s), "
            f"{sum(f.holes for f in findings)} hole(s)"
            + (f", {len(damaged)} damaged file(s)" if damaged else "")
        )
    if problems or damaged:
        sys.exit(1)


@main.command()
@_config_option
@_data_dir_option
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
@click.option("--json", "as_json", is_flag=True, help="One JSON object per dataset and market.")
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

    directory = _data_dir(config_path, data_dir)
    _require_archive(directory)
    closed_before = None
    from collector.storage.location import is_remote

    # On an object store, daemons on other hosts may be collecting: no local lock tells.
    if not include_open and (is_remote(directory) or compaction.daemon_running(directory)):
        closed_before = compaction.closed_before_ms(int(dt.datetime.now(dt.UTC).timestamp() * 1000))
        click.echo(
            "a daemon is or may be running: compacting closed partitions (dates that ended over "
            f"{compaction.CLOSED_AFTER_S / 3600:g} h ago) whole and today's as it does "
            "(--all: every partition whole)",
            err=True,
        )
    try:
        report = compaction.compact_archive(
            directory,
            closed_before_ms=closed_before,
            open_partitions=True,
            retention_hours=delta.RETENTION_HOURS if retention_hours is None else retention_hours,
        )
    except (OSError, CollectorError) as exc:
        _fail(f"compaction of {directory} failed: {exc}", 1)
    groups = sorted(report.groups.values(), key=lambda g: (g.dataset, g.market))
    if as_json:
        for group in groups:
            click.echo(json.dumps(group.as_dict()))
    else:
        _print_compaction(groups, report.summary())
    if report.errors:
        for error in report.errors:
            click.echo(f"error: {error}", err=True)
        _fail(f"{len(report.errors)} compaction step(s) failed (those partitions are unchanged)", 1)


@main.command()
@_config_option
@_data_dir_option
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
    type=click.Choice(["hour", "day", "auto"]),
    default="auto",
    show_default=True,
    help="Heat-map columns (auto: days when the window is longer than 3 days).",
)
def report(
    config_path: Path,
    data_dir: str | None,
    out: Path,
    symbols: tuple[str, ...],
    start: str | None,
    end: str | None,
    by: str,
) -> None:
    """Write a self-contained HTML coverage report: gaps per dataset, prices, funding, size.

    The window defaults to the whole archive, or its newest 30 days when it is longer.
    Snapshot coverage is counted against the job intervals of --config (measured from
    the data when the file does not exist).
    """
    from collector import report as coverage_report

    directory = _data_dir(config_path, data_dir)
    settings = _settings(config_path) if config_path.exists() else None
    _quiet_damaged_log()
    try:
        result = coverage_report.generate(
            directory,
            out,
            settings=settings,
            symbols=symbols,
            start_ms=_time_ms(start, "--start") if start else None,
            end_ms=_time_ms(end, "--end") if end else None,
            by=by,
        )
    except (LookupError, ValueError) as exc:
        _fail(str(exc).strip("'\""), 2)
    except CollectorError as exc:
        _fail(str(exc), 1)
    except OSError as exc:
        _fail(f"the report could not be written to {out}: {exc}", 1)
    click.echo(f"wrote {out}: {result.verdict}")
    for file in catalog.damaged_files(directory):
        click.echo(
            f"{file.line()} (left out of the report; `verify --repair` sets it aside)", err=True
        )


@main.command()
@_config_option
@_data_dir_option
@_state_dir_option
@click.option("--json", "as_json", is_flag=True, help="The status as one JSON document.")
def status(config_path: Path, data_dir: str | None, state_dir: Path | None, as_json: bool) -> None:
    """Whether the daemon runs and its jobs succeed, and per dataset and market what the
    archive holds. Exits 1 when a job has not succeeded within three of its intervals,
    the daemon is not running, or it never ran on this archive."""
    from rich.console import Console

    from collector.ops import status as health
    from collector.ops import status_table

    directory = _data_dir(config_path, data_dir)
    _require_archive(directory)
    try:
        result = health.report(directory, now=dt.datetime.now(dt.UTC), state_dir=state_dir)
    except CollectorError as exc:
        _fail(f"cannot read the archive's state at {directory}: {exc}", 1)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
    else:
        console = Console(highlight=False)
        if not console.is_terminal:
            console.width = 120  # a pipe or a file: wide enough for one line per row
        for part in status_table.render(result):
            console.print(part)
    sys.exit(0 if result.healthy else 1)


@main.command()
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
    callback=lambda _ctx, _param, value: _local_target(value),
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

    try:
        report = migration.migrate_archive(source, target, ignore_wal=ignore_wal, progress=progress)
    except ConfigError as exc:
        _fail(str(exc), 2)
    except CollectorError as exc:
        _fail(str(exc), 1)
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
        _fail(
            f"{len(report.errors)} partition(s) failed (see above); the same command "
            "tries again those that were not committed",
            1,
        )


def _local_target(value: Path) -> Path:
    if str(value).startswith("s3:"):
        _fail(
            "--to: migrate writes a local archive; copy its folder to the object store "
            "afterwards (a Delta table's file paths are relative, so a copy of the folder "
            "is the same table), then collect with storage.uri: s3://…",
            2,
        )
    return value


def _print_compaction(groups: list[Any], summary: str) -> None:
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


def _print_findings(shown: list[Any]) -> None:
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
    _print_table(columns, rows, max_rows=10_000)


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def _print_table(columns: list[str], rows: list[tuple[Any, ...]], max_rows: int) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from collector.logs import escape_controls

    def cell(value: Any) -> Text:
        # Text, not a str: rich would read "[...]" in a value as its markup; and control
        # characters (an ESC from a value the exchange sent) are shown escaped.
        return Text("" if value is None else escape_controls(str(_plain(value))))

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


if __name__ == "__main__":
    main()

"""The commands that talk to an exchange: ``run`` (the daemon), ``backfill``, ``plan``,
and ``sim`` (the exchange simulator)."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

import click
from pydantic import SecretStr

from collector import config, datasets
from collector.cli import common, errors
from collector.cli.errors import exits, fail
from collector.cli.options import (
    RunOptions,
    base_url_option,
    config_option,
    data_dir_option,
    json_option,
    log_format_option,
    log_level_option,
    run_options,
    shard_option,
    time_ms,
)

log = logging.getLogger("collector")

SIM_DEMO_KEY = "sim-demo-key"


@click.command()
@run_options
def run(options: RunOptions) -> None:
    """Run the collector daemon (Ctrl-C or SIGTERM flushes and exits 0)."""
    with exits(*errors.RUN_STARTING):
        _run(options)


def _run(options: RunOptions) -> None:
    settings = common.settings(
        options.config_path,
        data_dir=options.data_dir,
        base_url=options.base_url,
        state_dir=options.state_dir,
        shard=options.shard,
    )
    common.setup_logging(options.log_level, options.log_format, settings)
    common.refuse_legacy(settings.storage.data_dir)
    if options.metrics_addr is not None and options.metrics_port is None:
        fail("--metrics-addr needs --metrics-port", 2)
    from collector.ops.metrics import DEFAULT_ADDR

    port = options.metrics_port
    address = None if port is None else (options.metrics_addr or DEFAULT_ADDR, port)
    server = None
    if options.sim:
        server, settings = start_sim(settings, options.sim_seed)
    from collector.collect.daemon import Daemon

    try:
        with exits(*errors.RUN, where=settings.storage.data_dir):
            asyncio.run(Daemon(settings, metrics_address=address).run(options.duration))
    finally:
        if server is not None:
            server.stop()


def start_sim(settings: config.Settings, seed: int) -> tuple[Any, config.Settings]:
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


@click.command()
@config_option
@data_dir_option
@shard_option
@base_url_option
@click.option("--sim", is_flag=True, help="Plan against the built-in simulator's instruments.")
@json_option(help="The plan as JSON.")
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
    from collector.plan import live
    from collector.plan.table import format_plan_and_disk, plan_as_dict

    settings = common.settings(config_path, data_dir=data_dir, base_url=base_url, shard=shard)
    server = None
    if sim:
        server, settings = start_sim(settings, 1)
    try:
        with exits(*errors.PLAN):
            result, disk_plan = asyncio.run(live.ask(settings))
    finally:
        if server is not None:
            server.stop()
    if as_json:
        click.echo(json.dumps(plan_as_dict(result, disk_plan), indent=2))
    else:
        click.echo(format_plan_and_disk(result, disk_plan))
    sys.exit(0 if result.fits else 1)


@click.command()
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
    "--weight-window",
    type=click.Choice(["fixed", "rolling"]),
    default="fixed",
    show_default=True,
    help="How the weight (and raw requests) are counted: fixed = per clock minute, from 0 "
    "at each minute's start (raw requests per five clock minutes); rolling = over the last "
    "60 seconds (raw requests over the last five minutes). X-MBX-USED-WEIGHT-1M reports "
    "that count.",
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
@log_level_option
@log_format_option
def sim(
    host: str,
    port: int,
    seed: int,
    weight_limit: int,
    weight_window: str,
    faults: tuple[str, ...],
    log_level: str,
    log_format: str,
) -> None:
    """Serve the JEX exchange simulator (deterministic under --seed)."""
    common.setup_logging(log_level, log_format)
    from collector.sim import Faults, SimExchange
    from collector.sim.server import run_forever

    switches: dict[str, float] = {}
    for item in faults:
        kind, _, probability = item.partition("=")
        with exits(*errors.FAULT, item=item):
            switches[kind] = float(probability)
    with exits(*errors.FAULTS):
        fault_switches = Faults.from_dict({**switches, "seed": seed})
    click.echo(f"JEX simulator (seed {seed}) on http://{host}:{port}  (Ctrl-C stops)", err=True)
    run_forever(
        SimExchange(seed=seed),
        host,
        port,
        weight_limit=weight_limit,
        weight_window=weight_window,
        faults=fault_switches,
    )


@click.command()
@config_option
@data_dir_option
@base_url_option
@click.option(
    "--dataset",
    required=True,
    # The paged datasets of the registry: what a snapshot missed cannot be fetched again.
    type=click.Choice([d.name for d in datasets.DATASETS.values() if d.cursor is not None]),
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
@log_level_option
@log_format_option
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

    settings = common.settings(config_path, data_dir=data_dir, base_url=base_url)
    common.setup_logging(log_level, log_format, settings)
    common.refuse_legacy(settings.storage.data_dir)
    start_ms = time_ms(start, "--start")
    end_ms = None if end is None else time_ms(end, "--end")
    if end_ms is not None and end_ms <= start_ms:
        fail("--end must be after --start", 2)
    with exits(*errors.BACKFILL):
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
    for note in result.skipped:
        click.echo(f"skipped: {note}", err=True)
    click.echo(f"backfill {dataset}: {result.rows} row(s) added, {result.pages} request(s)")

"""The options several commands share, and the parsing of option values."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from collector.cli.errors import TIME, exits, fail

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("schedules.yaml"),
    show_default=True,
    help="The schedule and settings file.",
)
data_dir_option = click.option(
    "--data-dir",
    type=str,
    default=None,
    help="The archive: a directory, or s3://bucket/prefix (endpoint and credentials from "
    "the AWS_* environment variables). Default: storage.uri of the config.",
)
state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="This host's state (write-ahead log, pause file, lock); storage.state_dir. "
    "Default: the archive directory (a local archive), <archive>/_local/<shard> (a local "
    "archive's shard), ~/.local/state/jex-collector/<bucket>/<prefix>/<shard> (s3://).",
)
shard_option = click.option(
    "--shard",
    default=None,
    help="Run only this shard's share of the schedule (the shards: section).",
)
base_url_option = click.option(
    "--base-url", default=None, help="Exchange URL (overrides exchange.base_url)."
)
log_level_option = click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
log_format_option = click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one object per line with dataset, market, symbol, rows, duration_ms, error.",
)
json_option = functools.partial(click.option, "--json", "as_json", is_flag=True)


@dataclass(frozen=True)
class RunOptions:
    """The options of ``run``."""

    config_path: Path
    data_dir: str | None
    state_dir: Path | None
    shard: str | None
    base_url: str | None
    sim: bool
    sim_seed: int
    duration: float | None
    metrics_port: int | None
    metrics_addr: str | None
    log_level: str
    log_format: str


_RUN_OPTIONS = (
    config_option,
    data_dir_option,
    state_dir_option,
    shard_option,
    base_url_option,
    click.option(
        "--sim", is_flag=True, help="Start the built-in exchange simulator and collect from it."
    ),
    click.option("--sim-seed", type=int, default=1, show_default=True, help="Simulator seed."),
    click.option(
        "--duration",
        type=float,
        default=None,
        help="Stop after this many seconds (default: run until SIGTERM or Ctrl-C).",
    ),
    click.option(
        "--metrics-port",
        type=click.IntRange(1, 65535),
        default=None,
        help="Serve Prometheus metrics at http://ADDR:PORT/metrics (default: not served).",
    ),
    click.option(
        "--metrics-addr",
        default=None,
        help="Address the metrics are served on (default 127.0.0.1; 0.0.0.0 for every interface).",
    ),
    log_level_option,
    log_format_option,
)


def run_options(command: Callable[[RunOptions], None]) -> Callable[..., None]:
    """Give ``command`` the options of ``run``, handed to it as one :class:`RunOptions`."""

    @functools.wraps(command)
    def with_options(**values: Any) -> None:
        command(RunOptions(**values))

    decorated: Callable[..., None] = with_options
    for option in reversed(_RUN_OPTIONS):
        decorated = option(decorated)
    return decorated


def time_ms(value: str, option: str) -> int:
    """Milliseconds from an ISO date or datetime (naive means UTC) or a number of ms."""
    if value.isdigit():
        return int(value)
    with exits(*TIME, option=option, value=value):
        parsed = dt.datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp() * 1000)


def parse_params(pairs: tuple[str, ...]) -> dict[str, str]:
    """``--param NAME=VALUE`` pairs as a dict (the value may contain ``=``)."""
    found: dict[str, str] = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not name.strip():
            fail(f"--param {pair!r}: expected NAME=VALUE", 2)
        found[name.strip()] = value
    return found


def local_target(value: Path) -> Path:
    """``migrate --to``: a local folder."""
    if str(value).startswith("s3:"):
        fail(
            "--to: migrate writes a local archive; copy its folder to the object store "
            "afterwards (a Delta table's file paths are relative, so a copy of the folder "
            "is the same table), then collect with storage.uri: s3://…",
            2,
        )
    return value

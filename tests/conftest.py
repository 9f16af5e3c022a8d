"""Shared fixtures: a running simulator and settings that point the collector at it."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from collector import config
from collector.exchange.budget import WeightBudget
from collector.sim import SimExchange, SimServer

SEED = 7
#: How long the daemon fills ``sim_archive``.
SIM_ARCHIVE_SECONDS = 8.0


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        default=False,
        help="run the long variants of the soak and kill loops (minutes instead of seconds)",
    )


_exit_status: int | None = None


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _exit_status
    _exit_status = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """End the process with pytest's own status once everything is reported.

    A process that used deltalake and pyarrow can abort in the interpreter's teardown
    ("terminate called without an active exception", SIGABRT: a race between their
    thread pools at exit; delta-rs issue 2184, arrow issue 34314), after every test has
    passed. The CLI ends the same way (``collector.cli``); this is the same for pytest.
    """
    if _exit_status is not None and "deltalake" in sys.modules:
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(_exit_status)


@pytest.fixture(scope="session")
def long_run(request: pytest.FixtureRequest) -> bool:
    """True under ``pytest --long``: soak and kill loops run their full length."""
    return bool(request.config.getoption("--long"))


@pytest.fixture(scope="session")
def sim_exchange() -> SimExchange:
    return SimExchange(seed=SEED, history_days=2)


@pytest.fixture(scope="session")
def sim_archive(sim_exchange: SimExchange, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An archive filled by the daemon from the simulator (``fast_settings``, 8 s), shared
    by the tests that read it (loaders, views, the query cookbook). Read it, never write:
    copy it first when a test must change it."""
    from collector.collect.daemon import Daemon  # the daemon imports APScheduler; only when used

    data_dir = tmp_path_factory.mktemp("sim-archive")
    with SimServer(sim_exchange) as server:
        settings = fast_settings(server.base_url, data_dir)
        asyncio.run(Daemon(settings).run(SIM_ARCHIVE_SECONDS, handle_signals=False))
    return data_dir


@pytest.fixture
def sim_server(sim_exchange: SimExchange) -> Iterator[SimServer]:
    """A simulator server of its own (rate limits are per server), over the shared market."""
    with SimServer(sim_exchange) as server:
        yield server


def fast_settings(
    base_url: str, data_dir: Path, *, api_key: str | None = "test-key", **job_overrides: Any
) -> config.Settings:
    """Every job every second or two, small first-contact pages, flushes every 2 s."""
    jobs: dict[str, Any] = {
        "depth": {"every": "2s", "limit": 5},
        "trades": {"every": "1s"},
        "klines": {"every": "2s", "intervals": ["1m", "1h"], "limit": 60},
        "ticker_24hr": {"every": "3s"},
        "ticker_price": {"every": "2s"},
        "book_ticker": {"every": "2s"},
        "avg_price": {"every": "3s"},
        "indices_price": {"every": "2s", "markets": ["contract"]},
        "funding_rate": {"every": "3s", "markets": ["contract"]},
        "protection_fund": {"every": "3s", "markets": ["contract"]},
        "liquidation_orders": {"every": "3s", "markets": ["contract"]},
        "contract_info": {"every": "3s", "markets": ["contract"]},
        "instruments": {"every": "30s"},
    }
    jobs.update(job_overrides)
    raw = {
        "exchange": {"base_url": base_url, "timeout": "5s", "max_attempts": 2},
        "storage": {"data_dir": str(data_dir), "flush_every": "2s"},
        "jobs": jobs,
    }
    environ = {"JEX_API_KEY": api_key} if api_key else {}
    return config.from_mapping(raw, source="<test>", environ=environ)


def unpaced_budget() -> WeightBudget:
    """The default budget without pacing: for tests whose clock stands still (a paced
    budget would wait forever for its bucket to refill) or that test windows and pauses."""
    return WeightBudget(burst_s=60, start_fill=1.0)

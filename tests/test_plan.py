"""The schedule planner: what a schedule costs, and stretching it to fit the budget."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from collector import config
from collector.cli import main
from collector.collect.daemon import Daemon
from collector.config import JobSettings
from collector.errors import ConfigError
from collector.plan.schedule import HEADROOM, MAX_SNAPSHOT_STRETCH, PAGING_JOBS, make_plan
from collector.sim import SimExchange, SimServer
from tests.conftest import fast_settings

#: The simulator's listing: 3 spot, 8 option, 2 contract symbols.
LISTED = {"spot": 3, "option": 8, "contract": 2}


def count(job: JobSettings, market: str) -> int:
    return LISTED[market]


def shipped() -> config.Settings:
    return config.load("schedules.yaml", environ={"JEX_API_KEY": "k"})


def test_the_shipped_schedule_fits_the_default_limit_with_room_to_catch_up() -> None:
    plan = make_plan(shipped(), count, has_api_key=True, weight_limit=1200, raw_limit=5000)
    assert plan.fits
    assert plan.weight_per_minute <= plan.allowed * HEADROOM
    loads = {load.job: load for load in plan.loads}
    # Weights as the API reference gives them: historicalTrades 5 a symbol, depth 1, the
    # all-symbols book ticker 2 a market, 24hr ticker one per symbol (cheaper than 40).
    assert loads["trades"].weight == 5 * 13
    assert loads["depth"].weight == 13
    assert loads["book_ticker"].weight == 3 * 2 and loads["book_ticker"].requests == 3
    assert loads["ticker_24hr"].weight == 13
    assert loads["klines"].weight == 13 * 2


def test_a_tight_budget_stretches_snapshots_first_and_keeps_paging_jobs() -> None:
    plan = make_plan(shipped(), count, has_api_key=True, weight_limit=700)
    assert not plan.fits
    assert plan.weight_per_minute <= plan.allowed * HEADROOM + 1e-9
    for load in plan.loads:
        if load.job in PAGING_JOBS:
            assert load.planned_every == load.every, load.job
        elif load.weight:
            assert load.planned_every > load.every, load.job


def test_when_snapshots_cannot_give_enough_paging_jobs_are_stretched_too() -> None:
    plan = make_plan(shipped(), count, has_api_key=True, weight_limit=150)
    loads = {load.job: load for load in plan.loads}
    assert loads["depth"].stretch == pytest.approx(MAX_SNAPSHOT_STRETCH)
    assert loads["trades"].stretch > 1
    assert plan.weight_per_minute <= plan.allowed * HEADROOM * 1.02  # interval rounding
    assert any("paging jobs are stretched" in note for note in plan.notes)


def test_trades_without_a_key_cost_one_and_stretching_them_is_called_out() -> None:
    plan = make_plan(shipped(), count, has_api_key=False, weight_limit=60)
    loads = {load.job: load for load in plan.loads}
    assert loads["trades"].weight == 13 and not loads["trades"].paging
    assert any("lose trades" in note for note in plan.notes)


def test_the_raw_request_limit_is_planned_for_too() -> None:
    plan = make_plan(shipped(), count, has_api_key=True, weight_limit=100_000, raw_limit=500)
    assert not plan.fits
    raw_per_minute = plan.raw_allowed_per_minute
    assert raw_per_minute is not None
    assert plan.requests_per_minute <= raw_per_minute * HEADROOM * 1.02


@settings(max_examples=60, deadline=None)
@given(
    limit=st.integers(20, 5000),
    raw=st.none() | st.integers(200, 20_000),
    key=st.booleans(),
)
def test_a_stretched_plan_always_fits_and_never_favours_snapshots(
    limit: int, raw: int | None, key: bool
) -> None:
    plan = make_plan(shipped(), count, has_api_key=key, weight_limit=limit, raw_limit=raw)
    assert plan.weight_per_minute <= plan.allowed * HEADROOM * 1.05 + 1
    paging = {load.stretch for load in plan.loads if load.paging and load.weight}
    snapshots = {load.stretch for load in plan.loads if not load.paging and load.weight}
    assert max(paging) <= min(snapshots)


def test_plan_command_prints_the_table_and_exits_1_when_over_budget(tmp_path: Path) -> None:
    runner = CliRunner()
    fits = runner.invoke(main, ["plan", "--sim"])
    assert fits.exit_code == 0, fits.output
    assert "trades" in fits.output and "fits" in fits.output
    tight = tmp_path / "tight.yaml"
    tight.write_text(
        Path("schedules.yaml").read_text().replace("every: 10s, markets", "every: 1s, markets")
    )
    over = runner.invoke(main, ["plan", "--sim", "--config", str(tight)])
    assert over.exit_code == 1
    assert "does not fit" in over.output and " *" in over.output


def test_refuse_stops_the_daemon_before_it_sends_a_poll(tmp_path: Path) -> None:
    exchange = SimExchange(seed=3, history_days=1)
    with SimServer(exchange, weight_limit=100) as server:
        settings = fast_settings(server.base_url, tmp_path)
        settings = settings.model_copy(
            update={"exchange": settings.exchange.model_copy(update={"on_over_budget": "refuse"})}
        )
        with pytest.raises(ConfigError, match="on_over_budget"):
            asyncio.run(Daemon(settings).run(10, handle_signals=False))
        state = httpx.get(f"{server.base_url}/_sim/state").json()
    # Only first contact: clock, exchangeInfo, optionInfo.
    assert state["clients"]["127.0.0.1"]["used_weight"] <= 3


def test_a_schedule_needing_three_times_the_budget_gets_no_ban(
    tmp_path: Path, long_run: bool
) -> None:
    """Hammer: the fast test schedule against a simulator allowing a third of its weight."""
    exchange = SimExchange(seed=4, history_days=1)
    probe = make_plan(
        fast_settings("http://x", tmp_path), count, has_api_key=True, weight_limit=1200
    )
    limit = int(probe.wanted_weight_per_minute / 3 / 0.8)
    seconds = 300.0 if long_run else 45.0
    with SimServer(exchange, weight_limit=limit, raw_limit_5m=limit * 4) as server:
        settings = fast_settings(server.base_url, tmp_path)
        daemon = Daemon(settings)
        started = time.monotonic()
        asyncio.run(daemon.run(seconds, handle_signals=False))
        minutes = (time.monotonic() - started) / 60
        state: dict[str, Any] = httpx.get(f"{server.base_url}/_sim/state").json()
    client = state["clients"]["127.0.0.1"]
    assert daemon.plan is not None and not daemon.plan.fits
    assert client["bans"] == 0
    assert client["429s"] <= max(1, int(minutes + 1))
    assert daemon.client.stats["418"] == 0
    print(  # shown with -s: the numbers for the notes
        f"\nover-budget run: {minutes:.1f} min, limit {limit}/min, 429s {client['429s']}, "
        f"bans {client['bans']}, requests {daemon.client.stats['requests']}"
    )


def test_a_restart_during_a_ban_sends_nothing_until_it_ends(tmp_path: Path) -> None:
    exchange = SimExchange(seed=3, history_days=1)
    with SimServer(exchange) as server:
        pause = tmp_path / "_state" / "pause.json"
        pause.parent.mkdir(parents=True)
        until = exchange.now_ms() + 3_600_000
        pause.write_text(f'{{"status": 418, "until_ms": {until}}}')
        asyncio.run(Daemon(fast_settings(server.base_url, tmp_path)).run(2, handle_signals=False))
        state = httpx.get(f"{server.base_url}/_sim/state").json()
    assert state["clients"] == {}, "a request reached the exchange during the ban"


def test_plan_of_a_shard_counts_only_its_share(tmp_path: Path) -> None:
    """A schedule too dense for one IP fits once split: each shard plans against its
    own host's limit, with only its markets' requests."""
    dense = Path("schedules.yaml").read_text().replace("every: 10s, markets", "every: 1s, markets")
    config_path = tmp_path / "sharded.yaml"
    config_path.write_text(
        dense + "shards:\n  spot: {markets: [spot], compact: true}\n"
        "  derivs: {markets: [option, contract]}\n"
    )
    runner = CliRunner()
    whole = runner.invoke(main, ["plan", "--sim", "--json", "--config", str(config_path)])
    spot = runner.invoke(
        main, ["plan", "--sim", "--json", "--config", str(config_path), "--shard", "spot"]
    )
    assert spot.exit_code in (0, 1), spot.output
    whole_plan, spot_plan = json.loads(whole.output), json.loads(spot.output)
    assert {m for job in spot_plan["jobs"] for m in job["markets"]} == {"spot"}
    wanted = "wanted_weight_per_minute"
    assert 0 < spot_plan[wanted] < whole_plan[wanted]
    unknown = runner.invoke(main, ["plan", "--sim", "--config", str(config_path), "--shard", "x"])
    assert unknown.exit_code == 2 and "spot, derivs" in unknown.output


def test_a_scheduled_symbol_the_exchange_does_not_list_is_a_warning_not_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 16: `symbols: [BTCUSD]` (the exchange lists BTCUSDT) used to pass without a
    word. plan notes it, with the close match; the daemon warns at start and runs on
    (listings change: a symbol listed later is collected then)."""
    schedule = tmp_path / "schedule.yaml"
    schedule.write_text(
        "jobs:\n"
        "  depth: {every: 2s, markets: [spot], symbols: [BTCUSD, ETH*]}\n"
        "  instruments: {every: 5m}\n"
    )
    shown = CliRunner().invoke(
        main, ["plan", "--sim", "--config", str(schedule), "--data-dir", str(tmp_path)]
    )
    assert shown.exit_code == 0, shown.output
    assert "jobs.depth.symbols: 'BTCUSD' matches no symbol the exchange lists in spot" in (
        shown.output
    )
    assert "did you mean BTCUSDT" in shown.output and "'ETH*'" not in shown.output
    with SimServer(SimExchange(seed=3, history_days=1)) as server:
        raw = {
            "exchange": {"base_url": server.base_url},
            "storage": {"uri": str(tmp_path / "archive"), "flush_every": "2s"},
            "jobs": {"depth": {"every": "2s", "markets": ["spot"], "symbols": ["BTCUSD"]}},
        }
        settings = config.from_mapping(raw, source="<test>", environ={})
        with caplog.at_level("WARNING"):
            asyncio.run(Daemon(settings).run(1, handle_signals=False))
    warned = [r for r in caplog.records if "'BTCUSD' matches no symbol" in r.getMessage()]
    assert warned and warned[0].levelname == "WARNING"

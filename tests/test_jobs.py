"""Jobs, one round at a time, against the simulator on a clock the test controls."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from hypothesis import given
from hypothesis import strategies as st

from collector.collect import jobs
from collector.exchange.client import ExchangeClock, JexClient
from collector.read import catalog
from collector.sim import SimExchange, create_app
from collector.storage.writer import ArchiveWriter
from tests.conftest import fast_settings, unpaced_budget

START = 1_764_000_000_000  # 2025-11-24T16:00:00Z


@given(
    st.lists(st.integers(0, 3), max_size=30),
    st.integers(0, 30),
    st.integers(0, 30),
)
def test_overlap_finds_where_the_new_poll_continues(
    stream: list[int], start: int, shift: int
) -> None:
    """Two windows of one trade stream: the overlap is never larger than the true one."""
    fingerprints = [(i // 2, float(v), 1.0) for i, v in enumerate(stream)]
    previous = fingerprints[start : start + 10]
    current = fingerprints[start + shift : start + shift + 10]
    seen = jobs._overlap(previous, current)
    assert previous[len(previous) - seen :] == current[:seen]
    true_overlap = max(0, min(start + 10, len(fingerprints)) - (start + shift)) if previous else 0
    assert seen >= min(true_overlap, len(current))


class Harness:
    """A simulator and a collector sharing one fake clock, in one event loop."""

    def __init__(self, data_dir: Path, *, api_key: str | None = "test-key", **jobs_: Any):
        self.now = START
        self.exchange = SimExchange(seed=3, clock=lambda: self.now, history_days=2)
        self.settings = fast_settings("http://sim.test", data_dir, api_key=api_key, **jobs_)
        self.api_key = api_key
        self.writer = ArchiveWriter(data_dir)
        self.data_dir = data_dir
        self.state = jobs.CollectorState()

    def run(self, scenario: Callable[[jobs.JobContext], Awaitable[None]]) -> None:
        """Run ``scenario`` with a fresh client (as a restarted process would have)."""

        async def go() -> None:
            transport = httpx.ASGITransport(app=create_app(self.exchange))
            async with JexClient(
                "http://sim.test",
                api_key=self.api_key,
                transport=transport,
                clock=ExchangeClock(local_ms=lambda: self.now),
                budget=unpaced_budget(),
            ) as client:
                ctx = jobs.JobContext(client, self.writer, self.settings, self.state)
                await jobs.refresh_instruments(ctx)
                await scenario(ctx)

        asyncio.run(go())

    def flush(self) -> None:
        assert self.writer.flush().errors == []

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        table = catalog.query(self.data_dir, sql)
        return list(zip(*[c.to_pylist() for c in table.columns], strict=True))


def test_historical_trades_continue_from_the_cursor_without_gaps(tmp_path: Path) -> None:
    harness = Harness(tmp_path)

    async def scenario(ctx: jobs.JobContext) -> None:
        for _ in range(5):
            await jobs.run_job(ctx, "trades")
            harness.now += 7_000

    harness.run(scenario)
    harness.flush()
    for market, symbol, first, last, n in harness.rows(
        "SELECT market, symbol, min(trade_id), max(trade_id), count(DISTINCT trade_id) "
        "FROM trades GROUP BY ALL"
    ):
        assert n == last - first + 1, (market, symbol)
        truth = harness.exchange.trades_from_id(market, symbol, last + 1, 500)
        assert all(t.time > harness.now - 7_000 for t in truth), "a trade was left behind"


def test_a_long_outage_is_caught_up_page_by_page(tmp_path: Path) -> None:
    harness = Harness(tmp_path, trades={"every": "1s", "markets": ["spot"], "symbols": ["BTCUSDT"]})

    async def scenario(ctx: jobs.JobContext) -> None:
        await jobs.run_job(ctx, "trades")
        first_cursor = ctx.state.cursors[("trades", "spot", "BTCUSDT")]
        harness.now += 15 * 60_000  # ~1800 trades at 2/s: four pages of 500
        reports = await jobs.run_job(ctx, "trades")
        assert reports[0].rows == ctx.state.cursors[("trades", "spot", "BTCUSDT")] - first_cursor

    harness.run(scenario)
    harness.flush()
    ((first, last, n),) = harness.rows("SELECT min(trade_id), max(trade_id), count(*) FROM trades")
    assert n == last - first + 1 and n > 1500


def test_a_restart_resumes_every_cursor_from_the_archive(tmp_path: Path) -> None:
    harness = Harness(tmp_path)

    async def first_run(ctx: jobs.JobContext) -> None:
        for name in ("trades", "klines", "funding_rate", "protection_fund"):
            await jobs.run_job(ctx, name)

    harness.run(first_run)
    harness.flush()
    harness.now += 5 * 60_000
    harness.state = jobs.CollectorState()  # a new process remembers nothing
    jobs.load_cursors(str(tmp_path), harness.state)
    assert harness.state.cursors

    harness.run(first_run)
    harness.flush()
    for dataset, key in (("trades", "trade_id"), ("funding_rate", "id"), ("protection_fund", "id")):
        for market, symbol, first, last, n, total in harness.rows(
            f"SELECT market, symbol, min({key}), max({key}), count(DISTINCT {key}), count(*) "
            f"FROM {dataset} GROUP BY ALL"
        ):
            assert n == total == last - first + 1, (dataset, market, symbol)
    assert harness.rows(
        "SELECT count(*) FROM (SELECT market, symbol, interval, open_time FROM klines "
        "GROUP BY ALL HAVING count(*) > 1)"
    ) == [(0,)]


def test_only_closed_klines_are_stored(tmp_path: Path) -> None:
    harness = Harness(tmp_path)

    async def scenario(ctx: jobs.JobContext) -> None:
        await jobs.run_job(ctx, "klines")

    harness.run(scenario)
    harness.flush()
    ((latest_close,),) = harness.rows("SELECT epoch_ms(max(close_time)) FROM klines")
    assert latest_close < harness.now


def test_recent_trades_without_a_key_are_deduplicated_across_polls(tmp_path: Path) -> None:
    harness = Harness(
        tmp_path,
        api_key=None,
        trades={"every": "1s", "markets": ["spot"], "symbols": ["BTCUSDT"]},
    )

    async def scenario(ctx: jobs.JobContext) -> None:
        for _ in range(6):
            await jobs.run_job(ctx, "trades")
            harness.now += 5_000  # ~10 trades between polls, well under 60

    harness.run(scenario)
    harness.flush()
    archived = harness.rows(
        "SELECT epoch_ms(time), price, qty FROM trades ORDER BY time, price, qty"
    )
    first = archived[0][0]
    truth = harness.exchange.trades("spot", "BTCUSDT", first, harness.now - 5_000 + 1)
    expected = sorted((t.time, float(t.price), float(t.qty)) for t in truth)
    assert archived == expected
    assert harness.state.possible_gaps == {}


def test_recent_trades_record_a_possible_gap(tmp_path: Path) -> None:
    harness = Harness(
        tmp_path,
        api_key=None,
        trades={"every": "1s", "markets": ["spot"], "symbols": ["BTCUSDT"]},
    )

    async def scenario(ctx: jobs.JobContext) -> None:
        await jobs.run_job(ctx, "trades")
        harness.now += 10 * 60_000  # ~1200 trades: far more than one page of 60
        await jobs.run_job(ctx, "trades")

    harness.run(scenario)
    assert harness.state.possible_gaps == {("spot", "BTCUSDT"): 1}


def test_ticker_jobs_use_the_all_symbols_form_only_when_cheaper(tmp_path: Path) -> None:
    harness = Harness(tmp_path)

    async def scenario(ctx: jobs.JobContext) -> None:
        before = ctx.client.budget.used
        await jobs.run_job(ctx, "ticker_price")  # all-symbols form costs 2 per market
        spent_price = ctx.client.budget.used - before
        n_markets = len(ctx.settings.jobs["ticker_price"].markets)
        assert spent_price == 2 * n_markets
        before = ctx.client.budget.used
        await jobs.run_job(ctx, "ticker_24hr")  # 40 without symbol: one per symbol is cheaper
        n_symbols = sum(
            len(ctx.symbols(ctx.settings.jobs["ticker_24hr"], m))
            for m in ctx.settings.jobs["ticker_24hr"].markets
        )
        assert ctx.client.budget.used - before == n_symbols

    harness.run(scenario)
    harness.flush()
    markets = harness.rows("SELECT DISTINCT market FROM ticker_price ORDER BY 1")
    assert markets == [("contract",), ("option",), ("spot",)]


def test_one_failing_symbol_does_not_stop_the_others(tmp_path: Path) -> None:
    harness = Harness(tmp_path, depth={"every": "1s", "markets": ["spot"]})

    async def scenario(ctx: jobs.JobContext) -> None:
        listing = ctx.state.listing
        ctx.state.listing = type(listing)(
            {**listing.symbols, "spot": (*listing.symbols["spot"], "NOSUCHUSDT")},
            listing.expiries,
        )
        (report,) = await jobs.run_job(ctx, "depth")
        assert len(report.errors) == 1 and "NOSUCHUSDT" in report.errors[0]
        assert report.rows > 0

    harness.run(scenario)


def test_first_start_backfills_trades_backwards_to_the_lookback(tmp_path: Path) -> None:
    harness = Harness(
        tmp_path,
        trades={"every": "1s", "markets": ["spot"], "symbols": ["BTCUSDT"], "backfill": "20m"},
    )

    async def scenario(ctx: jobs.JobContext) -> None:
        await jobs.run_job(ctx, "trades")
        harness.now += 3_000
        await jobs.run_job(ctx, "trades")

    harness.run(scenario)
    harness.flush()
    ((first, last, n, oldest),) = harness.rows(
        "SELECT min(trade_id), max(trade_id), count(*), epoch_ms(min(time)) FROM trades"
    )
    assert n == last - first + 1
    assert n > 2_000  # 20 minutes at ~2 trades a second: several pages backwards
    window_start = harness.now - 3_000 - 20 * 60_000
    assert oldest >= window_start
    (before,) = harness.exchange.trades_from_id("spot", "BTCUSDT", first - 1, 1)
    assert before.time < window_start, "the backfill stopped short of its lookback"


def test_first_start_backfills_klines_over_the_lookback(tmp_path: Path) -> None:
    harness = Harness(
        tmp_path,
        klines={
            "every": "1s",
            "markets": ["contract"],
            "symbols": ["ETHUSDT"],
            "intervals": ["1m", "1h"],
            "backfill": "1d",
        },
    )

    async def scenario(ctx: jobs.JobContext) -> None:
        await jobs.run_job(ctx, "klines")

    harness.run(scenario)
    harness.flush()
    for interval, step in (("1m", 60_000), ("1h", 3_600_000)):
        ((first, last, n),) = harness.rows(
            "SELECT epoch_ms(min(open_time)), epoch_ms(max(open_time)), count(*) FROM klines "
            f"WHERE interval = '{interval}'"
        )
        assert n == (last - first) // step + 1, interval
        assert first <= harness.now - 86_400_000 + step, interval
        assert last + step <= harness.now < last + 2 * step + jobs.KLINE_CLOSE_MARGIN_MS


def test_funding_and_protection_fund_fetch_the_whole_history(tmp_path: Path) -> None:
    harness = Harness(tmp_path)

    async def scenario(ctx: jobs.JobContext) -> None:
        for _ in range(2):  # the protection fund's history takes more than one round
            await jobs.run_job(ctx, "funding_rate")
            await jobs.run_job(ctx, "protection_fund")

    harness.run(scenario)
    harness.flush()
    everything = (0, harness.now + 1)
    for dataset, truth in (
        ("funding_rate", harness.exchange.funding_rates("BTCUSDT", *everything)),
        ("protection_fund", harness.exchange.protection_fund("BTCUSDT", *everything)),
    ):
        ids = [
            r[0]
            for r in harness.rows(f"SELECT id FROM {dataset} WHERE symbol = 'BTCUSDT' ORDER BY id")
        ]
        assert ids == [r.id for r in truth], dataset


def test_recent_trades_do_not_repeat_across_a_restart(tmp_path: Path) -> None:
    harness = Harness(
        tmp_path,
        api_key=None,
        trades={"every": "1s", "markets": ["spot", "contract"], "symbols": ["BTCUSDT"]},
    )

    async def poll_twice(ctx: jobs.JobContext) -> None:
        for _ in range(2):
            await jobs.run_job(ctx, "trades")
            harness.now += 5_000

    harness.run(poll_twice)
    harness.flush()
    first_time = {
        m: t for m, t in harness.rows("SELECT market, epoch_ms(min(time)) FROM trades GROUP BY 1")
    }
    harness.state = jobs.CollectorState()  # a new process
    jobs.load_cursors(str(tmp_path), harness.state)
    harness.run(poll_twice)
    harness.flush()
    for market in ("spot", "contract"):
        archived = harness.rows(
            "SELECT epoch_ms(time), price, qty FROM trades "
            f"WHERE market = '{market}' ORDER BY time, price, qty"
        )
        truth = harness.exchange.trades(
            market, "BTCUSDT", first_time[market], harness.now - 5_000 + 1
        )
        assert archived == sorted((t.time, float(t.price), float(t.qty)) for t in truth)
    assert harness.state.possible_gaps == {}


def test_expired_options_stop_being_polled_and_new_ones_are_picked_up(tmp_path: Path) -> None:
    harness = Harness(tmp_path, depth={"every": "1s", "markets": ["option"], "limit": 5})
    seen: dict[str, set[str]] = {}

    async def scenario(ctx: jobs.JobContext) -> None:
        job = ctx.settings.jobs["depth"]
        before = set(ctx.symbols(job, "option"))
        await jobs.run_job(ctx, "depth")
        first_expiry = min(ctx.state.listing.expiries[s] for s in before)
        harness.now = first_expiry + 1
        during = set(ctx.symbols(job, "option"))  # dropped at expiry, before any refresh
        await jobs.run_job(ctx, "instruments")  # the scheduled refresh, no restart
        after = set(ctx.symbols(job, "option"))
        (report,) = await jobs.run_job(ctx, "depth")
        assert report.errors == []
        assert report.symbols == len(after)
        seen.update(before=before, during=during, after=after)

    harness.run(scenario)
    harness.flush()
    expired = seen["before"] - seen["during"]
    assert expired
    assert not expired & seen["after"]
    assert seen["after"] - seen["before"], "the next expiry should be listed"
    archived = {s for (s,) in harness.rows("SELECT DISTINCT symbol FROM depth")}
    assert expired <= archived, "an expired option's rows stay in the archive"


def test_trades_start_id_pages_forward_from_that_id(tmp_path: Path) -> None:
    harness = Harness(
        tmp_path,
        trades={"every": "1s", "markets": ["contract"], "symbols": ["ETHUSDT"], "limit": 100},
    )
    start_id = harness.exchange.recent_trades("contract", "ETHUSDT", 1)[0].id - 250
    harness.settings = fast_settings(
        "http://sim.test",
        tmp_path,
        trades={
            "every": "1s",
            "markets": ["contract"],
            "symbols": ["ETHUSDT"],
            "limit": 100,
            "start_id": start_id,
        },
    )

    async def scenario(ctx: jobs.JobContext) -> None:
        await jobs.run_job(ctx, "trades")

    harness.run(scenario)
    harness.flush()
    ((first, last, n),) = harness.rows("SELECT min(trade_id), max(trade_id), count(*) FROM trades")
    assert (first, last, n) == (start_id, start_id + 250, 251)

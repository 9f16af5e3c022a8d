"""backfill: fills holes and ranges from the exchange, and a second run fetches nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector import datasets
from collector.collect.backfill import Backfill
from collector.exchange.client import ExchangeClock, JexClient
from collector.read import catalog
from collector.sim import SimExchange, SimServer, create_app
from collector.storage.writer import ArchiveWriter
from tests.conftest import unpaced_budget

NOW = 1_764_003_600_000 + 17 * 60_000 + 4_321
HOUR = 3_600_000


def exchange() -> SimExchange:
    return SimExchange(seed=4, clock=lambda: NOW, history_days=2)


def run(data_dir: Path, scenario: Callable[[Backfill], Awaitable[None]]) -> Backfill:
    sim = exchange()
    holder: dict[str, Backfill] = {}

    async def go() -> None:
        transport = httpx.ASGITransport(app=create_app(sim))
        async with JexClient(
            "http://sim",
            api_key="k",
            transport=transport,
            clock=ExchangeClock(local_ms=lambda: NOW),
            budget=unpaced_budget(),
        ) as client:
            filler = Backfill(client, ArchiveWriter(data_dir), data_dir)
            await scenario(filler)
            filler.flush()
            holder["filler"] = filler

    asyncio.run(go())
    return holder["filler"]


def archive_trades(data_dir: Path, trades: list[Any], market: str, symbol: str) -> None:
    writer = ArchiveWriter(data_dir)
    writer.add(
        "trades",
        pa.table(
            {
                "market": [market] * len(trades),
                "symbol": [symbol] * len(trades),
                "trade_id": [t.id for t in trades],
                "time": [t.time for t in trades],
                "price": [float(t.price) for t in trades],
                "qty": [float(t.qty) for t in trades],
                "is_buyer_maker": [t.buyer_maker for t in trades],
                "received_at": [NOW] * len(trades),
            },
            schema=datasets.get("trades").schema,
        ),
    )
    assert writer.flush().errors == []


def rows(data_dir: Path, sql: str) -> list[tuple[Any, ...]]:
    table = catalog.query(data_dir, sql)
    return list(zip(*[c.to_pylist() for c in table.columns], strict=True))


def test_trades_holes_and_the_range_before_are_filled_and_a_rerun_fetches_nothing(
    tmp_path: Path,
) -> None:
    # The archive runs up to five minutes ago: a daemon is collecting this symbol.
    truth = exchange().trades("spot", "ETHUSDT", NOW - HOUR, NOW - 5 * 60_000)
    kept = truth[len(truth) // 2 :: 1]
    kept = [t for i, t in enumerate(kept) if not 100 <= i < 400]  # a hole of 300 ids
    archive_trades(tmp_path, kept, "spot", "ETHUSDT")
    start = truth[0].time

    async def fill(filler: Backfill) -> None:
        await filler.trades("spot", "ETHUSDT", start, NOW)

    first = run(tmp_path, fill)
    archived = rows(tmp_path, "SELECT trade_id, price FROM trades ORDER BY trade_id")
    expected = [(t.id, float(t.price)) for t in truth if t.id <= kept[-1].id]
    assert archived == expected, "backfill stops at the live edge"
    assert first.result.rows == len(expected) - len(kept)
    second = run(tmp_path, fill)
    # One probe of the trade just before `start` confirms where the range begins.
    assert (second.result.rows, second.result.pages) == (0, 1)


def test_trades_on_an_empty_archive_start_exactly_at_start(tmp_path: Path) -> None:
    truth = exchange().trades("contract", "BTCUSDT", NOW - 20 * 60_000, NOW + 1)

    async def fill(filler: Backfill) -> None:
        await filler.trades("contract", "BTCUSDT", truth[0].time, NOW + 1)

    run(tmp_path, fill)
    archived = [r[0] for r in rows(tmp_path, "SELECT trade_id FROM trades ORDER BY 1")]
    assert archived == [t.id for t in truth]


def test_klines_missing_runs_are_fetched_once(tmp_path: Path) -> None:
    start, end = NOW - 6 * HOUR, NOW - HOUR

    async def fill(filler: Backfill) -> None:
        runs = filler.missing_klines("option", exchange().symbols("option")[0], "1m", start, end)
        await filler.klines("option", exchange().symbols("option")[0], "1m", runs)

    first = run(tmp_path, fill)
    assert first.result.rows == 300 and first.result.pages == 1
    ((n, lo, hi),) = rows(
        tmp_path,
        "SELECT count(DISTINCT open_time), epoch_ms(min(open_time)), "
        "epoch_ms(max(open_time)) FROM klines",
    )
    assert n == 300 and lo == start - start % 60_000 + (60_000 if start % 60_000 else 0)
    assert hi < end
    second = run(tmp_path, fill)
    assert (second.result.rows, second.result.pages) == (0, 0)


def test_funding_history_in_a_range(tmp_path: Path) -> None:
    start, end = NOW - 5 * HOUR, NOW - 2 * HOUR

    async def fill(filler: Backfill) -> None:
        await filler.fill("funding_rate", "contract", "ETHUSDT", None, start, end)

    run(tmp_path, fill)
    truth = exchange().funding_rates("ETHUSDT", start, end)
    assert [r[0] for r in rows(tmp_path, "SELECT id FROM funding_rate ORDER BY 1")] == [
        f.id for f in truth
    ]
    assert run(tmp_path, fill).result.rows == 0


def test_backfill_command_refuses_bad_times() -> None:
    from click.testing import CliRunner

    from collector.cli import main

    runner = CliRunner()
    bad = runner.invoke(main, ["backfill", "--dataset", "trades", "--start", "yesterday"])
    assert bad.exit_code == 2 and "--start" in bad.output
    backwards = runner.invoke(
        main, ["backfill", "--dataset", "klines", "--start", "2026-11-24", "--end", "2026-11-23"]
    )
    assert backwards.exit_code == 2 and "after --start" in backwards.output


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    # Spans end at least half an hour before now: no live edge is in the way.
    first=st.integers(0, 200),
    length=st.integers(1, 130),
    second_first=st.integers(0, 200),
    second_length=st.integers(1, 130),
)
def test_backfills_over_any_spans_never_duplicate_and_repeat_to_a_no_op(
    tmp_path_factory: Any, first: int, length: int, second_first: int, second_length: int
) -> None:
    """Two overlapping backfills (trades and 1m klines), then both again: the archive holds
    exactly the union of the spans, and the repeats change nothing."""
    data_dir = tmp_path_factory.mktemp("spans")
    base = NOW - 6 * HOUR
    spans = [
        (base + first * 60_000, base + (first + length) * 60_000),
        (base + second_first * 60_000, base + (second_first + second_length) * 60_000),
    ]

    async def fill(filler: Backfill) -> None:
        for start, end in spans:
            runs = filler.missing_klines("spot", "JEXUSDT", "1m", start, end)
            await filler.klines("spot", "JEXUSDT", "1m", runs)
            await filler.trades("spot", "JEXUSDT", start, end)

    run(data_dir, fill)
    sim = exchange()
    want_klines = sorted(
        {k.open_time for s, e in spans for k in sim.klines("spot", "JEXUSDT", "1m", s, e)}
    )
    want_trades = sorted({t.id for s, e in spans for t in sim.trades("spot", "JEXUSDT", s, e)})
    got_klines = [r[0] for r in rows(data_dir, "SELECT epoch_ms(open_time) FROM klines ORDER BY 1")]
    got_trades = [r[0] for r in rows(data_dir, "SELECT trade_id FROM trades ORDER BY 1")]
    assert got_klines == want_klines
    assert got_trades == want_trades
    again = run(data_dir, fill)
    assert again.result.rows == 0
    assert [r[0] for r in rows(data_dir, "SELECT trade_id FROM trades ORDER BY 1")] == got_trades


def test_a_stale_archive_has_no_edge_and_a_later_range_can_be_filled(tmp_path: Path) -> None:
    sim = exchange()
    early = sim.trades("contract", "ETHUSDT", NOW - 5 * HOUR, NOW - 4 * HOUR)
    archive_trades(tmp_path, early, "contract", "ETHUSDT")
    later = (NOW - 2 * HOUR, NOW - HOUR)

    async def fill(filler: Backfill) -> None:
        await filler.trades("contract", "ETHUSDT", *later)

    run(tmp_path, fill)
    want = sorted({t.id for t in early} | {t.id for t in sim.trades("contract", "ETHUSDT", *later)})
    assert [r[0] for r in rows(tmp_path, "SELECT trade_id FROM trades ORDER BY 1")] == want


def test_a_backfill_next_to_a_running_daemon_shares_the_weight_without_429s(
    tmp_path: Path,
) -> None:
    """Two processes' worth of clients on one IP, a tight limit: both read the exchange's
    count from the headers, so neither walks into a 429, let alone a ban."""
    import datetime as dt

    from collector.collect.backfill_run import run_backfill
    from collector.collect.daemon import Daemon
    from collector.sim import SimServer
    from tests.conftest import fast_settings

    sim = SimExchange(seed=6, history_days=1)
    with SimServer(sim, weight_limit=300) as server:
        settings = fast_settings(server.base_url, tmp_path, trades={"every": "1s"})
        start_ms = sim.now_ms() - 3 * HOUR

        async def both() -> None:
            daemon = Daemon(settings)
            running = asyncio.create_task(daemon.run(12, handle_signals=False))
            await asyncio.sleep(2)
            await run_backfill(
                settings,
                "trades",
                markets=("spot",),
                symbols=("BTCUSDT",),
                intervals=(),
                start_ms=start_ms,
                end_ms=start_ms + HOUR,
            )
            await running

        started = dt.datetime.now(dt.UTC)
        asyncio.run(both())
        minutes = max(1.0, (dt.datetime.now(dt.UTC) - started).total_seconds() / 60)
        state = httpx.get(f"{server.base_url}/_sim/state").json()["clients"]["127.0.0.1"]
    assert state["bans"] == 0
    assert state["429s"] <= minutes
    backfilled = rows(
        tmp_path, f"SELECT count(*) FROM trades WHERE epoch_ms(time) < {start_ms + HOUR}"
    )
    assert backfilled == [(len(sim.trades("spot", "BTCUSDT", start_ms, start_ms + HOUR)),)]


def test_backfill_command_names_the_listed_symbols_for_an_unknown_one(tmp_path: Path) -> None:
    """Issue 16: `--symbol BTCUSD` used to backfill nothing without a word."""
    from click.testing import CliRunner

    from collector.cli import main

    with SimServer(SimExchange(seed=3, history_days=1)) as server:
        result = CliRunner().invoke(
            main,
            [
                "backfill",
                *("--dataset", "trades", "--market", "spot", "--symbol", "BTCUSD"),
                *("--start", "2026-11-24", "--base-url", server.base_url),
                *("--data-dir", str(tmp_path)),
            ],
        )
    assert result.exit_code == 2, result.output
    assert "'BTCUSD' matches no symbol the exchange lists in spot" in result.output
    assert "did you mean BTCUSDT" in result.output

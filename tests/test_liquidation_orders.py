"""The 13th dataset, liquidation_orders: a registry entry, a parser, the simulator's data and
a schedule line; the generic time-paged job, the plan, verify, the coverage report and the
loaders take it from the registry."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

import collector
from collector import datasets
from collector.check.verify import verify
from collector.collect import jobs
from collector.collect.backfill import Backfill
from collector.exchange import parsers
from collector.plan.schedule import make_plan
from collector.sim.views import LIQUIDATION_EVERY_MS, MarketViews
from tests.conftest import fast_settings
from tests.test_jobs import Harness

HOUR = 3_600_000


def order(**fields: Any) -> dict[str, Any]:
    record = {
        "symbol": "BTCUSDT",
        "orderId": "9000123",
        "updateTime": 1_764_000_000_000,
        "side": "SELL",
        "origQty": "-2.000",
        "executedQty": "2.000",
        "price": "9800.5",
        "executedPrice": "9800.5",
        "status": "FILLED",
        "time": 1_764_000_000_000,
        "reject": False,
        "type": "FLAT",
    }
    record.update(fields)
    return record


def test_the_parser_keeps_good_orders_and_sets_aside_implausible_ones() -> None:
    payload = [
        order(),
        order(orderId="9000124", side="buy"),  # not a documented side
        order(orderId="\x1b[2J"),  # not an order id
        order(orderId="9000125", price="0"),
        order(orderId="9000126", status="<b>"),
        order(orderId="9000127", reject="yes"),
        order(orderId="9000128", side="BUY", extra=1),
    ]
    parsed = parsers.liquidation_orders(
        payload, market="contract", symbol="BTCUSDT", received_at=1_764_000_001_000
    )
    assert parsed.table["order_id"].to_pylist() == ["9000123", "9000128"]
    assert parsed.table["orig_qty"].to_pylist() == [2.0, 2.0]  # contract sells are negative
    assert len(parsed.rejected) == 5
    assert ("liquidationOrder", "extra") in parsed.unknown_fields
    assert parsed.table.schema == datasets.get("liquidation_orders").schema


def test_the_generic_job_pages_by_time_and_keeps_every_order_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages of 7 orders where every fifth liquidation has two orders in one millisecond:
    a full page's last millisecond waits for the next page, so no order is lost or
    archived twice, across rounds and across a restart (cursors from the archive)."""
    spec = datasets.get("liquidation_orders")
    monkeypatch.setitem(
        datasets.DATASETS, "liquidation_orders", dataclasses.replace(spec, page_size=7)
    )
    harness = Harness(tmp_path)

    async def rounds(ctx: jobs.JobContext) -> None:
        for _ in range(3):
            await jobs.run_job(ctx, "liquidation_orders")
            harness.now += 12 * HOUR  # about 19 liquidations, 4 of them doubled

    harness.run(rounds)
    harness.flush()
    harness.state = jobs.CollectorState()  # a restart: the cursors come from the archive
    jobs.load_cursors(str(tmp_path), harness.state)
    assert harness.state.cursors[("liquidation_orders", "contract", "BTCUSDT")] > 0
    harness.run(rounds)
    harness.flush()

    views = MarketViews(harness.exchange, weight_limit=1200, raw_limit_5m=10_000)
    for symbol in ("BTCUSDT", "ETHUSDT"):
        archived = harness.rows(
            "SELECT order_id, epoch_ms(time) FROM liquidation_orders "
            f"WHERE symbol = '{symbol}' ORDER BY 2, 1"
        )
        assert len(archived) == len(set(archived)), "an order archived twice"
        first = archived[0][1]
        made = views.liquidation_orders(
            {"symbol": symbol, "startTime": str(first), "endTime": str(harness.now - 12 * HOUR)}
        )
        assert archived == [(o["orderId"], o["time"]) for o in made]
        assert len(archived) > 60 * HOUR // LIQUIDATION_EVERY_MS  # 2.5 days of them
    found = [f for f in verify(tmp_path) if f.dataset == "liquidation_orders"]
    assert found and all(f.duplicates == 0 and f.holes == 0 for f in found)


def test_without_an_api_key_the_plan_leaves_it_out_and_says_why(tmp_path: Path) -> None:
    settings = fast_settings("http://sim.test", tmp_path, api_key=None)
    plan = make_plan(settings, lambda job, market: 2, has_api_key=False, weight_limit=1200)
    assert "liquidation_orders" not in plan.intervals()
    assert any("liquidation_orders: not collected without an API key" in n for n in plan.notes)
    with_key = make_plan(settings, lambda job, market: 2, has_api_key=True, weight_limit=1200)
    load = next(x for x in with_key.loads if x.job == "liquidation_orders")
    assert load.paging and load.weight == 2 * 5  # two contracts, weight 5 each


def test_its_loader_comes_from_the_registry(sim_archive: Path) -> None:
    frame = collector.load_liquidation_orders(data_dir=sim_archive)
    assert len(frame) > 0 and frame.index.name == "time"
    assert set(frame["market"]) == {"contract"}


def test_backfill_fills_a_range_by_time_and_keeps_each_order_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`backfill --dataset liquidation_orders` (the registry's time-paged rule): pages of 7
    by startTime over a range that overlaps what the job archived; every order once."""
    spec = datasets.get("liquidation_orders")
    monkeypatch.setitem(
        datasets.DATASETS, "liquidation_orders", dataclasses.replace(spec, page_size=7)
    )
    harness = Harness(tmp_path)
    start = harness.now - 36 * HOUR

    async def scenario(ctx: jobs.JobContext) -> None:
        await jobs.run_job(ctx, "liquidation_orders")  # the newest 7 of each contract
        harness.flush()
        filler = Backfill(ctx.client, harness.writer, tmp_path)
        await filler.fill("liquidation_orders", "contract", "BTCUSDT", None, start, harness.now)
        filler.flush()
        assert filler.result.rows > 36 * HOUR // LIQUIDATION_EVERY_MS - 7

    harness.run(scenario)
    archived = harness.rows(
        "SELECT order_id, epoch_ms(time) FROM liquidation_orders "
        f"WHERE symbol = 'BTCUSDT' AND epoch_ms(time) >= {start} ORDER BY 2, 1"
    )
    assert len(archived) == len(set(archived))
    views = MarketViews(harness.exchange, weight_limit=1200, raw_limit_5m=10_000)
    made = views.liquidation_orders(
        {"symbol": "BTCUSDT", "startTime": str(start), "endTime": str(harness.now)}
    )
    assert archived == [(o["orderId"], o["time"]) for o in made]

"""Paging edge cases against a scripted exchange: page sizes, empty pages, equal timestamps,
ids newest first, and jobs run twice over the same span."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector import config
from collector.collect import jobs, paging
from collector.exchange.client import ExchangeClock, JexClient
from collector.exchange.instruments import Listing
from collector.read import catalog
from collector.storage.writer import ArchiveWriter

T0 = 1_764_000_000_000


class ScriptedExchange:
    """historicalTrades over trades 1..n, several sharing each timestamp, newest first."""

    def __init__(self, n: int, same_time: int) -> None:
        self.trades = [
            {
                "id": str(i),
                "price": f"{100 + i % 7}.5",
                "qty": "1.25",
                "time": T0 + (i - 1) // same_time,
                "buyerMaker": i % 2 == 0,
            }
            for i in range(1, n + 1)
        ]
        self.requests: list[dict[str, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        self.requests.append(params)
        limit = int(params.get("limit", 200))
        if "fromId" in params:
            start = max(int(params["fromId"]), 1) - 1
            page = self.trades[start : start + limit]
        else:
            page = self.trades[-limit:]
        return httpx.Response(200, json=list(reversed(page)))


class FakeClock:
    """Time stands still except when the client waits (for the weight budget)."""

    def __init__(self) -> None:
        self.now = T0 + 10**6

    def ms(self) -> int:
        return self.now

    def seconds(self) -> float:
        return self.now / 1000

    async def sleep(self, seconds: float) -> None:
        self.now += int(seconds * 1000) + 1


def run_rounds(
    data_dir: Path,
    exchange: ScriptedExchange,
    page: int,
    rounds: int,
    state: jobs.CollectorState | None = None,
) -> jobs.CollectorState:
    settings = config.from_mapping(
        {"jobs": {"trades": {"every": 1, "markets": ["spot"], "limit": page}}},
        source="<test>",
        environ={"JEX_API_KEY": "k"},
    )
    state = state or jobs.CollectorState(listing=Listing({"spot": ("XUSDT",)}))

    clock = FakeClock()

    async def go() -> None:
        async with JexClient(
            "http://jex.test",
            api_key="k",
            transport=httpx.MockTransport(exchange),
            clock=ExchangeClock(local_ms=clock.ms),
            monotonic=clock.seconds,
            sleep=clock.sleep,
        ) as client:
            ctx = jobs.JobContext(client, ArchiveWriter(data_dir), settings, state)
            for _ in range(rounds):
                await jobs.run_job(ctx, "trades")
            assert ctx.writer.flush().errors == []

    asyncio.run(go())
    return state


def archived_ids(data_dir: Path) -> list[int]:
    table = catalog.query(data_dir, "SELECT trade_id FROM trades ORDER BY trade_id")
    return [int(v) for v in table["trade_id"].to_pylist()]


def test_exactly_one_full_page_then_an_empty_one(tmp_path: Path) -> None:
    exchange = ScriptedExchange(n=1000, same_time=3)
    state = jobs.CollectorState(
        listing=Listing({"spot": ("XUSDT",)}), cursors={("trades", "spot", "XUSDT"): 500}
    )
    run_rounds(tmp_path, exchange, page=500, rounds=1, state=state)
    assert [r["fromId"] for r in exchange.requests] == ["501", "1001"]
    assert archived_ids(tmp_path) == list(range(501, 1001))


def test_an_empty_exchange_and_an_empty_page_store_nothing(tmp_path: Path) -> None:
    exchange = ScriptedExchange(n=0, same_time=1)
    state = run_rounds(tmp_path, exchange, page=500, rounds=2)
    assert catalog.query(tmp_path, "SELECT count(*) AS n FROM trades")["n"].to_pylist() == [0]
    assert ("trades", "spot", "XUSDT") not in state.cursors


def test_a_page_size_of_one_across_equal_timestamps(tmp_path: Path) -> None:
    exchange = ScriptedExchange(n=30, same_time=10)  # ten trades per millisecond
    state = jobs.CollectorState(
        listing=Listing({"spot": ("XUSDT",)}), cursors={("trades", "spot", "XUSDT"): 5}
    )
    run_rounds(tmp_path, exchange, page=1, rounds=2)  # fresh state: newest page first
    run_rounds(tmp_path / "b", exchange, page=1, rounds=1, state=state)
    assert archived_ids(tmp_path / "b") == list(range(6, 26))  # 20 pages in one round
    run_rounds(tmp_path / "b", exchange, page=1, rounds=1, state=state)
    assert archived_ids(tmp_path / "b") == list(range(6, 31))


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n=st.integers(0, 1200),
    page=st.integers(1, 500),
    same_time=st.integers(1, 20),
    start=st.integers(0, 1200),
)
def test_a_job_run_twice_over_the_same_span_changes_nothing(
    tmp_path_factory: Any, n: int, page: int, same_time: int, start: int
) -> None:
    data_dir = tmp_path_factory.mktemp("twice")
    exchange = ScriptedExchange(n=n, same_time=same_time)
    cursor = min(start, n)
    state = jobs.CollectorState(
        listing=Listing({"spot": ("XUSDT",)}), cursors={("trades", "spot", "XUSDT"): cursor}
    )
    rounds = (n - cursor) // (page * jobs.MAX_PAGES_PER_ROUND) + 1
    run_rounds(data_dir, exchange, page=page, rounds=rounds, state=state)
    once = archived_ids(data_dir)
    assert once == list(range(cursor + 1, n + 1))
    run_rounds(data_dir, exchange, page=page, rounds=2, state=state)
    assert archived_ids(data_dir) == once
    # And a restarted process, resuming from the archive, adds nothing either.
    fresh = jobs.CollectorState(listing=Listing({"spot": ("XUSDT",)}))
    jobs.load_cursors(str(data_dir), fresh)
    if once:
        run_rounds(data_dir, exchange, page=page, rounds=1, state=fresh)
        assert archived_ids(data_dir) == once


def test_an_exchange_ignoring_from_id_costs_one_request_a_round(tmp_path: Path) -> None:
    class IgnoresFromId(ScriptedExchange):
        def __call__(self, request: httpx.Request) -> httpx.Response:
            self.requests.append(dict(request.url.params))
            return httpx.Response(200, json=list(reversed(self.trades[-500:])))

    exchange = IgnoresFromId(n=2000, same_time=1)
    state = jobs.CollectorState(
        listing=Listing({"spot": ("XUSDT",)}), cursors={("trades", "spot", "XUSDT"): 1000}
    )
    run_rounds(tmp_path, exchange, page=500, rounds=1, state=state)
    # The newest page is ahead of the cursor: it is kept (a hole is logged), then the
    # repeat of the same page brings nothing new and the round ends.
    assert len(exchange.requests) == 2
    assert archived_ids(tmp_path) == list(range(1501, 2001))


# -- pages with records that could not be read (collector.collect.paging) ----------------------


def test_first_unread_is_the_first_record_that_could_not_be_read() -> None:
    assert paging.first_unread([1, 2, 4, 5], [], after=0) is None
    assert paging.first_unread([1, 2, 4, 5], [3], after=0) == 3
    assert paging.first_unread([1, 2, 4, 5], [None], after=0) == 3  # the first gap
    assert paging.first_unread([1, 2, 3], [None], after=0) == 4  # past the last row read
    assert paging.first_unread([2, 3], [None], after=0) == 1
    assert paging.first_unread([2, 3], [1], after=0) == 1
    assert paging.first_unread([5, 6], [3], after=4) is None, "below the cursor: archived"
    assert paging.first_unread([10, 11, 13], [None], after=None) == 12  # first contact
    assert paging.first_unread([60, 120, 240], [None], after=0, step=60) == 180
    assert paging.last_unread_below([1, 2, 4, 5], [3], before=6) == 3
    assert paging.last_unread_below([1, 2, 4, 5], [None], before=6) == 3


@given(
    n=st.integers(1, 60),
    after=st.integers(0, 60),
    unread=st.sets(st.integers(1, 60)),
    hidden=st.sets(st.integers(1, 60)),
)
def test_a_cursor_never_moves_past_a_record_that_could_not_be_read(
    n: int, after: int, unread: set[int], hidden: set[int]
) -> None:
    """Ids 1..n; the page asked from ``after``; ``unread`` records were set aside (their
    id readable unless in ``hidden``). Keeping the rows below the bound never leaves a
    hole behind the new cursor, and keeps everything read when nothing is missing."""
    page = [i for i in range(after + 1, n + 1)]
    rejected = [i for i in page if i in unread]
    keys = [i for i in page if i not in unread]
    bound = paging.first_unread(keys, [None if i in hidden else i for i in rejected], after)
    kept = [k for k in keys if bound is None or k < bound]
    assert kept == list(range(after + 1, after + 1 + len(kept))), "contiguous from the cursor"
    if not rejected:
        assert bound is None and kept == keys
    elif not set(rejected) & hidden:
        assert bound == min(rejected), "nothing readable is given up"

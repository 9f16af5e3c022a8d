"""Jobs against bad responses: records set aside never let a cursor skip them, hostile or
unlisted symbols never reach the archive, the quarantine and the log say what happened."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from collector.collect import jobs, paging
from collector.collect.quarantine import DIR_NAME, Quarantine
from collector.exchange.client import ExchangeClock, JexClient
from collector.read import catalog
from collector.sim import Faults, SimExchange, create_app
from collector.sim.mutations import HOSTILE_SYMBOLS, UNLISTED_SYMBOLS
from collector.storage.writer import ArchiveWriter
from tests.conftest import fast_settings

START = 1_764_000_000_000  # 2025-11-24T16:00:00Z
ONE = {"symbols": ["BTCUSDT"]}

Corrupt = Callable[[httpx.Request, Any], Any]


class Corrupting(httpx.AsyncBaseTransport):
    """The simulator's app, with ``corrupt(request, payload)`` applied to each JSON answer."""

    def __init__(self, app: Any, corrupt: Corrupt | None) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.corrupt = corrupt

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        body = await response.aread()
        if self.corrupt is None or response.status_code != 200:
            return httpx.Response(response.status_code, headers=response.headers, content=body)
        payload = self.corrupt(request, json.loads(body))
        return httpx.Response(200, json=payload)


class Rig:
    """Simulator and jobs on one fake clock, in one event loop; a quarantine in the archive."""

    def __init__(self, data_dir: Path, *, corrupt: Corrupt | None = None, **jobs_: Any) -> None:
        self.now = START
        self.exchange = SimExchange(seed=3, clock=lambda: self.now, history_days=1)
        self.faults = Faults()
        self.transport = Corrupting(create_app(self.exchange, faults=self.faults), corrupt)
        self.settings = fast_settings("http://sim.test", data_dir, **jobs_)
        self.data_dir = data_dir
        self.writer = ArchiveWriter(data_dir)
        self.quarantine = Quarantine(data_dir, clock_ms=lambda: self.now)
        self.state = jobs.CollectorState()

    async def _sleep(self, seconds: float) -> None:
        self.now += int(seconds * 1000) + 1

    def rounds(self, names: list[str], count: int = 1, every_ms: int = 5_000) -> None:
        async def go() -> None:
            async with JexClient(
                "http://sim.test",
                api_key="test-key",
                transport=self.transport,
                clock=ExchangeClock(local_ms=lambda: self.now),
                sleep=self._sleep,
                quarantine=self.quarantine,
            ) as client:
                ctx = jobs.JobContext(
                    client, self.writer, self.settings, self.state, quarantine=self.quarantine
                )
                if not self.state.listing.symbols:
                    await jobs.refresh_instruments(ctx)
                for _ in range(count):
                    for name in names:
                        await jobs.run_job(ctx, name)
                    self.now += every_ms

        asyncio.run(go())
        assert self.writer.flush().errors == []

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        table = catalog.query(self.data_dir, sql)
        return list(zip(*[c.to_pylist() for c in table.columns], strict=True))

    def quarantined(self) -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in (self.data_dir / DIR_NAME).rglob("*.json")]


def break_record(path_end: str, matches: Callable[[Any], bool], times: int | None) -> Corrupt:
    """Cut the matching record of ``path_end`` responses short, the first ``times`` times
    it is served (None: always)."""
    served = [0]

    def corrupt(request: httpx.Request, payload: Any) -> Any:
        if not request.url.path.endswith(path_end) or not isinstance(payload, list):
            return payload
        for index, record in enumerate(payload):
            if matches(record) and (times is None or served[0] < times):
                served[0] += 1
                if isinstance(record, dict):
                    payload[index] = {k: v for k, v in record.items() if k in ("id", "symbol")}
                else:
                    payload[index] = record[:3]
        return payload

    return corrupt


# -- a record set aside holds the cursor ---------------------------------------------------------


def test_a_trade_set_aside_is_fetched_again_and_nothing_after_it_is_lost(tmp_path: Path) -> None:
    probe = SimExchange(seed=3, clock=lambda: START, history_days=1)
    newest = probe.recent_trades("spot", "BTCUSDT", 1)[0].id
    start, broken = newest - 900, newest - 600
    rig = Rig(
        tmp_path,
        corrupt=break_record("historicalTrades", lambda r: r.get("id") == str(broken), 2),
        trades={"every": "1s", "markets": ["spot"], **ONE},
    )
    rig.state.cursors[("trades", "spot", "BTCUSDT")] = start
    rig.rounds(["trades"], count=4)
    ((first, last, count, distinct),) = rig.rows(
        "SELECT min(trade_id), max(trade_id), count(*), count(DISTINCT trade_id) FROM trades"
    )
    assert first == start + 1 and last >= newest and count == distinct == last - first + 1
    truth = rig.exchange.trades_from_id("spot", "BTCUSDT", first, count)
    archived = rig.rows("SELECT trade_id, epoch_ms(time), is_buyer_maker FROM trades ORDER BY 1")
    assert archived == [(t.id, t.time, t.buyer_maker) for t in truth]
    rejected = [d for d in rig.quarantined() if d["kind"] == "rejected_records"]
    assert len(rejected) == 2 and all(
        d["rejected"][0]["record"]["id"] == str(broken) for d in rejected
    )


def test_a_first_start_backfill_asks_again_for_a_page_with_a_trade_set_aside(
    tmp_path: Path,
) -> None:
    probe = SimExchange(seed=3, clock=lambda: START, history_days=1)
    newest = probe.recent_trades("spot", "BTCUSDT", 1)[0].id
    broken = newest - 700  # in the first page backwards from the newest 500
    rig = Rig(
        tmp_path,
        corrupt=break_record("historicalTrades", lambda r: r.get("id") == str(broken), 2),
        trades={"every": "1s", "markets": ["spot"], "backfill": "1h", **ONE},
    )
    rig.rounds(["trades"])
    ((first, last, count, distinct),) = rig.rows(
        "SELECT min(trade_id), max(trade_id), count(*), count(DISTINCT trade_id) FROM trades"
    )
    assert first < broken - 500 and last >= newest
    assert count == distinct == last - first + 1


@pytest.mark.parametrize(
    ("dataset", "path_end", "key_column", "pick"),
    [
        ("funding_rate", "historyRate", "id", 30),
        ("protection_fund", "protectionFund", "id", 150),
        ("klines", "klines", "epoch_ms(open_time)", 25),
    ],
)
def test_funding_fund_and_klines_never_page_past_a_record_set_aside(
    tmp_path: Path, dataset: str, path_end: str, key_column: str, pick: int
) -> None:
    probe = SimExchange(seed=3, clock=lambda: START, history_days=1)
    if dataset == "klines":
        keys = [
            k.open_time for k in probe.klines("spot", "BTCUSDT", "1m", START - 3_600_000, START)
        ]
        broken = keys[-60:][pick]
    else:
        events = probe.funding_rates if dataset == "funding_rate" else probe.protection_fund
        broken = events("BTCUSDT", 0, START)[pick].id
    rig = Rig(
        tmp_path,
        corrupt=break_record(
            path_end,
            lambda r: (r[0] if isinstance(r, list) else r.get("id")) == broken,
            3,
        ),
        klines={"every": "2s", "markets": ["spot"], "intervals": ["1m"], "limit": 60, **ONE},
        funding_rate={"every": "3s", "markets": ["contract"], **ONE},
        protection_fund={"every": "3s", "markets": ["contract"], **ONE},
    )
    rig.rounds([dataset], count=5, every_ms=1_000)
    step = 60_000 if dataset == "klines" else 1
    ((first, last, count, distinct),) = rig.rows(
        f"SELECT min({key_column}), max({key_column}), count(*), count(DISTINCT {key_column}) "
        f"FROM {dataset}"
    )
    assert first < broken < last, "the broken record lies inside what was archived"
    assert count == distinct == (last - first) // step + 1, "no hole, no duplicate"
    assert len([d for d in rig.quarantined() if d["kind"] == "rejected_records"]) == 3


def test_a_record_that_stays_unreadable_is_skipped_after_some_rounds_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    probe = SimExchange(seed=3, clock=lambda: START, history_days=1)
    broken = probe.funding_rates("BTCUSDT", 0, START)[30].id
    rig = Rig(
        tmp_path,
        corrupt=break_record("historyRate", lambda r: r.get("id") == broken, None),
        funding_rate={"every": "3s", "markets": ["contract"], **ONE},
    )
    with caplog.at_level(logging.WARNING):
        rig.rounds(["funding_rate"], count=paging.UNREADABLE_ROUNDS + 3, every_ms=1_000)
    ids = [i for (i,) in rig.rows("SELECT id FROM funding_rate ORDER BY id")]
    truth = [e.id for e in rig.exchange.funding_rates("BTCUSDT", 0, rig.now)]
    assert ids == [i for i in truth if i != broken], "only the broken record is missing"
    skipped = [r for r in caplog.records if "could not be read in" in r.getMessage()]
    assert len(skipped) == 1 and skipped[0].levelno == logging.ERROR
    assert str(broken) in skipped[0].getMessage()


# -- hostile and unlisted symbols ------------------------------------------------------------------


LIST_TICKERS = ["ticker_24hr", "ticker_price", "book_ticker", "indices_price", "contract_info"]


@pytest.mark.parametrize(("kind", "lost_per_poll"), [("bad_symbol", 1), ("unknown_symbol", 0)])
def test_hostile_and_unlisted_symbols_are_not_kept_and_the_good_records_are(
    tmp_path: Path, kind: str, lost_per_poll: int
) -> None:
    rig = Rig(tmp_path)
    rig.rounds([])  # the instrument lists, read cleanly
    listed = rig.state.listing.symbols
    setattr(rig.faults, kind, 1.0)
    rig.rounds([*LIST_TICKERS, "funding_rate", "protection_fund"], count=3)
    for dataset in LIST_TICKERS:
        for market, polls, counts in rig.rows(
            f"SELECT market, count(DISTINCT received_at), list(DISTINCT n) FROM ("
            f"  SELECT market, received_at, count(*) AS n FROM {dataset} GROUP BY ALL"
            ") GROUP BY ALL"
        ):
            assert polls == 3 and counts == [len(listed[market]) - lost_per_poll], dataset
    forbidden = {s for s in HOSTILE_SYMBOLS if isinstance(s, str)} | set(UNLISTED_SYMBOLS)
    every_listed = {s for names in listed.values() for s in names}
    for path in tmp_path.rglob("*.parquet"):
        assert not any(s and s in str(path) for s in forbidden)
        table = pq.read_table(path)
        assert set(table["symbol"].to_pylist()) <= every_listed, path
    for dataset in ("funding_rate", "protection_fund"):
        for symbol, first, last, count in rig.rows(
            f"SELECT symbol, min(id), max(id), count(DISTINCT id) FROM {dataset} GROUP BY 1"
        ):
            assert count == last - first + 1 and first == 1, f"{dataset} {symbol}"
    if kind == "bad_symbol":
        documents = rig.quarantined()
        assert {d["endpoint"] for d in documents} >= {"ticker/price", "historyRate"}
        assert all(d["kind"] == "rejected_records" for d in documents)


def test_a_refresh_with_a_hostile_symbol_drops_no_listed_symbol(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig(tmp_path)
    rig.rounds([])
    before = rig.state.listing.symbols
    rig.faults.bad_symbol = 1.0
    with caplog.at_level(logging.INFO):
        rig.rounds(["instruments"])
    assert {m: set(names) for m, names in rig.state.listing.symbols.items()} == {
        m: set(names) for m, names in before.items()
    }
    assert "no longer listed" not in caplog.text
    ((count,),) = rig.rows("SELECT count(*) FROM instruments")
    assert count == sum(len(names) for names in before.values()) - 1


# -- undocumented fields and payloads of the wrong shape ----------------------------------------


def test_undocumented_fields_are_logged_once_per_endpoint_and_field(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig(tmp_path)
    rig.rounds([])
    rig.faults.unknown_field = 1.0
    with caplog.at_level(logging.INFO):
        rig.rounds(["depth", "ticker_price"], count=3)
    noted = [r.getMessage() for r in caplog.records if "undocumented field" in r.getMessage()]
    assert noted and len(noted) == len(set(noted))
    assert {m.split(" in ")[-1] for m in noted} == {"depth; ignored", "ticker/price; ignored"}
    ((depth_polls,),) = rig.rows("SELECT count(DISTINCT received_at) FROM depth")
    assert depth_polls == 3
    assert rig.quarantined() == [], "an extra field alone is no reason to quarantine"


def test_a_payload_of_the_wrong_shape_is_quarantined_and_the_other_symbols_go_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def corrupt(request: httpx.Request, payload: Any) -> Any:
        if request.url.path.endswith("depth") and request.url.params["symbol"] == "BTCUSDT":
            return {k: v for k, v in payload.items() if k != "lastUpdateId"}
        return payload

    rig = Rig(tmp_path, corrupt=corrupt, depth={"every": "2s", "markets": ["spot"], "limit": 5})
    with caplog.at_level(logging.WARNING):
        rig.rounds(["depth"])
    symbols = {s for (s,) in rig.rows("SELECT DISTINCT symbol FROM depth")}
    assert symbols == set(rig.state.listing.symbols["spot"]) - {"BTCUSDT"}
    (document,) = rig.quarantined()
    assert document["kind"] == "wrong_shape" and "lastUpdateId" in document["error"]
    assert document["params"]["symbol"] == "BTCUSDT" and "lastUpdateId" not in document["body"]
    assert not [r for r in caplog.records if r.exc_info], "no traceback: a handled fault"

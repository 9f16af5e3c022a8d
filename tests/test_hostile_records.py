"""Hostile records (issue 14, cases 4, 5 and 10): ids far outside their page or their type,
times outside the window around the exchange clock, implausible prices, quantities and
instrument texts are set aside and quarantined; the page's good records are kept and every
series goes on.

Each case is tested at the parser or intake level, and once against the daemon talking to a
real HTTP server on 127.0.0.1 (:class:`tests.hostile.HostileServer`) in front of the
simulator, answering with crafted records.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from collector.collect import intake
from collector.collect.daemon import Daemon
from collector.collect.quarantine import DIR_NAME
from collector.exchange import instruments, parsers
from collector.read import catalog
from collector.sim import SimExchange, SimServer
from tests.conftest import fast_settings
from tests.hostile import HostileServer
from tests.test_intake import ONE, START, Rig

#: (glob of path and query, change of the decoded JSON) for tests.hostile.HostileServer.
Rules = list[tuple[str, Callable[[Any], Any]]]

RUN_SECONDS = 9.0
#: Trades every 300 ms: a record set aside holds its series for paging.UNREADABLE_ROUNDS
#: rounds, which must pass well within the run.
FAST_TRADES = {"every": "300ms", "markets": ["spot"]}


@pytest.fixture
def upstream(sim_exchange: SimExchange) -> Iterator[SimServer]:
    """A simulator whose weight limit does not pace these short runs."""
    with SimServer(sim_exchange, weight_limit=100_000) as server:
        yield server


def run_daemon(upstream: SimServer, rules: Rules, data_dir: Path, **jobs: Any) -> None:
    """The daemon for :data:`RUN_SECONDS` against a hostile server in front of ``upstream``
    that changes the JSON of the requests matching each rule."""
    with HostileServer(upstream.base_url) as hostile:
        for pattern, change in rules:
            hostile.mutate(pattern, change)
        settings = fast_settings(hostile.base_url, data_dir, **jobs)
        asyncio.run(Daemon(settings).run(RUN_SECONDS, handle_signals=False))


def trades_of(symbol: str) -> str:
    return f"/api/v1/spot/historicalTrades?*symbol={symbol}&*"


def rows(data_dir: Path, sql: str) -> list[tuple[Any, ...]]:
    table = catalog.query(data_dir, sql)
    return list(zip(*[c.to_pylist() for c in table.columns], strict=True))


def set_aside(data_dir: Path) -> list[tuple[Any, str]]:
    """(record, reason) of every record in the quarantine's rejected_records files."""
    found = []
    for path in (data_dir / DIR_NAME).rglob("*.json"):
        document = json.loads(path.read_text())
        if document["kind"] == "rejected_records":
            found += [(r["record"], r["reason"]) for r in document["rejected"]]
    return found


def assert_partitions_plausible(data_dir: Path) -> None:
    """No partition before 2017 or after tomorrow, in any dataset."""
    tomorrow = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
    dates = {p.name for p in data_dir.glob("*/market=*/date=*")}
    assert dates, "nothing was archived"
    for name in dates:
        day = dt.date.fromisoformat(name.removeprefix("date="))
        assert dt.date(2017, 1, 1) <= day <= tomorrow, name


def assert_other_jobs_collected(data_dir: Path) -> None:
    for dataset in ("depth", "ticker_price", "klines"):
        markets = {m for (m,) in rows(data_dir, f"SELECT DISTINCT market FROM {dataset}")}
        assert markets == {"spot", "option", "contract"}, dataset
    assert rows(data_dir, "SELECT count(*) FROM protection_fund")[0][0] > 0


def trade_ids(data_dir: Path, symbol: str) -> list[int]:
    return [
        i
        for (i,) in rows(
            data_dir,
            "SELECT trade_id FROM trades WHERE market = 'spot' "
            f"AND symbol = '{symbol}' ORDER BY trade_id",
        )
    ]


# -- case 4: ids far outside their page or their type ---------------------------------------------


@pytest.mark.parametrize("trade_id", ["-1", "9223372036854775808", "9" * 30, 2**70, -(2**70)])
def test_an_id_outside_int64_or_negative_is_set_aside_never_raised(trade_id: Any) -> None:
    good = {"id": "7", "price": "4.0", "qty": "1.0", "time": START, "buyerMaker": True}
    bad = {**good, "id": trade_id}
    parsed = parsers.historical_trades(
        [good, bad], market="spot", symbol="BTCUSDT", received_at=START
    )
    assert parsed.table["trade_id"].to_pylist() == [7]
    assert parsed.rejected == [(bad, parsed.rejected[0][1])]
    assert "id out of range" in parsed.rejected[0][1]


@pytest.mark.parametrize(
    ("keys", "after", "run"),
    [
        ([101, 102, 103, 10**12 + 103], 100, (101, 103)),  # one far record after the run
        ([10**12], 100, None),  # a caught-up page with one record far away
        ([5000, 5001, 5002], 100, (5000, 5002)),  # ids that jumped, many at a time
        ([5, 900, 901, 902], None, (900, 902)),  # first contact: the longest run
        ([150, 200, 250], 100, (150, 250)),  # gaps within the allowance
    ],
)
def test_a_page_vouches_only_for_its_run(
    keys: list[int], after: int | None, run: tuple[int, int] | None
) -> None:
    assert intake.page_run(keys, after, 500) == run


def test_an_outlier_trade_id_is_set_aside_and_the_cursor_keeps_to_the_page(
    tmp_path: Path,
) -> None:
    probe = SimExchange(seed=3, clock=lambda: START, history_days=1)
    newest = probe.recent_trades("spot", "BTCUSDT", 1)[0].id
    start = newest - 900
    outliers = [str(newest + 10**12), "18446744073709551616", "-3"]

    def corrupt(request: httpx.Request, payload: Any) -> Any:
        if request.url.path.endswith("historicalTrades") and payload:
            payload += [{**payload[-1], "id": outlier} for outlier in outliers]
        return payload

    rig = Rig(tmp_path, corrupt=corrupt, trades={"every": "1s", "markets": ["spot"], **ONE})
    rig.state.cursors[("trades", "spot", "BTCUSDT")] = start
    rig.rounds(["trades"], count=4)
    ((first, last, count),) = rig.rows("SELECT min(trade_id), max(trade_id), count(*) FROM trades")
    assert first == start + 1 and last >= newest and count == last - first + 1
    assert rig.state.cursors[("trades", "spot", "BTCUSDT")] == last
    reasons = {
        str(entry["record"]["id"]): entry["reason"]
        for document in rig.quarantined()
        for entry in document.get("rejected", [])
    }
    assert "outside the page's run" in reasons[outliers[0]]
    assert "id out of range" in reasons[outliers[1]] and "id out of range" in reasons[outliers[2]]


def test_an_outlier_funding_id_is_set_aside_and_the_history_goes_on(tmp_path: Path) -> None:
    def corrupt(request: httpx.Request, payload: Any) -> Any:
        if request.url.path.endswith("historyRate") and payload:
            payload.append({**payload[0], "id": payload[-1]["id"] + 10**12})
        return payload

    rig = Rig(tmp_path, corrupt=corrupt, funding_rate={"every": "3s", "markets": ["contract"]})
    rig.rounds(["funding_rate"], count=3, every_ms=1_000)
    for symbol in ("BTCUSDT", "ETHUSDT"):
        ids = [i for (i,) in rig.rows(f"SELECT id FROM funding_rate WHERE symbol = '{symbol}'")]
        truth = [e.id for e in rig.exchange.funding_rates(symbol, 0, rig.now)]
        assert sorted(ids) == truth


def test_daemon_keeps_trades_and_funding_going_past_outlier_ids(
    upstream: SimServer, tmp_path: Path
) -> None:
    served: dict[str, list[int]] = {"trades": [], "funding": []}

    def trades(payload: list[dict[str, Any]]) -> list[dict[str, Any]]:
        served["trades"] += [int(r["id"]) for r in payload]
        top = max(served["trades"], default=0)
        template = payload[-1] if payload else {"price": "1", "qty": "1", "time": 0}
        return [
            *payload,
            {**template, "id": str(top + 10**12)},
            {**template, "id": "9" * 25},  # beyond int64: raised OverflowError before
        ]

    def funding(payload: list[dict[str, Any]]) -> list[dict[str, Any]]:
        served["funding"] += [r["id"] for r in payload]
        if not payload:
            return payload
        return [*payload, {**payload[-1], "id": max(served["funding"]) + 10**12}, {"id": -7}]

    rules: Rules = [
        (trades_of("BTCUSDT"), trades),
        ("/api/v1/contract/historyRate?*symbol=BTCUSDT&*", funding),
    ]
    run_daemon(upstream, rules, tmp_path, trades={**FAST_TRADES, "symbols": ["BTCUSDT"]})
    ids = trade_ids(tmp_path, "BTCUSDT")
    first_page = served["trades"][:500]
    assert ids[-1] == max(served["trades"]) > max(first_page), "the series went on"
    assert ids == list(range(ids[0], ids[-1] + 1)), "no hole and no outlier"
    funding = [i for (i,) in rows(tmp_path, "SELECT id FROM funding_rate WHERE symbol = 'BTCUSDT'")]
    assert max(funding) == max(served["funding"]) and min(funding) > 0
    reasons = " ".join(reason for _, reason in set_aside(tmp_path))
    assert "outside the page's run" in reasons and "id out of range" in reasons
    assert_partitions_plausible(tmp_path)
    assert_other_jobs_collected(tmp_path)


# -- case 5: times outside the window around the exchange clock --------------------------------


@pytest.mark.parametrize(
    ("time", "reason"),
    [
        (0, "2017"),
        (1_483_228_799_999, "2017"),
        (START + parsers.MAX_AHEAD_MS + 1, "past the exchange clock"),
        (99_999_999_999_999, "past the exchange clock"),  # the year 5138
    ],
)
def test_a_record_time_outside_the_window_is_set_aside(time: int, reason: str) -> None:
    good = {"id": "7", "price": "4.0", "qty": "1.0", "time": START - 1, "buyerMaker": True}
    parsed = parsers.historical_trades(
        [good, {**good, "id": "8", "time": time}], market="spot", symbol="A", received_at=START
    )
    assert parsed.table["trade_id"].to_pylist() == [7]
    assert reason in parsed.rejected[0][1]
    recent = parsers.recent_trades(
        [good, {**good, "time": time}], market="spot", symbol="A", received_at=START
    )
    assert recent.rows == 1 and reason in recent.rejected[0][1]
    funding = {"id": 1, "fundingRate": 0.1, "fundingRateDay": 1.0, "symbol": "A", "date": time}
    assert parsers.funding_rate([funding], symbol="A", received_at=START).rows == 0
    kline = [time, "1", "1", "1", "1", "1", time + 59_999, "1", 1, "1", "1", "0"]
    assert (
        parsers.klines([kline], market="spot", symbol="A", received_at=START, interval="1m").rows
        == 0
    )


def test_an_absurd_clock_does_not_end_every_option() -> None:
    listing = instruments.Listing({"option": ("A", "B")}, {"A": START, "B": START + 10})
    assert listing.active("option", START + 5) == ("B",)  # A expired
    year_9999 = 253_402_214_400_000
    assert listing.active("option", year_9999) == ("A", "B")


def test_daemon_archives_no_1970_or_far_future_partition(
    upstream: SimServer, tmp_path: Path
) -> None:
    targets: dict[str, int] = {}
    times = {"ETHUSDT": 0, "JEXUSDT": 99_999_999_999_999}  # 1970 and the year 5138

    def bad_time(symbol: str) -> Callable[[Any], Any]:
        def change(payload: list[dict[str, Any]]) -> list[dict[str, Any]]:
            if payload:
                # The same trade, a little below the first page's newest, every time served.
                target = targets.setdefault(symbol, max(int(r["id"]) for r in payload) - 3)
                for record in payload:
                    if int(record["id"]) == target:
                        record["time"] = times[symbol]
            return payload

        return change

    def klines(payload: list[list[Any]]) -> list[list[Any]]:
        if payload:
            payload.insert(0, [0, *payload[0][1:6], 59_999, *payload[0][7:]])
        return payload

    rules: Rules = [(trades_of(symbol), bad_time(symbol)) for symbol in times]
    rules.append(("/api/v1/spot/klines?*symbol=BTCUSDT&*", klines))
    run_daemon(upstream, rules, tmp_path, trades={**FAST_TRADES, "symbols": list(times)})
    assert_partitions_plausible(tmp_path)
    for symbol, target in targets.items():
        ids = trade_ids(tmp_path, symbol)
        assert target not in ids and ids[-1] > target, f"{symbol} went on past the bad trade"
        assert ids == [i for i in range(ids[0], ids[-1] + 1) if i != target]
    reasons = [reason for _, reason in set_aside(tmp_path)]
    assert any("2017" in r for r in reasons) and any("exchange clock" in r for r in reasons)
    assert_other_jobs_collected(tmp_path)


# -- case 10: implausible values and instrument texts --------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("price", "0", "not a plausible price"),
        ("price", "-4.0", "not a plausible price"),
        ("price", "1e308", "beyond"),
        ("price", "2e12", "price beyond"),
        ("qty", "-1.0", "negative quantity in the spot market"),
        ("qty", "1e19", "beyond"),
    ],
)
def test_implausible_trade_values_are_set_aside(field: str, value: str, reason: str) -> None:
    good = {"id": "7", "price": "4.0", "qty": "1.0", "time": START, "buyerMaker": True}
    parsed = parsers.historical_trades(
        [good, {**good, "id": "8", field: value}], market="spot", symbol="A", received_at=START
    )
    assert parsed.table["trade_id"].to_pylist() == [7]
    assert reason in parsed.rejected[0][1]


def test_negative_quantities_are_made_positive_only_in_the_contract_market() -> None:
    book = {"lastUpdateId": 1, "bids": [["4.0", "2.0", []]], "asks": [["4.1", "-3.0", []]]}
    contract = parsers.depth(book, market="contract", symbol="A", received_at=START)
    assert contract.table["qty"].to_pylist() == [2.0, 3.0]
    spot = parsers.depth(book, market="spot", symbol="A", received_at=START)
    assert spot.table["qty"].to_pylist() == [2.0] and len(spot.rejected) == 1
    zero_bid = {**book, "bids": [["0", "1.0", []]]}
    assert parsers.depth(zero_bid, market="contract", symbol="A", received_at=START).table[
        "side"
    ].to_pylist() == ["ask"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("status", "<b>TRADING</b>"),
        ("status", "TRADING\x00"),
        ("status", "SOMETHING_NEW"),
        ("baseAsset", "<script>alert(1)</script>"),
        ("baseAsset", "BTC\x1b[2J"),
        ("quoteAsset", "US DT"),
        ("quoteAsset", "USDT\n"),
    ],
)
def test_hostile_instrument_texts_are_set_aside(field: str, value: str) -> None:
    good = {"symbol": "ETHUSDT", "status": "TRADING", "baseAsset": "ETH", "quoteAsset": "USDT"}
    option = {"symbol": "BTC0226C9", "status": "HALT", "baseAsset": "BTC周度看涨0226"}
    info = {
        "spotSymbols": [good, {**good, "symbol": "BADUSDT", field: value}],
        "optionSymbols": [option],
        "contractSymbols": [],
    }
    parsed, listing = instruments.instruments(info, received_at=START, options=[])
    assert parsed.table["symbol"].to_pylist() == ["ETHUSDT", "BTC0226C9"]
    assert listing.symbols["spot"] == ("ETHUSDT",)
    assert len(parsed.rejected) == 1 and parsed.rejected[0][0][1]["symbol"] == "BADUSDT"


def test_daemon_sets_aside_implausible_values(upstream: SimServer, tmp_path: Path) -> None:
    targets: dict[str, int] = {}

    def trades(payload: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if payload:
            target = targets.setdefault("ETHUSDT", max(int(r["id"]) for r in payload) - 3)
            for record in payload:
                if int(record["id"]) == target:
                    record["price"] = "1e308"
        return payload

    def depth(payload: dict[str, Any]) -> dict[str, Any]:
        payload["bids"][0][0] = "0"
        payload["asks"][0][1] = "-" + payload["asks"][0][1]
        return payload

    def prices(payload: Any) -> Any:
        if isinstance(payload, list):
            payload[0]["price"] = "-1"
        return payload

    def exchange_info(payload: dict[str, Any]) -> dict[str, Any]:
        evil = {
            "symbol": "EVILUSDT",
            "status": "<img src=x>",
            "baseAsset": "EVIL\x1b[2J",
            "quoteAsset": "USDT\x00",
        }
        payload["spotSymbols"].append(evil)
        return payload

    rules: Rules = [
        (trades_of("ETHUSDT"), trades),
        ("/api/v1/spot/depth?*symbol=BTCUSDT&*", depth),
        ("/api/v1/spot/ticker/price", prices),
        ("/api/v1/exchangeInfo", exchange_info),
    ]
    run_daemon(upstream, rules, tmp_path, trades={**FAST_TRADES, "symbols": ["ETHUSDT"]})
    ids = trade_ids(tmp_path, "ETHUSDT")
    target = targets["ETHUSDT"]
    assert target not in ids and ids[-1] > target, "the trades went on past the bad one"
    ((highest,),) = rows(tmp_path, "SELECT max(price) FROM trades")
    assert highest < parsers.MAX_PRICE
    levels = rows(
        tmp_path,
        "SELECT side, min(level), min(price) FROM depth WHERE market = 'spot' "
        "AND symbol = 'BTCUSDT' GROUP BY side ORDER BY side",
    )
    assert [(side, level) for side, level, _ in levels] == [("ask", 1), ("bid", 1)]
    assert all(price > 0 for _, _, price in levels)
    ((lowest,),) = rows(tmp_path, "SELECT min(price) FROM ticker_price")
    assert lowest >= 0
    texts = rows(tmp_path, "SELECT DISTINCT symbol, status, base_asset FROM instruments")
    assert "EVILUSDT" not in {s for s, _, _ in texts}
    assert all(parsers.ASSET_RE.fullmatch(a) for _, _, a in texts if a)
    reasons = " ".join(reason for _, reason in set_aside(tmp_path))
    for expected in ("beyond", "not a plausible price", "negative quantity", "status"):
        assert expected in reasons, expected
    assert_partitions_plausible(tmp_path)
    assert_other_jobs_collected(tmp_path)

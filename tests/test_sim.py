"""The simulator: deterministic, self-consistent, shaped like JEX, quirks and limits included."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.sim import Faults, SimExchange, SimServer, create_app, mutations
from collector.sim.limits import RateLimiter
from collector.sim.market import HOUR, MINUTE

NOW = 1_764_003_600_000 + 17 * MINUTE + 4_321  # 2025-11-24T17:17:04.321Z, a Monday


def exchange(seed: int = 5, now: int = NOW) -> SimExchange:
    return SimExchange(seed=seed, clock=lambda: now)


def call(
    app: Any,
    path: str,
    params: dict[str, Any] | None = None,
    *,
    key: str | None = None,
) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
            headers = {"X-JEX-APIKEY": key} if key else {}
            return await client.get(path, params=params, headers=headers)

    return asyncio.run(go())


# -- the market model --------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_trades_and_another_seed_does_not() -> None:
    window = (NOW - 2 * HOUR, NOW)
    first = exchange(5).trades("spot", "BTCUSDT", *window)
    assert first == exchange(5).trades("spot", "BTCUSDT", *window)
    assert first != exchange(6).trades("spot", "BTCUSDT", *window)


def test_trade_ids_are_contiguous_and_follow_time_across_hours() -> None:
    trades = exchange().trades("contract", "BTCUSDT", NOW - 3 * HOUR, NOW)
    ids = [t.id for t in trades]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    times = [t.time for t in trades]
    assert times == sorted(times)
    assert len(set(times)) < len(times), "equal timestamps should happen"
    assert max(times) <= NOW


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 4000), st.integers(1, 500))
def test_pages_by_id_join_up_without_gap_or_overlap(offset: int, page: int) -> None:
    ex = exchange()
    start = ex.recent_trades("spot", "ETHUSDT", 1)[0].id - 5000 + offset
    collected: list[int] = []
    next_id = start
    while len(collected) < 1200:
        batch = ex.trades_from_id("spot", "ETHUSDT", next_id, page)
        if not batch:
            break
        collected += [t.id for t in batch]
        next_id = batch[-1].id + 1
    assert collected == list(range(start, start + len(collected)))


def test_nothing_after_now_is_served() -> None:
    ex = exchange()
    latest = ex.recent_trades("spot", "BTCUSDT", 60)
    assert latest[-1].time <= NOW
    assert ex.trades_from_id("spot", "BTCUSDT", latest[-1].id + 1, 10) == []
    assert ex.klines("spot", "BTCUSDT", "1m", NOW - 5 * MINUTE, NOW + HOUR)[-1].open_time <= NOW
    assert all(f.time <= NOW for f in ex.funding_rates("BTCUSDT", NOW - HOUR, NOW + HOUR))


def test_klines_are_computed_from_the_trades() -> None:
    ex = exchange()
    start = NOW - NOW % HOUR - 2 * HOUR
    for kline in ex.klines("spot", "JEXUSDT", "1m", start, start + 30 * MINUTE):
        trades = ex.trades("spot", "JEXUSDT", kline.open_time, kline.open_time + MINUTE)
        prices = [float(t.price) for t in trades]
        assert kline.trade_count == len(trades)
        assert float(kline.open) == prices[0] and float(kline.close) == prices[-1]
        assert float(kline.high) == max(prices) and float(kline.low) == min(prices)
        assert float(kline.volume) == pytest.approx(sum(float(t.qty) for t in trades))
        taker = sum(float(t.qty) for t in trades if not t.buyer_maker)
        assert float(kline.taker_buy_volume) == pytest.approx(taker)
        assert kline.close_time == kline.open_time + MINUTE - 1


def test_an_hour_kline_aggregates_its_sixty_minutes() -> None:
    ex = exchange()
    start = NOW - NOW % HOUR - HOUR
    (hour,) = ex.klines("contract", "ETHUSDT", "1h", start, start + 1)
    minutes = ex.klines("contract", "ETHUSDT", "1m", start, start + HOUR)
    assert len(minutes) == 60
    assert hour.open == minutes[0].open and hour.close == minutes[-1].close
    assert float(hour.high) == max(float(m.high) for m in minutes)
    assert float(hour.low) == min(float(m.low) for m in minutes)
    assert hour.trade_count == sum(m.trade_count for m in minutes)
    assert float(hour.volume) == pytest.approx(sum(float(m.volume) for m in minutes))


def test_the_same_symbol_has_different_prices_in_spot_and_contract() -> None:
    ex = exchange()
    spot = float(ex.last_price("spot", "BTCUSDT"))
    contract = float(ex.last_price("contract", "BTCUSDT"))
    assert spot != contract
    assert abs(contract / spot - 1) < 0.02


def test_options_expire_in_the_future_and_the_listing_rolls_over() -> None:
    ex = exchange()
    options = ex.instruments("option")
    assert options and all(o.expiry is not None and o.expiry > NOW for o in options)
    first_expiry = min(o.expiry for o in options if o.expiry is not None)
    after = exchange(now=first_expiry + 1).symbols("option")
    expired = {o.symbol for o in options if o.expiry == first_expiry}
    assert expired and not expired & set(after)
    assert set(after) - {o.symbol for o in options}, "a new expiry should be listed"


def test_funding_and_protection_fund_ids_are_contiguous() -> None:
    ex = exchange()
    funding = ex.funding_rates("BTCUSDT", NOW - 6 * HOUR, NOW)
    assert [f.id for f in funding] == list(range(funding[0].id, funding[0].id + len(funding)))
    assert all(f.time % 600_000 == 0 for f in funding)
    fund = ex.protection_fund("ETHUSDT", NOW - HOUR, NOW)
    assert len(fund) == 60
    assert len({f.insurance_fund for f in fund}) > 1, "the fund should move"


# -- the HTTP API ------------------------------------------------------------------------------


@pytest.fixture
def app() -> Any:
    return create_app(exchange())


def test_depth_has_the_documented_shape_and_a_sane_book(app: Any) -> None:
    for market in ("spot", "option", "contract"):
        symbol = exchange().symbols(market)[0]
        body = call(app, f"/api/v1/{market}/depth", {"symbol": symbol, "limit": 10}).json()
        assert set(body) == {"lastUpdateId", "bids", "asks"}
        assert len(body["bids"]) == len(body["asks"]) == 10
        price, _qty, extra = body["bids"][0]
        assert isinstance(price, str) and len(price.split(".")[1]) == 18 and extra == []
        bids = [float(b[0]) for b in body["bids"]]
        asks = [float(a[0]) for a in body["asks"]]
        assert bids == sorted(bids, reverse=True) and asks == sorted(asks)
        assert bids[0] < asks[0]
        ask_qty = [float(a[1]) for a in body["asks"]]
        # The contract market's quirk: sells are negative.
        assert all(q < 0 for q in ask_qty) if market == "contract" else all(q > 0 for q in ask_qty)
    bad = call(app, "/api/v1/spot/depth", {"symbol": "BTCUSDT", "limit": 7})
    assert bad.status_code == 400 and bad.json()["code"] == -1100


def test_historical_trades_need_a_key_and_come_newest_first_with_string_ids(app: Any) -> None:
    assert call(app, "/api/v1/spot/historicalTrades", {"symbol": "BTCUSDT"}).status_code == 401
    body = call(
        app, "/api/v1/spot/historicalTrades", {"symbol": "BTCUSDT", "limit": 5}, key="k"
    ).json()
    assert len(body) == 5
    assert all(isinstance(t["id"], str) for t in body)
    ids = [int(t["id"]) for t in body]
    assert ids == sorted(ids, reverse=True)
    assert set(body[0]) == {"id", "price", "qty", "time", "buyerMaker"}
    from_id = ids[-1] - 100
    paged = call(
        app,
        "/api/v1/spot/historicalTrades",
        {"symbol": "BTCUSDT", "fromId": from_id, "limit": 3},
        key="k",
    ).json()
    assert sorted(int(t["id"]) for t in paged) == [from_id, from_id + 1, from_id + 2]


def test_recent_trades_have_no_id_and_no_side(app: Any) -> None:
    body = call(app, "/api/v1/option/trades", {"symbol": exchange().symbols("option")[0]}).json()
    assert len(body) == 60
    assert all(set(t) == {"price", "qty", "time"} for t in body)


def test_klines_are_twelve_element_arrays_with_string_decimals(app: Any) -> None:
    body = call(
        app, "/api/v1/contract/klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": 3}
    ).json()
    assert len(body) == 3 and all(len(k) == 12 for k in body)
    assert isinstance(body[0][0], int) and isinstance(body[0][1], str)
    assert isinstance(body[0][8], int) and body[0][11] == "0"
    assert body[-1][0] <= NOW < body[-1][6], "the last kline is the open one"
    start = NOW - NOW % HOUR - 5 * HOUR
    ranged = call(
        app,
        "/api/v1/spot/klines",
        {"symbol": "BTCUSDT", "interval": "1h", "startTime": start, "limit": 2},
    ).json()
    assert [k[0] for k in ranged] == [start, start + HOUR]


def test_tickers_single_and_list_forms_and_their_quirks(app: Any) -> None:
    single = call(app, "/api/v1/contract/ticker/bookTicker", {"symbol": "BTCUSDT"}).json()
    assert "symbol" not in single and set(single) == {"bidPrice", "bidQty", "askPrice", "askQty"}
    listed = call(app, "/api/v1/contract/ticker/bookTicker").json()
    assert [t["symbol"] for t in listed] == ["BTCUSDT", "ETHUSDT"]
    option = exchange().symbols("option")[0]
    ticker = call(app, "/api/v1/option/ticker/24hr", {"symbol": option}).json()
    assert {"exertionTime", "performPrice", "referencePrice", "exertionPrice"} <= set(ticker)
    spot = call(app, "/api/v1/spot/ticker/24hr", {"symbol": "BTCUSDT"}).json()
    assert "exertionTime" not in spot
    assert float(spot["lowPrice"]) <= float(spot["lastPrice"]) <= float(spot["highPrice"])
    assert float(spot["bidPrice"]) < float(spot["askPrice"])
    prices = call(app, "/api/v1/spot/ticker/price").json()
    assert {p["symbol"] for p in prices} == {"BTCUSDT", "ETHUSDT", "JEXUSDT"}
    assert call(app, "/api/v1/spot/avgPrice", {"symbol": "ETHUSDT"}).json()["mins"] == 5


def test_futures_endpoints_use_json_numbers(app: Any) -> None:
    rates = call(app, "/api/v1/contract/historyRate", {"symbol": "BTCUSDT", "limit": 3}).json()
    assert len(rates) == 3 and isinstance(rates[0]["fundingRate"], float)
    after = call(
        app, "/api/v1/contract/protectionFund", {"symbol": "BTCUSDT", "start": 10, "size": 2}
    ).json()
    assert [f["id"] for f in after] == [11, 12]
    assert isinstance(after[0]["insuranceFund"], float)
    info = call(app, "/api/v1/contractInfo").json()
    assert {c["symbol"] for c in info} == {"BTCUSDT", "ETHUSDT"}
    assert info[0]["fundingInterval"] == 600_000
    indices = call(app, "/api/v1/contract/ticker/indicesPrice").json()
    assert all(isinstance(i["markPrice"], str) for i in indices)
    assert call(app, "/api/v1/contract/liquidationOrder", {"symbol": "BTCUSDT"}).status_code == 401
    orders = call(app, "/api/v1/contract/liquidationOrder", {"symbol": "BTCUSDT"}, key="k").json()
    assert orders and orders[0]["type"] == "FLAT"


def test_exchange_info_lists_three_markets_and_both_enum_spellings(app: Any) -> None:
    response = call(app, "/api/v1/exchangeInfo")
    body = response.json()
    kinds = {r["rateLimitType"] for r in body["rateLimits"]}
    assert {"REQUESTS_WEIGHT", "rawRequests"} <= kinds
    assert [s["symbol"] for s in body["spotSymbols"]] == ["BTCUSDT", "ETHUSDT", "JEXUSDT"]
    assert body["contractSymbols"] and body["optionSymbols"]
    # Non-ASCII option names travel as UTF-8, not \\u escapes.
    assert "周度".encode() in response.content
    options = call(app, "/api/v1/optionInfo").json()
    assert {o["type"] for o in options} == {"LONGS", "SHORTS"}


def test_unknown_symbols_and_paths_are_rejected_like_jex(app: Any) -> None:
    response = call(app, "/api/v1/spot/depth", {"symbol": "NOPEUSDT"})
    assert response.status_code == 400 and response.json() == {
        "code": -1121,
        "msg": "Invalid symbol.",
    }
    # An option symbol is not a spot symbol.
    option = exchange().symbols("option")[0]
    assert call(app, "/api/v1/spot/depth", {"symbol": option}).json()["code"] == -1121
    assert call(app, "/api/v1/moon/depth", {"symbol": "BTCUSDT"}).status_code == 404
    assert call(app, "/api/v1/spot/historyRate", {"symbol": "BTCUSDT"}).status_code == 404
    assert call(app, "/api/v1/spot/depth").json()["code"] == -1102


def test_weight_headers_then_429_then_418_with_retry_after() -> None:
    app = create_app(exchange(), weight_limit=12)
    first = call(app, "/api/v1/spot/ticker/price", {"symbol": "BTCUSDT"})
    assert first.headers["X-MBX-USED-WEIGHT-1M"] == "1" == first.headers["X-MBX-USED-WEIGHT"]
    heavy = call(app, "/api/v1/spot/historicalTrades", {"symbol": "BTCUSDT"}, key="k")
    assert heavy.headers["X-MBX-USED-WEIGHT-1M"] == "6"
    assert (
        call(app, "/api/v1/spot/historicalTrades", {"symbol": "BTCUSDT"}, key="k").headers[
            "X-MBX-USED-WEIGHT-1M"
        ]
        == "11"
    )
    limited = call(app, "/api/v1/spot/ticker/price")  # 2 more would be 13 > 12
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) == -(-(60_000 - NOW % 60_000) // 1000)
    banned = call(app, "/api/v1/ping")
    assert banned.status_code == 418 and banned.headers["Retry-After"] == "120"


def test_bans_escalate_and_end() -> None:
    limiter = RateLimiter(weight_limit=1)
    now = 0
    assert limiter.admit("ip", 1, now).status == 200
    assert limiter.admit("ip", 1, now).status == 429
    assert limiter.admit("ip", 1, now + 1).status == 418
    now += 120_001
    assert limiter.admit("ip", 1, now).status == 200
    assert limiter.admit("ip", 1, now).status == 429
    second_ban = limiter.admit("ip", 1, now + 1)
    assert second_ban.status == 418 and second_ban.retry_after_s == 240
    assert limiter.admit("other-ip", 1, now + 1).status == 200


# -- a rolling weight window -------------------------------------------------------------------


def test_a_rolling_window_counts_the_last_60_seconds_not_the_clock_minute() -> None:
    limiter = RateLimiter(weight_limit=10, window="rolling")
    minute = 1_764_003_600_000
    assert limiter.admit("ip", 4, minute + 50_000).used_weight == 4
    assert limiter.admit("ip", 3, minute + 55_000).used_weight == 7
    # A fixed window would have started again from 0 at the minute.
    assert limiter.admit("ip", 1, minute + 61_000).used_weight == 8
    # The first 4 left the count 60 s after they were admitted, the next 3 at 115 s.
    assert limiter.admit("ip", 1, minute + 110_000).used_weight == 5
    assert limiter.admit("ip", 1, minute + 115_000).used_weight == 3
    fixed = RateLimiter(weight_limit=10)
    fixed.admit("ip", 4, minute + 50_000)
    assert fixed.admit("ip", 1, minute + 61_000).used_weight == 1


def test_a_rolling_window_says_to_retry_when_enough_weight_has_left_it() -> None:
    limiter = RateLimiter(weight_limit=10, window="rolling")
    assert limiter.admit("ip", 6, 10_000).status == 200
    assert limiter.admit("ip", 4, 40_000).status == 200
    # 5 fit once the first 6 have left, at 70 s: 28.5 s from now, rounded up.
    refused = limiter.admit("ip", 5, 41_500)
    assert (refused.status, refused.used_weight, refused.retry_after_s) == (429, 10, 29)
    assert limiter.admit("ip", 1, 60_000).status == 418  # sent before Retry-After: banned
    after_ban = 60_000 + 120_000
    assert limiter.admit("ip", 10, after_ban).status == 200


def test_a_rolling_window_counts_raw_requests_over_the_last_five_minutes() -> None:
    limiter = RateLimiter(weight_limit=1_000, raw_limit=3, window="rolling")
    for second in (0, 100, 200):
        assert limiter.admit("ip", 1, second * 1_000).status == 200
    refused = limiter.admit("ip", 1, 250_000)
    assert refused.status == 429 and refused.retry_after_s == 50  # the first leaves at 300 s
    assert limiter.admit("ip", 1, 300_000).status == 200


def test_the_window_kind_is_checked() -> None:
    with pytest.raises(ValueError, match="rolling"):
        RateLimiter(window="sliding")  # type: ignore[arg-type]


def test_sim_state_reports_the_window_and_what_each_client_was_admitted() -> None:
    clock = [NOW]
    app = create_app(
        SimExchange(seed=5, clock=lambda: clock[0]), weight_limit=12, weight_window="rolling"
    )
    call(app, "/api/v1/spot/ticker/price", {"symbol": "BTCUSDT"})  # 1
    clock[0] += MINUTE
    call(app, "/api/v1/spot/historicalTrades", {"symbol": "BTCUSDT"}, key="k")  # 5
    call(app, "/api/v1/spot/ticker/24hr")  # 40: refused, not counted
    state = call(app, "/_sim/state").json()
    assert state["weight_window"] == "rolling"
    client = state["clients"]["127.0.0.1"]
    assert (client["requests"], client["weight"], client["429s"]) == (2, 6, 1)
    first = NOW - NOW % MINUTE
    assert client["weight_per_minute"] == {str(first): 1, str(first + MINUTE): 5}
    assert client["used_weight"] == 5  # the first left the rolling count a minute later
    clock[0] += 61 * MINUTE  # the per-minute record keeps the last hour
    assert call(app, "/_sim/state").json()["clients"]["127.0.0.1"]["weight_per_minute"] == {}
    assert call(create_app(exchange()), "/_sim/state").json()["weight_window"] == "fixed"


@pytest.mark.parametrize(
    ("switch", "status", "check"),
    [
        ("error_500", 500, lambda r: b"<html>" in r.content),
        ("unavailable_503", 503, lambda r: r.content == b""),
        ("truncated_json", 200, lambda r: not is_json(r.content)),
    ],
)
def test_fault_switches(switch: str, status: int, check: Any) -> None:
    app = create_app(exchange(), faults=Faults(**{switch: 1.0}))
    response = call(app, "/api/v1/spot/depth", {"symbol": "BTCUSDT"})
    assert response.status_code == status
    assert check(response)


def is_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except json.JSONDecodeError:
        return False
    return True


def test_faults_can_be_switched_at_run_time_and_admin_paths_are_exempt() -> None:
    with SimServer(exchange()) as server:
        assert httpx.get(f"{server.base_url}/api/v1/ping").status_code == 200
        set_faults = httpx.post(f"{server.base_url}/_sim/faults", json={"error_500": 1.0})
        assert set_faults.json()["error_500"] == 1.0
        assert httpx.get(f"{server.base_url}/api/v1/ping").status_code == 500
        assert httpx.get(f"{server.base_url}/_sim/state").status_code == 200
        refused = httpx.post(f"{server.base_url}/_sim/faults", json={"meteor": 1.0})
        assert refused.status_code == 400 and "meteor" in refused.text


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("meteor=1", "unknown fault switch"),
        ("error_500=x", "KIND=PROBABILITY"),
        ("slow=2", "probability"),
    ],
)
def test_sim_command_refuses_bad_fault_switches(argument: str, message: str) -> None:
    from click.testing import CliRunner

    from collector.cli import main

    result = CliRunner().invoke(main, ["sim", "--fault", argument])
    assert result.exit_code == 2
    assert message in result.output


# -- payload faults and a dropped connection -----------------------------------------------------


def with_fault(kind: str, path: str, params: dict[str, Any] | None = None, seed: int = 0) -> Any:
    app = create_app(exchange(), faults=Faults(**{kind: 1.0}, seed=seed))
    response = call(app, path, params, key="k")
    assert response.status_code == 200
    return response.json()


def clean(path: str, params: dict[str, Any] | None = None) -> Any:
    return call(create_app(exchange()), path, params, key="k").json()


TRADES = ("/api/v1/spot/historicalTrades", {"symbol": "BTCUSDT", "limit": 20})
PRICES = ("/api/v1/spot/ticker/price", None)


def test_unknown_field_adds_one_undocumented_field_to_every_object() -> None:
    trades, original = with_fault("unknown_field", *TRADES), clean(*TRADES)
    (added,) = set(trades[0]) - set(original[0])
    assert all(set(r) - set(o) == {added} for r, o in zip(trades, original, strict=True))
    info = with_fault("unknown_field", "/api/v1/exchangeInfo")
    assert added in info and all(added in s for s in info["spotSymbols"])


def test_missing_field_removes_one_field_of_one_record_or_cuts_a_kline_short() -> None:
    mutated, original = with_fault("missing_field", *TRADES), clean(*TRADES)
    assert len(mutated) == len(original)
    assert sum(len(r) for r in original) - sum(len(r) for r in mutated) == 1
    klines = ("/api/v1/spot/klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": 5})
    assert sorted(len(k) for k in with_fault("missing_field", *klines))[1:] == [12] * 4
    depth = ("/api/v1/spot/depth", {"symbol": "BTCUSDT", "limit": 5})
    assert len(with_fault("missing_field", *depth)) == 2


def test_number_for_string_sends_decimals_and_ids_as_numbers_of_the_same_value() -> None:
    mutated, original = with_fault("number_for_string", *TRADES), clean(*TRADES)
    assert [type(r["id"]) for r in mutated] == [int] * len(mutated)
    assert [float(r["price"]) for r in mutated] == [float(r["price"]) for r in original]
    assert all(isinstance(r["price"], float) for r in mutated)


def test_empty_list_and_duplicate_trades() -> None:
    assert with_fault("empty_list", *TRADES) == []
    assert isinstance(
        with_fault("empty_list", "/api/v1/spot/avgPrice", {"symbol": "BTCUSDT"}), dict
    )
    mutated, original = with_fault("duplicate_trades", *TRADES), clean(*TRADES)
    ids = [r["id"] for r in mutated]
    assert len(ids) > len(set(ids)) and set(ids) == {r["id"] for r in original}
    assert ids != sorted(ids, reverse=True), "shuffled, no longer newest first"


def test_unknown_and_bad_symbols_replace_or_join_the_records_of_list_tickers() -> None:
    listed = {r["symbol"] for r in clean(*PRICES)}
    unknown = with_fault("unknown_symbol", *PRICES)
    assert len(unknown) == len(listed) + 1
    assert {r["symbol"] for r in unknown} - listed <= set(mutations.UNLISTED_SYMBOLS)
    for seed in range(5):
        bad = [r["symbol"] for r in with_fault("bad_symbol", *PRICES, seed=seed)]
        assert len(bad) == len(listed) and len(set(bad) - listed) == 1
        assert not set(bad) - listed - set(mutations.HOSTILE_SYMBOLS)


def test_payload_faults_are_repeatable_under_the_seed() -> None:
    for kind in ("missing_field", "duplicate_trades", "bad_symbol"):
        first = [with_fault(kind, *TRADES, seed=3), with_fault(kind, *PRICES, seed=3)]
        assert first == [with_fault(kind, *TRADES, seed=3), with_fault(kind, *PRICES, seed=3)]


def test_connection_reset_drops_the_connection_without_a_response() -> None:
    with SimServer(exchange(), faults=Faults(connection_reset=1.0)) as server:
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            httpx.get(f"{server.base_url}/api/v1/ping")
        state = httpx.get(f"{server.base_url}/_sim/state").json()
    assert state["faults_injected"] == {"connection_reset": 1}


def test_sim_help_lists_every_fault_kind() -> None:
    from click.testing import CliRunner

    from collector.cli import main
    from collector.sim.faults import KINDS

    result = CliRunner().invoke(main, ["sim", "--help"], terminal_width=1000)
    assert result.exit_code == 0
    assert all(kind in result.output for kind in KINDS)
    assert "--weight-window [fixed|rolling]" in result.output
    assert "per clock minute" in result.output and "over the last 60 seconds" in result.output

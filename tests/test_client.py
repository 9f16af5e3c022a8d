"""The JEX client with httpx.MockTransport and a fake clock: weights, pauses, retries, errors."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.errors import (
    BannedError,
    PayloadError,
    RateLimitError,
    RequestRejectedError,
    TransientError,
    UnknownSymbolError,
)
from collector.exchange import endpoints
from collector.exchange.budget import WeightBudget
from collector.exchange.client import WINDOW_GUARD_MS, ExchangeClock, JexClient, Response

START_MS = 1_764_000_000_000  # on a minute boundary
SECRET_KEY = "k3y-that-must-never-leak"


class FakeTime:
    """One clock for the client's monotonic time, its exchange clock and its sleeps."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.seconds

    def local_ms(self) -> int:
        return START_MS + int(self.seconds * 1000)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.seconds += seconds


Handler = Callable[[httpx.Request], httpx.Response]


class Exchange:
    """A scripted exchange: answers with ``handler`` and records when each request arrived."""

    def __init__(self, fake: FakeTime, handler: Handler) -> None:
        self.fake = fake
        self.handler = handler
        self.requests: list[tuple[float, httpx.Request]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((self.fake.seconds, request))
        return self.handler(request)


def ok(payload: Any = None, **headers: str) -> httpx.Response:
    return httpx.Response(200, json={} if payload is None else payload, headers=headers)


def run(
    handler: Handler,
    scenario: Callable[[JexClient], Any],
    *,
    api_key: str | None = SECRET_KEY,
    max_attempts: int = 4,
) -> tuple[Exchange, FakeTime, Any]:
    fake = FakeTime()
    exchange = Exchange(fake, handler)

    async def go() -> Any:
        async with JexClient(
            "https://jex.test",
            api_key=api_key,
            transport=httpx.MockTransport(exchange),
            clock=ExchangeClock(local_ms=fake.local_ms),
            monotonic=fake.monotonic,
            sleep=fake.sleep,
            rng=random.Random(1),
            max_attempts=max_attempts,
        ) as client:
            return await scenario(client)

    return exchange, fake, asyncio.run(go())


# -- weights -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "params", "weight"),
    [
        (endpoints.TICKER_24HR, {"symbol": "BTCUSDT"}, 1),
        (endpoints.TICKER_24HR, {}, 40),
        (endpoints.TICKER_PRICE, {}, 2),
        (endpoints.BOOK_TICKER, {}, 2),
        (endpoints.BOOK_TICKER, {"symbol": "BTCUSDT"}, 1),
        (endpoints.HISTORICAL_TRADES, {"symbol": "BTCUSDT"}, 5),
        (endpoints.DEPTH, {"symbol": "BTCUSDT"}, 1),
    ],
)
def test_each_request_spends_its_endpoint_weight(
    endpoint: endpoints.Endpoint, params: dict[str, Any], weight: int
) -> None:
    async def scenario(client: JexClient) -> int:
        await client.get(endpoint, market="spot", params=params)
        return client.budget.used

    _, _, used = run(lambda r: ok([]), scenario)
    assert used == weight


def test_the_exchanges_count_is_trusted_when_higher() -> None:
    async def scenario(client: JexClient) -> int:
        await client.get(endpoints.PING)
        return client.budget.used

    _, _, used = run(lambda r: ok(**{"X-MBX-USED-WEIGHT-1M": "700"}), scenario)
    assert used == 700


def test_a_full_budget_waits_for_the_next_minute_instead_of_sending() -> None:
    async def scenario(client: JexClient) -> None:
        client.budget.set_limit(10)  # 8 allowed at the default fraction of 0.8
        for _ in range(10):
            await client.get(endpoints.PING)

    exchange, fake, _ = run(lambda r: ok(), scenario)
    times = [t for t, _ in exchange.requests]
    assert times[:8] == [0.0] * 8
    # The next window, plus the guard against clock error at the boundary.
    assert times[8] == pytest.approx(60.0 + WINDOW_GUARD_MS / 1000)
    assert fake.sleeps == [pytest.approx(60.0 + WINDOW_GUARD_MS / 1000)]


# -- 429 and 418 -------------------------------------------------------------------------------


def test_after_429_nothing_is_sent_until_retry_after_has_passed() -> None:
    responses = iter(
        [
            httpx.Response(
                429, json={"code": -1003, "msg": "slow down"}, headers={"Retry-After": "7"}
            )
        ]
    )

    def handler(request: httpx.Request) -> httpx.Response:
        return next(responses, ok())

    async def scenario(client: JexClient) -> None:
        # Two jobs at once: the second must also wait out the pause.
        await asyncio.gather(
            client.get(endpoints.DEPTH, market="spot", params={"symbol": "A"}),
            client.get(endpoints.DEPTH, market="spot", params={"symbol": "B"}),
        )

    exchange, _, _ = run(handler, scenario)
    times = [t for t, _ in exchange.requests]
    assert times[0] == 0.0
    assert all(t >= 7.0 for t in times[1:]), times
    assert len(times) == 3  # the refused request was retried once, after the pause


def test_418_raises_banned_and_blocks_every_later_request() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            418, json={"code": -1003, "msg": "banned"}, headers={"Retry-After": "120"}
        )

    async def scenario(client: JexClient) -> list[BaseException]:
        errors: list[BaseException] = []
        for _ in range(3):
            try:
                await client.get(endpoints.PING)
            except RateLimitError as exc:
                errors.append(exc)
        return errors

    exchange, fake, errors = run(handler, scenario)
    assert len(exchange.requests) == 1, "nothing may be sent while banned"
    assert isinstance(errors[0], BannedError) and errors[0].retry_at == pytest.approx(120)
    assert all(isinstance(e, RateLimitError) for e in errors[1:])
    assert fake.sleeps == []


def test_after_a_ban_ends_requests_flow_again() -> None:
    answers = iter([httpx.Response(418, headers={"Retry-After": "120"})])

    async def scenario(client: JexClient) -> None:
        with pytest.raises(BannedError):
            await client.get(endpoints.PING)
        await client._sleep(121)
        await client.get(endpoints.PING)

    exchange, _, _ = run(lambda r: next(answers, ok()), scenario)
    assert [t for t, _ in exchange.requests] == [0.0, 121.0]


# -- retries and errors ------------------------------------------------------------------------


def test_5xx_is_retried_with_capped_jittered_backoff_then_raised() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, text="<html><body>500 Internal Server Error</body></html>")

    async def scenario(client: JexClient) -> None:
        with pytest.raises(TransientError, match="server error 500"):
            await client.get(endpoints.PING)

    exchange, fake, _ = run(handler, scenario, max_attempts=5)
    assert len(exchange.requests) == 5
    assert len(fake.sleeps) == 4
    for attempt, delay in enumerate(fake.sleeps, start=1):
        assert 0 <= delay <= min(10.0, 0.5 * 2 ** (attempt - 1))


@pytest.mark.parametrize(
    "failure",
    [httpx.ReadTimeout("slow"), httpx.ConnectError("refused"), httpx.RemoteProtocolError("reset")],
)
def test_timeouts_and_connection_errors_are_retried(failure: Exception) -> None:
    calls = iter([failure, failure])

    def handler(request: httpx.Request) -> httpx.Response:
        error = next(calls, None)
        if error is not None:
            raise error
        return ok({"serverTime": 1})

    async def scenario(client: JexClient) -> Any:
        return (await client.get(endpoints.TIME)).payload

    exchange, _, payload = run(handler, scenario)
    assert payload == {"serverTime": 1} and len(exchange.requests) == 3


def test_unknown_symbol_error_carries_its_context() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"code": -1121, "msg": "Invalid symbol."})

    async def scenario(client: JexClient) -> None:
        with pytest.raises(UnknownSymbolError) as info:
            await client.get(endpoints.DEPTH, market="option", params={"symbol": "NOPE"})
        assert (info.value.market, info.value.symbol, info.value.endpoint) == (
            "option",
            "NOPE",
            "depth",
        )
        assert info.value.code == -1121 and info.value.status == 400

    exchange, _, _ = run(handler, scenario)
    assert len(exchange.requests) == 1  # not retried


def test_truncated_json_is_a_payload_error_and_401_a_rejection() -> None:
    bodies = iter(
        [
            httpx.Response(200, content=b'[{"id": "1", "pri'),
            httpx.Response(401, json={"code": -2014, "msg": "API-key format invalid."}),
        ]
    )

    async def scenario(client: JexClient) -> None:
        with pytest.raises(PayloadError, match="not valid JSON"):
            await client.get(endpoints.PING)
        with pytest.raises(RequestRejectedError, match="JEX_API_KEY"):
            await client.get(endpoints.HISTORICAL_TRADES, market="spot", params={"symbol": "A"})

    run(lambda r: next(bodies), scenario)


def test_invalid_json_goes_to_the_quarantine_hook_with_the_raw_body_before_the_error() -> None:
    seen: list[tuple[Response, str]] = []
    body = b'[{"id": "1", "pri\xff'

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("depth"):
            return httpx.Response(200, json={"lastUpdateId": 1}, headers={"X-Seq": "9"})
        return httpx.Response(200, content=body, headers={"X-MBX-USED-WEIGHT-1M": "5"})

    async def scenario(client: JexClient) -> Response:
        client.quarantine = lambda response, error: seen.append((response, error))
        with pytest.raises(PayloadError):
            await client.get(
                endpoints.HISTORICAL_TRADES, market="spot", params={"symbol": "A", "fromId": 7}
            )
        return await client.get(endpoints.DEPTH, market="spot", params={"symbol": "A"})

    _, _, depth = run(handler, scenario)
    ((bad, error),) = seen
    assert bad.payload is None and bad.body == body and "not valid JSON" in error
    assert (bad.endpoint, bad.market, bad.params) == (
        "historicalTrades",
        "spot",
        {"symbol": "A", "fromId": "7"},
    )
    assert bad.headers["x-mbx-used-weight-1m"] == "5"
    assert SECRET_KEY not in repr(bad), "request headers are not kept"
    assert depth.payload == {"lastUpdateId": 1} and json.loads(depth.body) == depth.payload
    assert depth.headers["x-seq"] == "9" and depth.params == {"symbol": "A"}


# -- the API key -------------------------------------------------------------------------------


def test_the_api_key_goes_only_to_market_data_endpoints_and_never_into_errors() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("depth"):
            return httpx.Response(400, json={"code": -1121, "msg": "Invalid symbol."})
        return ok([])

    async def scenario(client: JexClient) -> str:
        await client.get(endpoints.HISTORICAL_TRADES, market="spot", params={"symbol": "A"})
        await client.get(endpoints.TRADES, market="spot", params={"symbol": "A"})
        try:
            await client.get(endpoints.DEPTH, market="spot", params={"symbol": "A"})
        except UnknownSymbolError as exc:
            return repr(exc) + str(exc) + json.dumps(vars(exc), default=str)
        return ""

    exchange, _, error_text = run(handler, scenario)
    keys = [request.headers.get("X-JEX-APIKEY") for _, request in exchange.requests]
    assert keys == [SECRET_KEY, None, None]
    assert error_text and SECRET_KEY not in error_text


def test_a_market_data_call_without_a_key_is_refused_before_sending() -> None:
    async def scenario(client: JexClient) -> None:
        with pytest.raises(RequestRejectedError, match="JEX_API_KEY"):
            await client.get(endpoints.HISTORICAL_TRADES, market="spot", params={"symbol": "A"})

    exchange, _, _ = run(lambda r: ok([]), scenario, api_key=None)
    assert exchange.requests == []


# -- the clock ---------------------------------------------------------------------------------


def test_clock_offset_is_the_server_time_minus_the_round_trip_midpoint() -> None:
    fake = FakeTime()

    def handler(request: httpx.Request) -> httpx.Response:
        fake.seconds += 0.2  # 200 ms on the way there...
        server_time = fake.local_ms() + 5_000  # the server's clock is 5 s ahead
        fake.seconds += 0.2  # ...and 200 ms back
        return ok({"serverTime": server_time})

    async def go() -> tuple[int, int]:
        clock = ExchangeClock(local_ms=fake.local_ms)
        async with JexClient(
            "https://jex.test",
            transport=httpx.MockTransport(handler),
            clock=clock,
            monotonic=fake.monotonic,
            sleep=fake.sleep,
        ) as client:
            offset = await client.sync_clock()
            response = await client.get(endpoints.PING)
            return offset, response.received_at - fake.local_ms()

    offset, received_skew = asyncio.run(go())
    assert offset == 5_000
    assert received_skew == 5_000  # times recorded are exchange time


# -- the budget itself -------------------------------------------------------------------------


@given(st.lists(st.tuples(st.integers(1, 50), st.integers(0, 5_000)), max_size=200))
def test_the_budget_never_lets_a_window_exceed_its_allowance(
    steps: list[tuple[int, int]],
) -> None:
    budget = WeightBudget(limit=100, fraction=0.8)
    now = START_MS
    spent: dict[int, int] = {}
    for weight, advance in steps:
        now += advance
        if budget.reserve(weight, now) == 0:
            window = now - now % 60_000
            spent[window] = spent.get(window, 0) + weight
    assert all(total <= budget.allowed for total in spent.values())


def test_the_budget_waits_exactly_until_the_window_ends() -> None:
    budget = WeightBudget(limit=10, fraction=1.0)
    assert budget.reserve(10, START_MS + 15_000) == 0
    assert budget.reserve(1, START_MS + 15_000) == 45_000
    assert budget.reserve(1, START_MS + 60_000) == 0
    budget.observe(10, START_MS + 60_001)
    assert budget.reserve(1, START_MS + 60_002) > 0

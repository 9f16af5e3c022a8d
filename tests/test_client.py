"""The JEX client with httpx.MockTransport and a fake clock: weights, pauses, retries, errors."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import zlib
from collections.abc import Callable
from pathlib import Path
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
from collector.exchange.budget import MARGIN_MS, WeightBudget
from collector.exchange.client import (
    MAX_JSON_DEPTH,
    WINDOW_GUARD_MS,
    ExchangeClock,
    JexClient,
    Response,
    json_depth_exceeds,
    parse_json,
)
from collector.exchange.turns import HISTORY, SNAPSHOT, Turns
from tests.conftest import unpaced_budget

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
    budget: WeightBudget | None = None,
    pause_file: Path | None = None,
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
            # Unpaced unless a test asks for pacing: these tests are about windows and pauses.
            budget=budget or unpaced_budget(),
            pause_file=pause_file,
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


def test_a_full_budget_waits_for_its_weight_to_leave_the_window_instead_of_sending() -> None:
    async def scenario(client: JexClient) -> None:
        client.budget.set_limit(10)  # 8 allowed at the default fraction of 0.8
        for _ in range(10):
            await client.get(endpoints.PING)

    exchange, fake, _ = run(lambda r: ok(), scenario)
    times = [t for t, _ in exchange.requests]
    assert times[:8] == [0.0] * 8
    # Until the first 8 have left the window (a minute and the budget's margin, whichever
    # kind of window the exchange keeps), plus the gate's guard.
    wait_s = 60.0 + (MARGIN_MS + WINDOW_GUARD_MS) / 1000
    assert times[8] == pytest.approx(wait_s)
    assert fake.sleeps == [pytest.approx(wait_s)]


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
        client.quarantine = lambda response, error, **_: seen.append((response, error))
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
    """Neither a clock minute nor any 60 seconds (the two kinds of window an exchange may
    keep) holds more than the allowance."""
    budget = WeightBudget(limit=100, fraction=0.8)
    now = START_MS
    spent: dict[int, int] = {}
    sent: list[tuple[int, int]] = []
    for weight, advance in steps:
        now += advance
        if budget.reserve(weight, now) == 0:
            window = now - now % 60_000
            spent[window] = spent.get(window, 0) + weight
            sent.append((now, weight))
    assert all(total <= budget.allowed for total in spent.values())
    for start, _ in sent:
        rolling = sum(w for t, w in sent if start <= t < start + 60_000)
        assert rolling <= budget.allowed


def test_the_budget_waits_exactly_until_the_weight_leaves_the_window() -> None:
    budget = WeightBudget(limit=10, fraction=1.0, burst_s=60, start_fill=1.0)  # unpaced
    assert budget.reserve(10, START_MS + 15_000) == 0
    assert budget.reserve(1, START_MS + 15_000) == 60_000 + MARGIN_MS
    assert budget.reserve(1, START_MS + 60_000) == 15_000 + MARGIN_MS  # not at the minute
    assert budget.reserve(1, START_MS + 75_000 + MARGIN_MS) == 0
    # The exchange counts 10 (another process's 9 beside our 1): full again.
    budget.observe(10, START_MS + 76_001)
    assert budget.reserve(1, START_MS + 76_002) > 0


def test_pacing_spreads_a_minute_of_weight_and_ramps_up_at_start() -> None:
    budget = WeightBudget(limit=75, fraction=0.8, burst_s=15, start_fill=0.1)  # 60/min
    now = START_MS
    sent: list[int] = []
    while now < START_MS + 60_000:
        wait = budget.reserve(1, now)
        if wait == 0:
            sent.append(now - START_MS)
        now += max(wait, 1) if wait else 0
    # A fresh budget holds 10% of 15 s of allowance (1.5 requests), then earns one a second:
    # no burst at start, and the minute's weight arrives spread over the minute.
    assert len([t for t in sent if t < 1_000]) <= 2
    assert len([t for t in sent if t < 10_000]) <= 12
    assert 55 <= len(sent) <= 60


def test_raw_requests_are_limited_per_five_minutes() -> None:
    budget = WeightBudget(limit=10_000, fraction=1.0, raw_limit=10, burst_s=60, start_fill=1)
    for _ in range(10):
        assert budget.reserve(1, START_MS) == 0
    assert budget.reserve(1, START_MS + 1_000) == 299_000 + MARGIN_MS
    assert budget.last_wait == "raw"
    assert budget.reserve(1, START_MS + 300_000 + MARGIN_MS) == 0


def test_after_a_429_the_budget_is_lowered_for_a_while() -> None:
    budget = WeightBudget(limit=100, fraction=0.8, penalty_factor=0.5, penalty_ms=300_000)
    assert budget.allowed_at(START_MS) == 80
    budget.penalize(START_MS)
    assert budget.allowed_at(START_MS + 299_999) == 40
    assert budget.allowed_at(START_MS + 300_000) == 80


def too_many(seconds: int, status: int = 429) -> httpx.Response:
    return httpx.Response(
        status, json={"code": -1003, "msg": "too many"}, headers={"Retry-After": str(seconds)}
    )


def test_a_429_lowers_the_budget_and_is_recorded_for_the_next_process(tmp_path: Path) -> None:
    pause_file = tmp_path / "_state" / "pause.json"
    answers = iter([too_many(20)])

    async def scenario(client: JexClient) -> tuple[int, int]:
        await client.get(endpoints.PING)  # 429, waits 20 s, retried
        now = client.clock.now_ms()
        return client.budget.allowed_at(now), client.budget.allowed

    exchange, _, (lowered, normal) = run(
        lambda r: next(answers, ok()), scenario, pause_file=pause_file
    )
    assert lowered < normal
    record = json.loads(pause_file.read_text())
    assert record["status"] == 429
    assert record["until_ms"] == START_MS + 20_000
    assert [t for t, _ in exchange.requests] == [0.0, 20.0]


def test_a_ban_survives_a_restart(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pause_file = tmp_path / "pause.json"

    async def banned(client: JexClient) -> None:
        with pytest.raises(BannedError):
            await client.get(endpoints.PING)

    run(lambda r: too_many(7200, 418), banned, pause_file=pause_file)
    assert json.loads(pause_file.read_text())["status"] == 418

    # A new process (same clock here) reads the record and sends nothing until the ban ends.
    async def restarted(client: JexClient) -> float:
        assert client.paused_for() == pytest.approx(7200, abs=1)
        with pytest.raises(RateLimitError):
            await client.get(endpoints.PING)
        return client.paused_for()

    with caplog.at_level(logging.ERROR, logger="collector.exchange.client"):
        exchange, _, _ = run(lambda r: ok(), restarted, pause_file=pause_file)
    assert exchange.requests == []
    assert any("banned this IP until" in r.getMessage() for r in caplog.records)


def test_tls_is_verified_and_the_environment_ignored_unless_configured(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def make(**options: Any) -> tuple[bool, bool]:
        async with JexClient("https://jex.test", **options) as client:
            http = client._http
            return http._transport._pool._ssl_context.verify_mode != 0, http.trust_env

    with caplog.at_level(logging.WARNING):
        assert asyncio.run(make()) == (True, False)
        assert not caplog.records
        assert asyncio.run(make(verify_tls=False, trust_env=True)) == (False, True)
    assert any("TLS certificate verification is OFF" in r.getMessage() for r in caplog.records)


# -- bodies read within bounds (issue 14, cases 2 and 7) ---------------------------------------


class Chunks(httpx.AsyncByteStream):
    """A body streamed in pieces, as from a network: nothing is read before the client."""

    def __init__(self, data: bytes, size: int) -> None:
        self.pieces = [data[i : i + size] for i in range(0, len(data), size)]

    async def __aiter__(self) -> Any:
        for piece in self.pieces:
            yield piece


def streamed(data: bytes, size: int = 7, **headers: str) -> httpx.Response:
    return httpx.Response(200, stream=Chunks(data, size), headers=headers)


PAYLOAD = [{"price": "81.230000000000000000", "qty": "0.5", "time": i} for i in range(5000)]


def _deflated(data: bytes, wbits: int) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, wbits)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(
    ("encoding", "wbits"),
    [("gzip", zlib.MAX_WBITS | 16), ("deflate", zlib.MAX_WBITS), ("deflate", -zlib.MAX_WBITS)],
    ids=["gzip", "deflate-zlib", "deflate-raw"],
)
@pytest.mark.parametrize("piece", [1, 5, 4096])
def test_compressed_bodies_are_inflated_in_pieces_to_the_same_payload(
    encoding: str, wbits: int, piece: int
) -> None:
    raw = json.dumps(PAYLOAD[: 50 if piece == 1 else None]).encode()
    body = _deflated(raw, wbits)
    _, _, response = run(
        lambda r: streamed(body, piece, **{"Content-Encoding": encoding}),
        lambda client: client.get(endpoints.PING),
    )
    assert response.body == raw and json.loads(raw) == response.payload


def test_a_cut_compressed_body_or_an_unknown_encoding_is_a_payload_error() -> None:
    body = _deflated(json.dumps(PAYLOAD).encode(), zlib.MAX_WBITS | 16)
    answers = iter(
        [
            streamed(body[: len(body) // 2], 512, **{"Content-Encoding": "gzip"}),
            streamed(b"\x1f\x8b garbage", 512, **{"Content-Encoding": "gzip"}),
            streamed(b"[]", 512, **{"Content-Encoding": "br"}),
        ]
    )
    seen: list[str] = []

    async def scenario(client: JexClient) -> None:
        client.quarantine = lambda response, error, kind="": seen.append(kind)
        for expected in ("ends early", "cannot be decoded", "unsupported Content-Encoding"):
            with pytest.raises(PayloadError, match=expected):
                await client.get(endpoints.PING)

    run(lambda r: next(answers), scenario, max_attempts=1)
    assert seen == ["invalid_json"] * 3


def test_a_bomb_stops_once_the_decoded_cap_is_reached_in_bounded_steps() -> None:
    bomb = _deflated(b"[" + b" " * (64 << 20) + b"]", zlib.MAX_WBITS | 16)  # 64 KiB
    exchange, _, error = run(
        lambda r: streamed(bomb, 65536, **{"Content-Encoding": "gzip"}),
        lambda client: _error_of(client.get(endpoints.PING)),
    )
    assert isinstance(error, PayloadError) and "decoded" in str(error)
    assert len(exchange.requests) == 1, "not retried: the body would be as large again"


async def _error_of(call: Any) -> Exception | None:
    try:
        await call
    except Exception as exc:  # the test looks at it
        return exc
    return None


def test_the_status_of_an_error_counts_even_when_its_body_is_too_large() -> None:
    """A 429 whose body breaks the size cap still pauses (its body is only a message)."""
    answers = iter([httpx.Response(429, content=b"x" * 5000, headers={"Retry-After": "3600"})])

    async def scenario(client: JexClient) -> float:
        client.max_response_bytes["default"] = 1024
        with pytest.raises(RateLimitError):
            await client.get(endpoints.PING)
        return client.paused_for()

    _, _, paused = run(lambda r: next(answers), scenario)
    assert paused == 3600


@given(st.integers(0, 2 * MAX_JSON_DEPTH), st.sampled_from(["[]", "{}", "mixed"]))
def test_json_depth_is_measured_exactly_without_recursion(depth: int, shape: str) -> None:
    opens = "".join(
        ("[" if shape == "[]" or (shape == "mixed" and i % 2) else '{"k":') for i in range(depth)
    )
    closes = "".join(("]" if o == "[" else "}") for o in reversed(opens.replace('{"k":', "{")))
    body = f'{opens}"[[{{\\"]"{closes}'.encode()
    assert json_depth_exceeds(body) == (depth > MAX_JSON_DEPTH)
    if depth <= MAX_JSON_DEPTH:
        assert parse_json(body) is not None
    else:
        with pytest.raises(ValueError, match="nested more than"):
            parse_json(body)


# -- snapshots first (issue 14, case 15) -----------------------------------------------------


def test_history_requests_leave_the_snapshot_reserve_of_each_window() -> None:
    budget = WeightBudget(limit=1000, fraction=1.0, burst_s=60, start_fill=1.0)
    budget.snapshot_reserve = 200
    now = 120_000  # the start of a window
    sent = 0
    while budget.reserve(10, now, history=True) == 0:
        sent += 10
    assert sent == 800  # history stops short of the reserve
    assert budget.last_wait == "window"
    snapshots = 0
    while budget.reserve(10, now) == 0:
        snapshots += 10
    assert snapshots == 200  # the snapshots still have theirs
    # once that weight has left the window: history again, never past the reserve
    assert budget.reserve(10, now + 60_000 + MARGIN_MS, history=True) == 0


def test_the_reserve_never_takes_more_than_three_quarters_from_history() -> None:
    budget = WeightBudget(limit=1000, fraction=1.0, burst_s=60, start_fill=1.0)
    budget.snapshot_reserve = 10_000
    now = 120_000
    sent = 0
    while budget.reserve(10, now, history=True) == 0:
        sent += 10
    assert sent == 250


def test_a_waiting_history_request_does_not_hold_up_a_snapshot() -> None:
    """A history request waiting for the next window must not sit on the budget's lock:
    a depth request arriving after it is sent first."""
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.path.rsplit("/", 1)[-1])
        return httpx.Response(200, json=[], headers={"X-MBX-USED-WEIGHT-1M": "0"})

    async def scenario() -> None:
        budget = WeightBudget(limit=100, fraction=1.0, burst_s=60, start_fill=1.0)
        budget.snapshot_reserve = 50
        client = JexClient("http://jex.test", transport=httpx.MockTransport(handler), budget=budget)
        assert budget.reserve(50, client.clock.now_ms(), history=True) == 0  # spent
        history = asyncio.create_task(
            client.get(
                endpoints.KLINES, market="spot", params={"symbol": "BTCUSDT", "interval": "1m"}
            )
        )
        await asyncio.sleep(0.05)
        depth = client.get(endpoints.DEPTH, market="spot", params={"symbol": "BTCUSDT"})
        await asyncio.wait_for(depth, 2)
        assert sent == ["depth"]
        history.cancel()
        await client.aclose()

    asyncio.run(scenario())


def test_a_snapshot_goes_before_history_waiting_for_the_pacing_bucket() -> None:
    """Snapshots first in the queue, not only in the window: a depth request arriving
    while history requests wait for the pacing bucket is sent before them, and the
    history requests keep their order among themselves (no one sent to the back)."""
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(f"{request.url.path.rsplit('/', 1)[-1]}:{request.url.params['symbol']}")
        return httpx.Response(200, json=[], headers={"X-MBX-USED-WEIGHT-1M": "0"})

    async def scenario() -> None:
        # 60 weight a second, an empty bucket: every request waits for the pacing first
        budget = WeightBudget(limit=3600, fraction=1.0, burst_s=1, start_fill=0.0)
        client = JexClient("http://jex.test", transport=httpx.MockTransport(handler), budget=budget)
        history = [
            asyncio.create_task(
                client.get(endpoints.KLINES, market="spot", params={"symbol": s, "interval": "1m"})
            )
            for s in ("A", "B", "C")
        ]
        await asyncio.sleep(0)  # all three queued
        depth = asyncio.create_task(
            client.get(endpoints.DEPTH, market="spot", params={"symbol": "D"})
        )
        await asyncio.wait_for(asyncio.gather(*history, depth), 30)
        await client.aclose()

    asyncio.run(scenario())
    assert sent == ["depth:D", "klines:A", "klines:B", "klines:C"]


def test_a_request_cancelled_in_the_queue_passes_its_turn_on() -> None:
    turns = Turns()
    order: list[str] = []

    async def scenario() -> None:
        opened = asyncio.Event()

        async def request(name: str, priority: int) -> None:
            async with turns.queue(priority) as turn:
                while not (turn.first and opened.is_set()):
                    await turn.wait(0.01 if turn.first else None, asyncio.sleep)
                order.append(name)

        tasks = {
            name: asyncio.create_task(request(name, priority))
            for name, priority in (("h1", HISTORY), ("h2", HISTORY), ("h3", HISTORY))
        }
        await asyncio.sleep(0.05)
        tasks["s1"] = asyncio.create_task(request("s1", SNAPSHOT))
        await asyncio.sleep(0.05)
        assert turns.first == (SNAPSHOT, 3)  # the snapshot took the first place
        tasks["h2"].cancel()  # waiting behind
        tasks["s1"].cancel()  # the first: h1 has its turn again
        await asyncio.sleep(0.05)
        opened.set()
        await asyncio.wait_for(asyncio.gather(tasks["h1"], tasks["h3"]), 5)
        assert tasks["h2"].cancelled() and tasks["s1"].cancelled() and len(turns) == 0

    asyncio.run(scenario())
    assert order == ["h1", "h3"]

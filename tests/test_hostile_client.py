"""The client and the daemon against a hostile exchange (tests/hostile.py: a real HTTP
server on 127.0.0.1 in front of the simulator): responses that trickle, never end, are
too large or inflate without end, nest too deep, redirect, carry absurd ``Retry-After``
or ``serverTime`` values. Each test asserts that the request fails or is set aside as
it should, that the quarantine holds the evidence, that memory stayed within a budget
where a body could grow it, and (in a short daemon run) that the other jobs kept
collecting. Issue 14, cases 1, 2, 5, 6, 7 and 12."""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from collector.collect.daemon import Daemon
from collector.collect.quarantine import DIR_NAME, Quarantine
from collector.config import Settings
from collector.errors import (
    BannedError,
    PayloadError,
    RateLimitError,
    RequestRejectedError,
    TransientError,
)
from collector.exchange import endpoints
from collector.exchange.client import (
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_RETRY_AFTER_S,
    MAX_JSON_DEPTH,
    MAX_RETRY_AFTER_S,
    PAUSE_FILE,
    JexClient,
    wall_clock_ms,
)
from collector.read import catalog
from collector.sim import SimServer
from tests.conftest import fast_settings, unpaced_budget
from tests.hostile import HostileServer

T = TypeVar("T")

#: Growth of the process's peak resident memory allowed while hostile bodies are read.
MEMORY_BUDGET_BYTES = 100 * 1024 * 1024
#: Sizes of the hostile bodies: well above the budget, so that a client without a size
#: cap (or that inflates a body whole) goes over it and the test fails.
HUGE = 256 * 1024 * 1024
#: How long a test waits for something that must end by itself before calling it hung.
HUNG_S = 30.0
#: A daemon run: long enough for the start-up (its plan's klines requests included) and a
#: few rounds of every job.
DAEMON_SECONDS = 8.0


@pytest.fixture
def hostile(sim_server: SimServer) -> Iterator[HostileServer]:
    with HostileServer(sim_server.base_url) as server:
        yield server


def client_for(
    hostile: HostileServer, data_dir: Path, **options: Any
) -> tuple[JexClient, Quarantine]:
    quarantine = Quarantine(data_dir)
    defaults: dict[str, Any] = {
        "api_key": "test-key",
        "timeout": 2.0,
        "max_attempts": 2,
        "backoff_base": 0.01,
        "budget": unpaced_budget(),
        "quarantine": quarantine,
    }
    return JexClient(hostile.base_url, **{**defaults, **options}), quarantine


def run(scenario: Callable[[], Awaitable[T]], within: float = HUNG_S) -> T:
    """``scenario()`` in an event loop; a TimeoutError (the test fails) when it hangs."""

    async def bounded() -> T:
        return await asyncio.wait_for(scenario(), within)

    return asyncio.run(bounded())


def quarantined(data_dir: Path) -> list[dict[str, Any]]:
    return [
        json.loads(path.read_text())
        for path in sorted((data_dir / DIR_NAME).rglob("*.json"))
        if not path.name.startswith(".")
    ]


def depth_of(symbol: str) -> dict[str, Any]:
    return {"symbol": symbol, "limit": 5}


class PeakMemory:
    """How much this process's peak resident memory grew over a ``with`` block (Linux:
    the peak, VmHWM, is reset to the current size through /proc/self/clear_refs)."""

    growth = 0

    def __enter__(self) -> PeakMemory:
        gc.collect()
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pytest.skip("needs Linux's /proc/self/clear_refs to measure the peak memory")
        self._start = _status_kib("VmRSS")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.growth = (_status_kib("VmHWM") - self._start) * 1024


def _status_kib(name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {name} in /proc/self/status")


def daemon_run(
    hostile: HostileServer, data_dir: Path, seconds: float = DAEMON_SECONDS, **exchange: Any
) -> tuple[Daemon, float]:
    """A daemon on ``fast_settings`` against the hostile server for ``seconds``; returns it
    and how long ``run`` took (start-up, collection and shutdown)."""
    settings = fast_settings(hostile.base_url, data_dir)
    settings = settings.model_copy(
        update={"exchange": settings.exchange.model_copy(update=exchange)}
    )
    daemon = Daemon(settings)
    started = time.monotonic()
    # A daemon held up for good fails the test instead of hanging it.
    asyncio.run(asyncio.wait_for(daemon.run(seconds, handle_signals=False), seconds + HUNG_S))
    return daemon, time.monotonic() - started


def row_counts(data_dir: Path, dataset: str) -> dict[tuple[str, str], int]:
    """Rows archived per (market, symbol) of ``dataset``."""
    table = catalog.query(
        data_dir, f"SELECT market, symbol, count(*) AS n FROM {dataset} GROUP BY 1, 2"
    )
    columns = table.to_pydict()
    return {
        (market, symbol): n
        for market, symbol, n in zip(
            columns["market"], columns["symbol"], columns["n"], strict=True
        )
    }


def assert_the_other_jobs_kept_collecting(data_dir: Path, settings: Settings) -> None:
    for dataset in ("trades", "ticker_price", "book_ticker", "funding_rate"):
        assert row_counts(data_dir, dataset), f"{dataset}: no rows archived"
    assert settings.enabled_jobs()


# -- 1. a response that trickles ----------------------------------------------------------


def test_a_trickling_response_fails_at_the_deadline_is_retried_and_quarantined(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """Headers, then a byte every 0.2 s: the per-read timeout (2 s) never fires, the
    request deadline (1.5 s) does, for each of the two attempts."""
    hostile.trickle("/api/v1/spot/depth", interval=0.2)
    client, _ = client_for(hostile, tmp_path, request_deadline=1.5)

    async def scenario() -> tuple[float, Any]:
        async with client:
            started = time.monotonic()
            with pytest.raises(TransientError, match=r"deadline of 1\.5s") as info:
                await client.get(endpoints.DEPTH, market="spot", params=depth_of("BTCUSDT"))
            elapsed = time.monotonic() - started
            assert "bytes of the body had arrived" in str(info.value)
            # The client is not stuck: the next request is answered.
            other = await client.get(endpoints.TICKER_PRICE, market="spot")
            return elapsed, other.payload

    elapsed, prices = run(scenario)
    assert 2 * 1.5 <= elapsed < 2 * 1.5 + 3, "two attempts, each cut at the deadline"
    assert isinstance(prices, list) and prices
    assert len(hostile.served("trickle")) == 2, "retried per max_attempts"
    documents = quarantined(tmp_path)
    assert [d["kind"] for d in documents] == ["deadline_exceeded"] * 2
    for document in documents:
        assert document["endpoint"] == "depth" and document["status"] == 200
        assert document["body"].startswith('[{"pr'), "what had arrived is kept"
        assert "deadline" in document["error"]


def test_a_request_waiting_on_a_trickle_is_cancelled_at_once(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """Shutdown cancels running jobs: the deadline must not swallow the cancellation (nor
    turn it into a timeout that is retried)."""
    hostile.trickle("/api/v1/spot/depth", interval=0.2)
    client, _ = client_for(hostile, tmp_path, request_deadline=60.0)

    async def scenario() -> float:
        async with client:
            task = asyncio.create_task(
                client.get(endpoints.DEPTH, market="spot", params=depth_of("BTCUSDT"))
            )
            await asyncio.sleep(0.5)
            task.cancel()
            started = time.monotonic()
            with pytest.raises(asyncio.CancelledError):
                await task
            return time.monotonic() - started

    assert run(scenario) < 1.0
    assert len(hostile.served("trickle")) == 1, "a cancelled request is not retried"


def test_the_daemon_starts_and_collects_while_one_symbols_klines_trickle(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """The start-up's disk plan asks every symbol's klines; BTCUSDT's trickle forever.
    Without a deadline no job ever started (the plan waited for good, and ``daemon_run``
    gives up 30 s after the run should have ended)."""
    hostile.trickle("/api/v1/spot/klines?*symbol=BTCUSDT*", interval=0.3)
    daemon, _ = daemon_run(hostile, tmp_path, timeout=1.0, request_deadline=1.5)
    assert_the_other_jobs_kept_collecting(tmp_path, daemon.settings)
    klines = row_counts(tmp_path, "klines")
    assert ("spot", "BTCUSDT") not in klines
    assert any(market == "spot" for market, _ in klines), "the other spot symbols' klines"
    documents = [d for d in quarantined(tmp_path) if d["kind"] == "deadline_exceeded"]
    assert documents and all(d["endpoint"] == "klines" for d in documents)
    assert all(d["params"]["symbol"] == "BTCUSDT" for d in documents)


# -- 2. response size -----------------------------------------------------------------------


def test_endless_large_and_inflating_bodies_stop_at_the_cap_within_a_memory_budget(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """An endless chunked body, a declared and an undeclared large body, and a gzip bomb:
    each fails with the size cap (16 MiB for depth) and is quarantined with its first
    part; the process's peak memory grows by less than the budget.

    The bodies are 256 MiB (the bomb inflates to that from 256 KB), so a client that reads
    them whole goes over the budget; the endless one stops there, not to take the
    machine's memory if the cap is broken."""
    hostile.endless("/api/v1/spot/depth", total=HUGE)
    hostile.large("/api/v1/option/depth", HUGE, declare=False)
    hostile.large("/api/v1/contract/depth", HUGE)
    hostile.gzip_bomb("/api/v1/spot/trades", HUGE)
    client, _ = client_for(hostile, tmp_path, request_deadline=HUNG_S)
    requests = [
        (endpoints.DEPTH, "spot", depth_of("BTCUSDT")),
        (endpoints.DEPTH, "option", depth_of("BTCUSDT")),
        (endpoints.DEPTH, "contract", depth_of("BTCUSDT")),
        (endpoints.TRADES, "spot", {"symbol": "BTCUSDT"}),
    ]

    async def scenario() -> list[str]:
        errors = []
        async with client:
            for endpoint, market, params in requests:
                with pytest.raises(PayloadError, match="larger than") as info:
                    await client.get(endpoint, market=market, params=params)
                errors.append(str(info.value))
        return errors

    with PeakMemory() as memory:
        errors = run(scenario, within=2 * HUNG_S)
    assert memory.growth < MEMORY_BUDGET_BYTES, f"peak memory grew {memory.growth >> 20} MiB"
    assert f"larger than {DEFAULT_MAX_RESPONSE_BYTES} bytes" in errors[0]
    assert "Content-Length" in errors[2], "a declared length is refused before reading"
    assert "decoded" in errors[3], "the bomb is stopped while it inflates"
    documents = quarantined(tmp_path)
    assert [(d["endpoint"], d["market"], d["kind"]) for d in documents] == [
        ("depth", "spot", "too_large"),
        ("depth", "option", "too_large"),
        ("depth", "contract", "too_large"),
        ("trades", "spot", "too_large"),
    ]
    assert documents[0]["body"].startswith("[1,1,1,")
    assert documents[1]["body"].startswith("[   ") and documents[3]["body"].startswith("[   ")
    assert documents[3]["headers"]["content-encoding"] == "gzip"
    for path in (tmp_path / DIR_NAME).rglob("*.json"):
        assert path.stat().st_size <= 1024 * 1024, "the quarantine keeps the first part"


def test_the_size_cap_is_set_per_endpoint(hostile: HostileServer, tmp_path: Path) -> None:
    hostile.large("/api/v1/spot/depth", 200 * 1024)
    client, _ = client_for(hostile, tmp_path, max_response_bytes={"depth": 100 * 1024})

    async def scenario() -> Any:
        async with client:
            with pytest.raises(PayloadError, match="larger than 102400 bytes"):
                await client.get(endpoints.DEPTH, market="spot", params=depth_of("BTCUSDT"))
            # Other endpoints keep the default, and a body below the cap is read.
            return (await client.get(endpoints.TICKER_PRICE, market="option")).payload

    hostile.large("/api/v1/option/ticker/price", 200 * 1024)
    assert run(scenario) == []


def test_the_daemon_collects_while_depth_bodies_never_end_or_inflate(
    hostile: HostileServer, tmp_path: Path
) -> None:
    hostile.endless("/api/v1/spot/depth?*symbol=BTCUSDT*", total=HUGE)
    hostile.gzip_bomb("/api/v1/contract/depth", HUGE)
    daemon, _ = daemon_run(hostile, tmp_path)
    assert_the_other_jobs_kept_collecting(tmp_path, daemon.settings)
    depth = row_counts(tmp_path, "depth")
    assert ("spot", "BTCUSDT") not in depth
    assert not any(market == "contract" for market, _ in depth)
    assert any(market == "spot" for market, _ in depth), "the other spot symbols' depth"
    kinds = {(d["endpoint"], d["market"], d["kind"]) for d in quarantined(tmp_path)}
    assert {("depth", "spot", "too_large"), ("depth", "contract", "too_large")} <= kinds


# -- 5 (part). serverTime --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("server_time", "expected"),
    [
        (True, "expected {'serverTime': <ms>}"),
        ("1764000000000", "expected {'serverTime': <ms>}"),
        (1764000000000.5, "expected {'serverTime': <ms>}"),
        (253_402_300_799_000, "from the local clock"),  # 9999-12-31T23:59:59Z
        (0, "from the local clock"),
        (-(10**30), "from the local clock"),
    ],
)
def test_an_absurd_server_time_is_refused_and_the_offset_kept(
    hostile: HostileServer, tmp_path: Path, server_time: Any, expected: str
) -> None:
    client, _ = client_for(hostile, tmp_path)

    async def scenario() -> tuple[int, int]:
        async with client:
            before = await client.sync_clock()  # the simulator's clock: the wall clock
            hostile.respond("/api/v1/time", {"serverTime": server_time})
            with pytest.raises(PayloadError, match=expected.replace("{", r"\{")):
                await client.sync_clock()
            return before, client.clock.offset_ms

    before, after = run(scenario)
    assert abs(before) < 60_000 and after == before
    (document,) = quarantined(tmp_path)
    assert (document["endpoint"], document["kind"]) == ("time", "wrong_shape")
    assert json.loads(document["body"]) == {"serverTime": server_time}


# -- 6. Retry-After --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "retry_after", "pause"),
    [
        (418, "1000000000", MAX_RETRY_AFTER_S),  # 31 years: capped at the longest ban
        (429, "300000", MAX_RETRY_AFTER_S),
        (429, "inf", DEFAULT_RETRY_AFTER_S),  # not a number of seconds: as if absent
        (429, "1e308", DEFAULT_RETRY_AFTER_S),
        (418, "nan", DEFAULT_RETRY_AFTER_S),
        (429, "-5", DEFAULT_RETRY_AFTER_S),
        (429, "soon", DEFAULT_RETRY_AFTER_S),
        (429, "120", 120.0),
        (429, "Wed, 21 Oct 2099 07:28:00 GMT", MAX_RETRY_AFTER_S),
        (429, "Wed, 21 Oct 2015 07:28:00 GMT", 1.0),  # a date past: the shortest pause
        (418, "9" * 400, MAX_RETRY_AFTER_S),  # seconds, too many for a float: capped
    ],
)
def test_retry_after_is_capped_at_the_longest_ban_and_garbage_is_ignored(
    hostile: HostileServer, tmp_path: Path, status: int, retry_after: str, pause: float
) -> None:
    hostile.respond(
        "/api/v1/ping",
        {"code": -1003, "msg": "slow down"},
        status=status,
        headers={"Retry-After": retry_after},
    )
    client, _ = client_for(hostile, tmp_path, pause_file=tmp_path / PAUSE_FILE, max_attempts=1)

    async def scenario() -> float:
        async with client:
            with pytest.raises(BannedError if status == 418 else RateLimitError):
                await client.get(endpoints.PING)
            return client.paused_for()

    assert run(scenario) == pytest.approx(pause, abs=5)
    record = json.loads((tmp_path / PAUSE_FILE).read_text())
    assert record["until_ms"] - wall_clock_ms() <= pause * 1000 + 5000


def test_a_pause_file_beyond_the_longest_ban_is_capped_when_read(tmp_path: Path) -> None:
    """An earlier version wrote a pause until 2058 from a hostile Retry-After."""
    pause_file = tmp_path / PAUSE_FILE
    pause_file.parent.mkdir(parents=True)
    until = wall_clock_ms() + 10**12
    pause_file.write_text(json.dumps({"status": 418, "until_ms": until, "until": "2058"}))
    client = JexClient("http://127.0.0.1:9", pause_file=pause_file)
    assert client.paused_for() == pytest.approx(MAX_RETRY_AFTER_S, abs=5)
    pause_file.write_text('{"status": 418, "until_ms": Infinity}')
    assert JexClient("http://127.0.0.1:9", pause_file=pause_file).paused_for() == 0


# -- 7. deeply nested JSON -------------------------------------------------------------------


def test_deeply_nested_json_is_refused_without_a_recursion_error(
    hostile: HostileServer, tmp_path: Path
) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    hostile.respond("/api/v1/exchangeInfo", deep)
    just_too_deep = b'{"a":' * MAX_JSON_DEPTH + b"[1]" + b"}" * MAX_JSON_DEPTH
    hostile.respond("/api/v1/optionInfo", just_too_deep)
    deepest = b'{"a":' * (MAX_JSON_DEPTH - 1) + b'["[[[[[[[[\\"["]' + b"}" * (MAX_JSON_DEPTH - 1)
    hostile.respond("/api/v1/contractInfo", deepest)
    client, _ = client_for(hostile, tmp_path)

    async def scenario() -> Any:
        async with client:
            for endpoint in (endpoints.EXCHANGE_INFO, endpoints.OPTION_INFO):
                with pytest.raises(PayloadError, match=f"nested more than {MAX_JSON_DEPTH}"):
                    await client.get(endpoint)
            # Brackets inside strings do not count.
            return (await client.get(endpoints.CONTRACT_INFO)).payload

    accepted = run(scenario)
    for _ in range(MAX_JSON_DEPTH - 1):
        accepted = accepted["a"]
    assert accepted == ['[[[[[[[["[']
    documents = quarantined(tmp_path)
    assert [(d["endpoint"], d["kind"]) for d in documents] == [
        ("exchangeInfo", "invalid_json"),
        ("optionInfo", "invalid_json"),
    ]
    assert documents[0]["body"].startswith("[[[[") and documents[0]["body_bytes"] == len(deep)


def test_a_number_of_too_many_digits_is_invalid_json_not_a_crash(
    hostile: HostileServer, tmp_path: Path
) -> None:
    hostile.respond("/api/v1/contract/historyRate", b'[{"id": ' + b"9" * 5000 + b"}]")
    client, _ = client_for(hostile, tmp_path)

    async def scenario() -> None:
        async with client:
            with pytest.raises(PayloadError, match="not valid JSON"):
                await client.get(endpoints.HISTORY_RATE, params={"symbol": "BTCUSDT"})

    run(scenario)
    assert [d["kind"] for d in quarantined(tmp_path)] == ["invalid_json"]


def test_the_daemon_retries_a_deeply_nested_exchange_info_at_start_and_collects(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """The first exchangeInfo nests 100,000 deep (before: RecursionError, exit 1); the
    start-up retries it (after 10 s) and collects, while BTCUSDT's spot depth stays too
    deep and is set aside."""
    hostile.respond("/api/v1/exchangeInfo", b"[" * 100_000 + b"]" * 100_000, times=1)
    hostile.respond("/api/v1/spot/depth?*symbol=BTCUSDT*", b'{"a":' * 1000 + b"1" + b"}" * 1000)
    daemon, _ = daemon_run(hostile, tmp_path, seconds=DAEMON_SECONDS + 10)
    assert_the_other_jobs_kept_collecting(tmp_path, daemon.settings)
    depth = row_counts(tmp_path, "depth")
    assert ("spot", "BTCUSDT") not in depth and any(m == "spot" for m, _ in depth)
    kinds = {(d["endpoint"], d["kind"]) for d in quarantined(tmp_path)}
    assert {("exchangeInfo", "invalid_json"), ("depth", "invalid_json")} <= kinds


# -- 12 (part). redirects ---------------------------------------------------------------------


def test_a_redirect_is_reported_with_its_location_and_never_followed(
    hostile: HostileServer, tmp_path: Path
) -> None:
    elsewhere = f"http://localhost:{hostile.port}/steal-the-key"
    hostile.redirect("/api/v1/spot/historicalTrades", elsewhere, status=301)
    client, _ = client_for(hostile, tmp_path)

    async def scenario() -> None:
        async with client:
            with pytest.raises(RequestRejectedError, match="redirected") as info:
                await client.get(
                    endpoints.HISTORICAL_TRADES, market="spot", params={"symbol": "BTCUSDT"}
                )
            assert "HTTP 301" in str(info.value) and elsewhere in str(info.value)
            assert "exchange.base_url" in str(info.value)

    run(scenario)
    assert not any("steal" in target for target, _ in hostile.requests)
    assert len(hostile.served("redirect")) == 1, "not retried either"

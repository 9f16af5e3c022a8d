"""The JEX HTTP client: one ``httpx.AsyncClient``, weights, pauses, retries, the clock.

Every request goes through :meth:`JexClient.get`, which

1. waits while the exchange has told us to stop (429/418 ``Retry-After``) -- no
   request of this process leaves until then, whichever job makes it; the end of
   such a pause is written to a file so that a restart does not walk back into a ban;
2. waits until the request fits the budget (:mod:`collector.exchange.budget`: weight
   per minute, raw requests per five minutes, paced, lowered for a while after a 429);
3. sends, and reads the body within bounds: a total deadline for the whole request
   (connect, headers and body: a body that trickles in fails like a timeout), a size
   cap per endpoint counted on the wire and again on the decoded bytes (a gzip bomb is
   stopped while it is being inflated, in steps of :data:`DECODE_STEP`), and JSON
   nested at most :data:`MAX_JSON_DEPTH` deep; what broke a bound is quarantined with
   the first part of what arrived;
4. translates the outcome in one place (:meth:`JexClient._check`) into data or one of
   :mod:`collector.errors`' exceptions (a redirect is reported with its ``Location``
   and never followed);
5. retries transient failures (5xx, timeouts, connection errors) with capped
   exponential backoff and full jitter.

What the exchange says is bounded too: ``Retry-After`` is capped at the longest ban
JEX imposes (:data:`MAX_RETRY_AFTER_S`, also when a pause file of an earlier run is
read), and a ``serverTime`` more than :data:`MAX_CLOCK_OFFSET_MS` from the local clock
is refused.

Times returned with a response (``received_at``) are exchange time: local time
plus the offset measured from ``/api/v1/time``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import math
import os
import random
import re
import time
import zlib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from collector import __version__
from collector.errors import (
    BannedError,
    ExchangeError,
    PayloadError,
    RateLimitError,
    RequestRejectedError,
    TransientError,
    UnknownSymbolError,
)
from collector.exchange import endpoints
from collector.exchange.budget import WeightBudget
from collector.exchange.endpoints import Endpoint
from collector.exchange.turns import HISTORY, SNAPSHOT, Turns
from collector.ops.metrics import Metrics

if TYPE_CHECKING:
    from collector.config import Settings

log = logging.getLogger(__name__)

#: Waits shorter than this are slept through; longer ones fail the request at once
#: (the job's round is skipped) rather than holding a job for minutes or days.
MAX_INLINE_WAIT_S = 30.0


#: Endpoints whose data the jobs page through from a cursor: what a request misses now
#: is fetched later. They yield the budget to the snapshot endpoints (budget.py).
HISTORY_ENDPOINTS = frozenset(
    e.name
    for e in (
        endpoints.HISTORICAL_TRADES,
        endpoints.KLINES,
        endpoints.HISTORY_RATE,
        endpoints.PROTECTION_FUND,
    )
)
#: How far past the next weight window a waiting request is sent.
WINDOW_GUARD_MS = 500

#: Where, under the data directory, the end of an exchange-imposed pause is kept.
PAUSE_FILE = "_state/pause.json"

#: The longest pause a ``Retry-After`` (or a pause file) may impose: JEX's bans escalate
#: from 2 minutes to at most 3 days (shared/jex-api.md, Rate limits).
MAX_RETRY_AFTER_S = 3 * 86_400.0
#: The pause after a 429 or 418 whose ``Retry-After`` is missing or unusable (not a
#: number or HTTP date, negative, NaN or infinite).
DEFAULT_RETRY_AFTER_S = 60.0

#: A ``serverTime`` further than this from the local clock is refused (and the offset
#: measured before is kept): one of the two clocks is wrong, and trusting the exchange's
#: would date every row and partition by it.
MAX_CLOCK_OFFSET_MS = 86_400_000

#: The whole request (connect, headers, body) when ``exchange.request_deadline`` is not
#: set: the larger of this and twice ``exchange.timeout`` (see
#: :func:`default_request_deadline`).
MIN_REQUEST_DEADLINE_S = 30.0

#: Body size caps, in decoded bytes, when ``exchange.max_response_size`` says nothing
#: else. The largest documented responses are a 1000-kline page (about 250 KB) and the
#: instrument lists (about 0.5 KB per symbol): 16 MiB is 60 times the first, and the
#: instrument lists get room for over 100,000 symbols.
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024
MAX_RESPONSE_BYTES_BY_ENDPOINT: Mapping[str, int] = {
    "exchangeInfo": 64 * 1024 * 1024,
    "optionInfo": 64 * 1024 * 1024,
    "contractInfo": 64 * 1024 * 1024,
}
#: Decoded bytes produced per step of decompression: memory stays bounded however well
#: the body compresses (deflate inflates up to about 1000 times).
DECODE_STEP = 64 * 1024
#: JSON nested deeper than this is refused before it is parsed (the documented responses
#: are at most 4 deep; Python's parser would raise RecursionError at about 1000).
MAX_JSON_DEPTH = 64
#: What a quarantine file gets of a body that broke a bound (it keeps less: its own cap).
QUARANTINE_SAMPLE_BYTES = 1024 * 1024


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Response:
    """A decoded response, with what is needed to quarantine it if it cannot be parsed.

    ``headers`` are the response's; the request's (which carry the API key) are
    never kept.
    """

    payload: Any
    received_at: int  # exchange time, ms
    status: int
    used_weight: int | None
    endpoint: str = ""
    market: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class QuarantineHook(Protocol):
    """Called with a response the client cannot use (``payload`` None, ``body`` what
    arrived), the error and a ``kind``, before the client raises; see
    :mod:`collector.collect.quarantine`. Kinds: ``invalid_json`` (not JSON, or nested deeper than
    :data:`MAX_JSON_DEPTH`), ``too_large`` (beyond the endpoint's size cap),
    ``deadline_exceeded`` (not complete within the request deadline), ``wrong_shape``
    (``serverTime`` unusable)."""

    def __call__(self, response: Response, error: str, *, kind: str = "invalid_json") -> None:
        """Keep ``response`` for a human; never raise."""


def default_request_deadline(timeout: float) -> float:
    """The total deadline of a request when none is configured: the larger of
    :data:`MIN_REQUEST_DEADLINE_S` and twice the per-read ``timeout``."""
    return max(MIN_REQUEST_DEADLINE_S, 2 * timeout)


class ExchangeClock:
    """Exchange time from the local clock plus a measured offset."""

    def __init__(self, local_ms: Callable[[], int] = wall_clock_ms) -> None:
        self.local_ms = local_ms
        self.offset_ms = 0
        self.synced = False

    def now_ms(self) -> int:
        return self.local_ms() + self.offset_ms

    @staticmethod
    def offset_of(sent_local: int, server_time: int, received_local: int) -> int:
        """Offset from one round trip: the server read its clock at about the midpoint."""
        return server_time - (sent_local + received_local) // 2

    def update(self, sent_local: int, server_time: int, received_local: int) -> None:
        self.offset_ms = self.offset_of(sent_local, server_time, received_local)
        self.synced = True


class JexClient:
    """Async JEX REST client. Use as ``async with JexClient(...) as client``."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 10.0,
        request_deadline: float | None = None,
        max_response_bytes: Mapping[str, int] | None = None,
        weight_fraction: float = 0.8,
        max_attempts: int = 4,
        concurrency: int = 4,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: ExchangeClock | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        backoff_base: float = 0.5,
        backoff_cap: float = 10.0,
        budget: WeightBudget | None = None,
        verify_tls: bool = True,
        trust_env: bool = False,
        pause_file: Path | None = None,
        quarantine: QuarantineHook | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._api_key = api_key
        self.quarantine = quarantine  # may also be set after construction
        #: Seconds a whole request (connect, headers, body) may take.
        self.request_deadline = (
            default_request_deadline(timeout) if request_deadline is None else request_deadline
        )
        #: Decoded body size caps by endpoint name (``default``: every other endpoint).
        self.max_response_bytes: dict[str, int] = {
            "default": DEFAULT_MAX_RESPONSE_BYTES,
            **MAX_RESPONSE_BYTES_BY_ENDPOINT,
            **(max_response_bytes or {}),
        }
        self.clock = clock or ExchangeClock()
        self.budget = budget or WeightBudget(fraction=weight_fraction)
        self.max_attempts = max_attempts
        self._monotonic = monotonic
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 -- jitter, not security
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._turns = Turns()
        self._in_flight = asyncio.Semaphore(concurrency)
        self.paused_until = 0.0  # local monotonic seconds
        self._budget_logged_window = -1
        self.stats: dict[str, int] = {"requests": 0, "retries": 0, "429": 0, "418": 0}
        self.metrics = metrics or Metrics()
        self.metrics.watch_budget(self._limits)
        self._pause_file = pause_file
        self._load_pause()
        if not verify_tls:
            log.warning(
                "TLS certificate verification is OFF (exchange.verify_tls: false): anyone on "
                "the network path can impersonate %s",
                base_url,
            )
        self._http = httpx.AsyncClient(
            base_url=base_url,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            # Only the encodings the client inflates itself, within bounds (_BodyReader).
            headers={
                "User-Agent": f"jex-collector/{__version__}",
                "Accept-Encoding": "gzip, deflate",
            },
            transport=transport,
            verify=verify_tls,
            # Proxy and CA settings from the environment (HTTPS_PROXY, SSL_CERT_FILE, ...) are
            # ignored unless exchange.trust_env says otherwise: a stray variable must not
            # silently route the collector through another host.
            trust_env=trust_env,
        )

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        metrics: Metrics | None = None,
    ) -> JexClient:
        """A client configured by ``settings.exchange`` and the API key of the environment.

        Pauses the exchange imposes (429, 418) are recorded in ``_state/pause.json`` of
        the host's state dir (``settings.state_dir()``; the archive folder of a local
        archive), shared by every process that uses it.
        """
        exchange = settings.exchange
        return cls(
            exchange.base_url,
            api_key=settings.api_key.get_secret_value() if settings.api_key else None,
            timeout=exchange.timeout,
            request_deadline=exchange.request_deadline,
            max_response_bytes=exchange.max_response_size,
            weight_fraction=exchange.weight_fraction,
            max_attempts=exchange.max_attempts,
            concurrency=exchange.concurrency,
            transport=transport,
            verify_tls=exchange.verify_tls,
            trust_env=exchange.trust_env,
            pause_file=settings.state_dir() / PAUSE_FILE,
            metrics=metrics,
        )

    async def __aenter__(self) -> JexClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def has_api_key(self) -> bool:
        return bool(self._api_key)

    def __repr__(self) -> str:  # never shows the key
        return (
            f"JexClient({str(self._http.base_url)!r}, api_key={'set' if self._api_key else None})"
        )

    def _limits(self) -> tuple[int, int]:
        """The exchange's weight limit and our allowance now, per minute (for the metrics)."""
        return self.budget.limit, self.budget.allowed_at(self.clock.now_ms())

    def paused_for(self) -> float:
        """Seconds until the exchange lets us send again (0 when we may send)."""
        return max(0.0, self.paused_until - self._monotonic())

    # -- pauses that survive a restart -----------------------------------------------------

    def _load_pause(self) -> None:
        """Resume a pause recorded by an earlier run (or another process on this archive)."""
        if self._pause_file is None:
            return
        try:
            record = json.loads(self._pause_file.read_text(encoding="utf-8"))
            until_ms = int(record["until_ms"])
            status = int(record.get("status", 0))
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, OverflowError) as exc:
            log.warning("ignoring unreadable %s: %s", self._pause_file, exc)
            return
        left = (until_ms - self.clock.now_ms()) / 1000
        if left <= 0:
            return
        if left > MAX_RETRY_AFTER_S:
            # Written by an earlier version that trusted any Retry-After, or edited: no
            # JEX ban lasts longer, so a longer pause would only stop collection for good.
            log.warning(
                "%s asks for a pause of %.0fs, beyond the longest JEX ban (%.0fs): "
                "pausing for %.0fs",
                self._pause_file,
                left,
                MAX_RETRY_AFTER_S,
                MAX_RETRY_AFTER_S,
            )
            left = MAX_RETRY_AFTER_S
            until_ms = self.clock.now_ms() + int(left * 1000)
        self.paused_until = max(self.paused_until, self._monotonic() + left)
        log.log(
            logging.ERROR if status == 418 else logging.WARNING,
            "the exchange %s until %s (%.0fs from now), recorded in %s; nothing is sent before",
            "banned this IP" if status == 418 else "asked us to pause",
            _iso(until_ms),
            left,
            self._pause_file,
        )

    def _record_pause(self, status: int, seconds: float) -> None:
        if self._pause_file is None:
            return
        until_ms = self.clock.now_ms() + int(seconds * 1000)
        record = {"status": status, "until_ms": until_ms, "until": _iso(until_ms)}
        temp = self._pause_file.with_name(f".{self._pause_file.name}.{os.getpid()}.tmp")
        try:
            self._pause_file.parent.mkdir(parents=True, exist_ok=True)
            temp.write_text(json.dumps(record), encoding="utf-8")
            os.replace(temp, self._pause_file)
        except OSError as exc:  # the pause still holds in memory
            log.warning("could not record the pause in %s: %s", self._pause_file, exc)
            with contextlib.suppress(OSError):
                temp.unlink()

    # -- the one way out -------------------------------------------------------------------

    async def get(
        self,
        endpoint: Endpoint,
        *,
        market: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> Response:
        """GET ``endpoint`` and return its decoded JSON with the receive time.

        Raises the :mod:`collector.errors` exception that says what to do.
        """
        params = {k: v for k, v in (params or {}).items() if v is not None}
        context: dict[str, Any] = {
            "endpoint": endpoint.name,
            "market": market,
            "symbol": params.get("symbol"),
        }
        headers: dict[str, str] = {}
        if endpoint.security == "MARKET_DATA":
            if not self._api_key:
                raise RequestRejectedError(
                    "this endpoint needs an API key; set JEX_API_KEY", **context
                )
            headers["X-JEX-APIKEY"] = self._api_key
        path = endpoint.url_path(market)
        weight = endpoint.cost(params)
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._send_once(path, params, headers, weight, context)
            except TransientError as exc:
                if attempt >= self.max_attempts:
                    raise
                delay = self._backoff(attempt)
                self.stats["retries"] += 1
                self.metrics.retry(path, _retry_reason(exc))
                log.info(
                    "retrying %s in %.2fs (attempt %d): %s",
                    path,
                    delay,
                    attempt,
                    exc,
                    extra={**_log_fields(context), "error": str(exc)},
                )
                await self._sleep(delay)
            except RateLimitError as exc:
                if isinstance(exc, BannedError) or attempt >= self.max_attempts:
                    raise
                if exc.retry_at - self._monotonic() > MAX_INLINE_WAIT_S:
                    raise
                self.metrics.retry(path, "rate_limited")

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**(attempt-1))]."""
        ceiling = min(self._backoff_cap, self._backoff_base * 2 ** (attempt - 1))
        return self._rng.uniform(0, ceiling)

    async def _wait_until_allowed(self, weight: int, context: dict[str, Any]) -> None:
        """Wait until the budget lets a request of ``weight`` go, and reserve it.

        Requests take turns (turns.py): snapshots before history (:data:`HISTORY_ENDPOINTS`,
        which also leave the budget's ``snapshot_reserve`` of each window to snapshots),
        first come, first served within each. Only the first in the queue asks the budget
        and waits what it says, pacing and window waits alike."""
        history = context["endpoint"] in HISTORY_ENDPOINTS
        async with self._turns.queue(HISTORY if history else SNAPSHOT) as turn:
            while True:
                wait_s: float | None = None
                if turn.first:
                    wait_s = self._wait_or_reserve(weight, context, history)
                    if wait_s <= 0:
                        return
                await turn.wait(wait_s, self._sleep)

    def _wait_or_reserve(self, weight: int, context: dict[str, Any], history: bool) -> float:
        """0 after reserving the request, else the seconds to wait (logged once a window)."""
        pause = self.paused_until - self._monotonic()
        if pause > MAX_INLINE_WAIT_S:
            raise RateLimitError(
                f"the exchange asked us to pause; sending nothing for {pause:.0f}s more",
                retry_at=self.paused_until,
                **context,
            )
        if pause > 0:
            return pause
        now = self.clock.now_ms()
        wait_ms = self.budget.reserve(weight, now, history=history)
        if wait_ms <= 0:
            return 0.0
        if self.budget.last_wait == "pace":
            # Pacing waits are short and normal: the minute's weight is spread out.
            return wait_ms / 1000
        if self.budget.window_start != self._budget_logged_window and not history:
            self._budget_logged_window = self.budget.window_start
            raw = self.budget.last_wait == "raw"
            log.info(
                "%s budget reached (%d of %d %s, exchange limit %d): requests wait "
                "%.0fs for the next window",
                "raw-request" if raw else "weight",
                self.budget.raw_used if raw else self.budget.used,
                (self.budget.raw_allowed or 0) if raw else self.budget.allowed_at(now),
                "in five minutes" if raw else "this minute",
                (self.budget.raw_limit or 0) if raw else self.budget.limit,
                wait_ms / 1000,
            )
        # Wait a little past the boundary: our estimate of the exchange clock is off
        # by a few ms, and a burst that lands just before the exchange's window
        # rolls over counts against the full old one.
        return (wait_ms + WINDOW_GUARD_MS) / 1000

    async def _send_once(
        self,
        path: str,
        params: dict[str, Any],
        headers: dict[str, str],
        weight: int,
        context: dict[str, Any],
    ) -> Response:
        await self._wait_until_allowed(weight, context)
        limit = self.max_response_bytes.get(context["endpoint"], self.max_response_bytes["default"])
        reader = _BodyReader(limit)
        response: httpx.Response | None = None
        async with self._in_flight:
            self.stats["requests"] += 1
            try:
                # One deadline for connect, headers and body: httpx's timeout is per read,
                # and a body that trickles in a byte at a time would never end. Cancelling
                # the task (shutdown) goes through this as through any await.
                async with asyncio.timeout(self.request_deadline):
                    request = self._http.build_request("GET", path, params=params, headers=headers)
                    response = await self._http.send(request, stream=True)
                    try:
                        await reader.read(response)
                    finally:
                        await response.aclose()
            except TimeoutError:
                message = (
                    f"{_TIMED_OUT}: the request took longer than its deadline of "
                    f"{self.request_deadline:g}s (exchange.request_deadline)"
                )
                if response is None:
                    self.metrics.request(path, "timeout")
                    raise TransientError(message, **context) from None
                if response.is_success:
                    self.metrics.request(path, "timeout")
                    message += f"; {reader.received} bytes of the body had arrived"
                    self._set_aside(
                        _partial(response, reader, self.clock.now_ms(), context),
                        message,
                        "deadline_exceeded",
                    )
                    raise TransientError(message, **context) from None
                # An error status (a 429, a ban) counts whatever its body does.
            except asyncio.CancelledError:
                # Shutdown cut it short: counted too, so that the requests sent and the
                # requests counted by status always agree.
                self.metrics.request(path, "cancelled")
                raise
            except httpx.TimeoutException as exc:
                self.metrics.request(path, "timeout")
                raise TransientError(f"{_TIMED_OUT}: {type(exc).__name__}", **context) from None
            except httpx.TransportError as exc:
                self.metrics.request(path, "connection_error")
                raise TransientError(f"connection failed: {exc!r}", **context) from None
            except _BodyRefused as exc:
                assert response is not None
                if response.is_success:
                    self.metrics.request(path, response.status_code)
                    error = PayloadError(str(exc), status=response.status_code, **context)
                    self._set_aside(
                        _partial(response, reader, self.clock.now_ms(), context),
                        str(error),
                        exc.kind,
                    )
                    raise error from None
        assert response is not None
        self.metrics.request(path, response.status_code)
        received_at = self.clock.now_ms()
        # For an error status, what arrived of the body (perhaps cut) is only its message.
        return self._check(response, reader.body(), received_at, context)

    def _set_aside(self, response: Response, error: str, kind: str) -> None:
        if self.quarantine is not None:
            self.quarantine(response, error, kind=kind)

    # -- translating outcomes, in one place ------------------------------------------------

    def _retry_after(self, headers: httpx.Headers) -> float:
        """Seconds to pause: ``Retry-After`` (seconds or an HTTP date) capped at
        :data:`MAX_RETRY_AFTER_S`; :data:`DEFAULT_RETRY_AFTER_S` when it is missing or
        unusable (negative, NaN, infinite, garbage)."""
        raw = headers.get("Retry-After", "").strip()
        seconds: float | None = None
        if _DECIMAL.fullmatch(raw):
            seconds = float(raw)  # never NaN; infinite only for hundreds of digits: capped
        elif raw:
            try:
                when = parsedate_to_datetime(raw)
            except (TypeError, ValueError, IndexError, OverflowError):
                when = None
            if when is not None and when.tzinfo is not None:  # a date past: no wait
                seconds = max(0.0, when.timestamp() - self.clock.now_ms() / 1000)
        if seconds is None or math.isnan(seconds) or seconds < 0:
            if raw:
                log.warning(
                    "unusable Retry-After %s: pausing for %.0fs",
                    _snippet(raw.encode(), 40),
                    DEFAULT_RETRY_AFTER_S,
                )
            return DEFAULT_RETRY_AFTER_S
        if seconds > MAX_RETRY_AFTER_S:
            log.warning(
                "Retry-After of %.0fs is beyond the longest JEX ban: pausing for %.0fs",
                seconds,
                MAX_RETRY_AFTER_S,
            )
        return min(max(1.0, seconds), MAX_RETRY_AFTER_S)

    def _check(
        self, response: httpx.Response, body: bytes, received_at: int, context: dict[str, Any]
    ) -> Response:
        status = response.status_code
        used = _used_weight(response.headers)
        if used is not None:
            self.budget.observe(used, self.clock.now_ms())
            self.metrics.used_weight(used)
        if status in (418, 429):
            seconds = self._retry_after(response.headers)
            self.paused_until = max(self.paused_until, self._monotonic() + seconds)
            self.stats[str(status)] += 1
            self.metrics.rate_limited(status)
            # Whatever made us exceed the limit (another process, a lower real limit) is
            # still there: spend less for a while.
            self.budget.penalize(self.clock.now_ms())
            self._record_pause(status, seconds)
            if status == 418:
                log.error(
                    "the exchange banned this IP (HTTP 418) for %.0fs (until %s); sending "
                    "nothing until then, and a restart waits too",
                    seconds,
                    _iso(self.clock.now_ms() + int(seconds * 1000)),
                    extra={**_log_fields(context), "status": status},
                )
                raise BannedError(
                    f"IP banned for {seconds:.0f}s",
                    retry_at=self.paused_until,
                    status=status,
                    **context,
                )
            log.warning(
                "HTTP 429 from the exchange: pausing every request for %.0fs, then using %.0f%% "
                "of the budget for %.0f minutes",
                seconds,
                self.budget.penalty_factor * 100,
                self.budget.penalty_ms / 60_000,
                extra={**_log_fields(context), "status": status},
            )
            raise RateLimitError(
                f"rate limited; retry after {seconds:.0f}s",
                retry_at=self.paused_until,
                status=status,
                **context,
            )
        if status >= 500:
            raise TransientError(
                f"server error {status}: {_snippet(body)}", status=status, **context
            )
        if 300 <= status < 400:
            # Never followed: a market-data API does not move, and a Location could send
            # the API key's requests to another host. exchange.base_url is probably stale.
            location = response.headers.get("Location")
            raise RequestRejectedError(
                f"redirected (HTTP {status}) to "
                f"{_snippet(location.encode(), 200) if location else '<no Location>'}; "
                "redirects are not followed: check exchange.base_url",
                status=status,
                **context,
            )
        try:
            payload = parse_json(body)
        except ValueError as exc:
            if status >= 400:
                raise RequestRejectedError(
                    f"HTTP {status}: {_snippet(body)}", status=status, **context
                ) from None
            error = PayloadError(
                f"response is not valid JSON ({exc}): {_snippet(body)}",
                status=status,
                **context,
            )
            self._set_aside(
                _response(None, response, body, received_at, used, context),
                str(error),
                "invalid_json",
            )
            raise error from None
        if status >= 400:
            code = payload.get("code") if isinstance(payload, dict) else None
            msg = payload.get("msg", "") if isinstance(payload, dict) else _snippet(body)
            if code == -1121:
                raise UnknownSymbolError(
                    f"unknown symbol: {msg}", status=status, code=code, **context
                )
            if code in (-1001, -1016):
                raise TransientError(
                    f"exchange unavailable: {msg}", status=status, code=code, **context
                )
            hint = " (check JEX_API_KEY)" if status in (401, 403) else ""
            raise RequestRejectedError(
                f"rejected: {msg}{hint}", status=status, code=code, **context
            )
        return _response(payload, response, body, received_at, used, context)

    # -- conveniences ----------------------------------------------------------------------

    async def sync_clock(self) -> int:
        """Measure the exchange clock offset from ``/api/v1/time``; return it in ms.

        A ``serverTime`` that is not an integer (a boolean is not), or that is more than
        :data:`MAX_CLOCK_OFFSET_MS` from the local clock, raises :class:`PayloadError`
        and keeps the offset measured before."""
        sent = self.clock.local_ms()
        response = await self.get(endpoints.TIME)
        received = self.clock.local_ms()
        payload = response.payload
        server_time = payload.get("serverTime") if isinstance(payload, dict) else None
        if type(server_time) is not int:  # not isinstance: True is an int to Python
            error = PayloadError(
                f"time: expected {{'serverTime': <ms>}}, got {_snippet(response.body)}",
                endpoint="time",
            )
            self._set_aside(response, str(error), "wrong_shape")
            raise error
        offset = ExchangeClock.offset_of(sent, server_time, received)
        if abs(offset) > MAX_CLOCK_OFFSET_MS:
            error = PayloadError(
                f"time: the exchange's serverTime {server_time} ({_iso(server_time)}) is "
                f"{offset / 3_600_000:+.1f} h from the local clock, more than the "
                f"{MAX_CLOCK_OFFSET_MS / 3_600_000:.0f} h allowed: refused, keeping the "
                f"offset {self.clock.offset_ms:+d} ms (check the local clock and NTP)",
                endpoint="time",
            )
            self._set_aside(response, str(error), "wrong_shape")
            raise error
        self.clock.update(sent, server_time, received)
        log.info("exchange clock offset %+d ms", self.clock.offset_ms)
        return self.clock.offset_ms


def _response(
    payload: Any,
    response: httpx.Response,
    body: bytes,
    received_at: int,
    used: int | None,
    context: dict[str, Any],
) -> Response:
    return Response(
        payload=payload,
        received_at=received_at,
        status=response.status_code,
        used_weight=used,
        endpoint=context["endpoint"],
        market=context["market"],
        params=dict(response.request.url.params),
        headers=dict(response.headers),
        body=body,
    )


def _partial(
    response: httpx.Response, reader: _BodyReader, received_at: int, context: dict[str, Any]
) -> Response:
    """What arrived of a body that broke a bound: its first part, for the quarantine."""
    return _response(None, response, reader.head(), received_at, None, context)


# -- reading a body within bounds ------------------------------------------------------------


class _BodyRefused(Exception):
    """The body broke a bound; ``kind`` is the quarantine's."""

    def __init__(self, message: str, kind: str) -> None:
        self.kind = kind
        super().__init__(message)


class _Inflater:
    """Incremental gzip or deflate decoding that never produces more than
    :data:`DECODE_STEP` bytes at once."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        # gzip: the gzip header; deflate: the zlib header, or raw deflate as some servers
        # send (decided by the first bytes, as httpx does).
        wbits = zlib.MAX_WBITS | 16 if encoding in ("gzip", "x-gzip") else zlib.MAX_WBITS
        self._inflate = zlib.decompressobj(wbits)
        self._undecided = encoding == "deflate"
        self._head = b""

    def decode(self, data: bytes) -> Iterator[bytes]:
        if self._undecided:
            self._head += data
            if len(self._head) < 2:
                return
            data, self._head, self._undecided = self._head, b"", False
            if not _is_zlib_header(data[:2]):
                self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
        while not self._inflate.eof:
            piece = self._inflate.decompress(data, DECODE_STEP)
            if piece:
                yield piece
            data = self._inflate.unconsumed_tail
            if not data and len(piece) < DECODE_STEP:
                return  # input used up, no output pending

    def flush(self) -> Iterator[bytes]:
        if self._undecided and self._head:  # a one-byte body
            self._undecided = False
            yield from self.decode(self._head)
        yield from self.decode(b"")
        if not self._inflate.eof:
            raise zlib.error("the compressed body ends early")


def _is_zlib_header(head: bytes) -> bool:
    """Whether two bytes start a zlib stream (RFC 1950: deflate, checksum of the pair)."""
    return head[0] & 0x0F == 8 and (head[0] << 8 | head[1]) % 31 == 0


class _BodyReader:
    """Reads a streamed response's body into memory, at most ``limit`` decoded bytes, and
    raises :class:`_BodyRefused` beyond: on the declared length, the bytes on the wire
    and the decoded bytes, each checked as they come."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._data = bytearray()

    @property
    def received(self) -> int:
        return len(self._data)

    def body(self) -> bytes:
        return bytes(self._data)

    def head(self, size: int = QUARANTINE_SAMPLE_BYTES) -> bytes:
        return bytes(self._data[:size])

    def _too_large(self, what: str) -> _BodyRefused:
        return _BodyRefused(
            f"response larger than {self.limit} bytes ({what}; exchange.max_response_size)",
            "too_large",
        )

    async def read(self, response: httpx.Response) -> None:
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.limit:
            raise self._too_large(f"Content-Length {declared[:30]}")
        try:
            content = response.content  # a response made in memory (httpx.MockTransport)
        except httpx.ResponseNotRead:
            pass
        else:
            self._add(content)
            return
        encodings = [
            e.strip().lower()
            for e in response.headers.get("Content-Encoding", "").split(",")
            if e.strip() and e.strip().lower() != "identity"
        ]
        if len(encodings) > 1 or not set(encodings) <= {"gzip", "x-gzip", "deflate"}:
            raise _BodyRefused(
                f"unsupported Content-Encoding {_snippet(', '.join(encodings).encode(), 60)} "
                "(the client asks for gzip or deflate)",
                "invalid_json",
            )
        inflater = _Inflater(encodings[0]) if encodings else None
        on_wire = 0
        try:
            async for chunk in response.aiter_raw():
                on_wire += len(chunk)
                if on_wire > self.limit:
                    raise self._too_large(f"{on_wire} bytes on the wire so far")
                for piece in inflater.decode(chunk) if inflater else (chunk,):
                    self._add(piece)
            for piece in inflater.flush() if inflater else ():
                self._add(piece)
        except zlib.error as exc:
            raise _BodyRefused(
                f"the {inflater.encoding if inflater else ''} body cannot be decoded: {exc}",
                "invalid_json",
            ) from None

    def _add(self, piece: bytes) -> None:
        room = self.limit - len(self._data)
        if len(piece) > room:
            self._data += piece[:room]
            raise self._too_large("decoded")
        self._data += piece


# -- JSON within bounds ----------------------------------------------------------------------

_DECIMAL = re.compile(r"\d+(?:\.\d*)?|\.\d+")
#: A JSON string, escapes included (unrolled so that it never backtracks).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth_exceeds(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``body`` nests arrays and objects more than ``limit`` deep, found without
    parsing it (and without recursion): strings are cut out, then each pass removes the
    innermost pairs of brackets; what is left after ``limit`` passes is deeper."""
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    brackets = brackets.replace(b"{", b"[").replace(b"}", b"]")
    for _ in range(limit):
        shorter = brackets.replace(b"[]", b"")
        if len(shorter) == len(brackets):
            return False  # nothing nests further (unbalanced brackets: the parser says so)
        brackets = shorter
    return b"[]" in brackets


def parse_json(body: bytes) -> Any:
    """``body`` decoded as JSON; a ValueError for anything that is not JSON, JSON nested
    more than :data:`MAX_JSON_DEPTH` deep, or a number of more digits than Python converts.
    """
    if json_depth_exceeds(body):
        raise ValueError(f"nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        return json.loads(body)
    except RecursionError:  # not reached below MAX_JSON_DEPTH; kept as a last guard
        raise ValueError(f"nested more than {MAX_JSON_DEPTH} levels deep") from None


#: The start of a timeout's message, which is how a retry is labelled ``timeout``.
_TIMED_OUT = "timed out"


def _retry_reason(exc: TransientError) -> str:
    """A short, bounded label for why a request is retried (the metrics' ``reason``)."""
    if exc.status is not None:
        return f"http_{exc.status}"
    return "timeout" if str(exc).startswith(_TIMED_OUT) else "connection"


def _log_fields(context: dict[str, Any]) -> dict[str, Any]:
    """A request's context as the structured fields of a log line (see collector.logs)."""
    return {
        "endpoint": context["endpoint"],
        "market": context["market"],
        "symbol": context["symbol"],
    }


def _used_weight(headers: httpx.Headers) -> int | None:
    for name in ("X-MBX-USED-WEIGHT-1M", "X-MBX-USED-WEIGHT"):
        value = headers.get(name)
        if value is not None:
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _iso(ms: int) -> str:
    try:
        return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat(timespec="seconds")
    except (ValueError, OverflowError, OSError):  # beyond the year 9999, or before 1
        return f"{ms} ms since the epoch"


def _snippet(body: bytes, size: int = 120) -> str:
    text = body[:size].decode("utf-8", errors="replace").replace("\n", " ").strip()
    return (text + "...") if len(body) > size else (text or "<empty body>")


__all__ = [
    "ExchangeClock",
    "ExchangeError",
    "JexClient",
    "QuarantineHook",
    "Response",
    "default_request_deadline",
    "parse_json",
    "wall_clock_ms",
]

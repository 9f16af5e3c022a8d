"""The JEX HTTP client: one ``httpx.AsyncClient``, weights, pauses, retries, the clock.

Every request goes through :meth:`JexClient.get`, which

1. waits while the exchange has told us to stop (429/418 ``Retry-After``) -- no
   request of this process leaves until then, whichever job makes it; the end of
   such a pause is written to a file so that a restart does not walk back into a ban
   (:mod:`collector.exchange.pauses`);
2. waits until the request fits the budget (:mod:`collector.exchange.budget`: weight
   per minute, raw requests per five minutes, paced, lowered for a while after a 429);
3. sends, and reads the body within bounds: a total deadline for the whole request
   (connect, headers and body: a body that trickles in fails like a timeout), a size
   cap per endpoint counted on the wire and again on the decoded bytes (a gzip bomb is
   stopped while it is being inflated, in steps of :data:`DECODE_STEP`;
   :mod:`collector.exchange.body`), and JSON nested at most :data:`MAX_JSON_DEPTH` deep
   (:mod:`collector.exchange.jsonbounds`); what broke a bound is quarantined with
   the first part of what arrived;
4. translates the outcome in one place (:meth:`JexClient._check`, with
   :mod:`collector.exchange.outcomes`) into data or one of :mod:`collector.errors`'
   exceptions (a redirect is reported with its ``Location`` and never followed);
5. retries transient failures (5xx, timeouts, connection errors) with capped
   exponential backoff and full jitter.

What the exchange says is bounded too: ``Retry-After`` is capped at the longest ban
JEX imposes (:data:`MAX_RETRY_AFTER_S`, also when a pause file of an earlier run is
read), and a ``serverTime`` more than :data:`MAX_CLOCK_OFFSET_MS` from the local clock
is refused.

Times returned with a response (``received_at``) are exchange time: local time
plus the offset measured from ``/api/v1/time`` (:mod:`collector.exchange.clock`).

The names other modules import from here are re-exported from where they now live
(:data:`__all__`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import httpx

from collector import __version__
from collector.errors import (
    BannedError,
    ExchangeError,
    PayloadError,
    RateLimitError,
    RequestRejectedError,
    TransientError,
)
from collector.exchange import endpoints
from collector.exchange.body import (
    DECODE_STEP,
    DEFAULT_MAX_RESPONSE_BYTES,
    MAX_RESPONSE_BYTES_BY_ENDPOINT,
    QUARANTINE_SAMPLE_BYTES,
    BodyReader,
    BodyRefused,
)
from collector.exchange.budget import WeightBudget
from collector.exchange.clock import MAX_CLOCK_OFFSET_MS, ExchangeClock, wall_clock_ms
from collector.exchange.endpoints import Endpoint
from collector.exchange.gate import HISTORY_ENDPOINTS, MAX_INLINE_WAIT_S, WINDOW_GUARD_MS, Gate
from collector.exchange.jsonbounds import MAX_JSON_DEPTH, json_depth_exceeds, parse_json
from collector.exchange.outcomes import TIMED_OUT, payload_of, retry_reason, used_weight
from collector.exchange.pauses import (
    DEFAULT_RETRY_AFTER_S,
    MAX_RETRY_AFTER_S,
    PAUSE_FILE,
    load_pause,
    rate_limit_error,
    record_pause,
    retry_after,
)
from collector.exchange.response import QuarantineHook, Response, log_fields, response_of
from collector.ops.metrics import Metrics

if TYPE_CHECKING:
    from collector.config import Settings


log = logging.getLogger(__name__)

#: The whole request (connect, headers, body) when ``exchange.request_deadline`` is not
#: set: the larger of this and twice ``exchange.timeout`` (see
#: :func:`default_request_deadline`).
MIN_REQUEST_DEADLINE_S = 30.0


def default_request_deadline(timeout: float) -> float:
    """The total deadline of a request when none is configured: the larger of
    :data:`MIN_REQUEST_DEADLINE_S` and twice the per-read ``timeout``."""
    return max(MIN_REQUEST_DEADLINE_S, 2 * timeout)


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
        self._in_flight = asyncio.Semaphore(concurrency)
        self.paused_until = 0.0  # local monotonic seconds
        self._gate = Gate(
            self.budget,
            self.clock,
            paused_until=lambda: self.paused_until,
            monotonic=monotonic,
            sleep=sleep,
        )
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
            # Only the encodings the client inflates itself, within bounds (BodyReader).
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
        left = load_pause(self._pause_file, self.clock.now_ms)
        if left is not None:
            self.paused_until = max(self.paused_until, self._monotonic() + left)

    def _record_pause(self, status: int, seconds: float) -> None:
        if self._pause_file is None:
            return
        record_pause(self._pause_file, status, self.clock.now_ms() + int(seconds * 1000))

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
                self.metrics.retry(path, retry_reason(exc))
                log.info(
                    "retrying %s in %.2fs (attempt %d): %s",
                    path,
                    delay,
                    attempt,
                    exc,
                    extra={**log_fields(context), "error": str(exc)},
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

    async def _send_once(
        self,
        path: str,
        params: dict[str, Any],
        headers: dict[str, str],
        weight: int,
        context: dict[str, Any],
    ) -> Response:
        await self._gate.wait_until_allowed(weight, context)
        limit = self.max_response_bytes.get(context["endpoint"], self.max_response_bytes["default"])
        reader = BodyReader(limit)
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
                    f"{TIMED_OUT}: the request took longer than its deadline of "
                    f"{self.request_deadline:g}s (exchange.request_deadline)"
                )
                if response is None:
                    self.metrics.request(path, "timeout")
                    raise TransientError(message, **context) from None
                if response.is_success:
                    self.metrics.request(path, "timeout")
                    message += f"; {reader.received} bytes of the body had arrived"
                    self._set_aside(
                        reader.partial(response, self.clock.now_ms(), context),
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
                raise TransientError(f"{TIMED_OUT}: {type(exc).__name__}", **context) from None
            except httpx.TransportError as exc:
                self.metrics.request(path, "connection_error")
                raise TransientError(f"connection failed: {exc!r}", **context) from None
            except BodyRefused as exc:
                assert response is not None
                if response.is_success:
                    self.metrics.request(path, response.status_code)
                    error = PayloadError(str(exc), status=response.status_code, **context)
                    self._set_aside(
                        reader.partial(response, self.clock.now_ms(), context),
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

    def _check(
        self, response: httpx.Response, body: bytes, received_at: int, context: dict[str, Any]
    ) -> Response:
        status = response.status_code
        used = used_weight(response.headers)
        if used is not None:
            self.budget.observe(used, self.clock.now_ms())
            self.metrics.used_weight(used)
        if status in (418, 429):
            self._rate_limited(status, response.headers, context)
        try:
            payload = payload_of(response, body, context)
        except PayloadError as error:  # a success that is not JSON within bounds
            self._set_aside(
                response_of(None, response, body, received_at, used, context),
                str(error),
                "invalid_json",
            )
            raise
        return response_of(payload, response, body, received_at, used, context)

    def _rate_limited(
        self, status: int, headers: httpx.Headers, context: dict[str, Any]
    ) -> NoReturn:
        """Pause every request as the exchange said (a 429 or a 418 ban), and raise."""
        seconds = retry_after(headers, self.clock.now_ms)
        self.paused_until = max(self.paused_until, self._monotonic() + seconds)
        self.stats[str(status)] += 1
        self.metrics.rate_limited(status)
        # Whatever made us exceed the limit (another process, a lower real limit) is
        # still there: spend less for a while.
        self.budget.penalize(self.clock.now_ms())
        self._record_pause(status, seconds)
        raise rate_limit_error(
            status,
            seconds,
            retry_at=self.paused_until,
            budget=self.budget,
            now_ms=self.clock.now_ms,
            context=context,
        )

    # -- conveniences ----------------------------------------------------------------------

    async def sync_clock(self) -> int:
        """Measure the exchange clock offset from ``/api/v1/time``; return it in ms.

        A ``serverTime`` that is not an integer (a boolean is not), or that is more than
        :data:`MAX_CLOCK_OFFSET_MS` from the local clock, raises :class:`PayloadError`
        and keeps the offset measured before."""
        sent = self.clock.local_ms()
        response = await self.get(endpoints.TIME)
        received = self.clock.local_ms()
        try:
            self.clock.update_from(response.payload, response.body, sent, received)
        except ValueError as exc:
            error = PayloadError(str(exc), endpoint="time")
            self._set_aside(response, str(error), "wrong_shape")
            raise error from None
        log.info("exchange clock offset %+d ms", self.clock.offset_ms)
        return self.clock.offset_ms


__all__ = [
    "DECODE_STEP",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_RETRY_AFTER_S",
    "HISTORY_ENDPOINTS",
    "MAX_CLOCK_OFFSET_MS",
    "MAX_INLINE_WAIT_S",
    "MAX_JSON_DEPTH",
    "MAX_RESPONSE_BYTES_BY_ENDPOINT",
    "MAX_RETRY_AFTER_S",
    "MIN_REQUEST_DEADLINE_S",
    "PAUSE_FILE",
    "QUARANTINE_SAMPLE_BYTES",
    "WINDOW_GUARD_MS",
    "ExchangeClock",
    "ExchangeError",
    "JexClient",
    "QuarantineHook",
    "Response",
    "default_request_deadline",
    "json_depth_exceeds",
    "parse_json",
    "wall_clock_ms",
]

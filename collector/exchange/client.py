"""The JEX HTTP client: one ``httpx.AsyncClient``, weights, pauses, retries, the clock.

Every request goes through :meth:`JexClient.get`, which

1. waits while the exchange has told us to stop (429/418 ``Retry-After``) -- no
   request of this process leaves until then, whichever job makes it; the end of
   such a pause is written to a file so that a restart does not walk back into a ban;
2. waits until the request fits the budget (:mod:`collector.exchange.budget`: weight
   per minute, raw requests per five minutes, paced, lowered for a while after a 429);
3. sends, then translates the outcome in one place (:meth:`JexClient._check`)
   into data or one of :mod:`collector.errors`' exceptions;
4. retries transient failures (5xx, timeouts, connection errors) with capped
   exponential backoff and full jitter.

Times returned with a response (``received_at``) are exchange time: local time
plus the offset measured from ``/api/v1/time``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
from collector.metrics import Metrics

if TYPE_CHECKING:
    from collector.config import Settings

log = logging.getLogger(__name__)

#: Waits shorter than this are slept through; longer ones fail the request at once
#: (the job's round is skipped) rather than holding a job for minutes or days.
MAX_INLINE_WAIT_S = 30.0


#: How far past the next weight window a waiting request is sent.
WINDOW_GUARD_MS = 500

#: Where, under the data directory, the end of an exchange-imposed pause is kept.
PAUSE_FILE = "_state/pause.json"


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


#: Called with a response whose body is not JSON (``payload`` None) and the error, before
#: the client raises :class:`PayloadError`; see :mod:`collector.quarantine`.
QuarantineHook = Callable[[Response, str], None]


class ExchangeClock:
    """Exchange time from the local clock plus a measured offset."""

    def __init__(self, local_ms: Callable[[], int] = wall_clock_ms) -> None:
        self.local_ms = local_ms
        self.offset_ms = 0
        self.synced = False

    def now_ms(self) -> int:
        return self.local_ms() + self.offset_ms

    def update(self, sent_local: int, server_time: int, received_local: int) -> None:
        """Offset from one round trip: the server read its clock at about the midpoint."""
        self.offset_ms = server_time - (sent_local + received_local) // 2
        self.synced = True


class JexClient:
    """Async JEX REST client. Use as ``async with JexClient(...) as client``."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 10.0,
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
        self.clock = clock or ExchangeClock()
        self.budget = budget or WeightBudget(fraction=weight_fraction)
        self.max_attempts = max_attempts
        self._monotonic = monotonic
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 -- jitter, not security
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._budget_lock = asyncio.Lock()
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
            headers={"User-Agent": f"jex-collector/{__version__}"},
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
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable %s: %s", self._pause_file, exc)
            return
        left = (until_ms - self.clock.now_ms()) / 1000
        if left <= 0:
            return
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
        async with self._budget_lock:
            while True:
                pause = self.paused_until - self._monotonic()
                if pause > MAX_INLINE_WAIT_S:
                    raise RateLimitError(
                        f"the exchange asked us to pause; sending nothing for {pause:.0f}s more",
                        retry_at=self.paused_until,
                        **context,
                    )
                if pause > 0:
                    await self._sleep(pause)
                    continue
                now = self.clock.now_ms()
                wait_ms = self.budget.reserve(weight, now)
                if wait_ms <= 0:
                    return
                if self.budget.last_wait == "pace":
                    # Pacing waits are short and normal: the minute's weight is spread out.
                    await self._sleep(wait_ms / 1000)
                    continue
                if self.budget.window_start != self._budget_logged_window:
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
                await self._sleep((wait_ms + WINDOW_GUARD_MS) / 1000)

    async def _send_once(
        self,
        path: str,
        params: dict[str, Any],
        headers: dict[str, str],
        weight: int,
        context: dict[str, Any],
    ) -> Response:
        await self._wait_until_allowed(weight, context)
        async with self._in_flight:
            self.stats["requests"] += 1
            try:
                response = await self._http.get(path, params=params, headers=headers)
            except httpx.TimeoutException as exc:
                self.metrics.request(path, "timeout")
                raise TransientError(f"{_TIMED_OUT}: {type(exc).__name__}", **context) from None
            except httpx.TransportError as exc:
                self.metrics.request(path, "connection_error")
                raise TransientError(f"connection failed: {exc!r}", **context) from None
        self.metrics.request(path, response.status_code)
        received_at = self.clock.now_ms()
        return self._check(response, received_at, context)

    # -- translating outcomes, in one place ------------------------------------------------

    def _retry_after(self, response: httpx.Response) -> float:
        raw = response.headers.get("Retry-After", "")
        try:
            return max(1.0, float(raw))
        except ValueError:
            return 60.0  # no usable header: a conservative pause

    def _check(
        self, response: httpx.Response, received_at: int, context: dict[str, Any]
    ) -> Response:
        status = response.status_code
        used = _used_weight(response.headers)
        if used is not None:
            self.budget.observe(used, self.clock.now_ms())
            self.metrics.used_weight(used)
        if status in (418, 429):
            seconds = self._retry_after(response)
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
                f"server error {status}: {_snippet(response.content)}", status=status, **context
            )
        try:
            payload = json.loads(response.content)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            if status >= 400:
                raise RequestRejectedError(
                    f"HTTP {status}: {_snippet(response.content)}", status=status, **context
                ) from None
            error = PayloadError(
                f"response is not valid JSON ({exc}): {_snippet(response.content)}",
                status=status,
                **context,
            )
            if self.quarantine is not None:
                self.quarantine(_response(None, response, received_at, used, context), str(error))
            raise error from None
        if status >= 400:
            code = payload.get("code") if isinstance(payload, dict) else None
            msg = (
                payload.get("msg", "") if isinstance(payload, dict) else _snippet(response.content)
            )
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
        return _response(payload, response, received_at, used, context)

    # -- conveniences ----------------------------------------------------------------------

    async def sync_clock(self) -> int:
        """Measure the exchange clock offset from ``/api/v1/time``; return it in ms."""
        sent = self.clock.local_ms()
        response = await self.get(endpoints.TIME)
        received = self.clock.local_ms()
        payload = response.payload
        if not isinstance(payload, dict) or not isinstance(payload.get("serverTime"), int):
            raise PayloadError("time: expected {'serverTime': <ms>}", endpoint="time")
        self.clock.update(sent, payload["serverTime"], received)
        log.info("exchange clock offset %+d ms", self.clock.offset_ms)
        return self.clock.offset_ms


def _response(
    payload: Any,
    response: httpx.Response,
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
        body=response.content,
    )


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
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat(timespec="seconds")


def _snippet(body: bytes, size: int = 120) -> str:
    text = body[:size].decode("utf-8", errors="replace").replace("\n", " ").strip()
    return (text + "...") if len(body) > size else (text or "<empty body>")


__all__ = ["ExchangeClock", "ExchangeError", "JexClient", "Response", "wall_clock_ms"]

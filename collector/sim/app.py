"""The simulator's HTTP API: JEX's market-data endpoints for spot, option and contract.

Every request passes the per-IP rate limiter (weights as documented, counted per clock
minute or over the last 60 seconds as ``weight_window`` says, headers
``X-MBX-USED-WEIGHT-1M``/``X-MBX-USED-WEIGHT``, 429 then 418), then a handler
that reads the deterministic market in :mod:`collector.sim.market`, then the
fault switches (:mod:`collector.sim.faults`; payload faults are applied by
:mod:`collector.sim.mutations`). ``/_sim/*`` admin paths are exempt from both.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from collector.sim.faults import Faults
from collector.sim.limits import RateLimiter, WindowKind
from collector.sim.market import DAY, INTERVALS, MINUTE, SimExchange
from collector.sim.mutations import MUTATIONS, mutate
from collector.sim.params import ApiError, Params
from collector.sim.views import MarketViews

MARKETS = ("spot", "option", "contract")


@dataclass(frozen=True)
class RouteSpec:
    handler: Callable[[MarketViews, str, Params], Any]
    weight: int
    weight_without_symbol: int | None = None
    market_data_key: bool = False

    def cost(self, params: Params) -> int:
        if self.weight_without_symbol is not None and not params.get("symbol"):
            return self.weight_without_symbol
        return self.weight


GENERAL: dict[str, RouteSpec] = {
    "/api/v1/ping": RouteSpec(lambda v, m, p: {}, 1),
    "/api/v1/time": RouteSpec(lambda v, m, p: {"serverTime": v.exchange.now_ms()}, 1),
    "/api/v1/exchangeInfo": RouteSpec(lambda v, m, p: v.exchange_info(), 1),
    "/api/v1/optionInfo": RouteSpec(lambda v, m, p: v.option_info(), 1),
    "/api/v1/contractInfo": RouteSpec(lambda v, m, p: v.contract_info(), 1),
}

PER_MARKET: dict[str, RouteSpec] = {
    "depth": RouteSpec(lambda v, m, p: v.depth(m, p), 1),
    "trades": RouteSpec(lambda v, m, p: v.recent_trades(m, p), 1),
    "historicalTrades": RouteSpec(
        lambda v, m, p: v.historical_trades(m, p), 5, market_data_key=True
    ),
    "klines": RouteSpec(lambda v, m, p: v.klines(m, p), 1),
    "avgPrice": RouteSpec(lambda v, m, p: v.avg_price(m, p), 1),
    "ticker/24hr": RouteSpec(lambda v, m, p: v.ticker_24hr(m, p), 1, 40),
    "ticker/price": RouteSpec(lambda v, m, p: v.ticker_price(m, p), 1, 2),
    "ticker/bookTicker": RouteSpec(lambda v, m, p: v.book_ticker(m, p), 1, 2),
}

CONTRACT_ONLY: dict[str, RouteSpec] = {
    "ticker/indicesPrice": RouteSpec(lambda v, m, p: v.indices_price(p), 1, 1),
    "historyRate": RouteSpec(lambda v, m, p: v.history_rate(p), 1),
    "protectionFund": RouteSpec(lambda v, m, p: v.protection_fund(p), 1),
    "liquidationOrder": RouteSpec(lambda v, m, p: v.liquidation_orders(p), 5, market_data_key=True),
}

_PATH = re.compile(r"^/api/v1/(?P<market>spot|option|contract)/(?P<rest>.+)$")


def resolve(path: str) -> tuple[RouteSpec, str, str] | None:
    """(route, market, route name such as ``ticker/24hr`` or ``exchangeInfo``)."""
    if path in GENERAL:
        return GENERAL[path], "", path.rsplit("/", 1)[-1]
    match = _PATH.match(path)
    if not match:
        return None
    market, rest = match["market"], match["rest"]
    if rest in PER_MARKET:
        return PER_MARKET[rest], market, rest
    if market == "contract" and rest in CONTRACT_ONLY:
        return CONTRACT_ONLY[rest], market, rest
    return None


#: Where :class:`_SimApp` keeps the server's socket transport in the ASGI scope.
_TRANSPORT = "jex.sim.transport"


class _SimApp(Starlette):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # uvicorn's `send` is a method of its per-request cycle, which holds the socket's
        # transport: kept so that connection_reset can close it without any response.
        scope[_TRANSPORT] = getattr(getattr(send, "__self__", None), "transport", None)
        await super().__call__(scope, receive, send)


class DroppedConnection(Response):
    """Not a response: the connection is closed without one (``connection_reset``)."""

    def __init__(self) -> None:
        super().__init__(b"")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        transport = scope.get(_TRANSPORT)
        if transport is None:
            raise ConnectionResetError("connection_reset needs a socket server (SimServer)")
        transport.abort()
        # Let the server notice the lost connection before the app returns: it then
        # sends nothing (no 500) and logs nothing.
        await asyncio.sleep(0)


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(body, status, headers=headers, media_type="application/json;charset=UTF-8")


def create_app(
    exchange: SimExchange,
    *,
    weight_limit: int = 1200,
    raw_limit_5m: int = 5000,
    faults: Faults | None = None,
    api_keys: frozenset[str] | None = None,
    weight_window: WindowKind = "fixed",
) -> Starlette:
    """The JEX-compatible ASGI app over ``exchange``.

    ``api_keys=None`` accepts any non-empty ``X-JEX-APIKEY`` on MARKET_DATA endpoints.
    ``weight_window``: ``"fixed"`` counts weight per clock minute, ``"rolling"`` over the
    last 60 seconds (:mod:`collector.sim.limits`).
    """
    views = MarketViews(exchange, weight_limit=weight_limit, raw_limit_5m=raw_limit_5m)
    limiter = RateLimiter(weight_limit, raw_limit_5m, window=weight_window)
    state: dict[str, Faults] = {"faults": faults or Faults()}

    async def admin(request: Request) -> Response:
        action = request.path_params["action"]
        if action == "faults":
            if request.method == "POST":
                try:
                    state["faults"] = Faults.from_dict(json.loads(await request.body() or b"{}"))
                except (ValueError, TypeError) as exc:
                    return _json({"error": str(exc)}, 400)
            return _json(state["faults"].to_dict())
        if action == "state":
            now = exchange.now_ms()
            return _json(
                {
                    "now": now,
                    "seed": exchange.seed,
                    "weight_window": limiter.window,
                    "clients": limiter.state(now),
                    "faults": state["faults"].to_dict(),
                    "faults_injected": state["faults"].injected,
                }
            )
        return _json({"error": f"unknown admin path {action!r}"}, 404)

    async def api(request: Request) -> Response:
        resolved = resolve(request.url.path)
        if resolved is None:
            return _json({"code": -1000, "msg": "Not found."}, 404)
        spec, market, route = resolved
        params: Params = dict(request.query_params)
        ip = request.client.host if request.client else "unknown"
        verdict = limiter.admit(ip, spec.cost(params), exchange.now_ms())
        headers = {
            "X-MBX-USED-WEIGHT-1M": str(verdict.used_weight),
            "X-MBX-USED-WEIGHT": str(verdict.used_weight),
        }
        if verdict.status != 200:
            headers["Retry-After"] = str(verdict.retry_after_s)
            message = (
                "Way too many requests; IP banned."
                if verdict.status == 418
                else "Too many requests; current limit exceeded."
            )
            return _json({"code": -1003, "msg": message}, verdict.status, headers)
        if spec.market_data_key:
            key = request.headers.get("X-JEX-APIKEY", "")
            if not key or (api_keys is not None and key not in api_keys):
                return _json({"code": -2014, "msg": "API-key format invalid."}, 401, headers)
        try:
            payload = spec.handler(views, market, params)
        except ApiError as exc:
            return _json({"code": exc.code, "msg": exc.msg}, exc.status, headers)
        faults = state["faults"]
        fault = faults.draw()
        if fault in MUTATIONS:
            payload = mutate(fault, route, payload, faults.spawn_rng())
        if fault == "connection_reset":
            return DroppedConnection()
        if fault == "error_500":
            return Response(
                b"<html><body><h1>500 Internal Server Error</h1></body></html>",
                500,
                headers=headers,
                media_type="text/html",
            )
        if fault == "unavailable_503":
            return Response(b"", 503, headers=headers)
        if fault == "truncated_json":
            body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
            return Response(
                body[: len(body) // 2], 200, headers=headers, media_type="application/json"
            )
        if fault == "slow":
            await asyncio.sleep(faults.slow_seconds)
        return _json(payload, 200, headers)

    return _SimApp(
        routes=[
            Route("/_sim/{action}", admin, methods=["GET", "POST"]),
            Route("/{path:path}", api, methods=["GET"]),
        ]
    )


__all__ = ["DAY", "INTERVALS", "MARKETS", "MINUTE", "ApiError", "create_app"]

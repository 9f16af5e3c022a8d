"""Translating what the exchange answered into data or one of :mod:`collector.errors`'
exceptions (rate limits and bans, which change the client's state, are the client's own:
:meth:`collector.exchange.client.JexClient._check`)."""

from __future__ import annotations

from typing import Any

import httpx

from collector.errors import (
    PayloadError,
    RequestRejectedError,
    TransientError,
    UnknownSymbolError,
)
from collector.exchange.jsonbounds import parse_json
from collector.exchange.response import snippet

#: The start of a timeout's message, which is how a retry is labelled ``timeout``.
TIMED_OUT = "timed out"


def payload_of(response: httpx.Response, body: bytes, context: dict[str, Any]) -> Any:
    """The JSON payload of a response that is not a 429 or 418, or the exception that says
    what to do: :class:`TransientError` for a 5xx (or an exchange that says it is
    unavailable), :class:`RequestRejectedError` for a redirect (reported with its
    ``Location`` and never followed) or a 4xx, :class:`UnknownSymbolError`, and
    :class:`PayloadError` for a success that is not JSON within bounds (the only one the
    client quarantines)."""
    status = response.status_code
    if status >= 500:
        raise TransientError(f"server error {status}: {snippet(body)}", status=status, **context)
    if 300 <= status < 400:
        # Never followed: a market-data API does not move, and a Location could send
        # the API key's requests to another host. exchange.base_url is probably stale.
        location = response.headers.get("Location")
        raise RequestRejectedError(
            f"redirected (HTTP {status}) to "
            f"{snippet(location.encode(), 200) if location else '<no Location>'}; "
            "redirects are not followed: check exchange.base_url",
            status=status,
            **context,
        )
    try:
        payload = parse_json(body)
    except ValueError as exc:
        if status >= 400:
            raise RequestRejectedError(
                f"HTTP {status}: {snippet(body)}", status=status, **context
            ) from None
        raise PayloadError(
            f"response is not valid JSON ({exc}): {snippet(body)}",
            status=status,
            **context,
        ) from None
    if status >= 400:
        code = payload.get("code") if isinstance(payload, dict) else None
        msg = payload.get("msg", "") if isinstance(payload, dict) else snippet(body)
        if code == -1121:
            raise UnknownSymbolError(f"unknown symbol: {msg}", status=status, code=code, **context)
        if code in (-1001, -1016):
            raise TransientError(
                f"exchange unavailable: {msg}", status=status, code=code, **context
            )
        hint = " (check JEX_API_KEY)" if status in (401, 403) else ""
        raise RequestRejectedError(f"rejected: {msg}{hint}", status=status, code=code, **context)
    return payload


def used_weight(headers: httpx.Headers) -> int | None:
    """The weight the exchange says this IP used in the current minute, if it says."""
    for name in ("X-MBX-USED-WEIGHT-1M", "X-MBX-USED-WEIGHT"):
        value = headers.get(name)
        if value is not None:
            try:
                return int(value)
            except ValueError:
                return None
    return None


def retry_reason(exc: TransientError) -> str:
    """A short, bounded label for why a request is retried (the metrics' ``reason``)."""
    if exc.status is not None:
        return f"http_{exc.status}"
    return "timeout" if str(exc).startswith(TIMED_OUT) else "connection"

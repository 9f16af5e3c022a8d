"""What the client returns (:class:`Response`), the quarantine hook it calls with what it
cannot use (:class:`QuarantineHook`), and what its messages show of a request (the
context's log fields, a short printable excerpt of a body).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx


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
    :data:`collector.exchange.jsonbounds.MAX_JSON_DEPTH`), ``too_large`` (beyond the endpoint's
    size cap), ``deadline_exceeded`` (not complete within the request deadline), ``wrong_shape``
    (``serverTime`` unusable)."""

    def __call__(self, response: Response, error: str, *, kind: str = "invalid_json") -> None:
        """Keep ``response`` for a human; never raise."""


def response_of(
    payload: Any,
    response: httpx.Response,
    body: bytes,
    received_at: int,
    used: int | None,
    context: dict[str, Any],
) -> Response:
    """``response`` (read, with ``body``) as a :class:`Response` of the request ``context``."""
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


def log_fields(context: dict[str, Any]) -> dict[str, Any]:
    """A request's context as the structured fields of a log line (see collector.logs)."""
    return {
        "endpoint": context["endpoint"],
        "market": context["market"],
        "symbol": context["symbol"],
    }


def snippet(body: bytes, size: int = 120) -> str:
    """The first ``size`` bytes of ``body`` as one line of text, for messages."""
    text = body[:size].decode("utf-8", errors="replace").replace("\n", " ").strip()
    return (text + "...") if len(body) > size else (text or "<empty body>")

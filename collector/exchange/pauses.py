"""Pauses the exchange imposes (429, 418): reading ``Retry-After``, what the client says
and raises when told to pause, and the pause file that makes a pause survive a restart.

What the exchange says is bounded: ``Retry-After`` is capped at the longest ban JEX
imposes (:data:`MAX_RETRY_AFTER_S`), also when a pause file of an earlier run is read.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx

from collector.errors import BannedError, RateLimitError
from collector.exchange.budget import WeightBudget
from collector.exchange.clock import iso
from collector.exchange.response import log_fields, snippet
from collector.storage.files import STATE_DIR, write_atomically
from collector.units import MINUTE_MS

#: The client's logger: these lines are the client's, as they were before this module
#: was split from it (a logging configuration that names the client still covers them).
log = logging.getLogger("collector.exchange.client")

#: Where, under the data directory, the end of an exchange-imposed pause is kept.
PAUSE_FILE = f"{STATE_DIR}/pause.json"

#: The longest pause a ``Retry-After`` (or a pause file) may impose: JEX's bans escalate
#: from 2 minutes to at most 3 days (shared/jex-api.md, Rate limits).
MAX_RETRY_AFTER_S = 3 * 86_400.0
#: The pause after a 429 or 418 whose ``Retry-After`` is missing or unusable (not a
#: number or HTTP date, negative, NaN or infinite).
DEFAULT_RETRY_AFTER_S = 60.0

_DECIMAL = re.compile(r"\d+(?:\.\d*)?|\.\d+")


def retry_after(headers: httpx.Headers, now_ms: Callable[[], int]) -> float:
    """Seconds to pause: ``Retry-After`` (seconds or an HTTP date, compared with the
    exchange clock ``now_ms``) capped at :data:`MAX_RETRY_AFTER_S`;
    :data:`DEFAULT_RETRY_AFTER_S` when it is missing or unusable (negative, NaN, infinite,
    garbage)."""
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
            seconds = max(0.0, when.timestamp() - now_ms() / 1000)
    if seconds is None or math.isnan(seconds) or seconds < 0:
        if raw:
            log.warning(
                "unusable Retry-After %s: pausing for %.0fs",
                snippet(raw.encode(), 40),
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


def load_pause(pause_file: Path, now_ms: Callable[[], int]) -> float | None:
    """Seconds left of a pause recorded in ``pause_file`` by an earlier run (or another
    process on this archive), at most :data:`MAX_RETRY_AFTER_S`; None when there is none
    (no file, an unreadable one, or a pause that has ended)."""
    try:
        record = json.loads(pause_file.read_text(encoding="utf-8"))
        until_ms = int(record["until_ms"])
        status = int(record.get("status", 0))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, OverflowError) as exc:
        log.warning("ignoring unreadable %s: %s", pause_file, exc)
        return None
    left = (until_ms - now_ms()) / 1000
    if left <= 0:
        return None
    if left > MAX_RETRY_AFTER_S:
        # Written by an earlier version that trusted any Retry-After, or edited: no
        # JEX ban lasts longer, so a longer pause would only stop collection for good.
        log.warning(
            "%s asks for a pause of %.0fs, beyond the longest JEX ban (%.0fs): pausing for %.0fs",
            pause_file,
            left,
            MAX_RETRY_AFTER_S,
            MAX_RETRY_AFTER_S,
        )
        left = MAX_RETRY_AFTER_S
        until_ms = now_ms() + int(left * 1000)
    log.log(
        logging.ERROR if status == 418 else logging.WARNING,
        "the exchange %s until %s (%.0fs from now), recorded in %s; nothing is sent before",
        "banned this IP" if status == 418 else "asked us to pause",
        iso(until_ms),
        left,
        pause_file,
    )
    return left


def record_pause(pause_file: Path, status: int, until_ms: int) -> None:
    """Record in ``pause_file`` that the exchange answered ``status`` and asked for a pause
    until ``until_ms`` (exchange time); written atomically, and only logged if it fails
    (the pause still holds in memory)."""
    record = {"status": status, "until_ms": until_ms, "until": iso(until_ms)}
    try:
        pause_file.parent.mkdir(parents=True, exist_ok=True)
        # Not fsynced: a power cut may lose the record.
        write_atomically(pause_file, json.dumps(record), fsync=False)
    except OSError as exc:  # the pause still holds in memory
        log.warning("could not record the pause in %s: %s", pause_file, exc)


def rate_limit_error(
    status: int,
    seconds: float,
    *,
    retry_at: float,
    budget: WeightBudget,
    now_ms: Callable[[], int],
    context: dict[str, Any],
) -> RateLimitError:
    """Log that the exchange answered ``status`` (429, or 418: a ban) and made us pause for
    ``seconds`` (until ``retry_at``, local monotonic seconds), with ``budget`` lowered
    after it; return the exception to raise (:class:`BannedError` for a ban)."""
    if status == 418:
        log.error(
            "the exchange banned this IP (HTTP 418) for %.0fs (until %s); sending "
            "nothing until then, and a restart waits too",
            seconds,
            iso(now_ms() + int(seconds * 1000)),
            extra={**log_fields(context), "status": status},
        )
        return BannedError(
            f"IP banned for {seconds:.0f}s",
            retry_at=retry_at,
            status=status,
            **context,
        )
    log.warning(
        "HTTP 429 from the exchange: pausing every request for %.0fs, then using %.0f%% "
        "of the budget for %.0f minutes",
        seconds,
        budget.penalty_factor * 100,
        budget.penalty_ms / MINUTE_MS,
        extra={**log_fields(context), "status": status},
    )
    return RateLimitError(
        f"rate limited; retry after {seconds:.0f}s",
        retry_at=retry_at,
        status=status,
        **context,
    )

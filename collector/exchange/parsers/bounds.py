"""Record bounds, and the field readers that enforce them: each turns one field of an
exchange record into a value of the archive or raises ValueError (the record is then set
aside, see :func:`collector.exchange.parsers.rows.build_rows`)."""

from __future__ import annotations

import math
import re
from typing import Any

SYMBOL_RE = re.compile(r"[A-Z0-9][A-Z0-9._-]{0,63}")
#: An asset name: letters (any script: option assets are Chinese labels), digits and
#: ``._-``; no space, markup or control character.
ASSET_RE = re.compile(r"[^\W_][\w.-]{0,63}")
#: Instrument statuses the API reference documents.
STATUSES = frozenset(
    ("PRE_TRADING", "TRADING", "POST_TRADING", "END_OF_DAY", "HALT", "AUCTION_MATCH", "BREAK")
)

#: No JEX record is older than this (2017-01-01 UTC; the exchange opened later).
EARLIEST_TIME_MS = 1_483_228_800_000
#: How far past the exchange clock at receipt (``received_at``) a record's time may lie.
MAX_AHEAD_MS = 86_400_000
#: How far ahead an option expiry or a next funding time may lie (five years).
MAX_EXPIRY_AHEAD_MS = 5 * 366 * 86_400_000
#: The largest price accepted, in any quote asset.
MAX_PRICE = 1e12
#: The largest absolute value of any other number (quantities, volumes, rates, balances).
MAX_AMOUNT = 1e18
#: The longest kline interval (1w): a kline closes at most this long after it opens.
MAX_KLINE_MS = 7 * 86_400_000
#: Ids and counts are int64 in the archive.
INT64_MAX = 2**63 - 1


def decimal(value: Any) -> float:
    """A price, quantity or rate: a decimal string (or a JSON number) as float64.

    Python's float() rounds correctly, so every decimal of up to 15 significant
    digits survives the round trip through float64 unchanged.
    """
    if isinstance(value, bool):
        raise ValueError("expected a decimal, got a boolean")
    if isinstance(value, str):
        number = float(value.strip())
    elif isinstance(value, int | float):
        number = float(value)
    else:
        raise ValueError(f"expected a decimal string, got {type(value).__name__}")
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {value!r:.80}")
    if abs(number) > MAX_AMOUNT:
        raise ValueError(f"beyond {MAX_AMOUNT:g} in absolute value: {value!r:.80}")
    return number


def price(value: Any, *, zero_ok: bool = False) -> float:
    """A price: above 0 (or 0 itself with ``zero_ok``) and at most :data:`MAX_PRICE`."""
    number = decimal(value)
    if number < 0 or (number == 0 and not zero_ok):
        raise ValueError(f"not a plausible price: {value!r:.80}")
    if number > MAX_PRICE:
        raise ValueError(f"price beyond {MAX_PRICE:g}: {value!r:.80}")
    return number


def optional_price(value: Any) -> float | None:
    return None if value is None or value == "" else price(value)


def quantity(value: Any, market: str) -> float:
    """A quantity, at least 0. The contract market sends sells as negative quantities (the
    API reference says so); there the sign is dropped, elsewhere the record is refused."""
    number = decimal(value)
    if number < 0:
        if market != "contract":
            raise ValueError(f"negative quantity in the {market} market: {value!r:.80}")
        number = -number
    return number


def non_negative(value: Any) -> float:
    """A volume or balance: at least 0."""
    number = decimal(value)
    if number < 0:
        raise ValueError(f"negative where only 0 or more makes sense: {value!r:.80}")
    return number


def optional_decimal(value: Any) -> float | None:
    return None if value is None or value == "" else decimal(value)


def integer(value: Any) -> int:
    """An id or count, given as a JSON integer or a string of ASCII digits."""
    if isinstance(value, bool):
        raise ValueError("expected an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value.strip()):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ValueError(f"expected an integer, got {value!r}")


def identifier(value: Any) -> int:
    """An id (trade, funding, fund, order book update): an integer from 0 to int64's max."""
    number = integer(value)
    if not 0 <= number <= INT64_MAX:
        raise ValueError(f"id out of range: {str(value)[:40]!r}")
    return number


def count(value: Any) -> int:
    """A count or size (trades in a kline, minutes, digits): 0 to int64's max."""
    number = integer(value)
    if not 0 <= number <= INT64_MAX:
        raise ValueError(f"count out of range: {str(value)[:40]!r}")
    return number


def millis(value: Any) -> int:
    """A time in ms since the epoch."""
    number = integer(value)
    if not 0 <= number < 10**14:
        raise ValueError(f"not a time in milliseconds: {str(value)[:40]!r}")
    return number


def record_time(value: Any, received_at: int | None, ahead_ms: int = MAX_AHEAD_MS) -> int:
    """A record's time: not before :data:`EARLIEST_TIME_MS`, and with ``received_at`` (the
    exchange clock at receipt) not more than ``ahead_ms`` past it."""
    number = millis(value)
    if number < EARLIEST_TIME_MS:
        raise ValueError(f"time before {EARLIEST_TIME_MS} (2017): {number}")
    if received_at is not None and number > received_at + ahead_ms:
        raise ValueError(f"time {number} is more than {ahead_ms} ms past the exchange clock")
    return number


def optional_time(value: Any, received_at: int | None, ahead_ms: int = MAX_AHEAD_MS) -> int | None:
    return None if value is None else record_time(value, received_at, ahead_ms)


def status(value: Any) -> str:
    """An instrument status from :data:`STATUSES`."""
    if value not in STATUSES:
        raise ValueError(f"not a documented status: {str(value)[:40]!r}")
    return str(value)


def asset_name(value: Any) -> str:
    """An asset name matching :data:`ASSET_RE` (the whole string)."""
    if not isinstance(value, str) or not ASSET_RE.fullmatch(value):
        raise ValueError(f"not a valid asset name: {str(value)[:40]!r}")
    return value


def symbol_name(value: Any) -> str:
    """An exchange symbol; only upper-case ASCII names are accepted (the whole string:
    ``"BTCUSDT\\n"`` is refused)."""
    if not isinstance(value, str) or not SYMBOL_RE.fullmatch(value):
        shown = value[:80] if isinstance(value, str) else value
        raise ValueError(f"not a valid symbol: {shown!r}")
    return value

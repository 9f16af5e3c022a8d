"""Payload faults: valid JSON with the wrong content, as a careless or hostile exchange sends.

:func:`mutate` takes the decoded payload an endpoint would return and gives back
a changed copy; the original is never modified. Every choice comes from the
``rng`` passed in, so a seeded :class:`collector.sim.faults.Faults` repeats them.
"""

from __future__ import annotations

import copy
import random
import re
from collections.abc import Callable
from typing import Any

#: Fields no JEX document mentions; one is added to every object of a response.
EXTRA_FIELDS: tuple[tuple[str, Any], ...] = (
    ("isBestMatch", True),
    ("seqNum", 42),
    ("note", "added by the simulator"),
)
#: Well-formed names that are not in any instrument list.
UNLISTED_SYMBOLS = ("ZZZUSDT", "NOTLISTED1")
#: Values a record's ``symbol`` is replaced by: paths, SQL, control characters,
#: the wrong case, non-ASCII look-alikes, other JSON types.
HOSTILE_SYMBOLS: tuple[Any, ...] = (
    "../../x",
    "BTC'; drop table trades; --",
    "BTCUSDT\n",
    "btcusdt",
    "",
    "BTC/USDT",
    "A" * 300,
    "BTC\x00USDT",
    "\uff22\uff34\uff23USDT",  # full-width look-alikes
    7,
    None,
)

_NUMERIC = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_TRADE_ROUTES = ("trades", "historicalTrades")


def _objects(payload: Any) -> list[dict[str, Any]]:
    """The JSON objects of a response: the object, its lists' objects, or a list's objects.

    One level deep, which covers every JEX shape (``exchangeInfo``'s symbol lists
    included) without reaching into filters or depth levels.
    """
    if isinstance(payload, dict):
        found = [payload]
        for value in payload.values():
            if isinstance(value, list):
                found.extend(item for item in value if isinstance(item, dict))
        return found
    if isinstance(payload, list):
        return [item for item in payload if isinstance(item, dict)]
    return []


def unknown_field(route: str, payload: Any, rng: random.Random) -> Any:
    name, value = rng.choice(EXTRA_FIELDS)
    for record in _objects(payload):
        record[name] = value
    return payload


def missing_field(route: str, payload: Any, rng: random.Random) -> Any:
    if isinstance(payload, list) and payload:
        index = rng.randrange(len(payload))
        record = payload[index]
        if isinstance(record, dict) and record:
            del record[rng.choice(sorted(record))]
        elif isinstance(record, list) and len(record) > 1:
            payload[index] = record[: rng.randrange(1, len(record))]  # a kline cut short
    elif isinstance(payload, dict) and payload:
        del payload[rng.choice(sorted(payload))]
    return payload


def _as_number(value: Any) -> Any:
    if isinstance(value, str) and _NUMERIC.fullmatch(value):
        return float(value) if "." in value else int(value)
    if isinstance(value, list):
        return [_as_number(item) for item in value]
    if isinstance(value, dict):
        return {key: _as_number(item) for key, item in value.items()}
    return value


def number_for_string(route: str, payload: Any, rng: random.Random) -> Any:
    return _as_number(payload)


def empty_list(route: str, payload: Any, rng: random.Random) -> Any:
    return [] if isinstance(payload, list) else payload


def duplicate_trades(route: str, payload: Any, rng: random.Random) -> Any:
    if route not in _TRADE_ROUTES or not isinstance(payload, list) or not payload:
        return payload
    repeats = rng.sample(payload, rng.randint(1, max(1, len(payload) // 10)))
    payload.extend(copy.deepcopy(repeats))
    rng.shuffle(payload)
    return payload


def unknown_symbol(route: str, payload: Any, rng: random.Random) -> Any:
    listed = route.startswith("ticker/") or route == "contractInfo"
    if not listed or not isinstance(payload, list):
        return payload
    records = [r for r in payload if isinstance(r, dict) and "symbol" in r]
    if records:
        extra = copy.deepcopy(rng.choice(records))
        extra["symbol"] = rng.choice(UNLISTED_SYMBOLS)
        payload.insert(rng.randrange(len(payload) + 1), extra)
    return payload


def bad_symbol(route: str, payload: Any, rng: random.Random) -> Any:
    records = [r for r in _objects(payload) if "symbol" in r]
    if records:
        rng.choice(records)["symbol"] = rng.choice(HOSTILE_SYMBOLS)
    return payload


MUTATIONS: dict[str, Callable[[str, Any, random.Random], Any]] = {
    "unknown_field": unknown_field,
    "missing_field": missing_field,
    "number_for_string": number_for_string,
    "empty_list": empty_list,
    "duplicate_trades": duplicate_trades,
    "unknown_symbol": unknown_symbol,
    "bad_symbol": bad_symbol,
}


def mutate(kind: str, route: str, payload: Any, rng: random.Random) -> Any:
    """``payload`` of ``route`` (``depth``, ``ticker/24hr``, ``exchangeInfo``...) with
    fault ``kind`` applied, as a new object; unchanged where ``kind`` does not apply."""
    return MUTATIONS[kind](route, copy.deepcopy(payload), rng)

"""Pure parsers for the instrument lists: ``exchangeInfo``, ``optionInfo``, ``contractInfo``.

They also give the jobs what they need to know about the exchange: which
symbols exist per market (:class:`Listing`) and the announced rate limits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from collector.datasets import MARKETS
from collector.errors import PayloadError
from collector.exchange.parsers import (
    MAX_EXPIRY_AHEAD_MS,
    Parsed,
    asset_name,
    build_rows,
    count,
    decimal,
    expect_shape,
    integer,
    optional_decimal,
    optional_time,
    price,
    record_time,
    status,
    symbol_name,
    undocumented,
)
from collector.exchange.parsers.rows import record_symbol

_LIST_KEYS = {"spot": "spotSymbols", "option": "optionSymbols", "contract": "contractSymbols"}
_OPTION_TYPES = {"LONGS": "call", "SHORTS": "put", "CALL": "call", "PUT": "put"}
#: An option the exchange still lists although the exchange clock says it expired more
#: than this long ago says more about the clock than about the option (a ``serverTime``
#: in the year 9999 would end every option): it is polled until the exchange delists it.
STALE_EXPIRY_MS = 7 * 86_400_000


@dataclass(frozen=True)
class Listing:
    """Symbols per market at one moment, and option expiries."""

    symbols: dict[str, tuple[str, ...]] = field(default_factory=dict)
    expiries: dict[str, int] = field(default_factory=dict)  # option symbol -> expiry ms

    def active(self, market: str, now_ms: int) -> tuple[str, ...]:
        """Symbols of ``market`` worth polling: listed, and for options not yet expired.

        An option counts as expired from its expiry until :data:`STALE_EXPIRY_MS` after it;
        still listed after that, the clock is doubted rather than the listing.
        """
        names = self.symbols.get(market, ())
        if market != "option":
            return names
        return tuple(s for s in names if not self._expired(s, now_ms))

    def _expired(self, symbol: str, now_ms: int) -> bool:
        expiry = self.expiries.get(symbol)
        return expiry is not None and 0 <= now_ms - expiry < STALE_EXPIRY_MS

    def including(self, previous: Listing) -> Listing:
        """This listing plus the symbols of ``previous`` it lacks.

        For a refresh with records that could not be read: which symbols those were is
        unknown, so none is dropped until a refresh reads cleanly (a delisting shows
        one refresh late rather than a listed symbol going unpolled for a round).
        """
        symbols = {
            market: names + tuple(s for s in previous.symbols.get(market, ()) if s not in names)
            for market, names in self.symbols.items()
        }
        return Listing(symbols, {**previous.expiries, **self.expiries})


@dataclass(frozen=True)
class RateLimits:
    weight_per_minute: int | None
    raw_requests: int | None
    raw_interval_ms: int | None


_INTERVAL_MS = {"SECOND": 1_000, "MINUTE": 60_000, "HOUR": 3_600_000, "DAY": 86_400_000}


def rate_limits(exchange_info: Any) -> RateLimits:
    """The ``rateLimits`` of ``exchangeInfo``; both enum spellings are accepted::

    {"rateLimitType": "requestsWeight", "interval": "minute", "intervalNum": 1, "limit": 1200}
    """
    expect_shape(exchange_info, dict, "exchangeInfo")
    weight = raw = raw_ms = None
    for entry in exchange_info.get("rateLimits") or []:
        if not isinstance(entry, dict):
            continue
        kind = str(entry.get("rateLimitType", "")).replace("_", "").upper()
        unit = _INTERVAL_MS.get(str(entry.get("interval", "")).upper())
        try:
            limit = integer(entry.get("limit"))
            intervals = integer(entry.get("intervalNum", 1))
        except ValueError:
            continue
        if unit is None or limit <= 0 or intervals <= 0:
            continue
        if kind == "REQUESTSWEIGHT":
            # Scale to a per-minute figure whatever window the exchange states.
            weight = max(1, limit * 60_000 // (unit * intervals))
        elif kind == "RAWREQUESTS":
            raw, raw_ms = limit, unit * intervals
    return RateLimits(weight, raw, raw_ms)


def _filters(record: Mapping[str, Any]) -> dict[str, float | None]:
    found: dict[str, float | None] = {
        "min_price": None,
        "max_price": None,
        "min_qty": None,
        "max_qty": None,
    }
    for entry in record.get("filters") or []:
        if not isinstance(entry, dict):
            continue
        if entry.get("filterType") == "PRICE_FILTER":
            found["min_price"] = optional_decimal(entry.get("minPrice"))
            found["max_price"] = optional_decimal(entry.get("maxPrice"))
        elif entry.get("filterType") == "LOT_SIZE":
            found["min_qty"] = optional_decimal(entry.get("minQty"))
            found["max_qty"] = optional_decimal(entry.get("maxQty"))
    return found


def _optional_count(value: Any) -> int | None:
    return None if value is None else count(value)


def _optional_text(value: Any, check: Any) -> str:
    """An optional string field: absent is ``""``, present must pass ``check``."""
    return "" if value is None else str(check(value))


def instruments(
    exchange_info: Any,
    *,
    market: None = None,
    symbol: None = None,
    received_at: int,
    options: Any,
) -> tuple[Parsed, Listing]:
    """``exchangeInfo`` (three symbol lists) joined with ``optionInfo`` (type, expiry)::

    {"timezone": "UTC", "serverTime": 1565246363776, "rateLimits": [...],
     "spotSymbols": [{"symbol": "ETHBTC", "status": "TRADING", "baseAsset": "ETH",
        "baseAssetPrecision": 8, "quoteAsset": "BTC", "quotePrecision": 8,
        "orderTypes": ["LIMIT"], "icebergAllowed": false,
        "filters": [{"filterType": "PRICE_FILTER", "minPrice": "0.00000100",
                     "maxPrice": "100000.00000000"}]}],
     "optionSymbols": [...], "contractSymbols": [...]}
    optionInfo: [{"symbol": "BTC0226CALL", "status": "TRADING", "type": "LONGS",
                  "exertionTime": 1582704000000, "optionDesc": "...", "canRelease": true,
                  "releaseOption": null}]

    ``options`` is the ``optionInfo`` payload. The instruments of every market and symbol
    are read at once: ``market`` and ``symbol`` are ``None``, accepted only so that every
    parser is called the same way.
    """
    expect_shape(exchange_info, dict, "exchangeInfo")
    unknown = undocumented(exchange_info, "exchangeInfo")
    by_symbol: dict[str, Mapping[str, Any]] = {}
    for record in expect_shape(options if options is not None else [], list, "optionInfo"):
        unknown |= undocumented(record, "optionInfo")
        if isinstance(record, dict) and isinstance(record.get("symbol"), str):
            by_symbol[record["symbol"]] = record
    lists: dict[str, list[Any]] = {}
    for each in MARKETS:
        listed = exchange_info.get(_LIST_KEYS[each])
        if not isinstance(listed, list):
            # A missing list must not read as "nothing listed": the refresh fails instead
            # and the jobs keep polling what they had.
            raise PayloadError(
                f"exchangeInfo.{_LIST_KEYS[each]} is missing or not a list",
                endpoint="exchangeInfo",
            )
        lists[each] = listed
        for record in listed:
            unknown |= undocumented(record, "exchangeInfo symbols")

    def entries() -> Iterable[tuple[str, Any]]:
        for market in MARKETS:
            for record in lists[market]:
                yield market, record

    def read(entry: tuple[str, Mapping[str, Any]]) -> Iterable[dict[str, Any]]:
        market, record = entry
        name = symbol_name(record["symbol"])
        option = by_symbol.get(name, {}) if market == "option" else {}
        expiry = option.get("exertionTime")
        option_type = option.get("type")
        yield {
            "market": market,
            "symbol": name,
            "received_at": received_at,
            "status": _optional_text(record.get("status", option.get("status")), status),
            "base_asset": _optional_text(record.get("baseAsset"), asset_name),
            "quote_asset": _optional_text(record.get("quoteAsset"), asset_name),
            "base_precision": _optional_count(record.get("baseAssetPrecision")),
            "quote_precision": _optional_count(record.get("quotePrecision")),
            **_filters(record),
            "option_type": None if option_type is None else _OPTION_TYPES.get(str(option_type)),
            "expiry_time": optional_time(expiry, received_at, MAX_EXPIRY_AHEAD_MS),
        }

    parsed = build_rows("instruments", entries(), read)
    parsed.unknown_fields = unknown
    table = parsed.table
    symbols: dict[str, list[str]] = {m: [] for m in MARKETS}
    for listed_in, name in zip(
        table.column("market").to_pylist(), table.column("symbol").to_pylist(), strict=True
    ):
        if name not in symbols[listed_in]:
            symbols[listed_in].append(name)
    expiries = {
        name: expiry
        for name, expiry in zip(
            table.column("symbol").to_pylist(),
            table.column("expiry_time").cast("int64").to_pylist(),
            strict=True,
        )
        if expiry is not None
    }
    return parsed, Listing({m: tuple(s) for m, s in symbols.items()}, expiries)


def contract_info(
    payload: Any, *, market: str = "contract", symbol: str | None = None, received_at: int
) -> Parsed:
    """``GET /api/v1/contractInfo`` (numbers, not strings)::

    [{"symbol": "BTCUSDT", "fundingRate": 0.0001, "fundingInterval": 600000,
      "nextFundingTime": 1574150400000, "predictedFundingRate": 0.00012,
      "turnover24": 1234.5, "markMethod": 1, "markPrice": 9800.9, "lastPrice": 9800.5,
      "autoDeleveraging": "..."}]
    """
    expect_shape(payload, list, "contractInfo")

    def read(record: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
        yield {
            "market": market,
            "symbol": (
                symbol_name(record["symbol"]) if symbol is None else record_symbol(record, symbol)
            ),
            "received_at": received_at,
            "funding_rate": decimal(record["fundingRate"]),
            "predicted_funding_rate": decimal(record["predictedFundingRate"]),
            "funding_interval_ms": count(record["fundingInterval"]),
            "next_funding_time": record_time(
                record["nextFundingTime"], received_at, MAX_EXPIRY_AHEAD_MS
            ),
            "mark_price": price(record["markPrice"]),
            "last_price": price(record["lastPrice"], zero_ok=True),
            "turnover_24h": decimal(record["turnover24"]),
        }

    return build_rows("contract_info", payload, read, "contractInfo")

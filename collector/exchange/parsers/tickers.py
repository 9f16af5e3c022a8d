"""Tickers: 24-hour statistics, last prices and average prices."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from collector.exchange.parsers.bounds import (
    MAX_EXPIRY_AHEAD_MS,
    count,
    decimal,
    optional_decimal,
    optional_price,
    optional_time,
    price,
    quantity,
    record_time,
)
from collector.exchange.parsers.rows import (
    Parsed,
    build_rows,
    expect_shape,
    one_or_many,
    record_symbol,
)

#: The parsers of this family (re-exported by the package).
__all__ = ["avg_price", "ticker_24hr", "ticker_price"]


def ticker_24hr(
    payload: Any, *, market: str, symbol: str | None = None, received_at: int
) -> Parsed:
    """``GET /api/v1/{market}/ticker/24hr`` (one object, or a list without ``symbol``)::

        {"symbol": "BTCUSDT", "priceChange": "-94.99999800", "priceChangePercent": "-95.960",
         "weightedAvgPrice": "0.29628482", "lastPrice": "4.00000200", "bidPrice": "4.00000000",
         "bidQty": "1.0", "askPrice": "4.00000200", "askQty": "1.0", "openPrice": "99.00000000",
         "highPrice": "100.00000000", "lowPrice": "0.10000000", "volume": "8913.30000000",
         "quoteVolume": "15.30000000", "openTime": 1499783499040, "closeTime": 1499869899040}

    Options add ``exertionTime``, ``performPrice``, ``referencePrice``, ``exertionPrice``.
    """

    def read(record: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
        if market == "option":
            # Documented for options: without them the row would hold nulls, not values.
            for name in ("exertionTime", "performPrice", "referencePrice", "exertionPrice"):
                if record.get(name) is None:
                    raise KeyError(name)
        expiry = record.get("exertionTime")
        yield {
            "market": market,
            "symbol": record_symbol(record, symbol),
            "received_at": received_at,
            "price_change": decimal(record["priceChange"]),
            "price_change_percent": decimal(record["priceChangePercent"]),
            "weighted_avg_price": price(record["weightedAvgPrice"], zero_ok=True),
            "last_price": price(record["lastPrice"], zero_ok=True),
            "bid_price": price(record["bidPrice"], zero_ok=True),
            "bid_qty": quantity(record["bidQty"], market),
            "ask_price": price(record["askPrice"], zero_ok=True),
            "ask_qty": quantity(record["askQty"], market),
            "open_price": price(record["openPrice"], zero_ok=True),
            "high_price": price(record["highPrice"], zero_ok=True),
            "low_price": price(record["lowPrice"], zero_ok=True),
            "volume": quantity(record["volume"], market),
            "quote_volume": quantity(record["quoteVolume"], market),
            "open_time": record_time(record["openTime"], received_at),
            "close_time": record_time(record["closeTime"], received_at),
            "expiry_time": optional_time(expiry, received_at, MAX_EXPIRY_AHEAD_MS),
            "perform_price": optional_decimal(record.get("performPrice")),
            "reference_price": optional_price(record.get("referencePrice")),
            "strike_price": optional_price(record.get("exertionPrice")),
        }

    return build_rows("ticker_24hr", one_or_many(payload, "ticker/24hr"), read, "ticker/24hr")


def ticker_price(
    payload: Any, *, market: str, symbol: str | None = None, received_at: int
) -> Parsed:
    """``GET /api/v1/{market}/ticker/price``::

    {"symbol": "LTCBTC", "price": "4.00000200"}
    """

    def read(record: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
        yield {
            "market": market,
            "symbol": record_symbol(record, symbol),
            "received_at": received_at,
            "price": price(record["price"], zero_ok=True),
        }

    return build_rows("ticker_price", one_or_many(payload, "ticker/price"), read, "ticker/price")


def avg_price(payload: Any, *, market: str, symbol: str, received_at: int) -> Parsed:
    """``GET /api/v1/{market}/avgPrice``::

    {"mins": 5, "price": "9.35751834"}
    """
    expect_shape(payload, dict, "avgPrice")

    def read(record: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
        yield {
            "market": market,
            "symbol": symbol,
            "received_at": received_at,
            "minutes": count(record["mins"]),
            "price": price(record["price"]),
        }

    return build_rows("avg_price", [payload], read, "avgPrice")

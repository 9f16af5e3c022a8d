"""The contract market's own data: index and mark prices, funding rates, the protection
fund."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from collector.exchange.parsers.bounds import decimal, identifier, price, record_time
from collector.exchange.parsers.rows import (
    Parsed,
    build_rows,
    dedupe_sorted,
    expect_shape,
    one_or_many,
    record_symbol,
)

#: The parsers of this family (re-exported by the package).
__all__ = ["funding_rate", "indices_price", "protection_fund"]


def indices_price(payload: Any, received_at: int, symbol: str | None = None) -> Parsed:
    """``GET /api/v1/contract/ticker/indicesPrice``::

    {"symbol": "BTCUSDT", "price": "9800.5", "indexPrice": "9801.2", "markPrice": "9800.9"}
    """

    def read(record: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
        yield {
            "market": "contract",
            "symbol": record_symbol(record, symbol),
            "received_at": received_at,
            "last_price": price(record["price"]),
            "index_price": price(record["indexPrice"]),
            "mark_price": price(record["markPrice"]),
        }

    return build_rows(
        "indices_price", one_or_many(payload, "ticker/indicesPrice"), read, "ticker/indicesPrice"
    )


def funding_rate(payload: Any, symbol: str, *, received_at: int | None = None) -> Parsed:
    """``GET /api/v1/contract/historyRate`` (numbers, not strings)::

    [{"id": 1, "fundingRate": 0.0001, "fundingRateDay": 0.0144,
      "symbol": "BTCUSDT", "date": 1574150400000}]
    """
    expect_shape(payload, list, "historyRate")

    def read(record: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
        yield {
            "market": "contract",
            "symbol": record_symbol(record, symbol),
            "id": identifier(record["id"]),
            "time": record_time(record["date"], received_at),
            "funding_rate": decimal(record["fundingRate"]),
            "funding_rate_day": decimal(record["fundingRateDay"]),
        }

    parsed = build_rows("funding_rate", payload, read, "historyRate")
    parsed.table = dedupe_sorted(parsed.table, "id")
    return parsed


def protection_fund(payload: Any, symbol: str, *, received_at: int | None = None) -> Parsed:
    """``GET /api/v1/contract/protectionFund``::

    [{"id": 1, "createdDate": 1574150400000, "symbol": "BTCUSDT", "insuranceFund": 1000000.5}]
    """
    expect_shape(payload, list, "protectionFund")

    def read(record: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
        yield {
            "market": "contract",
            "symbol": record_symbol(record, symbol),
            "id": identifier(record["id"]),
            "time": record_time(record["createdDate"], received_at),
            "insurance_fund": decimal(record["insuranceFund"]),
        }

    parsed = build_rows("protection_fund", payload, read, "protectionFund")
    parsed.table = dedupe_sorted(parsed.table, "id")
    return parsed

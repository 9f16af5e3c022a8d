"""The contract market's own data: index and mark prices, funding rates, the protection
fund."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from collector.exchange.parsers.bounds import decimal, identifier, price, quantity, record_time
from collector.exchange.parsers.rows import (
    Parsed,
    build_rows,
    dedupe_sorted,
    expect_shape,
    one_or_many,
    record_symbol,
)

#: The parsers of this family (re-exported by the package).
__all__ = ["funding_rate", "indices_price", "liquidation_orders", "protection_fund"]


def indices_price(
    payload: Any, *, market: str = "contract", symbol: str | None = None, received_at: int
) -> Parsed:
    """``GET /api/v1/contract/ticker/indicesPrice``::

    {"symbol": "BTCUSDT", "price": "9800.5", "indexPrice": "9801.2", "markPrice": "9800.9"}
    """

    def read(record: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
        yield {
            "market": market,
            "symbol": record_symbol(record, symbol),
            "received_at": received_at,
            "last_price": price(record["price"]),
            "index_price": price(record["indexPrice"]),
            "mark_price": price(record["markPrice"]),
        }

    return build_rows(
        "indices_price", one_or_many(payload, "ticker/indicesPrice"), read, "ticker/indicesPrice"
    )


def funding_rate(
    payload: Any, *, market: str = "contract", symbol: str, received_at: int
) -> Parsed:
    """``GET /api/v1/contract/historyRate`` (numbers, not strings)::

    [{"id": 1, "fundingRate": 0.0001, "fundingRateDay": 0.0144,
      "symbol": "BTCUSDT", "date": 1574150400000}]
    """
    expect_shape(payload, list, "historyRate")

    def read(record: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
        yield {
            "market": market,
            "symbol": record_symbol(record, symbol),
            "id": identifier(record["id"]),
            "time": record_time(record["date"], received_at),
            "funding_rate": decimal(record["fundingRate"]),
            "funding_rate_day": decimal(record["fundingRateDay"]),
        }

    parsed = build_rows("funding_rate", payload, read, "historyRate")
    parsed.table = dedupe_sorted(parsed.table, "id")
    return parsed


def protection_fund(
    payload: Any, *, market: str = "contract", symbol: str, received_at: int
) -> Parsed:
    """``GET /api/v1/contract/protectionFund``::

    [{"id": 1, "createdDate": 1574150400000, "symbol": "BTCUSDT", "insuranceFund": 1000000.5}]
    """
    expect_shape(payload, list, "protectionFund")

    def read(record: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
        yield {
            "market": market,
            "symbol": record_symbol(record, symbol),
            "id": identifier(record["id"]),
            "time": record_time(record["createdDate"], received_at),
            "insurance_fund": decimal(record["insuranceFund"]),
        }

    parsed = build_rows("protection_fund", payload, read, "protectionFund")
    parsed.table = dedupe_sorted(parsed.table, "id")
    return parsed


#: Order ids, sides, statuses and types are short ASCII words; anything else is set aside.
_ORDER_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")
_WORD = re.compile(r"[A-Z][A-Z_]{0,31}")


def _matching(pattern: re.Pattern[str], value: Any, what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValueError(f"not a valid {what}: {str(value)[:40]!r}")
    return value


def liquidation_orders(payload: Any, *, market: str, symbol: str, received_at: int) -> Parsed:
    """``GET /api/v1/contract/liquidationOrder`` (with the API key)::

    [{"symbol": "BTCUSDT", "orderId": "9000123", "updateTime": 1574150400000,
      "side": "SELL", "origQty": "1.000", "executedQty": "1.000", "price": "9800.5",
      "executedPrice": "9800.5", "status": "FILLED", "time": 1574150400000,
      "reject": false, "type": "FLAT"}]
    """
    expect_shape(payload, list, "liquidationOrder")

    def read(record: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
        reject = record.get("reject")
        if reject is not None and not isinstance(reject, bool):
            raise ValueError(f"reject is not a boolean: {str(reject)[:40]!r}")
        yield {
            "market": market,
            "symbol": record_symbol(record, symbol),
            "order_id": _matching(_ORDER_ID, record["orderId"], "order id"),
            "time": record_time(record["time"], received_at),
            "update_time": record_time(record["updateTime"], received_at),
            "side": _matching(re.compile("BUY|SELL"), record["side"], "side"),
            "price": price(record["price"]),
            "executed_price": price(record["executedPrice"]),
            "orig_qty": quantity(record["origQty"], market),
            "executed_qty": quantity(record["executedQty"], market),
            "status": _matching(_WORD, record["status"], "order status"),
            "type": _matching(_WORD, record["type"], "order type"),
            "reject": reject,
            "received_at": received_at,
        }

    parsed = build_rows("liquidation_orders", payload, read, "liquidationOrder")
    parsed.table = dedupe_sorted(parsed.table, "order_id").sort_by(
        [("time", "ascending"), ("order_id", "ascending")]
    )
    return parsed

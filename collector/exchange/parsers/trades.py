"""Trades and klines: the market's history, paged by the jobs from a cursor, and the recent
trades."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow.compute as pc

from collector.exchange.parsers.bounds import (
    MAX_KLINE_MS,
    count,
    identifier,
    millis,
    non_negative,
    price,
    quantity,
    record_time,
)
from collector.exchange.parsers.rows import Parsed, build_rows, dedupe_sorted, expect_shape

#: The parsers of this family (re-exported by the package).
__all__ = ["historical_trades", "klines", "recent_trades"]


def historical_trades(payload: Any, *, market: str, symbol: str, received_at: int) -> Parsed:
    """``GET /api/v1/{market}/historicalTrades`` (ids are strings, often newest first)::

        [{"id": "28457", "price": "4.00000100", "qty": "12.00000000",
          "time": 1499865549590, "buyerMaker": true}]

    Rows come back sorted by trade id with duplicate ids removed. A trade without
    its side is set aside like any other incomplete record.
    """
    expect_shape(payload, list, "historicalTrades")

    def read(record: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
        maker = record.get("buyerMaker", record.get("isBuyerMaker"))
        if not isinstance(maker, bool):
            raise ValueError(f"buyerMaker is not a boolean: {maker!r}")
        yield {
            "market": market,
            "symbol": symbol,
            "trade_id": identifier(record["id"]),
            "time": record_time(record["time"], received_at),
            "price": price(record["price"]),
            "qty": quantity(record["qty"], market),
            "is_buyer_maker": maker,
            "received_at": received_at,
        }

    parsed = build_rows("trades", payload, read, "historicalTrades")
    parsed.table = dedupe_sorted(parsed.table, "trade_id")
    return parsed


def recent_trades(payload: Any, *, market: str, symbol: str, received_at: int) -> Parsed:
    """``GET /api/v1/{market}/trades``: no id and no side (the docs show ``time: 0``)::

        [{"price": "4.00000100", "qty": "12.00000000", "time": 1499865549590}]

    A trade at ``time: 0`` (as in the docs' example) is set aside like any implausible time.

    Rows come back sorted by time (stably: trades of the same millisecond keep the
    exchange's order). Without ids, a repeated trade cannot be told from two equal ones.
    """
    expect_shape(payload, list, "trades")

    def read(record: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
        yield {
            "market": market,
            "symbol": symbol,
            "trade_id": None,
            "time": record_time(record["time"], received_at),
            "price": price(record["price"]),
            "qty": quantity(record["qty"], market),
            "is_buyer_maker": None,
            "received_at": received_at,
        }

    parsed = build_rows("trades", payload, read, "trades")
    if parsed.rows:
        order = pc.sort_indices(parsed.table, [("time", "ascending")])  # stable
        parsed.table = parsed.table.take(order)
    return parsed


def klines(payload: Any, *, market: str, symbol: str, received_at: int, interval: str) -> Parsed:
    """``GET /api/v1/{market}/klines``: 12-element arrays, the last one may be open::

    [[1499040000000, "0.01634790", "0.80000000", "0.01575800", "0.01577100",
      "148976.11427815", 1499644799999, "2434.19055334", 308,
      "1756.87402397", "28.46694368", "0"]]

    ``received_at`` (the exchange clock at receipt) bounds the open time; the close time
    lies from the open time to :data:`MAX_KLINE_MS` after it.
    """
    expect_shape(payload, list, "klines")

    def read(row: list[Any]) -> Iterable[dict[str, Any]]:
        open_time = record_time(row[0], received_at)
        close_time = millis(row[6])
        if not open_time <= close_time < open_time + MAX_KLINE_MS:
            raise ValueError(f"close time {close_time} does not follow open time {open_time}")
        yield {
            "market": market,
            "symbol": symbol,
            "interval": interval,
            "open_time": open_time,
            "open": price(row[1]),
            "high": price(row[2]),
            "low": price(row[3]),
            "close": price(row[4]),
            "volume": non_negative(row[5]),
            "close_time": close_time,
            "quote_volume": non_negative(row[7]),
            "trade_count": count(row[8]),
            "taker_buy_volume": non_negative(row[9]),
            "taker_buy_quote_volume": non_negative(row[10]),
        }

    parsed = build_rows("klines", payload, read)
    parsed.table = dedupe_sorted(parsed.table, "open_time")
    return parsed

"""The order book: depth snapshots and the best bid and ask (book ticker)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pyarrow as pa

from collector.errors import PayloadError
from collector.exchange.parsers.bounds import identifier, price, quantity
from collector.exchange.parsers.rows import (
    Parsed,
    build_rows,
    expect_shape,
    one_or_many,
    record_symbol,
    undocumented,
)

#: The parsers of this family (re-exported by the package).
__all__ = ["book_ticker", "depth"]


def depth(payload: Any, *, market: str, symbol: str, received_at: int) -> Parsed:
    """``GET /api/v1/{market}/depth``::

    {"lastUpdateId": 1027024,
     "bids": [["4.00000000", "431.00000000", []]],
     "asks": [["4.00000200", "12.00000000", []]]}
    """
    expect_shape(payload, dict, "depth")
    try:
        update_id = identifier(payload["lastUpdateId"])
        sides = {key: payload[key] for key in ("bids", "asks")}
    except (KeyError, ValueError) as exc:
        raise PayloadError(f"depth without a usable {exc}", endpoint="depth") from None

    def levels(side: str) -> Callable[[Any], Iterable[dict[str, Any]]]:
        def read(entry: tuple[int, Any]) -> Iterable[dict[str, Any]]:
            level, level_data = entry
            yield {
                "market": market,
                "symbol": symbol,
                "received_at": received_at,
                "update_id": update_id,
                "side": side,
                "level": level,
                "price": price(level_data[0]),
                # The contract market sends sells with negative quantities.
                "qty": quantity(level_data[1], market),
            }

        return read

    parts = []
    for key, side in (("bids", "bid"), ("asks", "ask")):
        entries = expect_shape(sides[key], list, "depth")
        parts.append(build_rows("depth", enumerate(entries), levels(side)))
    return Parsed(
        "depth",
        pa.concat_tables([p.table for p in parts]),
        [r for p in parts for r in p.rejected],
        undocumented(payload, "depth"),
    )


def book_ticker(
    payload: Any, *, market: str, symbol: str | None = None, received_at: int
) -> Parsed:
    """``GET /api/v1/{market}/ticker/bookTicker`` (single contract form has no ``symbol``)::

    {"symbol": "LTCBTC", "bidPrice": "4.00000000", "bidQty": "431.00000000",
     "askPrice": "4.00000200", "askQty": "9.00000000"}
    """

    def read(record: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
        yield {
            "market": market,
            "symbol": record_symbol(record, symbol),
            "received_at": received_at,
            "bid_price": price(record["bidPrice"], zero_ok=True),
            "bid_qty": quantity(record["bidQty"], market),
            "ask_price": price(record["askPrice"], zero_ok=True),
            "ask_qty": quantity(record["askQty"], market),
        }

    return build_rows(
        "book_ticker", one_or_many(payload, "ticker/bookTicker"), read, "ticker/bookTicker"
    )

"""Pure parsers: one JEX response in, Arrow rows of one dataset out. No I/O.

Each parser survives the documented quirks (``shared/jex-api.md``): decimal
strings (and numbers where strings were documented), trade ids as strings in
any order, recent trades without id or side, a single-symbol book ticker
without ``symbol``, option tickers' extra fields, negative contract quantities.

A record that cannot be read is set aside with its reason and the rest of the
response is kept (:class:`Parsed`); a payload of the wrong shape altogether
raises :class:`PayloadError`. Fields the API reference does not document
(:data:`DOCUMENTED`) are ignored and reported in :attr:`Parsed.unknown_fields`.

Symbols from the exchange are accepted only through :func:`symbol_name`
(upper-case ASCII, digits and ``._-``): a symbol never reaches a path or SQL text,
but it is also a value users filter on, and a hostile one is refused here.

Values are checked for plausibility, not only for type, and a record with an
implausible one is set aside like an unreadable one (the rest of the page is kept):

- ids (:func:`identifier`) and counts (:func:`count`) are integers from 0 to the
  int64 maximum;
- record times (:func:`record_time`) lie between :data:`EARLIEST_TIME_MS` (2017, before
  JEX opened) and :data:`MAX_AHEAD_MS` (one day) past the exchange clock at receipt
  (``received_at``); option expiries and next funding times may lie up to
  :data:`MAX_EXPIRY_AHEAD_MS` ahead;
- prices (:func:`price`) are above 0 (tickers' last, bid and ask prices may be 0: the
  exchange's "none") and at most :data:`MAX_PRICE`; every other number is finite and at
  most :data:`MAX_AMOUNT` in absolute value;
- quantities (:func:`quantity`) are at least 0; a negative one is made positive only in
  the contract market, where the API reference documents negative sells;
- instrument statuses come from :data:`STATUSES`, assets match :data:`ASSET_RE`.

Each row is also checked against its dataset's Arrow types (:func:`build_rows`), so
a number the archive cannot hold is set aside, never raised.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from collector import datasets
from collector.errors import PayloadError

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

#: The fields the API reference documents for each endpoint's objects
#: (``shared/jex-api.md``), plus spellings the parsers also read.
DOCUMENTED: dict[str, frozenset[str]] = {
    name: frozenset(names.split())
    for name, names in {
        "depth": "lastUpdateId bids asks",
        "trades": "price qty time",
        "historicalTrades": "id price qty time buyerMaker isBuyerMaker",
        "avgPrice": "mins price",
        "ticker/24hr": "symbol priceChange priceChangePercent weightedAvgPrice lastPrice "
        "bidPrice bidQty askPrice askQty openPrice highPrice lowPrice volume quoteVolume "
        "openTime closeTime exertionTime performPrice referencePrice exertionPrice",
        "ticker/price": "symbol price",
        "ticker/bookTicker": "symbol bidPrice bidQty askPrice askQty",
        "ticker/indicesPrice": "symbol price indexPrice markPrice",
        "historyRate": "id fundingRate fundingRateDay symbol date",
        "protectionFund": "id createdDate symbol insuranceFund",
        "exchangeInfo": "timezone serverTime rateLimits spotSymbols optionSymbols contractSymbols",
        "exchangeInfo symbols": "symbol status baseAsset baseAssetPrecision quoteAsset "
        "quotePrecision orderTypes icebergAllowed filters",
        "optionInfo": "symbol status type exertionTime optionDesc canRelease releaseOption",
        "contractInfo": "symbol fundingRate fundingInterval nextFundingTime "
        "predictedFundingRate turnover24 markMethod markPrice lastPrice autoDeleveraging",
    }.items()
}
#: Characters of an undocumented field name kept in a report.
FIELD_NAME_MAX = 64


@dataclass
class Parsed:
    """Rows of ``dataset``, the records that could not be read (with why), and the
    undocumented fields seen, as (endpoint, field) pairs.

    ``outside``: records set aside because their id lies outside the page's run (see
    :func:`collector.collect.intake.set_aside_outliers`); a paged job must not stop at them.
    """

    dataset: str
    table: pa.Table
    rejected: list[tuple[Any, str]] = field(default_factory=list)
    unknown_fields: set[tuple[str, str]] = field(default_factory=set)
    outside: list[tuple[Any, str]] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return int(self.table.num_rows)


# -- field readers ---------------------------------------------------------------------------


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


def undocumented(record: Any, endpoint: str) -> set[tuple[str, str]]:
    """(endpoint, field) for each field of ``record`` that ``endpoint`` does not document."""
    if not isinstance(record, dict):
        return set()
    known = DOCUMENTED[endpoint]
    return {(endpoint, str(name)[:FIELD_NAME_MAX]) for name in record if name not in known}


def expect_shape(payload: Any, kind: type, endpoint: str) -> Any:
    if not isinstance(payload, kind):
        raise PayloadError(
            f"expected a JSON {'list' if kind is list else 'object'}, got {type(payload).__name__}",
            endpoint=endpoint,
        )
    return payload


def build_rows(
    dataset: str,
    records: Iterable[Any],
    read: Callable[[Any], Iterable[Mapping[str, Any]]],
    endpoint: str | None = None,
) -> Parsed:
    """Apply ``read`` to each record (it yields rows); set aside the records it rejects.

    With ``endpoint``, the records' fields are checked against :data:`DOCUMENTED`.
    """
    schema = datasets.get(dataset).schema
    columns: dict[str, list[Any]] = {name: [] for name in schema.names}
    ranges = _integer_ranges(schema)
    rejected: list[tuple[Any, str]] = []
    unknown: set[tuple[str, str]] = set()
    for record in records:
        if endpoint is not None:
            unknown |= undocumented(record, endpoint)
        try:
            rows = list(read(record))
            for row in rows:
                _check_ranges(row, ranges)
        except (
            KeyError,
            TypeError,
            ValueError,
            IndexError,
            AttributeError,
            OverflowError,
        ) as exc:
            reason = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            rejected.append((record, reason))
            continue
        for row in rows:
            for name in schema.names:
                columns[name].append(row.get(name))
    table = pa.table(
        {name: pa.array(values, type=schema.field(name).type) for name, values in columns.items()},
        schema=schema,
    )
    return Parsed(dataset, table, rejected, unknown)


def _integer_ranges(schema: pa.Schema) -> dict[str, tuple[int, int]]:
    """The values each integer (and timestamp) column of ``schema`` can hold."""
    ranges = {}
    for schema_field in schema:
        kind = schema_field.type
        if pa.types.is_timestamp(kind):
            ranges[schema_field.name] = (-(2**63), INT64_MAX)
        elif pa.types.is_integer(kind):
            bits = kind.bit_width
            if pa.types.is_signed_integer(kind):
                ranges[schema_field.name] = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
            else:
                ranges[schema_field.name] = (0, 2**bits - 1)
    return ranges


def _check_ranges(row: Mapping[str, Any], ranges: Mapping[str, tuple[int, int]]) -> None:
    for name, (low, high) in ranges.items():
        value = row.get(name)
        if isinstance(value, int) and not low <= value <= high:
            raise ValueError(f"{name} out of the archive's range: {str(value)[:40]}")


# -- market data -----------------------------------------------------------------------------


def depth(payload: Any, market: str, symbol: str, received_at: int) -> Parsed:
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


def historical_trades(payload: Any, market: str, symbol: str, received_at: int) -> Parsed:
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


def recent_trades(payload: Any, market: str, symbol: str, received_at: int) -> Parsed:
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


def klines(
    payload: Any, market: str, symbol: str, interval: str, *, received_at: int | None = None
) -> Parsed:
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


def _one_or_many(payload: Any, endpoint: str) -> list[Any]:
    if isinstance(payload, dict):
        return [payload]
    return list(expect_shape(payload, list, endpoint))


def _record_symbol(record: Mapping[str, Any], requested: str | None) -> str:
    """The record's symbol; a single-symbol response may omit it (contract bookTicker)."""
    if "symbol" in record:
        name = symbol_name(record["symbol"])
        if requested is not None and name != requested:
            raise ValueError(f"asked for {requested}, got {name}")
        return name
    if requested is None:
        raise KeyError("symbol")
    return requested


def ticker_24hr(payload: Any, market: str, received_at: int, symbol: str | None = None) -> Parsed:
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
            "symbol": _record_symbol(record, symbol),
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

    return build_rows("ticker_24hr", _one_or_many(payload, "ticker/24hr"), read, "ticker/24hr")


def ticker_price(payload: Any, market: str, received_at: int, symbol: str | None = None) -> Parsed:
    """``GET /api/v1/{market}/ticker/price``::

    {"symbol": "LTCBTC", "price": "4.00000200"}
    """

    def read(record: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
        yield {
            "market": market,
            "symbol": _record_symbol(record, symbol),
            "received_at": received_at,
            "price": price(record["price"], zero_ok=True),
        }

    return build_rows("ticker_price", _one_or_many(payload, "ticker/price"), read, "ticker/price")


def book_ticker(payload: Any, market: str, received_at: int, symbol: str | None = None) -> Parsed:
    """``GET /api/v1/{market}/ticker/bookTicker`` (single contract form has no ``symbol``)::

    {"symbol": "LTCBTC", "bidPrice": "4.00000000", "bidQty": "431.00000000",
     "askPrice": "4.00000200", "askQty": "9.00000000"}
    """

    def read(record: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
        yield {
            "market": market,
            "symbol": _record_symbol(record, symbol),
            "received_at": received_at,
            "bid_price": price(record["bidPrice"], zero_ok=True),
            "bid_qty": quantity(record["bidQty"], market),
            "ask_price": price(record["askPrice"], zero_ok=True),
            "ask_qty": quantity(record["askQty"], market),
        }

    return build_rows(
        "book_ticker", _one_or_many(payload, "ticker/bookTicker"), read, "ticker/bookTicker"
    )


def avg_price(payload: Any, market: str, symbol: str, received_at: int) -> Parsed:
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


def indices_price(payload: Any, received_at: int, symbol: str | None = None) -> Parsed:
    """``GET /api/v1/contract/ticker/indicesPrice``::

    {"symbol": "BTCUSDT", "price": "9800.5", "indexPrice": "9801.2", "markPrice": "9800.9"}
    """

    def read(record: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
        yield {
            "market": "contract",
            "symbol": _record_symbol(record, symbol),
            "received_at": received_at,
            "last_price": price(record["price"]),
            "index_price": price(record["indexPrice"]),
            "mark_price": price(record["markPrice"]),
        }

    return build_rows(
        "indices_price", _one_or_many(payload, "ticker/indicesPrice"), read, "ticker/indicesPrice"
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
            "symbol": _record_symbol(record, symbol),
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
            "symbol": _record_symbol(record, symbol),
            "id": identifier(record["id"]),
            "time": record_time(record["createdDate"], received_at),
            "insurance_fund": decimal(record["insuranceFund"]),
        }

    parsed = build_rows("protection_fund", payload, read, "protectionFund")
    parsed.table = dedupe_sorted(parsed.table, "id")
    return parsed


def dedupe_sorted(table: pa.Table, key: str) -> pa.Table:
    """Sort by ``key`` and keep the first row of each key value."""
    if table.num_rows == 0:
        return table
    table = table.sort_by([(key, "ascending")])
    values = table.column(key).to_pylist()
    keep = [i for i, value in enumerate(values) if i == 0 or value != values[i - 1]]
    return table if len(keep) == len(values) else table.take(keep)

"""Pure parsers: one JEX response in, Arrow rows of one dataset out. No I/O.

Each parser survives the documented quirks (``shared/jex-api.md``): decimal
strings (and numbers where strings were documented), trade ids as strings in
any order, recent trades without id or side, a single-symbol book ticker
without ``symbol``, option tickers' extra fields, negative contract quantities.

Every parser is called the same way: ``name(payload, *, market, symbol, received_at, ...)``,
the payload the only positional argument, then the market, the symbol (``None`` where
one response holds every symbol's records), the exchange clock at receipt (which bounds
the records' times) and any keyword of its own (``interval`` for klines). The contract
market's parsers take ``market="contract"`` by default.

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

The parsers live in modules by family (:mod:`~collector.exchange.parsers.trades`,
:mod:`~collector.exchange.parsers.books`, :mod:`~collector.exchange.parsers.tickers`,
:mod:`~collector.exchange.parsers.futures`), on what they share
(:mod:`~collector.exchange.parsers.rows`) and the record bounds
(:mod:`~collector.exchange.parsers.bounds`); every name is re-exported here.
"""

from __future__ import annotations

from collector.exchange.parsers import books, futures, tickers, trades
from collector.exchange.parsers.books import *  # noqa: F403 (its parsers, by its __all__)
from collector.exchange.parsers.bounds import (
    ASSET_RE,
    EARLIEST_TIME_MS,
    INT64_MAX,
    MAX_AHEAD_MS,
    MAX_AMOUNT,
    MAX_EXPIRY_AHEAD_MS,
    MAX_KLINE_MS,
    MAX_PRICE,
    STATUSES,
    SYMBOL_RE,
    asset_name,
    count,
    decimal,
    identifier,
    integer,
    millis,
    non_negative,
    optional_decimal,
    optional_price,
    optional_time,
    price,
    quantity,
    record_time,
    status,
    symbol_name,
)
from collector.exchange.parsers.futures import *  # noqa: F403 (its parsers, by its __all__)
from collector.exchange.parsers.rows import (
    DOCUMENTED,
    FIELD_NAME_MAX,
    Parsed,
    build_rows,
    dedupe_sorted,
    expect_shape,
    undocumented,
)
from collector.exchange.parsers.tickers import *  # noqa: F403 (its parsers, by its __all__)
from collector.exchange.parsers.trades import *  # noqa: F403 (its parsers, by its __all__)

__all__ = [
    "ASSET_RE",
    "DOCUMENTED",
    "EARLIEST_TIME_MS",
    "FIELD_NAME_MAX",
    "INT64_MAX",
    "MAX_AHEAD_MS",
    "MAX_AMOUNT",
    "MAX_EXPIRY_AHEAD_MS",
    "MAX_KLINE_MS",
    "MAX_PRICE",
    "STATUSES",
    "SYMBOL_RE",
    "Parsed",
    "asset_name",
    "build_rows",
    "count",
    "decimal",
    "dedupe_sorted",
    "expect_shape",
    "identifier",
    "integer",
    "millis",
    "non_negative",
    "optional_decimal",
    "optional_price",
    "optional_time",
    "price",
    "quantity",
    "record_time",
    "status",
    "symbol_name",
    "undocumented",
]
# Each family names its parsers; adding one to a family exports it here.
__all__ += books.__all__ + tickers.__all__ + trades.__all__ + futures.__all__

"""Every dataset of the archive: its name, Arrow schema, key and partition rule.

This is the one place a column is defined. The folder under ``data/``, the
DuckDB view, the pandas loader (:mod:`collector.read.loaders`) and the docs
(``docs/datasets.md``, checked by a test) all take their names and types from here.

Conventions: ``market`` and ``symbol`` are strings; times are UTC
timezone-aware timestamps with millisecond precision; prices, quantities and
rates are float64 parsed from the exchange's decimal strings; ids are int64.
Each dataset is a Delta table partitioned by ``market`` and by ``date``, the UTC
date of the dataset's ``time_column`` (:mod:`collector.storage.delta`). Both are
partition columns: their values live in the Delta log and the folder names, not
inside the data files, so every Delta reader gets one type for each.

The registry: each entry also carries what the rest of the code derives (its kind,
endpoints, cursor, continuity rule, disk model; :class:`~collector.datasets.model.Dataset`
says what each field means). Adding a dataset is an entry here, a parser in its family
module of :mod:`collector.exchange.parsers`, the simulator's data and a schedule line.
"""

from __future__ import annotations

import pyarrow as pa

from collector.datasets.model import BOOL as BOOL
from collector.datasets.model import F64 as F64
from collector.datasets.model import I64 as I64
from collector.datasets.model import STR as STR
from collector.datasets.model import TIMESTAMP as TIMESTAMP
from collector.datasets.model import Column as Column
from collector.datasets.model import Continuity as Continuity
from collector.datasets.model import CursorRule as CursorRule
from collector.datasets.model import Dataset as Dataset
from collector.datasets.model import Kind as Kind
from collector.datasets.model import RequestForm as RequestForm
from collector.datasets.model import RowBytes as RowBytes
from collector.datasets.model import RowModel as RowModel
from collector.exchange import endpoints

MARKETS: tuple[str, ...] = ("spot", "option", "contract")


def _c(name: str, type_: pa.DataType, doc: str, nullable: bool = False) -> Column:
    return Column(name, type_, doc, nullable)


MARKET = _c("market", STR, "Market: `spot`, `option` or `contract`.")
SYMBOL = _c("symbol", STR, "Instrument symbol as the exchange names it (upper-case ASCII).")
RECEIVED_AT = _c(
    "received_at", TIMESTAMP, "When the response was received, in exchange time (UTC, ms)."
)

_TICKER_PRICES = [
    _c("price_change", F64, "Last price minus the price 24 hours ago."),
    _c("price_change_percent", F64, "price_change as a percentage of open_price."),
    _c("weighted_avg_price", F64, "Volume-weighted average price over 24 hours."),
    _c("last_price", F64, "Last traded price."),
    _c("bid_price", F64, "Best bid price."),
    _c("bid_qty", F64, "Quantity at the best bid."),
    _c("ask_price", F64, "Best ask price."),
    _c("ask_qty", F64, "Quantity at the best ask."),
    _c("open_price", F64, "Price 24 hours ago."),
    _c("high_price", F64, "Highest price in 24 hours."),
    _c("low_price", F64, "Lowest price in 24 hours."),
    _c("volume", F64, "Base-asset volume in 24 hours."),
    _c("quote_volume", F64, "Quote-asset volume in 24 hours."),
    _c("open_time", TIMESTAMP, "Start of the 24-hour window."),
    _c(
        "close_time",
        TIMESTAMP,
        "End of the 24-hour window (the exchange's documentation shows it earlier "
        "than open_time; stored as received).",
    ),
    _c("expiry_time", TIMESTAMP, "Options only: expiry (`exertionTime`).", True),
    _c("perform_price", F64, "Options only: `performPrice`.", True),
    _c("reference_price", F64, "Options only: spot price of the underlying.", True),
    _c("strike_price", F64, "Options only: strike (`exertionPrice`).", True),
]

DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset(
            "trades",
            "Every trade. From `historicalTrades` (with an API key) or recent `trades`.",
            MARKETS,
            (
                MARKET,
                SYMBOL,
                _c(
                    "trade_id",
                    I64,
                    "Exchange trade id; null when the row came from the recent-trades "
                    "endpoint, which has no ids.",
                    True,
                ),
                _c("time", TIMESTAMP, "Trade time (exchange, UTC, ms)."),
                _c("price", F64, "Trade price."),
                _c("qty", F64, "Trade quantity (base asset), always positive."),
                _c(
                    "is_buyer_maker",
                    BOOL,
                    "True when the buyer was the maker (a sell aggressor); null when unknown.",
                    True,
                ),
                RECEIVED_AT,
            ),
            ("market", "symbol", "trade_id"),
            "time",
            kind="id_paged",
            endpoints=(endpoints.HISTORICAL_TRADES,),
            keyless_endpoint=endpoints.TRADES,
            page_size=endpoints.HISTORICAL_TRADES_MAX,
            cursor=CursorRule("trade_id", ("market", "symbol")),
            continuity="consecutive_ids",
            unit="trades",
            rows="trades",
            bytes=RowBytes(17.45, 2084, 7.76, 2084),
        ),
        Dataset(
            "depth",
            "Order-book snapshots, one row per side and level.",
            MARKETS,
            (
                MARKET,
                SYMBOL,
                RECEIVED_AT,
                _c("update_id", I64, "The book's `lastUpdateId`."),
                _c("side", STR, "`bid` or `ask`."),
                _c("level", pa.int16(), "0 is the best price of the side."),
                _c("price", F64, "Price of the level."),
                _c(
                    "qty",
                    F64,
                    "Quantity at the level, always positive (the contract market sends "
                    "negative ask quantities; the sign is dropped).",
                ),
            ),
            ("market", "symbol", "received_at", "side", "level"),
            "received_at",
            endpoints=(endpoints.DEPTH,),
            rows="levels",
            bytes=RowBytes(6.89, 1977, 4.81, 1977),
        ),
        Dataset(
            "klines",
            "Closed candlesticks; one row per market, symbol, interval and open time.",
            MARKETS,
            (
                MARKET,
                SYMBOL,
                _c("interval", STR, "Kline interval: `1m`, `1h`, ..."),
                _c("open_time", TIMESTAMP, "Open time; identifies the kline."),
                _c("close_time", TIMESTAMP, "Close time (open_time + interval - 1 ms)."),
                _c("open", F64, "First trade price."),
                _c("high", F64, "Highest trade price."),
                _c("low", F64, "Lowest trade price."),
                _c("close", F64, "Last trade price."),
                _c("volume", F64, "Base-asset volume."),
                _c("quote_volume", F64, "Quote-asset volume."),
                _c("trade_count", I64, "Number of trades."),
                _c("taker_buy_volume", F64, "Base volume bought by takers."),
                _c("taker_buy_quote_volume", F64, "Quote volume bought by takers."),
            ),
            ("market", "symbol", "interval", "open_time"),
            "open_time",
            kind="time_paged",
            endpoints=(endpoints.KLINES,),
            per_interval=True,
            page_size=endpoints.KLINES_MAX,
            cursor=CursorRule("open_time", ("market", "symbol", "interval")),
            continuity="open_times",
            unit="klines",
            rows="intervals",
            bytes=RowBytes(32.03, 3643, 29.41, 3643),
        ),
        Dataset(
            "ticker_24hr",
            "Rolling 24-hour ticker statistics.",
            MARKETS,
            (MARKET, SYMBOL, RECEIVED_AT, *_TICKER_PRICES),
            ("market", "symbol", "received_at"),
            "received_at",
            endpoints=(endpoints.TICKER_24HR,),
            request="all_symbols_if_cheaper",
            bytes=RowBytes(73.77, 6187, 76.18, 6187),
        ),
        Dataset(
            "ticker_price",
            "Last price per symbol.",
            MARKETS,
            (MARKET, SYMBOL, RECEIVED_AT, _c("price", F64, "Last traded price.")),
            ("market", "symbol", "received_at"),
            "received_at",
            endpoints=(endpoints.TICKER_PRICE,),
            request="all_symbols_if_cheaper",
            bytes=RowBytes(6.02, 1053, 5.50, 1053),
        ),
        Dataset(
            "book_ticker",
            "Best bid and ask per symbol.",
            MARKETS,
            (
                MARKET,
                SYMBOL,
                RECEIVED_AT,
                _c("bid_price", F64, "Best bid price."),
                _c("bid_qty", F64, "Quantity at the best bid."),
                _c("ask_price", F64, "Best ask price."),
                _c("ask_qty", F64, "Quantity at the best ask."),
            ),
            ("market", "symbol", "received_at"),
            "received_at",
            endpoints=(endpoints.BOOK_TICKER,),
            request="all_symbols_if_cheaper",
            bytes=RowBytes(32.42, 1938, 15.94, 1938),
        ),
        Dataset(
            "avg_price",
            "Average price over the last few minutes (`avgPrice`).",
            MARKETS,
            (
                MARKET,
                SYMBOL,
                RECEIVED_AT,
                _c("minutes", I64, "Length of the averaging window in minutes."),
                _c("price", F64, "Average price."),
            ),
            ("market", "symbol", "received_at"),
            "received_at",
            endpoints=(endpoints.AVG_PRICE,),
            bytes=RowBytes(10.42, 1312, 11.08, 1312),
        ),
        Dataset(
            "indices_price",
            "Futures: last, index and mark price.",
            ("contract",),
            (
                MARKET,
                SYMBOL,
                RECEIVED_AT,
                _c("last_price", F64, "Last traded price."),
                _c("index_price", F64, "Index price."),
                _c("mark_price", F64, "Mark price."),
            ),
            ("market", "symbol", "received_at"),
            "received_at",
            endpoints=(endpoints.INDICES_PRICE,),
            request="all_symbols_if_cheaper",
            bytes=RowBytes(15.26, 1671, 13.40, 1671),
        ),
        Dataset(
            "funding_rate",
            "Futures: funding rate history.",
            ("contract",),
            (
                MARKET,
                SYMBOL,
                _c("id", I64, "Exchange id of the funding event."),
                _c("time", TIMESTAMP, "Funding time."),
                _c("funding_rate", F64, "Funding rate of the interval."),
                _c("funding_rate_day", F64, "The same rate per day."),
            ),
            ("market", "symbol", "id"),
            "time",
            kind="id_paged",
            endpoints=(endpoints.HISTORY_RATE,),
            page_size=endpoints.HISTORY_RATE_MAX,
            cursor=CursorRule("id", ("market", "symbol")),
            continuity="funding_interval",
            unit="funding events",
            rows="events",
            events_per_day=144,
            bytes=RowBytes(16.69, 1627, 17.95, 1627),
        ),
        Dataset(
            "protection_fund",
            "Futures: protection (insurance) fund balance over time.",
            ("contract",),
            (
                MARKET,
                SYMBOL,
                _c("id", I64, "Exchange id of the record."),
                _c("time", TIMESTAMP, "Record time (`createdDate`)."),
                _c("insurance_fund", F64, "Fund balance."),
            ),
            ("market", "symbol", "id"),
            "time",
            kind="id_paged",
            endpoints=(endpoints.PROTECTION_FUND,),
            page_size=endpoints.PROTECTION_FUND_MAX,
            cursor=CursorRule("id", ("market", "symbol")),
            continuity="unique",
            unit="fund records",
            rows="events",
            events_per_day=1440,
            bytes=RowBytes(5.83, 1314, 5.35, 1314),
        ),
        Dataset(
            "liquidation_orders",
            "Futures: forced liquidation orders (`contract/liquidationOrder`; needs the API key).",
            ("contract",),
            (
                MARKET,
                SYMBOL,
                _c("order_id", STR, "Exchange order id (a string in the API)."),
                _c("time", TIMESTAMP, "Order time (exchange, UTC, ms)."),
                _c("update_time", TIMESTAMP, "When the order last changed."),
                _c("side", STR, "`BUY` or `SELL`: the forced order's side."),
                _c("price", F64, "Order price."),
                _c("executed_price", F64, "Executed price."),
                _c("orig_qty", F64, "Quantity ordered, always positive."),
                _c("executed_qty", F64, "Quantity executed, always positive."),
                _c("status", STR, "Order status as the exchange gives it (`FILLED`, ...)."),
                _c("type", STR, "Order type as the exchange gives it (`FLAT`)."),
                _c("reject", BOOL, "True when the order was rejected; null when not sent.", True),
                RECEIVED_AT,
            ),
            ("market", "symbol", "order_id"),
            "time",
            kind="time_paged",
            endpoints=(endpoints.LIQUIDATION_ORDER,),
            page_size=500,  # the endpoint's default and largest limit
            cursor=CursorRule("time", ("market", "symbol"), field="time"),
            continuity="unique",
            unit="liquidation orders",
            rows="events",
            events_per_day=39,  # the simulator's: one every 37 minutes
            # bench/disk.py --minutes 6 --warmup 10 --seed 1 (the others: 30 minutes, above)
            bytes=RowBytes(11.73, 3725, 17.02, 3725),
        ),
        Dataset(
            "instruments",
            "Instrument lists from `exchangeInfo` and `optionInfo`, one row per refresh.",
            MARKETS,
            (
                MARKET,
                SYMBOL,
                RECEIVED_AT,
                _c("status", STR, "Trading status, e.g. `TRADING`."),
                _c("base_asset", STR, "Base asset (non-ASCII text for some options)."),
                _c("quote_asset", STR, "Quote asset."),
                _c("base_precision", I64, "Base asset precision (digits).", True),
                _c("quote_precision", I64, "Quote asset precision (digits).", True),
                _c("min_price", F64, "PRICE_FILTER minPrice.", True),
                _c("max_price", F64, "PRICE_FILTER maxPrice.", True),
                _c("min_qty", F64, "LOT_SIZE minQty.", True),
                _c("max_qty", F64, "LOT_SIZE maxQty.", True),
                _c("option_type", STR, "Options only: `call` or `put`.", True),
                _c("expiry_time", TIMESTAMP, "Options only: expiry.", True),
            ),
            ("market", "symbol", "received_at"),
            "received_at",
            kind="listing",
            endpoints=(endpoints.EXCHANGE_INFO, endpoints.OPTION_INFO),
            request="per_round",
            bytes=RowBytes(7.62, 3788, 8.51, 3788),
        ),
        Dataset(
            "contract_info",
            "Futures: contract details from `contractInfo`.",
            ("contract",),
            (
                MARKET,
                SYMBOL,
                RECEIVED_AT,
                _c("funding_rate", F64, "Current funding rate."),
                _c("predicted_funding_rate", F64, "Predicted next funding rate."),
                _c("funding_interval_ms", I64, "Funding interval in milliseconds."),
                _c("next_funding_time", TIMESTAMP, "Next funding time."),
                _c("mark_price", F64, "Mark price."),
                _c("last_price", F64, "Last traded price."),
                _c("turnover_24h", F64, "Turnover in 24 hours."),
            ),
            ("market", "symbol", "received_at"),
            "received_at",
            endpoints=(endpoints.CONTRACT_INFO,),
            request="per_round",
            bytes=RowBytes(25.13, 2939, 23.69, 2939),
        ),
    )
}


def get(name: str) -> Dataset:
    """The dataset called ``name``; a KeyError names the ones that exist."""
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; datasets are: {', '.join(DATASETS)}") from None


def empty_table(name: str) -> pa.Table:
    return get(name).schema.empty_table()


def markdown() -> str:
    """``docs/datasets.md``: every dataset's columns (:mod:`collector.datasets.docs`)."""
    from collector.datasets.docs import markdown as generate

    return generate()

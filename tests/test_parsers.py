"""Parsers: every endpoint's documented shape and every quirk of shared/jex-api.md."""

from __future__ import annotations

import decimal
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector import datasets
from collector.errors import PayloadError
from collector.exchange import instruments, parsers

T = 1_764_000_000_000


def column(parsed: parsers.Parsed, name: str) -> list[Any]:
    values: list[Any] = parsed.table.column(name).to_pylist()
    return values


def ms(parsed: parsers.Parsed, name: str) -> list[int]:
    values: list[int] = parsed.table.column(name).cast(pa.int64()).to_pylist()
    return values


def assert_schema(parsed: parsers.Parsed) -> None:
    assert parsed.table.schema.equals(datasets.get(parsed.dataset).schema)


@given(
    st.decimals(
        min_value=decimal.Decimal("-1e9"),
        max_value=decimal.Decimal("1e9"),
        allow_nan=False,
        allow_infinity=False,
        places=8,
    )
)
def test_decimal_strings_survive_as_float64(value: decimal.Decimal) -> None:
    """Up to 15 significant digits, the float64 prints back as the same decimal."""
    digits = value.normalize().as_tuple().digits
    if len(digits) > 15:
        return
    text = f"{value:.18f}"  # the exchange pads to 18 fractional digits
    assert decimal.Decimal(repr(parsers.decimal(text))) == value


@pytest.mark.parametrize("value", ["81.230000000000000000", 81.23, "81.23"])
def test_decimals_accept_strings_and_numbers(value: Any) -> None:
    assert parsers.decimal(value) == 81.23


@pytest.mark.parametrize("value", [None, True, "abc", "nan", "inf", [], {}])
def test_decimals_refuse_what_is_not_a_number(value: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        parsers.decimal(value)


def test_depth_levels_in_order_and_contract_sells_positive() -> None:
    payload = {
        "lastUpdateId": 1027024,
        "bids": [["4.00000000", "431.00000000", []], ["3.99000000", "1.00000000", []]],
        "asks": [["4.00000200", "-12.00000000", []]],
    }
    parsed = parsers.depth(payload, market="contract", symbol="BTCUSDT", received_at=T)
    assert_schema(parsed)
    assert column(parsed, "side") == ["bid", "bid", "ask"]
    assert column(parsed, "level") == [0, 1, 0]
    assert column(parsed, "price") == [4.0, 3.99, 4.000002]
    assert column(parsed, "qty") == [431.0, 1.0, 12.0]
    assert set(column(parsed, "update_id")) == {1027024}
    assert set(ms(parsed, "received_at")) == {T}


def test_historical_trades_newest_first_with_string_ids_are_sorted_and_deduplicated() -> None:
    payload = [
        {"id": "28459", "price": "4.00000300", "qty": "1.5", "time": T + 2, "buyerMaker": False},
        {"id": "28457", "price": "4.00000100", "qty": "12.0", "time": T, "buyerMaker": True},
        {"id": "28458", "price": "4.00000200", "qty": "2.0", "time": T + 1, "buyerMaker": True},
        {"id": "28457", "price": "4.00000100", "qty": "12.0", "time": T, "buyerMaker": True},
    ]
    parsed = parsers.historical_trades(payload, market="spot", symbol="BTCUSDT", received_at=T + 10)
    assert_schema(parsed)
    assert column(parsed, "trade_id") == [28457, 28458, 28459]
    assert column(parsed, "is_buyer_maker") == [True, True, False]
    assert ms(parsed, "time") == [T, T + 1, T + 2]


def test_recent_trades_have_no_id_and_no_side_and_time_zero_is_set_aside() -> None:
    """The docs' example has ``time: 0``: such a trade would make a 1970 partition."""
    payload = [{"price": "4.00000100", "qty": "12.00000000", "time": T - 5}] * 2
    payload.append({"price": "4.00000100", "qty": "12.00000000", "time": 0})
    parsed = parsers.recent_trades(payload, market="option", symbol="BTC1127C64000", received_at=T)
    assert_schema(parsed)
    assert column(parsed, "trade_id") == [None, None]
    assert column(parsed, "is_buyer_maker") == [None, None]
    assert ms(parsed, "time") == [T - 5, T - 5]
    assert len(parsed.rejected) == 1 and "2017" in parsed.rejected[0][1]


def test_klines_twelve_element_arrays() -> None:
    row = [
        T,
        "0.01634790",
        "0.80000000",
        "0.01575800",
        "0.01577100",
        "148976.11427815",
        T + 59_999,
        "2434.19055334",
        308,
        "1756.87402397",
        "28.46694368",
        "0",
    ]
    parsed = parsers.klines(
        [row, row], market="spot", symbol="ETHBTC", received_at=T, interval="1m"
    )
    assert_schema(parsed)
    assert parsed.rows == 1  # one kline per open time
    assert column(parsed, "trade_count") == [308]
    assert column(parsed, "high") == [0.8]
    assert ms(parsed, "close_time") == [T + 59_999]


TICKER = {
    "symbol": "BTCUSDT",
    "priceChange": "-94.99999800",
    "priceChangePercent": "-95.960",
    "weightedAvgPrice": "0.29628482",
    "lastPrice": "4.00000200",
    "bidPrice": "4.00000000",
    "bidQty": "1.0",
    "askPrice": "4.00000200",
    "askQty": "1.0",
    "openPrice": "99.00000000",
    "highPrice": "100.00000000",
    "lowPrice": "0.10000000",
    "volume": "8913.30000000",
    "quoteVolume": "15.30000000",
    "openTime": 1499869899040,
    "closeTime": 1499783499040,
}


def test_24hr_ticker_keeps_close_time_before_open_time_as_documented() -> None:
    parsed = parsers.ticker_24hr(TICKER, market="spot", symbol="BTCUSDT", received_at=T)
    assert_schema(parsed)
    assert ms(parsed, "close_time")[0] < ms(parsed, "open_time")[0]
    assert column(parsed, "expiry_time") == [None]
    assert column(parsed, "price_change_percent") == [-95.96]


def test_option_ticker_extra_fields() -> None:
    option = {
        **TICKER,
        "symbol": "BTC1127C64000",
        "exertionTime": T + 86_400_000,
        "performPrice": "1200.5",
        "referencePrice": "65000.1",
        "exertionPrice": "64000",
    }
    parsed = parsers.ticker_24hr([option], market="option", received_at=T)
    assert ms(parsed, "expiry_time") == [T + 86_400_000]
    assert column(parsed, "perform_price") == [1200.5]
    assert column(parsed, "reference_price") == [65000.1]
    assert column(parsed, "strike_price") == [64000.0]


def test_single_contract_book_ticker_without_symbol_takes_the_requested_one() -> None:
    payload = {"bidPrice": "4.0", "bidQty": "431.0", "askPrice": "4.000002", "askQty": "9.0"}
    parsed = parsers.book_ticker(payload, market="contract", symbol="BTCUSDT", received_at=T)
    assert_schema(parsed)
    assert column(parsed, "symbol") == ["BTCUSDT"]
    # In the list form the symbol is required.
    listed = parsers.book_ticker([payload], market="contract", received_at=T)
    assert listed.rows == 0 and "symbol" in listed.rejected[0][1]


def test_a_response_for_another_symbol_is_rejected() -> None:
    parsed = parsers.ticker_price(
        {"symbol": "ETHUSDT", "price": "1"}, market="spot", symbol="BTCUSDT", received_at=T
    )
    assert parsed.rows == 0 and "asked for BTCUSDT" in parsed.rejected[0][1]


def test_list_forms_and_avg_price_and_indices() -> None:
    prices = parsers.ticker_price(
        [{"symbol": "A", "price": "1.5"}, {"symbol": "B", "price": "2"}],
        market="spot",
        received_at=T,
    )
    assert column(prices, "symbol") == ["A", "B"]
    avg = parsers.avg_price(
        {"mins": 5, "price": "9.35751834"}, market="spot", symbol="A", received_at=T
    )
    assert_schema(avg)
    assert column(avg, "minutes") == [5] and column(avg, "price") == [9.35751834]
    indices = parsers.indices_price(
        [{"symbol": "BTCUSDT", "price": "9800.5", "indexPrice": "9801.2", "markPrice": "9800.9"}],
        received_at=T,
    )
    assert_schema(indices)
    assert column(indices, "index_price") == [9801.2]
    assert column(indices, "market") == ["contract"]


def test_funding_and_protection_fund_are_json_numbers_sorted_by_id() -> None:
    funding = parsers.funding_rate(
        [
            {
                "id": 2,
                "fundingRate": 0.0002,
                "fundingRateDay": 0.0288,
                "symbol": "BTCUSDT",
                "date": T + 600_000,
            },
            {
                "id": 1,
                "fundingRate": -0.0001,
                "fundingRateDay": -0.0144,
                "symbol": "BTCUSDT",
                "date": T,
            },
        ],
        symbol="BTCUSDT",
        received_at=T,
    )
    assert_schema(funding)
    assert column(funding, "id") == [1, 2]
    assert column(funding, "funding_rate") == [-0.0001, 0.0002]
    fund = parsers.protection_fund(
        [{"id": 7, "createdDate": T, "symbol": "BTCUSDT", "insuranceFund": 1000000.5}],
        symbol="BTCUSDT",
        received_at=T,
    )
    assert_schema(fund)
    assert column(fund, "insurance_fund") == [1000000.5]


def test_one_bad_record_is_set_aside_and_the_good_ones_kept() -> None:
    payload = [
        {"id": "1", "price": "4.0", "qty": "1.0", "time": T, "buyerMaker": True},
        {"id": "2", "price": "not a price", "qty": "1.0", "time": T, "buyerMaker": True},
        {"id": "3", "qty": "1.0", "time": T, "buyerMaker": True},
        {"id": "4", "price": "4.0", "qty": "1.0", "time": T, "buyerMaker": False, "new": 1},
    ]
    parsed = parsers.historical_trades(payload, market="spot", symbol="BTCUSDT", received_at=T)
    assert column(parsed, "trade_id") == [1, 4]  # unknown field ignored
    reasons = [reason for _, reason in parsed.rejected]
    assert len(reasons) == 2 and "price" in reasons[1]


@pytest.mark.parametrize(
    ("parse", "payload"),
    [
        (
            lambda p: parsers.historical_trades(p, market="spot", symbol="A", received_at=T),
            {"code": -1, "msg": "x"},
        ),
        (
            lambda p: parsers.recent_trades(p, market="spot", symbol="A", received_at=T),
            "<html>500</html>",
        ),
        (lambda p: parsers.depth(p, market="spot", symbol="A", received_at=T), []),
        (
            lambda p: parsers.klines(p, market="spot", symbol="A", received_at=T, interval="1m"),
            None,
        ),
        (lambda p: parsers.funding_rate(p, symbol="A", received_at=T), {"id": 1}),
    ],
)
def test_a_payload_of_the_wrong_shape_raises_payload_error(parse: Any, payload: Any) -> None:
    with pytest.raises(PayloadError, match="expected a JSON"):
        parse(payload)


@pytest.mark.parametrize("symbol", ["btcusdt", "../etc/passwd", "A B", "", "X" * 80, 5])
def test_invalid_symbols_from_the_exchange_are_rejected(symbol: Any) -> None:
    parsed = parsers.ticker_price([{"symbol": symbol, "price": "1"}], market="spot", received_at=T)
    assert parsed.rows == 0 and parsed.rejected


EXCHANGE_INFO = {
    "timezone": "UTC",
    "serverTime": T,
    "rateLimits": [
        {"rateLimitType": "requestsWeight", "interval": "minute", "intervalNum": 1, "limit": 1200},
        {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 5000},
        {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 1, "limit": 10},
    ],
    "spotSymbols": [
        {
            "symbol": "ETHBTC",
            "status": "TRADING",
            "baseAsset": "ETH",
            "baseAssetPrecision": 8,
            "quoteAsset": "BTC",
            "quotePrecision": 8,
            "orderTypes": ["LIMIT"],
            "icebergAllowed": False,
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": "0.00000100",
                    "maxPrice": "100000.00000000",
                },
                {"filterType": "LOT_SIZE", "minQty": "0.001", "maxQty": "100000"},
            ],
        },
    ],
    "optionSymbols": [
        {
            "symbol": "BTC0226CALL",
            "status": "TRADING",
            "baseAsset": "BTC月度看涨0226",
            "baseAssetPrecision": 2,
            "quoteAsset": "USDT",
            "quotePrecision": 2,
            "filters": [],
        },
        {
            "symbol": "BTC0219PUT",
            "status": "TRADING",
            "baseAsset": "BTC周度看跌0219",
            "quoteAsset": "USDT",
            "filters": [],
        },
    ],
    "contractSymbols": [
        {"symbol": "BTCUSDT", "status": "TRADING", "baseAsset": "BTC", "quoteAsset": "USDT"}
    ],
}
OPTION_INFO = [
    {
        "symbol": "BTC0226CALL",
        "status": "TRADING",
        "type": "LONGS",
        "exertionTime": T + 10,
        "optionDesc": "",
        "canRelease": True,
        "releaseOption": None,
    },
    {
        "symbol": "BTC0219PUT",
        "status": "TRADING",
        "type": "SHORTS",
        "exertionTime": T - 10,
        "optionDesc": "",
        "canRelease": False,
        "releaseOption": None,
    },
]


def test_rate_limits_accept_both_enum_spellings() -> None:
    limits = instruments.rate_limits(EXCHANGE_INFO)
    assert limits.weight_per_minute == 1200
    assert (limits.raw_requests, limits.raw_interval_ms) == (5000, 300_000)
    upper = {
        "rateLimits": [
            {
                "rateLimitType": "REQUESTS_WEIGHT",
                "interval": "SECOND",
                "intervalNum": 10,
                "limit": 100,
            }
        ]
    }
    assert instruments.rate_limits(upper).weight_per_minute == 600


def test_instruments_join_option_types_and_expiries_and_keep_non_ascii_names() -> None:
    parsed, listing = instruments.instruments(EXCHANGE_INFO, received_at=T, options=OPTION_INFO)
    assert_schema(parsed)
    rows = {r["symbol"]: r for r in parsed.table.to_pylist()}
    assert rows["BTC0226CALL"]["option_type"] == "call"
    assert rows["BTC0219PUT"]["option_type"] == "put"
    assert rows["BTC0226CALL"]["base_asset"] == "BTC月度看涨0226"
    assert rows["ETHBTC"]["min_price"] == 0.000001 and rows["ETHBTC"]["max_qty"] == 100000
    assert rows["ETHBTC"]["option_type"] is None and rows["BTC0219PUT"]["base_precision"] is None
    assert listing.symbols["spot"] == ("ETHBTC",)
    # The put has expired: it is listed but no longer polled.
    assert listing.active("option", T) == ("BTC0226CALL",)
    assert listing.active("contract", T) == ("BTCUSDT",)


def test_contract_info_numbers() -> None:
    payload = [
        {
            "symbol": "BTCUSDT",
            "fundingRate": 0.0001,
            "fundingInterval": 600000,
            "nextFundingTime": T,
            "predictedFundingRate": 0.00012,
            "turnover24": 1234.5,
            "markMethod": 1,
            "markPrice": 9800.9,
            "lastPrice": 9800.5,
            "autoDeleveraging": "x",
        }
    ]
    parsed = instruments.contract_info(payload, received_at=T)
    assert_schema(parsed)
    assert column(parsed, "funding_interval_ms") == [600000]
    assert column(parsed, "turnover_24h") == [1234.5]


# -- hostile payloads ----------------------------------------------------------------------------


def test_undocumented_fields_are_ignored_and_reported_per_endpoint() -> None:
    trades = parsers.historical_trades(
        [{"id": "1", "price": "4", "qty": "1", "time": T, "buyerMaker": True, "seqNum": 9}],
        market="spot",
        symbol="BTCUSDT",
        received_at=T,
    )
    assert trades.rows == 1 and trades.unknown_fields == {("historicalTrades", "seqNum")}
    depth = parsers.depth(
        {"lastUpdateId": 1, "bids": [], "asks": [], "E": 5},
        market="spot",
        symbol="A",
        received_at=T,
    )
    assert depth.unknown_fields == {("depth", "E")}
    info = {
        **EXCHANGE_INFO,
        "extra": 1,
        "spotSymbols": [{**EXCHANGE_INFO["spotSymbols"][0], "x": 1}],
    }  # type: ignore[dict-item]
    parsed, _ = instruments.instruments(info, received_at=T, options=[{**OPTION_INFO[0], "y": 2}])
    assert parsed.unknown_fields == {
        ("exchangeInfo", "extra"),
        ("exchangeInfo symbols", "x"),
        ("optionInfo", "y"),
    }
    documented = parsers.ticker_24hr([], market="option", received_at=T)
    assert documented.unknown_fields == set()


def test_a_symbol_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(ValueError, match="not a valid symbol"):
        parsers.symbol_name("BTCUSDT\n")
    assert parsers.symbol_name("BTC-0226-C.1_X") == "BTC-0226-C.1_X"


def test_ids_are_ascii_digits_only() -> None:
    with pytest.raises(ValueError, match="expected an integer"):
        parsers.integer("\u0663")  # ARABIC-INDIC DIGIT THREE: int() would take it


@pytest.mark.parametrize("missing", ["lastUpdateId", "bids", "asks"])
def test_depth_without_a_documented_field_is_a_payload_error(missing: str) -> None:
    payload = {"lastUpdateId": 1, "bids": [["1", "1", []]], "asks": [["2", "1", []]]}
    del payload[missing]
    with pytest.raises(PayloadError, match=missing):
        parsers.depth(payload, market="spot", symbol="BTCUSDT", received_at=T)


def test_exchange_info_without_a_symbol_list_is_a_payload_error_not_an_empty_market() -> None:
    info = {k: v for k, v in EXCHANGE_INFO.items() if k != "optionSymbols"}
    with pytest.raises(PayloadError, match="optionSymbols"):
        instruments.instruments(info, received_at=T, options=OPTION_INFO)


def test_a_trade_without_its_side_is_set_aside() -> None:
    payload = [
        {"id": "1", "price": "4", "qty": "1", "time": T},
        {"id": "2", "price": "4", "qty": "1", "time": T, "isBuyerMaker": False},
    ]
    parsed = parsers.historical_trades(payload, market="spot", symbol="BTCUSDT", received_at=T)
    assert column(parsed, "trade_id") == [2] and column(parsed, "is_buyer_maker") == [False]
    assert "buyerMaker" in parsed.rejected[0][1]


def test_an_option_ticker_without_its_option_fields_is_set_aside() -> None:
    base = {
        k: "1"
        for k in [
            "priceChange",
            "priceChangePercent",
            "weightedAvgPrice",
            "lastPrice",
            "bidPrice",
            "bidQty",
            "askPrice",
            "askQty",
            "openPrice",
            "highPrice",
            "lowPrice",
            "volume",
            "quoteVolume",
        ]
    }
    option = {"exertionTime": T, "performPrice": "1", "referencePrice": "2", "exertionPrice": "3"}
    complete = {**base, "symbol": "BTC0226CALL", "openTime": T, "closeTime": T, **option}
    partial = {**complete, "symbol": "BTC0219PUT"}
    del partial["referencePrice"]
    parsed = parsers.ticker_24hr([complete, partial], market="option", received_at=T)
    assert column(parsed, "symbol") == ["BTC0226CALL"]
    assert "referencePrice" in parsed.rejected[0][1]
    spot = parsers.ticker_24hr(
        [{**base, "symbol": "ETHBTC", "openTime": T, "closeTime": T}],
        market="spot",
        received_at=T,
    )
    assert spot.rows == 1 and column(spot, "strike_price") == [None]


def test_recent_trades_come_back_in_time_order() -> None:
    payload = [{"price": str(p), "qty": "1", "time": T + t} for p, t in ((1, 2), (2, 0), (3, 2))]
    parsed = parsers.recent_trades(payload, market="spot", symbol="BTCUSDT", received_at=T)
    assert ms(parsed, "time") == [T, T + 2, T + 2]
    assert column(parsed, "price") == [2.0, 1.0, 3.0], "same millisecond: exchange order kept"


def test_a_refresh_with_an_unreadable_record_keeps_the_previous_symbols() -> None:
    previous = instruments.Listing({"spot": ("ETHBTC", "XRPBTC"), "contract": ("BTCUSDT",)})
    current = instruments.Listing({"spot": ("ETHBTC", "LTCBTC"), "contract": ()})
    merged = current.including(previous)
    assert merged.symbols == {"spot": ("ETHBTC", "LTCBTC", "XRPBTC"), "contract": ("BTCUSDT",)}

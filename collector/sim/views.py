"""JSON payloads of the JEX endpoints, built from the simulated market.

Shapes and quirks follow ``shared/jex-api.md``: decimals as strings with 18
fractional digits, ``historicalTrades`` ids as strings newest first, recent
trades without id or side, the single-symbol contract book ticker without
``symbol``, option tickers' extra fields, non-ASCII option ``baseAsset``,
negative ask quantities in the contract book, futures values as JSON numbers.
"""

from __future__ import annotations

import math
from typing import Any

from collector.sim.market import (
    DAY,
    FUNDING_INTERVAL,
    INTERVALS,
    MINUTE,
    Instrument,
    SimExchange,
    SimTrade,
    decimal_string,
)
from collector.sim.params import ApiError, Params, int_param, limit_param, missing

DEPTH_LIMITS = (5, 10, 20, 50, 60)


class MarketViews:
    def __init__(self, exchange: SimExchange, *, weight_limit: int, raw_limit_5m: int) -> None:
        self.exchange = exchange
        self.weight_limit = weight_limit
        self.raw_limit_5m = raw_limit_5m

    # -- helpers ---------------------------------------------------------------------------

    def _instrument(self, market: str, params: Params, *, required: bool = True) -> Instrument:
        symbol = params.get("symbol")
        if not symbol:
            raise missing("symbol")
        inst = self.exchange.instrument(market, symbol)
        if inst is None:
            raise ApiError(400, -1121, "Invalid symbol.")
        return inst

    def _selected(self, market: str, params: Params) -> list[Instrument] | None:
        """None for the single-symbol form, else every instrument of the market."""
        if params.get("symbol"):
            return None
        return self.exchange.instruments(market)

    def book(self, inst: Instrument, now: int, levels: int) -> tuple[list[Any], list[Any], int]:
        mid = self.exchange.mid_price(inst, now)
        tick = inst.tick
        spread_ticks = max(1, round(mid * 0.0002 / tick))
        step_ticks = max(1, round(mid * 0.0001 / tick))
        best_bid_ticks = math.floor((mid / tick) - spread_ticks / 2)
        best_bid_ticks = max(best_bid_ticks, levels * step_ticks + 1)
        rng = self.exchange._rng(inst.market, inst.symbol, "book", now // 1000)
        qtys = rng.lognormal(0.0, 1.0, 2 * levels)
        lot = 10.0**-inst.qty_decimals
        d, q = inst.price_decimals, inst.qty_decimals
        bids, asks = [], []
        for i in range(levels):
            bid = (best_bid_ticks - i * step_ticks) * tick
            ask = (best_bid_ticks + spread_ticks + i * step_ticks) * tick
            bid_qty = max(round(float(qtys[i]), q), lot)
            ask_qty = max(round(float(qtys[levels + i]), q), lot)
            if inst.market == "contract":
                ask_qty = -ask_qty  # "sells are uniformly negative"
            bids.append([decimal_string(bid, d), decimal_string(bid_qty, q), []])
            asks.append([decimal_string(ask, d), decimal_string(ask_qty, q), []])
        return bids, asks, now // 100

    # -- general ---------------------------------------------------------------------------

    def exchange_info(self) -> dict[str, Any]:
        def symbol_object(inst: Instrument) -> dict[str, Any]:
            return {
                "symbol": inst.symbol,
                "status": "TRADING",
                "baseAsset": inst.base_asset,
                "baseAssetPrecision": inst.qty_decimals,
                "quoteAsset": inst.quote_asset,
                "quotePrecision": inst.price_decimals,
                "orderTypes": ["LIMIT", "MARKET"],
                "icebergAllowed": False,
                "filters": [
                    {
                        "filterType": "PRICE_FILTER",
                        "minPrice": decimal_string(inst.tick, inst.price_decimals),
                        "maxPrice": decimal_string(10_000_000, inst.price_decimals),
                        "tickSize": decimal_string(inst.tick, inst.price_decimals),
                    },
                    {
                        "filterType": "LOT_SIZE",
                        "minQty": decimal_string(10.0**-inst.qty_decimals, inst.qty_decimals),
                        "maxQty": decimal_string(1_000_000, inst.qty_decimals),
                        "stepSize": decimal_string(10.0**-inst.qty_decimals, inst.qty_decimals),
                    },
                ],
            }

        return {
            "timezone": "UTC",
            "serverTime": self.exchange.now_ms(),
            # Both enum spellings, as in the exchange's own document.
            "rateLimits": [
                {
                    "rateLimitType": "REQUESTS_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": self.weight_limit,
                },
                {
                    "rateLimitType": "rawRequests",
                    "interval": "minute",
                    "intervalNum": 5,
                    "limit": self.raw_limit_5m,
                },
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 1, "limit": 10},
            ],
            "spotSymbols": [symbol_object(i) for i in self.exchange.instruments("spot")],
            "optionSymbols": [symbol_object(i) for i in self.exchange.instruments("option")],
            "contractSymbols": [symbol_object(i) for i in self.exchange.instruments("contract")],
        }

    def option_info(self) -> list[dict[str, Any]]:
        return [
            {
                "symbol": inst.symbol,
                "status": "TRADING",
                "type": "LONGS" if inst.option_type == "C" else "SHORTS",
                "exertionTime": inst.expiry,
                "optionDesc": f"BTC weekly {'call' if inst.option_type == 'C' else 'put'} "
                f"strike {inst.strike:.0f}",
                "canRelease": True,
                "releaseOption": {
                    "convertRatio": "1",
                    "assetMarginName": "USDT",
                    "rateMargin": "0.1",
                    "rateBase": "1",
                    "assetBaseName": "BTC",
                },
            }
            for inst in self.exchange.instruments("option")
        ]

    def contract_info(self) -> list[dict[str, Any]]:
        now = self.exchange.now_ms()
        last_id = self.exchange.last_funding_id()
        out = []
        for inst in self.exchange.instruments("contract"):
            current = self.exchange.funding(inst.symbol, last_id)
            predicted = self.exchange.funding(inst.symbol, last_id + 1)
            stats = self.exchange.stats("contract", inst.symbol, now - DAY, now + 1)
            out.append(
                {
                    "symbol": inst.symbol,
                    "fundingRate": current.funding_rate,
                    "fundingInterval": FUNDING_INTERVAL,
                    "nextFundingTime": now - now % FUNDING_INTERVAL + FUNDING_INTERVAL,
                    "predictedFundingRate": predicted.funding_rate,
                    "turnover24": round(stats.quote_volume, 2),
                    "markMethod": 1,
                    "markPrice": round(self.exchange.mid_price(inst, now), inst.price_decimals),
                    "lastPrice": float(self.exchange.last_price("contract", inst.symbol)),
                    "autoDeleveraging": "1,2,3,4,5",
                }
            )
        return out

    # -- market data -----------------------------------------------------------------------

    def depth(self, market: str, params: Params) -> dict[str, Any]:
        inst = self._instrument(market, params)
        limit = limit_param(params, "limit", 60, 60)
        if limit not in DEPTH_LIMITS:
            raise ApiError(400, -1100, f"Parameter 'limit' must be one of {DEPTH_LIMITS}.")
        bids, asks, update_id = self.book(inst, self.exchange.now_ms(), limit)
        return {"lastUpdateId": update_id, "bids": bids, "asks": asks}

    def recent_trades(self, market: str, params: Params) -> list[dict[str, Any]]:
        inst = self._instrument(market, params)
        limit = limit_param(params, "limit", 60, 60)
        trades = self.exchange.recent_trades(market, inst.symbol, limit)
        return [{"price": t.price, "qty": t.qty, "time": t.time} for t in trades]

    def historical_trades(self, market: str, params: Params) -> list[dict[str, Any]]:
        inst = self._instrument(market, params)
        limit = limit_param(params, "limit", 200, 500)
        from_id = int_param(params, "fromId")
        if from_id is None:
            trades = self.exchange.recent_trades(market, inst.symbol, limit)
        else:
            trades = self.exchange.trades_from_id(market, inst.symbol, from_id, limit)
        return [_historical(t) for t in reversed(trades)]  # newest first, as documented

    def klines(self, market: str, params: Params) -> list[list[Any]]:
        inst = self._instrument(market, params)
        interval = params.get("interval")
        if not interval:
            raise missing("interval")
        if interval not in INTERVALS:
            raise ApiError(400, -1120, "Invalid interval.")
        limit = limit_param(params, "limit", 500, 1000)
        start = int_param(params, "startTime")
        end = int_param(params, "endTime")
        step = INTERVALS[interval]
        now = self.exchange.now_ms()
        if start is not None:
            stop = min(end + 1 if end is not None else now + 1, start + limit * step)
            rows = self.exchange.klines(market, inst.symbol, interval, start, stop)
        else:
            last = min(end if end is not None else now, now)
            rows = self.exchange.klines(
                market, inst.symbol, interval, last - limit * step + 1, last + 1
            )
        rows = rows[-limit:] if start is None else rows[:limit]
        return [
            [
                k.open_time,
                k.open,
                k.high,
                k.low,
                k.close,
                k.volume,
                k.close_time,
                k.quote_volume,
                k.trade_count,
                k.taker_buy_volume,
                k.taker_buy_quote_volume,
                "0",
            ]
            for k in rows
        ]

    def avg_price(self, market: str, params: Params) -> dict[str, Any]:
        inst = self._instrument(market, params)
        now = self.exchange.now_ms()
        stats = self.exchange.stats(market, inst.symbol, now - 5 * MINUTE, now + 1)
        price = (
            stats.quote_volume / stats.volume
            if stats.volume
            else float(self.exchange.last_price(market, inst.symbol))
        )
        return {"mins": 5, "price": decimal_string(price, 8)}

    def _ticker(self, inst: Instrument) -> dict[str, Any]:
        now = self.exchange.now_ms()
        stats = self.exchange.stats(inst.market, inst.symbol, now - DAY, now + 1)
        last = float(self.exchange.last_price(inst.market, inst.symbol))
        open_price = stats.open if stats.open is not None else last
        bids, asks, _ = self.book(inst, now, 1)
        d = inst.price_decimals
        change = last - open_price
        ticker: dict[str, Any] = {
            "symbol": inst.symbol,
            "priceChange": decimal_string(change, d),
            "priceChangePercent": f"{(change / open_price * 100 if open_price else 0):.3f}",
            "weightedAvgPrice": decimal_string(
                stats.quote_volume / stats.volume if stats.volume else last, 8
            ),
            "lastPrice": decimal_string(last, d),
            "bidPrice": bids[0][0],
            "bidQty": bids[0][1],
            "askPrice": asks[0][0],
            "askQty": asks[0][1],
            "openPrice": decimal_string(open_price, d),
            "highPrice": decimal_string(stats.high if stats.count else last, d),
            "lowPrice": decimal_string(stats.low if stats.count else last, d),
            "volume": decimal_string(stats.volume, 8),
            "quoteVolume": decimal_string(stats.quote_volume, 8),
            "openTime": now - DAY,
            "closeTime": now,
        }
        if inst.market == "option":
            assert inst.strike is not None
            ticker.update(
                {
                    "exertionTime": inst.expiry,
                    "performPrice": decimal_string(self.exchange.mid_price(inst, now), d),
                    "referencePrice": self.exchange.last_price("spot", "BTCUSDT"),
                    "exertionPrice": decimal_string(inst.strike, d),
                }
            )
        return ticker

    def ticker_24hr(self, market: str, params: Params) -> Any:
        many = self._selected(market, params)
        if many is None:
            return self._ticker(self._instrument(market, params))
        return [self._ticker(inst) for inst in many]

    def ticker_price(self, market: str, params: Params) -> Any:
        def one(inst: Instrument) -> dict[str, str]:
            return {"symbol": inst.symbol, "price": self.exchange.last_price(market, inst.symbol)}

        many = self._selected(market, params)
        return one(self._instrument(market, params)) if many is None else [one(i) for i in many]

    def book_ticker(self, market: str, params: Params) -> Any:
        now = self.exchange.now_ms()

        def one(inst: Instrument) -> dict[str, Any]:
            bids, asks, _ = self.book(inst, now, 1)
            return {
                "symbol": inst.symbol,
                "bidPrice": bids[0][0],
                "bidQty": bids[0][1],
                "askPrice": asks[0][0],
                "askQty": asks[0][1],
            }

        many = self._selected(market, params)
        if many is None:
            single = one(self._instrument(market, params))
            if market == "contract":
                del single["symbol"]  # the documented single-symbol contract example has none
            return single
        return [one(i) for i in many]

    # -- futures ---------------------------------------------------------------------------

    def indices_price(self, params: Params) -> Any:
        now = self.exchange.now_ms()

        def one(inst: Instrument) -> dict[str, str]:
            d = inst.price_decimals
            return {
                "symbol": inst.symbol,
                "price": self.exchange.last_price("contract", inst.symbol),
                "indexPrice": decimal_string(self.exchange.mid(inst.asset, now), d),
                "markPrice": decimal_string(self.exchange.mid_price(inst, now), d),
            }

        many = self._selected("contract", params)
        return one(self._instrument("contract", params)) if many is None else [one(i) for i in many]

    def _paged(
        self, params: Params, id_name: str, size_name: str, after: bool, events: Any
    ) -> list[Any]:
        size = limit_param(params, size_name, 100, 100)
        from_id = int_param(params, id_name)
        start = int_param(params, "startTime")
        end = int_param(params, "endTime")
        lo = start if start is not None else 0
        hi = end + 1 if end is not None else self.exchange.now_ms() + 1
        records = events(lo, hi)
        if from_id is not None:
            records = [r for r in records if (r.id > from_id if after else r.id >= from_id)]
            return list(records[:size])
        return list(records[:size] if start is not None else records[-size:])

    def history_rate(self, params: Params) -> list[dict[str, Any]]:
        inst = self._instrument("contract", params)
        records = self._paged(
            params,
            "fromId",
            "limit",
            False,
            lambda lo, hi: self.exchange.funding_rates(inst.symbol, lo, hi),
        )
        return [
            {
                "id": r.id,
                "fundingRate": r.funding_rate,
                "fundingRateDay": r.funding_rate_day,
                "symbol": inst.symbol,
                "date": r.time,
            }
            for r in records
        ]

    def protection_fund(self, params: Params) -> list[dict[str, Any]]:
        inst = self._instrument("contract", params)
        records = self._paged(
            params,
            "start",
            "size",
            True,
            lambda lo, hi: self.exchange.protection_fund(inst.symbol, lo, hi),
        )
        return [
            {
                "id": r.id,
                "createdDate": r.time,
                "symbol": inst.symbol,
                "insuranceFund": r.insurance_fund,
            }
            for r in records
        ]

    def liquidation_orders(self, params: Params) -> list[dict[str, Any]]:
        """Forced liquidations of a contract: one every 37 minutes since the genesis, two
        at the same millisecond every fifth time; ``startTime``/``endTime`` (inclusive)
        and ``orderId`` (from that id) select, ``limit`` (default and max 500) takes the
        oldest of a range, or the newest without ``startTime``."""
        inst = self._instrument("contract", params)
        limit = limit_param(params, "limit", 500, 500)
        start = int_param(params, "startTime")
        end = int_param(params, "endTime")
        from_id = int_param(params, "orderId")
        step = LIQUIDATION_EVERY_MS
        lo = max(self.exchange.genesis, start if start is not None else 0)
        hi = min(self.exchange.now_ms(), end if end is not None else self.exchange.now_ms())
        orders = []
        for k in range(-(-lo // step), hi // step + 1):
            at = k * step
            for j in range(2 if k % 5 == 0 else 1):
                order_id = 9_000_000 + 2 * k + j
                if from_id is not None and order_id < from_id:
                    continue
                price = self.exchange.last_price("contract", inst.symbol, at)
                qty = f"{1 + (k + j) % 7}.000"
                orders.append(
                    {
                        "symbol": inst.symbol,
                        "orderId": str(order_id),
                        "updateTime": at,
                        "side": "SELL" if (k + j) % 2 else "BUY",
                        "origQty": qty,
                        "executedQty": qty,
                        "price": price,
                        "executedPrice": price,
                        "status": "FILLED",
                        "time": at,
                        "reject": False,
                        "type": "FLAT",
                    }
                )
        return orders[:limit] if start is not None else orders[-limit:]


#: The simulator forces a liquidation this often on every contract.
LIQUIDATION_EVERY_MS = 37 * MINUTE


def _historical(trade: SimTrade) -> dict[str, Any]:
    return {
        "id": str(trade.id),
        "price": trade.price,
        "qty": trade.qty,
        "time": trade.time,
        "buyerMaker": trade.buyer_maker,
    }

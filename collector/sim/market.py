"""The simulated JEX market: a pure, deterministic function of (seed, time). No HTTP.

Trades are generated in UTC hour blocks. Each instrument has a fixed number of
trades per hour, so trade ids follow from the hour with no history to replay::

    id = (hour - H0) * trades_per_hour + index_in_hour + 1

and any id or time can be reached directly. Within an hour, trade times are
sorted uniform draws (equal timestamps happen), from a generator seeded by
(seed, market, symbol, hour). Prices follow a mid path that needs no recursion
either: a smooth seeded function at every hour boundary, joined inside the
hour by a seeded Brownian bridge on a one-minute grid.

Nothing later than ``clock()`` is ever returned, and nothing before the
simulator's genesis (``history_days`` before the day it was created).

The records it returns (:class:`SimTrade`, :class:`SimKline`, …) and their OHLCV are in
:mod:`collector.sim.records`, re-exported here.
"""

from __future__ import annotations

import functools
import math
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from collector.sim.records import SimFund as SimFund
from collector.sim.records import SimFunding as SimFunding
from collector.sim.records import SimKline as SimKline
from collector.sim.records import SimTrade as SimTrade
from collector.sim.records import Stats as Stats
from collector.sim.records import decimal_string as decimal_string
from collector.sim.records import merge_stats, trade_stats
from collector.units import DAY_MS, HOUR_MS, MINUTE_MS, WEEK_MS, wall_clock_ms

HOUR = HOUR_MS
MINUTE = MINUTE_MS
DAY = DAY_MS
WEEK = WEEK_MS
H0 = 1_575_158_400_000 // HOUR  # 2019-12-01T00:00Z: trade ids count from here
FUNDING_INTERVAL = 10 * MINUTE
FUND_INTERVAL = MINUTE
EPOCH_MONDAY = 4 * DAY  # 1970-01-05 was a Monday; weekly klines open on Mondays

INTERVALS: dict[str, int] = {
    "1m": MINUTE,
    "3m": 3 * MINUTE,
    "5m": 5 * MINUTE,
    "15m": 15 * MINUTE,
    "30m": 30 * MINUTE,
    "1h": HOUR,
    "2h": 2 * HOUR,
    "4h": 4 * HOUR,
    "6h": 6 * HOUR,
    "12h": 12 * HOUR,
    "1d": DAY,
    "3d": 3 * DAY,
    "1w": WEEK,
}
MARKET_INDEX = {"spot": 1, "option": 2, "contract": 3}


@dataclass(frozen=True)
class Instrument:
    market: str
    symbol: str
    asset: str  # the underlying asset whose mid path drives the price
    base_asset: str
    quote_asset: str
    price_decimals: int
    qty_decimals: int
    trades_per_hour: int
    option_type: str | None = None  # "C" or "P"
    strike: float | None = None
    expiry: int | None = None

    @property
    def tick(self) -> float:
        return float(10.0**-self.price_decimals)


@dataclass(frozen=True)
class Block:
    """One hour of one instrument's trades (numpy arrays, ascending time)."""

    first_id: int
    times: npt.NDArray[np.int64]
    prices: npt.NDArray[np.float64]
    qtys: npt.NDArray[np.float64]
    buyer_maker: npt.NDArray[np.bool_]


ASSETS = {"BTC": 65_000.0, "ETH": 3_500.0, "JEX": 0.05}


class SimExchange:
    """The deterministic market behind the simulator's HTTP API (and the tests' truth)."""

    def __init__(
        self,
        seed: int = 1,
        *,
        clock: Callable[[], int] | None = None,
        history_days: int = 7,
    ) -> None:
        self.seed = seed
        self.clock = clock or wall_clock_ms
        start = self.clock()
        self.genesis = start - start % DAY - history_days * DAY
        self._block = functools.lru_cache(maxsize=512)(self._make_block)
        self._hour_stats = functools.lru_cache(maxsize=65_536)(self._make_hour_stats)
        self._grid = functools.lru_cache(maxsize=4096)(self._make_grid)

    def now_ms(self) -> int:
        return self.clock()

    # -- instruments -----------------------------------------------------------------------

    def instruments(self, market: str, at_ms: int | None = None) -> list[Instrument]:
        now = self.now_ms() if at_ms is None else at_ms
        if market == "spot":
            return [
                Instrument("spot", "BTCUSDT", "BTC", "BTC", "USDT", 2, 6, 7200),
                Instrument("spot", "ETHUSDT", "ETH", "ETH", "USDT", 2, 5, 3600),
                Instrument("spot", "JEXUSDT", "JEX", "JEX", "USDT", 6, 1, 1800),
            ]
        if market == "contract":
            return [
                Instrument("contract", "BTCUSDT", "BTC", "BTC", "USDT", 1, 3, 5400),
                Instrument("contract", "ETHUSDT", "ETH", "ETH", "USDT", 2, 2, 2700),
            ]
        if market == "option":
            return self._options(now)
        return []

    def _options(self, now: int) -> list[Instrument]:
        # Weekly expiries on Fridays 08:00 UTC; the next two strictly after now.
        friday = EPOCH_MONDAY + 4 * DAY + 8 * HOUR
        next_expiry = friday + ((now - friday) // WEEK + 1) * WEEK
        options = []
        for expiry in (next_expiry, next_expiry + WEEK):
            listed = expiry - 2 * WEEK  # listed two weeks before expiry
            spot = self.mid("BTC", listed)
            atm = round(spot / 1000) * 1000
            day = time.strftime("%m%d", time.gmtime(expiry / 1000))
            for strike in (atm - 2000, atm + 2000):
                for kind, label in (("C", "看涨"), ("P", "看跌")):
                    options.append(
                        Instrument(
                            "option",
                            f"BTC{day}{kind}{strike}",
                            "BTC",
                            f"BTC周度{label}{day}",
                            "USDT",
                            2,
                            2,
                            360,
                            kind,
                            float(strike),
                            expiry,
                        )
                    )
        return options

    def instrument(self, market: str, symbol: str) -> Instrument | None:
        for inst in self.instruments(market):
            if inst.symbol == symbol:
                return inst
        return None

    def symbols(self, market: str) -> list[str]:
        return [i.symbol for i in self.instruments(market)]

    # -- prices ----------------------------------------------------------------------------

    def _rng(self, *parts: int | str) -> np.random.Generator:
        words = [p if isinstance(p, int) else zlib.crc32(p.encode()) for p in parts]
        return np.random.default_rng([self.seed & 0xFFFFFFFF, *[w & 0xFFFFFFFF for w in words]])

    def _boundary(self, asset: str, hour: int) -> float:
        """Log-price deviation at an hour boundary: smooth waves plus seeded noise."""
        phase = self._rng(asset, "phase").uniform(0, 2 * math.pi, 3)
        waves = (
            0.04 * math.sin(2 * math.pi * hour / (24 * 9.7) + phase[0])
            + 0.02 * math.sin(2 * math.pi * hour / 23.3 + phase[1])
            + 0.01 * math.sin(2 * math.pi * hour / 5.1 + phase[2])
        )
        return waves + float(self._rng(asset, "hour", hour).normal(0, 0.002))

    def _make_grid(self, asset: str, hour: int) -> npt.NDArray[np.float64]:
        """61 log-prices, one per minute of the hour: a Brownian bridge between boundaries."""
        start, end = self._boundary(asset, hour), self._boundary(asset, hour + 1)
        steps = self._rng(asset, "bridge", hour).normal(0, 0.0008, 60)
        walk = np.concatenate([[0.0], np.cumsum(steps)])
        fraction = np.linspace(0.0, 1.0, 61)
        bridge = walk - fraction * walk[-1]
        return np.asarray(start + fraction * (end - start) + bridge, dtype=np.float64)

    def _log_mid(self, asset: str, times: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        hours = times // HOUR
        out = np.empty(len(times), dtype=np.float64)
        for hour in np.unique(hours):
            mask = hours == hour
            grid = self._grid(asset, int(hour))
            offset = (times[mask] - int(hour) * HOUR) / MINUTE
            out[mask] = np.interp(offset, np.arange(61), grid)
        return out

    def mid(self, asset: str, at_ms: int) -> float:
        """Spot mid price of ``asset`` at a time."""
        return ASSETS[asset] * math.exp(float(self._log_mid(asset, np.array([at_ms]))[0]))

    def _fair(self, inst: Instrument, times: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        spot = ASSETS[inst.asset] * np.exp(self._log_mid(inst.asset, times))
        if inst.market == "spot":
            return np.asarray(spot, dtype=np.float64)
        if inst.market == "contract":
            basis = 0.003 + 0.002 * np.sin(2 * np.pi * times / (6 * HOUR))
            return np.asarray(spot * (1 + basis), dtype=np.float64)
        assert inst.strike is not None
        assert inst.expiry is not None
        intrinsic = np.maximum(
            0.0, spot - inst.strike if inst.option_type == "C" else inst.strike - spot
        )
        years = np.maximum(inst.expiry - times, 0) / (365 * DAY)
        return np.asarray(intrinsic + 0.4 * spot * np.sqrt(years) * 0.4 + 5.0, dtype=np.float64)

    def mid_price(self, inst: Instrument, at_ms: int) -> float:
        return float(self._fair(inst, np.array([at_ms], dtype=np.int64))[0])

    # -- trades ----------------------------------------------------------------------------

    def _make_block(self, market: str, symbol: str, hour: int) -> Block:
        inst = self._instrument_any_time(market, symbol, hour * HOUR)
        n = inst.trades_per_hour
        rng = self._rng(market, symbol, "trades", hour)
        times = np.sort(rng.integers(0, HOUR, n)).astype(np.int64) + hour * HOUR
        fair = self._fair(inst, times)
        noisy = fair * (1 + rng.normal(0, 0.0003, n))
        prices = np.maximum(np.round(noisy, inst.price_decimals), inst.tick)
        lot = 10.0**-inst.qty_decimals
        typical = {"BTC": 0.05, "ETH": 0.8, "JEX": 5000.0}[inst.asset] * (
            10 if market == "contract" else 1
        )
        qtys = np.maximum(
            np.round(rng.lognormal(math.log(typical), 1.0, n), inst.qty_decimals), lot
        )
        maker = rng.random(n) < 0.5
        return Block((hour - H0) * n + 1, times, prices, qtys, maker)

    def _instrument_any_time(self, market: str, symbol: str, at_ms: int) -> Instrument:
        for when in (self.now_ms(), at_ms):
            for inst in self.instruments(market, when):
                if inst.symbol == symbol:
                    return inst
        raise KeyError(f"{market} {symbol}")

    def _visible(self, block: Block, now: int) -> int:
        """How many of the block's trades have happened by ``now``."""
        return int(np.searchsorted(block.times, now, side="right"))

    def _trade(self, inst: Instrument, block: Block, index: int) -> SimTrade:
        return SimTrade(
            block.first_id + index,
            int(block.times[index]),
            decimal_string(float(block.prices[index]), inst.price_decimals),
            decimal_string(float(block.qtys[index]), inst.qty_decimals),
            bool(block.buyer_maker[index]),
        )

    def trades(self, market: str, symbol: str, start_ms: int, end_ms: int) -> list[SimTrade]:
        """Trades with time in [start, end), up to now, ascending."""
        inst = self._instrument_any_time(market, symbol, start_ms)
        now = self.now_ms()
        start_ms = max(start_ms, self.genesis)
        end_ms = min(end_ms, now + 1)
        out: list[SimTrade] = []
        for hour in range(start_ms // HOUR, (end_ms - 1) // HOUR + 1 if end_ms > start_ms else 0):
            block = self._block(market, symbol, hour)
            lo = int(np.searchsorted(block.times, start_ms, side="left"))
            hi = int(np.searchsorted(block.times, end_ms, side="left"))
            out.extend(self._trade(inst, block, i) for i in range(lo, hi))
        return out

    def first_trade_id(self, market: str, symbol: str) -> int:
        inst = self._instrument_any_time(market, symbol, self.genesis)
        return (self.genesis // HOUR - H0) * inst.trades_per_hour + 1

    def trades_from_id(self, market: str, symbol: str, from_id: int, limit: int) -> list[SimTrade]:
        """Up to ``limit`` trades with id >= from_id that have happened, ascending."""
        inst = self._instrument_any_time(market, symbol, self.now_ms())
        per_hour = inst.trades_per_hour
        from_id = max(from_id, self.first_trade_id(market, symbol))
        now = self.now_ms()
        out: list[SimTrade] = []
        hour = H0 + (from_id - 1) // per_hour
        index = (from_id - 1) % per_hour
        while len(out) < limit and hour * HOUR <= now:
            block = self._block(market, symbol, hour)
            stop = min(self._visible(block, now), index + limit - len(out))
            out.extend(self._trade(inst, block, i) for i in range(index, stop))
            if stop < per_hour:
                break
            hour, index = hour + 1, 0
        return out

    def recent_trades(self, market: str, symbol: str, limit: int) -> list[SimTrade]:
        """The last ``limit`` trades up to now, ascending."""
        inst = self._instrument_any_time(market, symbol, self.now_ms())
        now = self.now_ms()
        block = self._block(market, symbol, now // HOUR)
        last_id = block.first_id + self._visible(block, now) - 1
        first_id = max(last_id - limit + 1, self.first_trade_id(market, symbol))
        del inst
        return self.trades_from_id(market, symbol, first_id, last_id - first_id + 1)

    def last_price(self, market: str, symbol: str, at_ms: int | None = None) -> str:
        """Price of the last trade at or before ``at_ms`` (default now)."""
        inst = self._instrument_any_time(market, symbol, self.now_ms())
        at = self.now_ms() if at_ms is None else at_ms
        for hour in range(at // HOUR, at // HOUR - 48, -1):
            block = self._block(market, symbol, hour)
            visible = self._visible(block, at)
            if visible:
                return decimal_string(float(block.prices[visible - 1]), inst.price_decimals)
        return decimal_string(self.mid_price(inst, at), inst.price_decimals)

    # -- aggregates ------------------------------------------------------------------------

    def _make_hour_stats(self, market: str, symbol: str, hour: int) -> Stats:
        block = self._block(market, symbol, hour)
        return trade_stats(block.prices, block.qtys, block.buyer_maker)

    def stats(self, market: str, symbol: str, start_ms: int, end_ms: int) -> Stats:
        """OHLCV of the trades in [start, end) that have happened (whole hours cached)."""
        now = self.now_ms()
        start_ms = max(start_ms, self.genesis)
        end_ms = min(end_ms, now + 1)
        parts: list[Stats] = []
        hour = start_ms // HOUR
        while hour * HOUR < end_ms:
            lo, hi = max(start_ms, hour * HOUR), min(end_ms, (hour + 1) * HOUR)
            if lo == hour * HOUR and hi == (hour + 1) * HOUR:
                parts.append(self._hour_stats(market, symbol, hour))
            elif lo < hi:
                block = self._block(market, symbol, hour)
                a = int(np.searchsorted(block.times, lo, side="left"))
                b = int(np.searchsorted(block.times, hi, side="left"))
                parts.append(
                    trade_stats(block.prices[a:b], block.qtys[a:b], block.buyer_maker[a:b])
                )
            hour += 1
        return merge_stats(parts)

    def klines(
        self, market: str, symbol: str, interval: str, start_ms: int, end_ms: int
    ) -> list[SimKline]:
        """Klines with open_time in [start, end) and open_time <= now, ascending."""
        inst = self._instrument_any_time(market, symbol, self.now_ms())
        step = INTERVALS[interval]
        align = EPOCH_MONDAY if interval == "1w" else 0
        now = self.now_ms()
        lowest = max(start_ms, self.genesis)
        first_open = lowest + (align - lowest) % step  # first grid point at or after it
        out: list[SimKline] = []
        previous_close: float | None = None
        for open_time in range(first_open, min(end_ms, now + 1), step):
            s = self.stats(market, symbol, open_time, open_time + step)
            if s.open is None:
                if previous_close is None:
                    previous_close = float(self.last_price(market, symbol, open_time - 1))
                o = h = low = c = previous_close
            else:
                o, h, low, c = s.open, s.high, s.low, s.close
            previous_close = c
            d = inst.price_decimals
            out.append(
                SimKline(
                    open_time,
                    open_time + step - 1,
                    decimal_string(o, d),
                    decimal_string(h, d),
                    decimal_string(low, d),
                    decimal_string(c, d),
                    decimal_string(s.volume, 8),
                    decimal_string(s.quote_volume, 8),
                    s.count,
                    decimal_string(s.taker_buy_volume, 8),
                    decimal_string(s.taker_buy_quote_volume, 8),
                )
            )
        return out

    # -- futures ---------------------------------------------------------------------------

    def _event_ids(self, start_ms: int, end_ms: int, every: int) -> range:
        first_time = max(start_ms, self.genesis)
        last_time = min(end_ms - 1, self.now_ms())
        first = -(-first_time // every)
        last = last_time // every
        base = self.genesis // every - 1  # ids start at 1 at genesis
        return range(first - base, last - base + 1)

    def funding(self, symbol: str, event_id: int) -> SimFunding:
        base = self.genesis // FUNDING_INTERVAL - 1
        rate = round(float(self._rng("funding", symbol, event_id).normal(0.0001, 0.00005)), 8)
        return SimFunding(
            event_id,
            (event_id + base) * FUNDING_INTERVAL,
            rate,
            round(rate * DAY / FUNDING_INTERVAL, 8),
        )

    def funding_rates(self, symbol: str, start_ms: int, end_ms: int) -> list[SimFunding]:
        return [
            self.funding(symbol, i) for i in self._event_ids(start_ms, end_ms, FUNDING_INTERVAL)
        ]

    def last_funding_id(self) -> int:
        ids = self._event_ids(self.genesis, self.now_ms() + 1, FUNDING_INTERVAL)
        return ids[-1] if len(ids) else 0

    def fund(self, symbol: str, event_id: int) -> SimFund:
        base = self.genesis // FUND_INTERVAL - 1
        size = 1_000_000.0 if symbol.startswith("BTC") else 250_000.0
        wave = 1 + 0.05 * math.sin(event_id / 500)
        noise = float(self._rng("fund", symbol, event_id).normal(0, 0.002))
        return SimFund(event_id, (event_id + base) * FUND_INTERVAL, round(size * (wave + noise), 2))

    def protection_fund(self, symbol: str, start_ms: int, end_ms: int) -> list[SimFund]:
        return [self.fund(symbol, i) for i in self._event_ids(start_ms, end_ms, FUND_INTERVAL)]

    def last_fund_id(self) -> int:
        ids = self._event_ids(self.genesis, self.now_ms() + 1, FUND_INTERVAL)
        return ids[-1] if len(ids) else 0

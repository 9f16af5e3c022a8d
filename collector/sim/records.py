"""What the simulated market returns: its records, their decimal strings, and OHLCV.

:class:`collector.sim.market.SimExchange` makes these; :mod:`collector.sim.market`
re-exports them. Nothing here draws a random number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


def decimal_string(value: float, decimals: int) -> str:
    """The exchange's format: the value rounded to ``decimals``, padded to 18 digits."""
    text = f"{value:.{decimals}f}"
    if decimals == 0:
        text += "."
    return text + "0" * (18 - decimals)


@dataclass(frozen=True)
class SimTrade:
    id: int
    time: int
    price: str
    qty: str
    buyer_maker: bool


@dataclass(frozen=True)
class SimKline:
    open_time: int
    close_time: int
    open: str
    high: str
    low: str
    close: str
    volume: str
    quote_volume: str
    trade_count: int
    taker_buy_volume: str
    taker_buy_quote_volume: str


@dataclass(frozen=True)
class SimFunding:
    id: int
    time: int
    funding_rate: float
    funding_rate_day: float


@dataclass(frozen=True)
class SimFund:
    id: int
    time: int
    insurance_fund: float


@dataclass(frozen=True)
class Stats:
    """OHLCV of a run of trades; ``open`` is None when there were none."""

    open: float | None
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float
    count: int
    taker_buy_volume: float
    taker_buy_quote_volume: float


def trade_stats(
    prices: npt.NDArray[np.float64], qtys: npt.NDArray[np.float64], maker: npt.NDArray[np.bool_]
) -> Stats:
    if len(prices) == 0:
        return Stats(None, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0.0, 0.0)
    quote = prices * qtys
    taker_buy = ~maker
    return Stats(
        float(prices[0]),
        float(prices.max()),
        float(prices.min()),
        float(prices[-1]),
        float(qtys.sum()),
        float(quote.sum()),
        len(prices),
        float(qtys[taker_buy].sum()),
        float(quote[taker_buy].sum()),
    )


def merge_stats(parts: list[Stats]) -> Stats:
    filled = [p for p in parts if p.open is not None]
    if not filled:
        return Stats(None, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0.0, 0.0)
    return Stats(
        filled[0].open,
        max(p.high for p in filled),
        min(p.low for p in filled),
        filled[-1].close,
        sum(p.volume for p in filled),
        sum(p.quote_volume for p in filled),
        sum(p.count for p in filled),
        sum(p.taker_buy_volume for p in filled),
        sum(p.taker_buy_quote_volume for p in filled),
    )

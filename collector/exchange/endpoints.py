"""The JEX endpoints the collector calls, with their paths, weights and security type.

Weights are from the API reference (``shared/jex-api.md``); the no-symbol forms
of the tickers are heavier, which is why :attr:`Endpoint.weight_without_symbol`
exists and why jobs compare the two before choosing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Security = Literal["NONE", "MARKET_DATA"]


@dataclass(frozen=True)
class Paging:
    """How an endpoint pages: the page-size parameter, and the id parameter with whether
    it names the first id wanted (``fromId``) or the last one already seen (``start``)."""

    size: str = "limit"
    id: str = "fromId"
    id_is_first_wanted: bool = True

    def after(self, last_id: int) -> dict[str, int]:
        """The id parameter that asks for the records after ``last_id``."""
        return {self.id: last_id + 1 if self.id_is_first_wanted else last_id}


@dataclass(frozen=True)
class Endpoint:
    name: str
    path: str
    weight: int
    weight_without_symbol: int | None = None
    security: Security = "NONE"
    per_market: bool = False
    paging: Paging = Paging()

    def url_path(self, market: str | None) -> str:
        if self.per_market:
            if market is None:
                raise ValueError(f"{self.name} needs a market")
            return self.path.format(market=market)
        return self.path

    def cost(self, params: dict[str, object] | None) -> int:
        """Request weight of a call with ``params``."""
        if self.weight_without_symbol is not None and not (params or {}).get("symbol"):
            return self.weight_without_symbol
        return self.weight

    def all_symbols_is_cheaper(self, symbols: int) -> bool:
        """Whether one all-symbols request costs no more than one request per symbol."""
        heavy = self.weight_without_symbol
        return heavy is not None and symbols > 0 and heavy <= self.weight * symbols

    def round_cost(self, symbols: int) -> tuple[int, int]:
        """(requests, weight) of polling ``symbols`` symbols once, in the cheaper form."""
        if symbols <= 0:
            return 0, 0
        if self.all_symbols_is_cheaper(symbols):
            assert self.weight_without_symbol is not None
            return 1, self.weight_without_symbol
        return symbols, self.weight * symbols


PING = Endpoint("ping", "/api/v1/ping", 1)
TIME = Endpoint("time", "/api/v1/time", 1)
EXCHANGE_INFO = Endpoint("exchangeInfo", "/api/v1/exchangeInfo", 1)
OPTION_INFO = Endpoint("optionInfo", "/api/v1/optionInfo", 1)
CONTRACT_INFO = Endpoint("contractInfo", "/api/v1/contractInfo", 1)

DEPTH = Endpoint("depth", "/api/v1/{market}/depth", 1, per_market=True)
TRADES = Endpoint("trades", "/api/v1/{market}/trades", 1, per_market=True)
HISTORICAL_TRADES = Endpoint(
    "historicalTrades",
    "/api/v1/{market}/historicalTrades",
    5,
    security="MARKET_DATA",
    per_market=True,
)
KLINES = Endpoint("klines", "/api/v1/{market}/klines", 1, per_market=True)
AVG_PRICE = Endpoint("avgPrice", "/api/v1/{market}/avgPrice", 1, per_market=True)
TICKER_24HR = Endpoint("ticker/24hr", "/api/v1/{market}/ticker/24hr", 1, 40, per_market=True)
TICKER_PRICE = Endpoint("ticker/price", "/api/v1/{market}/ticker/price", 1, 2, per_market=True)
BOOK_TICKER = Endpoint(
    "ticker/bookTicker", "/api/v1/{market}/ticker/bookTicker", 1, 2, per_market=True
)

INDICES_PRICE = Endpoint("ticker/indicesPrice", "/api/v1/contract/ticker/indicesPrice", 1, 1)
HISTORY_RATE = Endpoint("historyRate", "/api/v1/contract/historyRate", 1)
# Note the different names: `start` is the id to start after, `size` the page size.
PROTECTION_FUND = Endpoint(
    "protectionFund",
    "/api/v1/contract/protectionFund",
    1,
    paging=Paging(size="size", id="start", id_is_first_wanted=False),
)
LIQUIDATION_ORDER = Endpoint(
    "liquidationOrder", "/api/v1/contract/liquidationOrder", 5, security="MARKET_DATA"
)

#: Page sizes the exchange allows.
HISTORICAL_TRADES_MAX = 500
RECENT_TRADES_MAX = 60
KLINES_MAX = 1000
HISTORY_RATE_MAX = 100
PROTECTION_FUND_MAX = 100

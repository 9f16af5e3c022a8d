"""jex-collector: archive the JEX exchange into Parquet; read it back with DuckDB or pandas.

The pandas loaders and research helpers are exported here (``from collector import
load_trades``) but imported on first use: pandas is slow to import, and the command
line (``jex-collector --help``) does not need it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LOADERS = (
    "load",
    "load_trades",
    "load_klines",
    "load_depth",
    "load_book_ticker",
    "load_tickers",
    "load_ticker_price",
    "load_avg_price",
    "load_indices",
    "load_funding",
    "load_protection_fund",
    "load_instruments",
    "load_contract_info",
)
_RESEARCH = ("trades_to_bars", "book_top", "trades_with_book", "depth_wide")
_LAZY = (
    {name: "collector.read.loaders" for name in _LOADERS}
    | {name: "collector.read.research" for name in _RESEARCH}
    # A DuckDB connection with every dataset and derived view, time zone pinned to UTC.
    | {"connect": "collector.read.catalog"}
)
__all__ = [  # a literal, for linters; the test suite checks it against the lazy names
    "__version__",
    "book_top",
    "connect",
    "depth_wide",
    "load",
    "load_avg_price",
    "load_book_ticker",
    "load_contract_info",
    "load_depth",
    "load_funding",
    "load_indices",
    "load_instruments",
    "load_klines",
    "load_protection_fund",
    "load_ticker_price",
    "load_tickers",
    "load_trades",
    "trades_to_bars",
    "trades_with_book",
]

if TYPE_CHECKING:
    from collector.read.loaders import (
        load,
        load_avg_price,
        load_book_ticker,
        load_contract_info,
        load_depth,
        load_funding,
        load_indices,
        load_instruments,
        load_klines,
        load_protection_fund,
        load_ticker_price,
        load_tickers,
        load_trades,
    )
    from collector.read.research import book_top, depth_wide, trades_to_bars, trades_with_book


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'collector' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

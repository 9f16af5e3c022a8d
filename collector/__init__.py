"""jex-collector: archive the JEX exchange into Parquet; read it back with DuckDB or pandas.

The pandas loaders and research helpers are exported here (``from collector import
load_trades``) but imported on first use: pandas is slow to import, and the command
line (``jex-collector --help``) does not need it. Nor does this module import the
dataset registry (and pyarrow): a Ctrl-C in the command line's first moments must find
only the standard library loaded.

Every dataset of the registry has a loader, ``load_<dataset>``
(:mod:`collector.read.loaders`); the names below are those of the first release's
datasets and the earlier short names, and any other ``load_<dataset>`` is found on use.
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
    "load_ticker_24hr",
    "load_ticker_price",
    "load_avg_price",
    "load_indices_price",
    "load_funding_rate",
    "load_protection_fund",
    "load_instruments",
    "load_contract_info",
    # the first release's names of three of them (deprecated)
    "load_tickers",
    "load_indices",
    "load_funding",
)
_RESEARCH = ("trades_to_bars", "book_top", "trades_with_book", "depth_wide")
_LAZY = (
    {name: "collector.read.loaders" for name in _LOADERS}
    | {name: "collector.read.research" for name in _RESEARCH}
    # A DuckDB connection with every dataset and derived view, time zone pinned to UTC.
    | {"connect": "collector.read.catalog"}
)
__all__ = ["__version__", *sorted(_LAZY)]

if TYPE_CHECKING:  # explicit re-exports (``X as X``) for type checkers
    from collector.read.catalog import connect as connect
    from collector.read.loaders import load as load
    from collector.read.loaders import load_avg_price as load_avg_price
    from collector.read.loaders import load_book_ticker as load_book_ticker
    from collector.read.loaders import load_contract_info as load_contract_info
    from collector.read.loaders import load_depth as load_depth
    from collector.read.loaders import load_funding as load_funding
    from collector.read.loaders import load_funding_rate as load_funding_rate
    from collector.read.loaders import load_indices as load_indices
    from collector.read.loaders import load_indices_price as load_indices_price
    from collector.read.loaders import load_instruments as load_instruments
    from collector.read.loaders import load_klines as load_klines
    from collector.read.loaders import load_protection_fund as load_protection_fund
    from collector.read.loaders import load_ticker_24hr as load_ticker_24hr
    from collector.read.loaders import load_ticker_price as load_ticker_price
    from collector.read.loaders import load_tickers as load_tickers
    from collector.read.loaders import load_trades as load_trades
    from collector.read.research import book_top as book_top
    from collector.read.research import depth_wide as depth_wide
    from collector.read.research import trades_to_bars as trades_to_bars
    from collector.read.research import trades_with_book as trades_with_book


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None and name.startswith("load_"):
        module = "collector.read.loaders"  # load_<dataset> of any dataset of the registry
    if module is None:
        raise AttributeError(f"module 'collector' has no attribute {name!r}")
    try:
        value = getattr(importlib.import_module(module), name)
    except AttributeError:
        raise AttributeError(f"module 'collector' has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    from collector.datasets import DATASETS

    return sorted(set(globals()) | set(__all__) | {d.loader for d in DATASETS.values()})

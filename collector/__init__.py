"""jex-collector: archive the JEX exchange into Parquet; read it back with DuckDB or pandas.

The pandas loaders and research helpers are exported here (``from collector import
load_trades``) but imported on first use: pandas is slow to import, and the command
line (``jex-collector --help``) does not need it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from collector.datasets import DATASETS as _DATASETS

#: ``load`` and one loader per dataset of the registry (``load_<dataset>``), plus the
#: earlier short names.
_LOADERS = (
    "load",
    *(spec.loader for spec in _DATASETS.values()),
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
__all__ = ["__version__", *sorted(_LAZY)]  # the registry names the loaders

# Explicit re-exports (``X as X``) for type checkers; the names come from _LAZY.
if TYPE_CHECKING:
    from collector.read.loaders import (
        load as load,
    )
    from collector.read.loaders import (
        load_avg_price as load_avg_price,
    )
    from collector.read.loaders import (
        load_book_ticker as load_book_ticker,
    )
    from collector.read.loaders import (
        load_contract_info as load_contract_info,
    )
    from collector.read.loaders import (
        load_depth as load_depth,
    )
    from collector.read.loaders import (
        load_funding as load_funding,
    )
    from collector.read.loaders import (
        load_indices as load_indices,
    )
    from collector.read.loaders import (
        load_instruments as load_instruments,
    )
    from collector.read.loaders import (
        load_klines as load_klines,
    )
    from collector.read.loaders import (
        load_protection_fund as load_protection_fund,
    )
    from collector.read.loaders import (
        load_ticker_price as load_ticker_price,
    )
    from collector.read.loaders import (
        load_tickers as load_tickers,
    )
    from collector.read.loaders import (
        load_trades as load_trades,
    )
    from collector.read.research import book_top as book_top
    from collector.read.research import depth_wide as depth_wide
    from collector.read.research import trades_to_bars as trades_to_bars
    from collector.read.research import trades_with_book as trades_with_book


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'collector' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

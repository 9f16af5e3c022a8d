"""Where rows live in the archive: paths from partition values and back. Pure.

``<root>/<dataset>/market=<market>/date=<YYYY-MM-DD>/part-<utc stamp>-<random>.parquet``,
the partition folders of each dataset's Delta table (:mod:`collector.storage.delta`).

Only names from :mod:`collector.datasets` and validated dates reach a path;
nothing the exchange sends (a symbol, say) is ever part of one.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from dataclasses import dataclass

from collector import datasets
from collector.units import DAY_MS

PART_PREFIX = "part-"
PARQUET_SUFFIX = ".parquet"
_PARTITION = re.compile(
    r"^(?P<dataset>[a-z_0-9]+)/market=(?P<market>[a-z]+)/date=(?P<date>\d{4}-\d{2}-\d{2})$"
)


@dataclass(frozen=True, order=True)
class Partition:
    dataset: str
    market: str
    date: dt.date

    def __post_init__(self) -> None:
        datasets.get(self.dataset)  # raises for an unknown dataset
        if self.market not in datasets.MARKETS:
            raise ValueError(f"unknown market {self.market!r}; markets are {datasets.MARKETS}")

    @property
    def path(self) -> str:
        """Relative directory of the partition, with forward slashes."""
        return f"{self.dataset}/market={self.market}/date={self.date.isoformat()}"

    @classmethod
    def from_path(cls, path: str) -> Partition:
        match = _PARTITION.match(path.strip("/"))
        if not match:
            raise ValueError(f"not a partition directory: {path!r}")
        return cls(match["dataset"], match["market"], dt.date.fromisoformat(match["date"]))


def date_of_ms(ms: int) -> dt.date:
    """UTC date of a time in milliseconds since the epoch."""
    return dt.date(1970, 1, 1) + dt.timedelta(days=ms // DAY_MS)


def part_name(now_ms: int) -> str:
    """A new file name: sortable by creation time, unique thanks to a random suffix."""
    stamp = dt.datetime.fromtimestamp(now_ms / 1000, tz=dt.UTC).strftime("%Y%m%dT%H%M%S%f")[:-3]
    return f"{PART_PREFIX}{stamp}-{secrets.token_hex(4)}{PARQUET_SUFFIX}"

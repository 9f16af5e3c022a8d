"""The ``jobs:`` section: each job's settings (interval, markets, symbols, paging) and
the rules a job must follow to fit its dataset (:func:`check_jobs`)."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import Literal

from pydantic import Field, field_validator

from collector import datasets
from collector.config.base import Market, _Strict
from collector.config.durations import Duration
from collector.units import DAY_MS, HOUR_MS, MINUTE_MS, WEEK_MS

KLINE_INTERVALS: dict[str, int] = {
    "1m": MINUTE_MS,
    "3m": 3 * MINUTE_MS,
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS,
    "1h": HOUR_MS,
    "2h": 2 * HOUR_MS,
    "4h": 4 * HOUR_MS,
    "6h": 6 * HOUR_MS,
    "12h": 12 * HOUR_MS,
    "1d": DAY_MS,
    "3d": 3 * DAY_MS,
    "1w": WEEK_MS,
}
DEPTH_LIMITS = (5, 10, 20, 50, 60)

#: The largest id a setting may give: ids are stored as int64.
INT64_MAX = 2**63 - 1


class JobSettings(_Strict):
    every: Duration
    enabled: bool = True
    markets: tuple[Market, ...] = ("spot", "option", "contract")
    symbols: Literal["all"] | tuple[str, ...] = "all"
    limit: int | None = Field(None, ge=1, strict=True)
    intervals: tuple[str, ...] = ()
    #: trades and klines: how far back to fetch on first start (nothing archived yet).
    backfill: Duration | None = None
    #: trades: on first start, page forwards from this trade id instead (an int64).
    start_id: int | None = Field(None, ge=1, le=INT64_MAX, strict=True)

    #: Set only by selecting a shard (``overrides={"shard": ...}``): the shard's symbol
    #: patterns, which :meth:`wants` honours as well as ``symbols``. Refused in a file.
    shard_symbols: Literal["all"] | tuple[str, ...] = "all"

    @field_validator("symbols", mode="before")
    @classmethod
    def _symbols(cls, value: object) -> object:
        return _symbol_patterns(value)

    @field_validator("shard_symbols", mode="before")
    @classmethod
    def _not_in_a_file(cls, value: object) -> object:
        raise ValueError(
            "not a setting: a shard's symbols go under shards.<name>.symbols, and "
            "--shard <name> applies them"
        )

    @field_validator("intervals")
    @classmethod
    def _intervals(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [v for v in value if v not in KLINE_INTERVALS]
        if unknown:
            raise ValueError(
                f"unknown interval(s) {', '.join(unknown)}; "
                f"expected some of {', '.join(KLINE_INTERVALS)}"
            )
        return value

    def wants(self, symbol: str) -> bool:
        """Whether ``symbol`` is selected by ``symbols`` (``all``, names or glob patterns)
        and, in a shard's settings, by the shard's ``symbols`` too."""
        return _selects(self.symbols, symbol) and _selects(self.shard_symbols, symbol)


def _symbol_patterns(value: object) -> object:
    if isinstance(value, str):
        return value if value == "all" else (value,)
    if isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(
        f"expected all, a symbol, or a list of symbols or glob patterns, got {value!r}"
    )


def _selects(patterns: Literal["all"] | tuple[str, ...], symbol: str) -> bool:
    if patterns == "all":
        return True
    return any(fnmatch.fnmatchcase(symbol, pattern) for pattern in patterns)


#: Datasets that have a job. ``instruments`` feeds every other job its symbols.
JOB_NAMES = tuple(datasets.DATASETS)

#: Jobs that archive every symbol of a market whatever ``symbols`` says
#: (:func:`collector.collect.jobs.refresh_instruments`): two shards may not share their markets.
WHOLE_MARKET_JOBS = frozenset({"instruments"})


def check_jobs(jobs: Mapping[str, JobSettings]) -> None:
    """A ValueError naming the first job that does not fit its dataset: an unknown
    name, a market the dataset does not exist in, a depth limit the exchange does not
    serve, a backfill or start_id where the job takes none, a trades page over 500, or
    klines without intervals."""
    for name, job in jobs.items():
        if name not in datasets.DATASETS:
            raise ValueError(
                f"jobs.{name}: unknown job; jobs are named after datasets: "
                f"{', '.join(datasets.DATASETS)}"
            )
        allowed = datasets.DATASETS[name].markets
        extra = [m for m in job.markets if m not in allowed]
        if extra:
            raise ValueError(
                f"jobs.{name}.markets: {', '.join(extra)} not available; "
                f"{name} exists for {', '.join(allowed)}"
            )
        if name == "depth" and job.limit is not None and job.limit not in DEPTH_LIMITS:
            raise ValueError(f"jobs.depth.limit: expected one of {DEPTH_LIMITS}, got {job.limit}")
        if job.backfill is not None and name not in ("trades", "klines"):
            raise ValueError(
                f"jobs.{name}.backfill: only trades and klines take a backfill "
                "(funding_rate and protection_fund always fetch the whole history)"
            )
        if job.start_id is not None and name != "trades":
            raise ValueError(f"jobs.{name}.start_id: only trades take a start_id")
        if job.start_id is not None and job.backfill is not None:
            raise ValueError(f"jobs.{name}: give backfill or start_id, not both")
        if name == "trades" and job.limit is not None and job.limit > 500:
            raise ValueError(f"jobs.trades.limit: at most 500 (a page), got {job.limit}")
        if name == "klines" and not job.intervals:
            raise ValueError("jobs.klines.intervals: expected at least one interval")

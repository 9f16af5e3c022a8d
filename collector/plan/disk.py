"""What a schedule costs in disk per day: rows per day of each job times measured bytes.

Rows per day, per job (the job's dataset), at the planned (possibly stretched) interval:

* depth: symbols x 2 sides x ``limit`` levels x polls a day (fewer when a book is
  thinner than ``limit``: an upper bound);
* tickers, average price, indices, contract info, instruments: one row per symbol per poll;
* klines: 86,400 s over each interval per symbol (1,440 a day for ``1m``), whatever the poll;
* trades: the trades of the last 24 hours per symbol (:class:`TradeCounts`, from the
  exchange's hourly klines, else :data:`ASSUMED_TRADES_PER_DAY`); without an API key at
  most 60 per poll (the recent-trades endpoint's page);
* funding rate and protection fund: :data:`EVENTS_PER_DAY` per contract (assumed: the
  exchange does not announce how often it records them).

Bytes: each dataset's files cost a fixed amount each (footer, page headers: the size of a
one-row file) plus an amount per row, measured by ``bench/disk.py`` (:data:`BYTES`), for
the flush files (zstd 3; one per dataset, market and day at every flush that has rows)
and for compacted files (zstd 9/19; one per dataset, market and day). An open day is
held at the flush encodings (its flush files, which compaction merges into a few files
through the day, keeping the replaced ones for the tables' retention hour) until it is
compacted an hour after it ends; closed days as compacted files, so the archive grows by
the compacted bytes a day. The tables' Delta logs are not counted: they do not grow
with the archive (entries are kept six hours, :mod:`collector.storage.delta`), and a day
of the shipped schedule's commits measured 115-155 MB, so a quarter of that, at most,
is on disk at any time (``bench/README.md``).

Pure except :func:`fetch_trade_counts` (asks the exchange) and :func:`free_space`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from collector import datasets
from collector.collect import intake
from collector.collect.context import Intake, JobContext
from collector.config import KLINE_INTERVALS, JobSettings, Settings
from collector.datasets import RowBytes
from collector.errors import CollectorError
from collector.exchange import endpoints, parsers
from collector.plan.schedule import JobLoad, Plan
from collector.storage import location
from collector.storage.location import Archive

if TYPE_CHECKING:
    from collector.exchange.client import JexClient

#: What reads the exchange's responses: the daemon's context, or an Intake of its own.
Reader = Intake | JobContext

DAY_S = 86_400
#: Warn when the disk would be full in fewer days than this (at the compacted rate).
FULL_WARNING_DAYS = 7.0


#: Bytes per row and per file of every dataset, from its registry entry (``bytes=``).
BYTES: dict[str, RowBytes] = {d.name: d.bytes for d in datasets.DATASETS.values()}

#: Trades per symbol and day assumed when the exchange's counts cannot be read: about the
#: simulator's averages (spot and futures 4,200 an hour, options 360).
ASSUMED_TRADES_PER_DAY: dict[str, int] = {"spot": 100_000, "contract": 100_000, "option": 10_000}
#: Records per contract and day of the datasets the exchange writes on its own schedule:
#: the simulator's (funding every 10 minutes, the fund every minute). An exchange that
#: funds every 8 hours writes 3 a day: a small dataset either way.
EVENTS_PER_DAY: dict[str, int] = {
    d.name: d.events_per_day for d in datasets.DATASETS.values() if d.rows == "events"
}


@dataclass(frozen=True)
class TradeCounts:
    """Trades per day of each symbol the trades job polls (market -> counts), and their
    source, said in the plan."""

    counts: Mapping[str, Sequence[float]]
    source: str
    measured: bool = True


def assumed_trade_counts(symbols_per_market: Mapping[str, int]) -> TradeCounts:
    return TradeCounts(
        {m: [ASSUMED_TRADES_PER_DAY[m]] * n for m, n in symbols_per_market.items()},
        "assumed: "
        + ", ".join(
            f"{ASSUMED_TRADES_PER_DAY[m]:,} a day per {m} symbol"
            for m in sorted(symbols_per_market)
        ),
        measured=False,
    )


async def fetch_trade_counts(
    client: JexClient, names: Mapping[str, Sequence[str]], reader: Reader | None = None
) -> TradeCounts:
    """Each symbol's trades in its last 24 closed hours, from the exchange's hourly klines
    (their number-of-trades field: JEX's 24hr ticker has no trade count). One request of
    weight 1 per symbol, through the client's budget; the responses are read as the jobs
    read them (``reader``: the daemon's context, else logged only). A symbol listed less
    than a day ago counts its hours so far, scaled to a day. Raises CollectorError when
    any request fails."""
    reader = reader or Intake()

    async def one(market: str, symbol: str) -> float:
        response = await client.get(
            endpoints.KLINES,
            market=market,
            params={"symbol": symbol, "interval": "1h", "limit": 25},
        )
        table = intake.parse(
            reader,
            response,
            parsers.klines,
            market=market,
            symbol=symbol,
            received_at=response.received_at,
            interval="1h",
        ).table
        closes = pc.cast(table["close_time"], pa.int64()).to_pylist()
        counts = table["trade_count"].to_pylist()
        closed = [
            count
            for count, close in zip(counts, closes, strict=True)
            if count is not None and close < response.received_at
        ][-24:]
        return sum(closed) * 24 / len(closed) if closed else 0.0

    counts: dict[str, list[float]] = {}
    for market, symbols in names.items():
        counts[market] = list(await asyncio.gather(*(one(market, s) for s in symbols)))
    return TradeCounts(counts, "the exchange's trade counts of the last 24 h (1h klines)")


async def trade_counts_or_assumed(
    client: JexClient, names: Mapping[str, Sequence[str]], reader: Reader | None = None
) -> TradeCounts:
    """:func:`fetch_trade_counts`, or the assumption (saying why) when the exchange fails."""
    try:
        return await fetch_trade_counts(client, names, reader)
    except CollectorError as exc:
        assumed = assumed_trade_counts({m: len(s) for m, s in names.items()})
        return TradeCounts(
            assumed.counts, f"{assumed.source} (the exchange's counts failed: {exc})", False
        )


@dataclass(frozen=True)
class JobDisk:
    job: str
    rows_per_day: float
    flush_files_per_day: float
    flush_bytes_per_day: float
    compacted_files_per_day: int
    compacted_bytes_per_day: float


@dataclass
class DiskPlan:
    jobs: list[JobDisk]
    trade_source: str
    data_dir: str
    #: Free bytes where the archive is (None: not looked at).
    free_bytes: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def flush_bytes_per_day(self) -> float:
        return sum(job.flush_bytes_per_day for job in self.jobs)

    @property
    def compacted_bytes_per_day(self) -> float:
        return sum(job.compacted_bytes_per_day for job in self.jobs)

    @property
    def days_until_full(self) -> float | None:
        """Days until the free space is used at the compacted rate, keeping a day of flush
        files (the open day) aside; None when the free space is unknown or nothing is written."""
        if self.free_bytes is None or self.compacted_bytes_per_day <= 0:
            return None
        return max(0.0, self.free_bytes - self.flush_bytes_per_day) / self.compacted_bytes_per_day

    def as_dict(self) -> dict[str, Any]:
        return {
            "trade_rate_source": self.trade_source,
            "data_dir": self.data_dir,
            "free_bytes": self.free_bytes,
            "flush_bytes_per_day": round(self.flush_bytes_per_day),
            "compacted_bytes_per_day": round(self.compacted_bytes_per_day),
            "days_until_full": None
            if self.days_until_full is None
            else round(self.days_until_full, 1),
            "jobs": [
                {
                    "job": job.job,
                    "rows_per_day": round(job.rows_per_day),
                    "flush_files_per_day": round(job.flush_files_per_day),
                    "flush_bytes_per_day": round(job.flush_bytes_per_day),
                    "compacted_bytes_per_day": round(job.compacted_bytes_per_day),
                }
                for job in self.jobs
            ],
            "notes": self.notes,
        }


def rows_per_day(
    name: str, job: JobSettings, load: JobLoad, trades: TradeCounts, *, has_api_key: bool
) -> float:
    """Rows job ``name`` writes a day at its planned interval (see the module's docstring)."""
    polls = DAY_S / load.planned_every
    model = datasets.get(name).rows
    if model == "levels":
        return load.symbols * 2 * (job.limit or 20) * polls
    if model == "symbol":
        return load.symbols * polls
    if model == "intervals":
        return load.symbols * sum(DAY_S * 1000 / KLINE_INTERVALS[i] for i in job.intervals)
    if model == "events":
        return load.symbols * EVENTS_PER_DAY[name]
    if model == "trades":
        cap = math.inf if has_api_key else endpoints.RECENT_TRADES_MAX * polls
        return sum(min(count, cap) for counts in trades.counts.values() for count in counts)
    raise ValueError(f"no row model for job {name!r}")


def _arrivals_per_day(name: str, job: JobSettings, load: JobLoad) -> float:
    """How often new rows arrive: at most every poll, and for data the exchange writes on
    its own clock (klines, funding, the fund) at most as often as it writes."""
    polls = DAY_S / load.planned_every
    if datasets.get(name).per_interval:
        shortest = min(KLINE_INTERVALS[i] for i in job.intervals) / 1000
        return min(polls, DAY_S / shortest)
    if name in EVENTS_PER_DAY:
        return min(polls, EVENTS_PER_DAY[name])
    return polls


def estimate(
    settings: Settings,
    plan: Plan,
    symbols: Callable[[JobSettings, str], int],
    trades: TradeCounts,
    *,
    has_api_key: bool,
    free_bytes: int | None = None,
) -> DiskPlan:
    """The disk ``plan``'s jobs fill a day, and how long ``free_bytes`` lasts."""
    jobs = settings.enabled_jobs()
    flushes = DAY_S / settings.storage.flush_every
    estimates: list[JobDisk] = []
    for load in plan.loads:
        job = jobs[load.job]
        sizes = BYTES[load.job]
        rows = rows_per_day(load.job, job, load, trades, has_api_key=has_api_key)
        listing = datasets.get(load.job).kind == "listing"
        markets = sum(1 for m in job.markets if listing or symbols(job, m) > 0)
        if rows <= 0:
            markets = 0
        flush_files = markets * min(flushes, _arrivals_per_day(load.job, job, load))
        estimates.append(
            JobDisk(
                load.job,
                rows,
                flush_files,
                rows * sizes.flush_row + flush_files * sizes.flush_file,
                markets,
                rows * sizes.compacted_row + markets * sizes.compacted_file,
            )
        )
    estimates.sort(key=lambda e: -e.compacted_bytes_per_day)
    data_dir = str(Archive.of(settings.storage.data_dir))
    disk = DiskPlan(estimates, trades.source, data_dir, free_bytes)
    days = disk.days_until_full
    if days is not None and days < FULL_WARNING_DAYS:
        disk.notes.append(
            f"the disk at {disk.data_dir} fills in {days:.1f} days at this rate: free space, "
            "move storage.uri to a larger disk, or collect less (depth limit, symbols)"
        )
    return disk


async def plan_disk(
    settings: Settings,
    plan: Plan,
    client: JexClient,
    names: Callable[[JobSettings, str], Sequence[str]],
    reader: Reader | None = None,
) -> DiskPlan:
    """:func:`estimate` with the trade counts asked of the exchange (for the symbols
    ``names`` gives the trades job; responses read with ``reader``) and the free space at
    ``storage.data_dir``."""
    trades_job = settings.enabled_jobs().get("trades")
    if trades_job is None:
        trades = TradeCounts({}, "no trades job")
    else:
        wanted: dict[str, Sequence[str]] = {m: names(trades_job, m) for m in trades_job.markets}
        trades = await trade_counts_or_assumed(client, wanted, reader)
    free: int | None = None
    if not location.is_remote(settings.storage.data_dir):  # an object store has no "free"
        with contextlib.suppress(OSError):
            _, free = free_space(settings.storage.data_dir)
    return estimate(
        settings,
        plan,
        lambda job, market: len(names(job, market)),
        trades,
        has_api_key=client.has_api_key,
        free_bytes=free,
    )


def free_space(path: str | Path) -> tuple[Path, int]:
    """Free bytes on the file system of ``path`` (or of its nearest existing parent)."""
    where = Path(path).resolve()
    while not where.exists() and where != where.parent:
        where = where.parent
    return where, shutil.disk_usage(where).free

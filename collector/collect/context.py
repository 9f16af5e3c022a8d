"""What the jobs share: their context (client, writer, settings, state), their report,
the cursors' type, paging limits, and running one fetch per symbol."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from collector.collect import paging
from collector.collect.quarantine import Quarantine
from collector.config import JobSettings, Settings
from collector.errors import CollectorError, UnknownSymbolError
from collector.exchange import instruments
from collector.exchange.client import JexClient
from collector.exchange.parsers import Parsed
from collector.storage.writer import ArchiveWriter
from collector.units import DAY_MS

# The jobs log under one name (collector.collect.jobs), whichever family module runs.
log = logging.getLogger("collector.collect.jobs")

#: Pages fetched per symbol in one round before yielding to the next round.
MAX_PAGES_PER_ROUND = 20
#: Pages of funding or protection-fund history fetched per symbol in one round.
HISTORY_PAGES_PER_ROUND = 50
#: Pages fetched backwards for a first start's trade backfill (500 trades each).
MAX_BACKFILL_PAGES = 200
#: Weekly klines open on Mondays: 1970-01-05 is the first one after the epoch.
WEEK_ALIGN_MS = 4 * DAY_MS
#: A kline counts as closed once its close time is this far behind the exchange clock.
KLINE_CLOSE_MARGIN_MS = 2_000
#: Funding and protection-fund ids may be one sequence shared by many symbols: the gap
#: allowed between neighbouring ids of one symbol's page is this many page sizes.
HISTORY_ID_SPREAD = 100

Cursor = tuple[str, ...]
Fingerprint = tuple[int, float, float]


@dataclass
class CollectorState:
    """What the jobs remember between rounds. The archive is the source of truth."""

    listing: instruments.Listing = field(default_factory=instruments.Listing)
    cursors: dict[Cursor, int] = field(default_factory=dict)
    recent_trades: dict[tuple[str, str], list[Fingerprint]] = field(default_factory=dict)
    possible_gaps: dict[tuple[str, str], int] = field(default_factory=dict)
    rate_limits: instruments.RateLimits | None = None
    unknown_fields: set[tuple[str, str]] = field(default_factory=set)
    stalls: paging.Stalls = field(default_factory=paging.Stalls)


@dataclass
class JobContext:
    client: JexClient
    writer: ArchiveWriter
    settings: Settings
    state: CollectorState = field(default_factory=CollectorState)
    quarantine: Quarantine | None = None

    def now_ms(self) -> int:
        return self.client.clock.now_ms()

    def symbols(self, job: JobSettings, market: str) -> list[str]:
        return [s for s in self.state.listing.active(market, self.now_ms()) if job.wants(s)]


@dataclass
class Intake:
    """What reading a response needs outside the daemon's jobs (a backfill, a plan): where
    the records set aside go (``None``: logged only) and the undocumented fields already
    reported. A :class:`JobContext` serves as one too."""

    quarantine: Quarantine | None = None
    state: CollectorState = field(default_factory=CollectorState)


@dataclass
class RoundResult:
    dataset: str
    market: str
    symbols: int = 0
    rows: int = 0
    errors: list[str] = field(default_factory=list)
    ms: float = 0.0


def keep(ctx: JobContext, parsed: Parsed) -> int:
    """Buffer the parsed rows."""
    ctx.writer.add(parsed.dataset, parsed.table)
    return parsed.rows


async def for_each_symbol(
    dataset: str,
    market: str,
    symbols: list[str],
    fetch: Callable[[str], Awaitable[int]],
) -> RoundResult:
    """Run ``fetch`` for every symbol; one failing symbol does not stop the others."""
    report = RoundResult(dataset, market, symbols=len(symbols))
    results = await asyncio.gather(*(fetch(s) for s in symbols), return_exceptions=True)
    for symbol, result in zip(symbols, results, strict=True):
        if isinstance(result, BaseException):
            if not isinstance(result, Exception):
                raise result  # cancellation and friends
            fields = {"dataset": dataset, "market": market, "symbol": symbol, "error": str(result)}
            if not isinstance(result, CollectorError):
                log.error(
                    "%s %s %s: unexpected error",
                    dataset,
                    market,
                    symbol,
                    exc_info=result,
                    extra=fields,
                )
            elif isinstance(result, UnknownSymbolError):
                log.warning(
                    "%s %s %s: the exchange no longer knows this symbol",
                    dataset,
                    market,
                    symbol,
                    extra=fields,
                )
            else:  # counted in the round's line; one line per symbol for who wants them
                log.debug("%s %s %s: %s", dataset, market, symbol, result, extra=fields)
            report.errors.append(f"{symbol}: {result}")
        else:
            report.rows += result
    return report


PerMarket = Callable[[JobContext, JobSettings, str], Awaitable[RoundResult]]

"""One function per dataset family: poll the exchange, parse, hand rows to the writer.

Jobs take their dependencies (client, writer, state, settings) in a
:class:`JobContext` and never import the scheduler, so a test can run one
round of any job against the simulator or a mock transport.

Id- and time-keyed datasets (trades, klines, funding_rate, protection_fund)
continue from a cursor: the largest key already archived or buffered. The
cursor starts from the archive (see :func:`load_cursors`), so a restart neither
repeats nor skips rows, and it never moves past a record that could not be read
(see :mod:`collector.collect.paging`). Nor does it jump further than a page proves: a record
whose id lies far outside its page's run is set aside and quarantined, the page's
other records are kept (:func:`collector.collect.intake.set_aside_outliers`; the largest gap
allowed is the page size for trades, whose ids are consecutive, and
:data:`HISTORY_ID_SPREAD` pages for funding and protection-fund ids, which the API
does not promise consecutive).

Every response goes through :func:`collector.collect.intake.parse`: a payload that
cannot be read at all raises :class:`PayloadError`, records set aside are
logged, and both go to the quarantine (:mod:`collector.collect.quarantine`);
undocumented fields are logged once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from collector import datasets
from collector.collect import intake, paging
from collector.collect.quarantine import Quarantine
from collector.config import KLINE_INTERVALS, JobSettings, Settings
from collector.errors import CollectorError, UnknownSymbolError
from collector.exchange import endpoints, instruments, parsers
from collector.exchange.client import JexClient
from collector.exchange.endpoints import Endpoint
from collector.exchange.parsers import Parsed
from collector.read import catalog
from collector.storage.writer import ArchiveWriter

log = logging.getLogger(__name__)

#: Pages fetched per symbol in one round before yielding to the next round.
MAX_PAGES_PER_ROUND = 20
#: Pages of funding or protection-fund history fetched per symbol in one round.
HISTORY_PAGES_PER_ROUND = 50
#: Pages fetched backwards for a first start's trade backfill (500 trades each).
MAX_BACKFILL_PAGES = 200
#: Weekly klines open on Mondays: 1970-01-05 is the first one after the epoch.
WEEK_ALIGN_MS = 4 * 86_400_000
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
class JobReport:
    dataset: str
    market: str
    symbols: int = 0
    rows: int = 0
    errors: list[str] = field(default_factory=list)
    ms: float = 0.0


def load_cursors(data_dir: str, state: CollectorState) -> None:
    """Start every cursor from what the archive already holds.

    The archive's max is trusted as it is: an id archived before the page-run check
    (:func:`collector.collect.intake.set_aside_outliers`) existed, say newest + 10**12, still
    holds its series until the exchange's ids reach it. Such a row must be removed from
    the archive by hand; nothing written since can put one there.
    """
    for spec in datasets.DATASETS.values():
        if spec.cursor is None:
            continue
        found = catalog.max_by_group(data_dir, spec.name, spec.cursor.column, spec.cursor.group)
        for key, value in found.items():
            state.cursors[(spec.name, *key)] = int(value)
    # Without an API key, the first poll after a restart overlaps what was archived last.
    state.recent_trades.update(catalog.last_recent_trades(data_dir, endpoints.RECENT_TRADES_MAX))


def _keep(ctx: JobContext, parsed: Parsed) -> int:
    """Buffer the parsed rows."""
    ctx.writer.add(parsed.dataset, parsed.table)
    return parsed.rows


async def _for_each_symbol(
    dataset: str,
    market: str,
    symbols: list[str],
    fetch: Callable[[str], Awaitable[int]],
) -> JobReport:
    """Run ``fetch`` for every symbol; one failing symbol does not stop the others."""
    report = JobReport(dataset, market, symbols=len(symbols))
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


# -- trades ----------------------------------------------------------------------------------


async def _historical_trades(ctx: JobContext, job: JobSettings, market: str, symbol: str) -> int:
    key: Cursor = ("trades", market, symbol)
    rows = 0
    page_size = job.limit or endpoints.HISTORICAL_TRADES_MAX
    if ctx.state.cursors.get(key) is None and job.start_id is not None:
        ctx.state.cursors[key] = job.start_id - 1  # first start: page forwards from there
    if ctx.state.cursors.get(key) is None and job.backfill:
        rows += await _first_trades_with_backfill(ctx, market, symbol, job.backfill, page_size)
        if ctx.state.cursors.get(key) is None:
            return rows  # nothing readable yet: the first start (with its backfill) is redone
    for _ in range(MAX_PAGES_PER_ROUND):
        cursor = ctx.state.cursors.get(key)
        params: dict[str, Any] = {"symbol": symbol, "limit": page_size}
        if cursor is not None:
            params["fromId"] = cursor + 1
        response = await ctx.client.get(endpoints.HISTORICAL_TRADES, market=market, params=params)
        parsed = intake.parse(
            ctx, response, parsers.historical_trades, market, symbol, response.received_at
        )
        if cursor is not None:
            parsed.table = parsed.table.filter(pc.greater(parsed.table["trade_id"], cursor))
        intake.set_aside_outliers(ctx, response, parsed, "trade_id", cursor, page_size)
        cut = intake.cut_at_unreadable(ctx, parsed, key, cursor, "trade_id", intake.id_of)
        if cursor is not None:
            first = parsed.table["trade_id"][0].as_py() if parsed.rows else None
            if first is not None and first != cursor + 1:
                log.warning(
                    "trades %s %s: ids %d..%d are missing at the exchange",
                    market,
                    symbol,
                    cursor + 1,
                    first - 1,
                )
        if parsed.rows:
            rows += _keep(ctx, parsed)
            ctx.state.cursors[key] = int(pc.max(parsed.table["trade_id"]).as_py())
        if cut or cursor is None or len(response.payload) < page_size or not parsed.rows:
            break  # unreadable record, first contact (newest page only), caught up, nothing new
    return rows


async def _first_trades_with_backfill(
    ctx: JobContext, market: str, symbol: str, lookback_s: float, page_size: int
) -> int:
    """First contact: the newest page, then pages backwards until ``lookback_s`` is covered.

    The forward cursor is the newest page's last id; the backward pages only fill in
    below it, so nothing is fetched twice.
    """
    key: Cursor = ("trades", market, symbol)
    newest = await ctx.client.get(
        endpoints.HISTORICAL_TRADES,
        market=market,
        params={"symbol": symbol, "limit": page_size},
    )
    parsed = intake.parse(
        ctx, newest, parsers.historical_trades, market, symbol, newest.received_at
    )
    intake.set_aside_outliers(ctx, newest, parsed, "trade_id", None, page_size)
    intake.cut_at_unreadable(ctx, parsed, key, None, "trade_id", intake.id_of)
    if not parsed.rows:
        return 0
    rows = _keep(ctx, parsed)
    ctx.state.cursors[key] = int(pc.max(parsed.table["trade_id"]).as_py())
    oldest_wanted = newest.received_at - int(lookback_s * 1000)
    lowest_id = int(pc.min(parsed.table["trade_id"]).as_py())
    lowest_time = int(pc.min(pc.cast(parsed.table["time"], pa.int64())).as_py())
    stuck = 0
    for _ in range(MAX_BACKFILL_PAGES):
        if lowest_time < oldest_wanted or lowest_id <= 1:
            return rows
        from_id = max(1, lowest_id - page_size)
        response = await ctx.client.get(
            endpoints.HISTORICAL_TRADES,
            market=market,
            params={"symbol": symbol, "fromId": from_id, "limit": lowest_id - from_id},
        )
        page = intake.parse(
            ctx, response, parsers.historical_trades, market, symbol, response.received_at
        )
        page.table = page.table.filter(pc.less(page.table["trade_id"], lowest_id))
        intake.set_aside_outliers(
            ctx, response, page, "trade_id", lowest_id, page_size, backwards=True
        )
        bound = paging.last_unread_below(
            page.table["trade_id"].to_pylist(),
            [intake.id_of(r) for r, _ in page.rejected],
            lowest_id,
        )
        if page.rejected and bound is not None:
            # Backwards, only what lies above the unreadable record joins the archive.
            page.table = page.table.filter(pc.greater(page.table["trade_id"], bound))
            if not page.rows:
                stuck += 1
                if stuck < paging.UNREADABLE_ROUNDS:
                    continue  # ask for the same page again
                log.warning(
                    "trades %s %s: backfill stopped at trade %d, which could not be read; "
                    "`jex-collector backfill` can fetch the older trades",
                    market,
                    symbol,
                    bound,
                )
                return rows
        elif not page.rows:
            return rows  # the exchange's history ends here
        stuck = 0
        lowest_id = int(pc.min(page.table["trade_id"]).as_py())
        lowest_time = int(pc.min(pc.cast(page.table["time"], pa.int64())).as_py())
        in_window = pc.greater_equal(pc.cast(page.table["time"], pa.int64()), oldest_wanted)
        page.table = page.table.filter(in_window)
        rows += _keep(ctx, page)
    log.warning(
        "trades %s %s: backfill stopped after %d pages; older trades were not fetched",
        market,
        symbol,
        MAX_BACKFILL_PAGES,
    )
    return rows


def _overlap(previous: list[Fingerprint], current: list[Fingerprint]) -> int:
    """Length of the longest suffix of ``previous`` that is a prefix of ``current``."""
    for size in range(min(len(previous), len(current)), 0, -1):
        if previous[-size:] == current[:size]:
            return size
    return 0


async def _recent_trades(ctx: JobContext, market: str, symbol: str) -> int:
    response = await ctx.client.get(
        endpoints.TRADES,
        market=market,
        params={"symbol": symbol, "limit": endpoints.RECENT_TRADES_MAX},
    )
    parsed = intake.parse(
        ctx, response, parsers.recent_trades, market, symbol, response.received_at
    )
    table = parsed.table
    current = list(
        zip(
            pc.cast(table["time"], pa.int64()).to_pylist(),
            table["price"].to_pylist(),
            table["qty"].to_pylist(),
            strict=True,
        )
    )
    previous = ctx.state.recent_trades.get((market, symbol))
    seen = _overlap(previous, current) if previous else 0
    if previous and current and seen == 0:
        # Nothing in common with the last poll: more trades than one page happened between
        # the polls, and some may be missing. Recorded, not hidden.
        ctx.state.possible_gaps[(market, symbol)] = (
            ctx.state.possible_gaps.get((market, symbol), 0) + 1
        )
        log.warning(
            "trades %s %s: no overlap with the previous poll; trades may be missing "
            "(set JEX_API_KEY to collect every trade)",
            market,
            symbol,
        )
    ctx.state.recent_trades[(market, symbol)] = current
    parsed.table = table.slice(seen)
    return _keep(ctx, parsed)


async def collect_trades(ctx: JobContext, job: JobSettings, market: str) -> JobReport:
    def fetch(symbol: str) -> Awaitable[int]:
        if ctx.client.has_api_key:
            return _historical_trades(ctx, job, market, symbol)
        return _recent_trades(ctx, market, symbol)

    return await _for_each_symbol("trades", market, ctx.symbols(job, market), fetch)


# -- klines ----------------------------------------------------------------------------------


async def _klines(ctx: JobContext, job: JobSettings, market: str, symbol: str) -> int:
    rows = 0
    for interval in job.intervals:
        key: Cursor = ("klines", market, symbol, interval)
        step = KLINE_INTERVALS[interval]
        if ctx.state.cursors.get(key) is None and job.backfill:
            # First start with a lookback: pretend the kline before the window is archived.
            start = ctx.now_ms() - int(job.backfill * 1000)
            align = WEEK_ALIGN_MS if interval == "1w" else 0
            ctx.state.cursors[key] = start - (start - align) % step - step
        for _ in range(MAX_PAGES_PER_ROUND):
            cursor = ctx.state.cursors.get(key)
            params: dict[str, Any] = {"symbol": symbol, "interval": interval}
            if cursor is None:
                params["limit"] = job.limit or 500
            else:
                params["limit"] = endpoints.KLINES_MAX
                params["startTime"] = cursor + step
            response = await ctx.client.get(endpoints.KLINES, market=market, params=params)
            parsed = intake.parse(
                ctx,
                response,
                parsers.klines,
                market,
                symbol,
                interval,
                received_at=response.received_at,
            )
            table = parsed.table
            closed_before = response.received_at - KLINE_CLOSE_MARGIN_MS
            mask = pc.less(pc.cast(table["close_time"], pa.int64()), closed_before)
            if cursor is not None:
                mask = pc.and_(mask, pc.greater(pc.cast(table["open_time"], pa.int64()), cursor))
            parsed.table = table.filter(mask)
            cut = intake.cut_at_unreadable(
                ctx,
                parsed,
                key,
                cursor,
                "open_time",
                functools.partial(intake.open_time_of, received_at=response.received_at),
                step,
            )
            if parsed.rows:
                rows += _keep(ctx, parsed)
                ctx.state.cursors[key] = int(
                    pc.max(pc.cast(parsed.table["open_time"], pa.int64())).as_py()
                )
            if cut or cursor is None or len(response.payload) < params["limit"] or not parsed.rows:
                break
    return rows


async def collect_klines(ctx: JobContext, job: JobSettings, market: str) -> JobReport:
    return await _for_each_symbol(
        "klines", market, ctx.symbols(job, market), lambda s: _klines(ctx, job, market, s)
    )


# -- snapshots: depth, tickers, average price, indices ----------------------------------------


async def collect_depth(ctx: JobContext, job: JobSettings, market: str) -> JobReport:
    async def fetch(symbol: str) -> int:
        response = await ctx.client.get(
            endpoints.DEPTH, market=market, params={"symbol": symbol, "limit": job.limit or 20}
        )
        return _keep(
            ctx, intake.parse(ctx, response, parsers.depth, market, symbol, response.received_at)
        )

    return await _for_each_symbol("depth", market, ctx.symbols(job, market), fetch)


async def collect_avg_price(ctx: JobContext, job: JobSettings, market: str) -> JobReport:
    async def fetch(symbol: str) -> int:
        response = await ctx.client.get(
            endpoints.AVG_PRICE, market=market, params={"symbol": symbol}
        )
        return _keep(
            ctx,
            intake.parse(ctx, response, parsers.avg_price, market, symbol, response.received_at),
        )

    return await _for_each_symbol("avg_price", market, ctx.symbols(job, market), fetch)


SnapshotParser = Callable[[Any, str, int, str | None], Parsed]

_SNAPSHOTS: dict[str, tuple[Endpoint, SnapshotParser]] = {
    "ticker_24hr": (endpoints.TICKER_24HR, parsers.ticker_24hr),
    "ticker_price": (endpoints.TICKER_PRICE, parsers.ticker_price),
    "book_ticker": (endpoints.BOOK_TICKER, parsers.book_ticker),
    "indices_price": (
        endpoints.INDICES_PRICE,
        lambda payload, _market, received_at, symbol: parsers.indices_price(
            payload, received_at, symbol
        ),
    ),
}


async def collect_snapshot(
    ctx: JobContext, job: JobSettings, market: str, dataset: str
) -> JobReport:
    """Tickers: one all-symbols request when it costs no more weight than one per symbol."""
    endpoint, parse = _SNAPSHOTS[dataset]
    symbols = ctx.symbols(job, market)
    if endpoint.all_symbols_is_cheaper(len(symbols)):
        report = JobReport(dataset, market, symbols=len(symbols))
        response = await ctx.client.get(endpoint, market=market)
        parsed = intake.parse(ctx, response, parse, market, response.received_at, None)
        # Records of symbols not (or no longer) listed are not polled for, and not kept.
        parsed.table = parsed.table.filter(
            pc.is_in(parsed.table["symbol"], pa.array(symbols, pa.string()))
        )
        report.rows = _keep(ctx, parsed)
        return report

    async def fetch(symbol: str) -> int:
        response = await ctx.client.get(endpoint, market=market, params={"symbol": symbol})
        return _keep(ctx, intake.parse(ctx, response, parse, market, response.received_at, symbol))

    return await _for_each_symbol(dataset, market, symbols, fetch)


# -- futures: funding rate and protection fund ------------------------------------------------


async def _paged_by_id(
    ctx: JobContext,
    dataset: str,
    symbol: str,
    endpoint: Endpoint,
    page_size: int,
    cursor_params: Callable[[int], dict[str, Any]],
    size_param: str,
    parse: Callable[..., Parsed],
) -> int:
    key: Cursor = (dataset, "contract", symbol)
    rows = 0
    for _ in range(HISTORY_PAGES_PER_ROUND):
        # Nothing archived yet: start before the first id, i.e. fetch the whole history.
        known = ctx.state.cursors.get(key)
        cursor = 0 if known is None else known
        params: dict[str, Any] = {"symbol": symbol, size_param: page_size}
        params.update(cursor_params(cursor))
        response = await ctx.client.get(endpoint, params=params)
        parsed = intake.parse(ctx, response, parse, symbol, received_at=response.received_at)
        parsed.table = parsed.table.filter(pc.greater(parsed.table["id"], cursor))
        intake.set_aside_outliers(ctx, response, parsed, "id", known, page_size * HISTORY_ID_SPREAD)
        cut = intake.cut_at_unreadable(ctx, parsed, key, cursor, "id", intake.id_of)
        if parsed.rows:
            rows += _keep(ctx, parsed)
            ctx.state.cursors[key] = int(pc.max(parsed.table["id"]).as_py())
        if cut or len(response.payload) < page_size or not parsed.rows:
            break
    return rows


async def collect_funding_rate(ctx: JobContext, job: JobSettings, market: str) -> JobReport:
    return await _for_each_symbol(
        "funding_rate",
        market,
        ctx.symbols(job, market),
        lambda s: _paged_by_id(
            ctx,
            "funding_rate",
            s,
            endpoints.HISTORY_RATE,
            endpoints.HISTORY_RATE_MAX,
            lambda cursor: {"fromId": cursor + 1},
            "limit",
            parsers.funding_rate,
        ),
    )


async def collect_protection_fund(ctx: JobContext, job: JobSettings, market: str) -> JobReport:
    # Note the different names: `start` is the id to start after, `size` the page size.
    return await _for_each_symbol(
        "protection_fund",
        market,
        ctx.symbols(job, market),
        lambda s: _paged_by_id(
            ctx,
            "protection_fund",
            s,
            endpoints.PROTECTION_FUND,
            endpoints.PROTECTION_FUND_MAX,
            lambda cursor: {"start": cursor},
            "size",
            parsers.protection_fund,
        ),
    )


# -- any time-paged series of the registry ---------------------------------------------------


async def _paged_by_time(ctx: JobContext, spec: datasets.Dataset, market: str, symbol: str) -> int:
    """A ``time_paged`` series of the registry without a job of its own: pages forward
    from the cursor (the largest time archived) with ``startTime`` just past it; the
    first contact takes the newest page. A full page may end inside its newest
    millisecond, so that millisecond's records come with the next page instead."""
    assert spec.cursor is not None
    key: Cursor = (spec.name, market, symbol)
    column = spec.cursor.column
    parse = getattr(parsers, spec.parser)
    rows = 0
    for _ in range(MAX_PAGES_PER_ROUND):
        cursor = ctx.state.cursors.get(key)
        params: dict[str, Any] = {"symbol": symbol, "limit": spec.page_size}
        if cursor is not None:
            params["startTime"] = cursor + 1
        response = await ctx.client.get(spec.endpoints[0], market=market, params=params)
        parsed = intake.parse(
            ctx, response, parse, market=market, symbol=symbol, received_at=response.received_at
        )
        if cursor is not None:
            times = pc.cast(parsed.table[column], pa.int64())
            parsed.table = parsed.table.filter(pc.greater(times, cursor))
        full = len(response.payload) >= spec.page_size
        times = pc.cast(parsed.table[column], pa.int64())
        if full and parsed.rows and pc.min(times).as_py() < pc.max(times).as_py():
            parsed.table = parsed.table.filter(pc.less(times, pc.max(times)))
        time_of = functools.partial(
            intake.time_of, field=spec.cursor.field, received_at=response.received_at
        )
        cut = intake.cut_at_unreadable(ctx, parsed, key, cursor, column, time_of)
        if parsed.rows:
            rows += _keep(ctx, parsed)
            newest = pc.max(pc.cast(parsed.table[column], pa.int64())).as_py()
            ctx.state.cursors[key] = int(newest)
        if cut or not full or not parsed.rows:
            break
    return rows


def _per_symbol(
    fetch: Callable[[JobContext, datasets.Dataset, str, str], Awaitable[int]], name: str
) -> PerMarket:
    async def collect(ctx: JobContext, job: JobSettings, market: str) -> JobReport:
        spec = datasets.get(name)
        symbols = ctx.symbols(job, market)
        return await _for_each_symbol(name, market, symbols, lambda s: fetch(ctx, spec, market, s))

    return collect


# -- instruments and contract info ------------------------------------------------------------


async def refresh_instruments(ctx: JobContext, job: JobSettings | None = None) -> JobReport:
    """Fetch the instrument lists, archive them, and tell the other jobs what exists."""
    report = JobReport("instruments", "all")
    info = await ctx.client.get(endpoints.EXCHANGE_INFO)
    options = await ctx.client.get(endpoints.OPTION_INFO)
    intake.parse(ctx, options, parsers.expect_shape, list, "optionInfo")
    parsed, listing = intake.parse(
        ctx, info, instruments.instruments, options.payload, info.received_at
    )
    intake.report(ctx, info, parsed)
    limits = instruments.rate_limits(info.payload)
    budget = ctx.client.budget
    if limits.weight_per_minute and limits.weight_per_minute != budget.limit:
        log.info("exchange weight limit: %d per minute", limits.weight_per_minute)
        budget.set_limit(limits.weight_per_minute)
    if limits.raw_requests and limits.raw_requests != budget.raw_limit:
        log.info(
            "exchange raw-request limit: %d per %.0f minutes",
            limits.raw_requests,
            (limits.raw_interval_ms or budget.raw_window_ms) / 60_000,
        )
        budget.set_raw_limit(limits.raw_requests, limits.raw_interval_ms)
    ctx.state.rate_limits = limits
    if parsed.rejected:
        listing = listing.including(ctx.state.listing)
    _log_listing_changes(ctx.state.listing, listing)
    ctx.state.listing = listing
    if job is not None:
        parsed.table = parsed.table.filter(
            pc.is_in(parsed.table["market"], pa.array(list(job.markets), pa.string()))
        )
        report.rows = _keep(ctx, parsed)
    report.symbols = sum(len(names) for names in listing.symbols.values())
    return report


def _log_listing_changes(old: instruments.Listing, new: instruments.Listing) -> None:
    if not old.symbols:
        return
    for market, names in new.symbols.items():
        before = set(old.symbols.get(market, ()))
        added, removed = set(names) - before, before - set(names)
        if added:
            log.info("new %s symbols: %s", market, ", ".join(sorted(added)))
        if removed:
            log.info("%s symbols no longer listed: %s", market, ", ".join(sorted(removed)))


async def collect_contract_info(ctx: JobContext, job: JobSettings, market: str) -> JobReport:
    report = JobReport("contract_info", market)
    response = await ctx.client.get(endpoints.CONTRACT_INFO)
    parsed = intake.parse(ctx, response, instruments.contract_info, response.received_at)
    parsed.table = parsed.table.filter(
        pc.is_in(parsed.table["symbol"], pa.array(ctx.symbols(job, "contract"), pa.string()))
    )
    report.symbols = parsed.rows
    report.rows = _keep(ctx, parsed)
    return report


# -- dispatch ---------------------------------------------------------------------------------

PerMarket = Callable[[JobContext, JobSettings, str], Awaitable[JobReport]]

COLLECTORS: dict[str, PerMarket] = {
    "depth": collect_depth,
    "trades": collect_trades,
    "klines": collect_klines,
    "avg_price": collect_avg_price,
    "funding_rate": collect_funding_rate,
    "protection_fund": collect_protection_fund,
    "contract_info": collect_contract_info,
    **{name: (lambda n: lambda c, j, m: collect_snapshot(c, j, m, n))(name) for name in _SNAPSHOTS},
}
# Time-paged datasets of the registry without a job of their own page with the generic one.
COLLECTORS.update(
    {
        spec.name: _per_symbol(_paged_by_time, spec.name)
        for spec in datasets.DATASETS.values()
        if spec.kind == "time_paged" and spec.name not in COLLECTORS
    }
)


async def run_job(ctx: JobContext, name: str) -> list[JobReport]:
    """One round of job ``name`` over its markets; logs one line per market."""
    job = ctx.settings.jobs[name]
    reports: list[JobReport] = []
    markets = ["all"] if name == "instruments" else list(job.markets)
    for market in markets:
        started = time.perf_counter()
        try:
            if name == "instruments":
                report = await refresh_instruments(ctx, job)
            else:
                report = await COLLECTORS[name](ctx, job, market)
        except CollectorError as exc:
            report = JobReport(name, market, errors=[str(exc)])
        report.ms = (time.perf_counter() - started) * 1000
        level = logging.WARNING if report.errors else logging.INFO
        log.log(
            level,
            "job %s market=%s symbols=%d rows=%d ms=%.0f%s",
            name,
            market,
            report.symbols,
            report.rows,
            report.ms,
            f" errors={len(report.errors)} first_error={report.errors[0]!r}"
            if report.errors
            else "",
            extra={
                "job": name,
                "dataset": report.dataset,
                "market": market,
                "symbols": report.symbols,
                "rows": report.rows,
                "duration_ms": round(report.ms),
                "errors": len(report.errors),
                "error": report.errors[0] if report.errors else None,
            },
        )
        reports.append(report)
    return reports

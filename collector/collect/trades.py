"""The trades job: historical trades paged by id (with an API key, and a first
start's backfill backwards), or the recent trades with their overlap checked."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from collector.collect import intake, paging
from collector.collect.context import (
    MAX_BACKFILL_PAGES,
    MAX_PAGES_PER_ROUND,
    Cursor,
    Fingerprint,
    JobContext,
    RoundResult,
    for_each_symbol,
    keep,
)
from collector.config import JobSettings
from collector.exchange import endpoints, parsers

# The jobs log under one name (collector.collect.jobs), whichever family module runs.
log = logging.getLogger("collector.collect.jobs")


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
            ctx,
            response,
            parsers.historical_trades,
            market=market,
            symbol=symbol,
            received_at=response.received_at,
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
            rows += keep(ctx, parsed)
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
        ctx,
        newest,
        parsers.historical_trades,
        market=market,
        symbol=symbol,
        received_at=newest.received_at,
    )
    intake.set_aside_outliers(ctx, newest, parsed, "trade_id", None, page_size)
    intake.cut_at_unreadable(ctx, parsed, key, None, "trade_id", intake.id_of)
    if not parsed.rows:
        return 0
    rows = keep(ctx, parsed)
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
            ctx,
            response,
            parsers.historical_trades,
            market=market,
            symbol=symbol,
            received_at=response.received_at,
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
        rows += keep(ctx, page)
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
        ctx,
        response,
        parsers.recent_trades,
        market=market,
        symbol=symbol,
        received_at=response.received_at,
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
    return keep(ctx, parsed)


async def collect_trades(ctx: JobContext, job: JobSettings, market: str) -> RoundResult:
    def fetch(symbol: str) -> Awaitable[int]:
        if ctx.client.has_api_key:
            return _historical_trades(ctx, job, market, symbol)
        return _recent_trades(ctx, market, symbol)

    return await for_each_symbol("trades", market, ctx.symbols(job, market), fetch)

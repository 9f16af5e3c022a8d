"""Series paged from a cursor: funding rate and protection fund by id, and any
time-paged dataset of the registry without a job of its own."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from collector import datasets
from collector.collect import intake
from collector.collect.context import (
    HISTORY_ID_SPREAD,
    HISTORY_PAGES_PER_ROUND,
    MAX_PAGES_PER_ROUND,
    Cursor,
    JobContext,
    JobReport,
    PerMarket,
    for_each_symbol,
    keep,
)
from collector.config import JobSettings
from collector.exchange import endpoints, parsers
from collector.exchange.endpoints import Endpoint
from collector.exchange.parsers import Parsed

# The jobs log under one name (collector.collect.jobs), whichever family module runs.
log = logging.getLogger("collector.collect.jobs")


class SeriesParser(Protocol):
    """A parser of one symbol's page of a series."""

    def __call__(self, payload: Any, *, market: str, symbol: str, received_at: int) -> Parsed: ...


# -- futures: funding rate and protection fund ------------------------------------------------


async def _paged_by_id(
    ctx: JobContext,
    dataset: str,
    symbol: str,
    endpoint: Endpoint,
    page_size: int,
    cursor_params: Callable[[int], dict[str, Any]],
    size_param: str,
    parse: SeriesParser,
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
        parsed = intake.parse(
            ctx,
            response,
            parse,
            market="contract",
            symbol=symbol,
            received_at=response.received_at,
        )
        parsed.table = parsed.table.filter(pc.greater(parsed.table["id"], cursor))
        intake.set_aside_outliers(ctx, response, parsed, "id", known, page_size * HISTORY_ID_SPREAD)
        cut = intake.cut_at_unreadable(ctx, parsed, key, cursor, "id", intake.id_of)
        if parsed.rows:
            rows += keep(ctx, parsed)
            ctx.state.cursors[key] = int(pc.max(parsed.table["id"]).as_py())
        if cut or len(response.payload) < page_size or not parsed.rows:
            break
    return rows


async def collect_funding_rate(ctx: JobContext, job: JobSettings, market: str) -> JobReport:
    return await for_each_symbol(
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
    return await for_each_symbol(
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


async def paged_by_time(ctx: JobContext, spec: datasets.Dataset, market: str, symbol: str) -> int:
    """A ``time_paged`` series of the registry without a job of its own: pages forward
    from the cursor (the largest time archived) with ``startTime`` just past it; the
    first contact takes the newest page. A full page may end inside its newest
    millisecond, so that millisecond's records come with the next page instead."""
    assert spec.cursor is not None
    key: Cursor = (spec.name, market, symbol)
    column = spec.cursor.column
    parse: SeriesParser = getattr(parsers, spec.parser)
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
            rows += keep(ctx, parsed)
            newest = pc.max(pc.cast(parsed.table[column], pa.int64())).as_py()
            ctx.state.cursors[key] = int(newest)
        if cut or not full or not parsed.rows:
            break
    return rows


def per_symbol(
    fetch: Callable[[JobContext, datasets.Dataset, str, str], Awaitable[int]], name: str
) -> PerMarket:
    async def collect(ctx: JobContext, job: JobSettings, market: str) -> JobReport:
        spec = datasets.get(name)
        symbols = ctx.symbols(job, market)
        return await for_each_symbol(name, market, symbols, lambda s: fetch(ctx, spec, market, s))

    return collect

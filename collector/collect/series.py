"""Series paged from a cursor, for any dataset of the registry without a job of its own:
by id (funding rate, protection fund) and by time (liquidation orders)."""

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
    PerMarket,
    RoundResult,
    for_each_symbol,
    keep,
)
from collector.config import JobSettings
from collector.exchange import parsers
from collector.exchange.parsers import Parsed

# The jobs log under one name (collector.collect.jobs), whichever family module runs.
log = logging.getLogger("collector.collect.jobs")


class SeriesParser(Protocol):
    """A parser of one symbol's page of a series."""

    def __call__(self, payload: Any, *, market: str, symbol: str, received_at: int) -> Parsed: ...


# -- any id-paged series of the registry (funding rate, protection fund) -------------------


async def paged_by_id(ctx: JobContext, spec: datasets.Dataset, market: str, symbol: str) -> int:
    """An ``id_paged`` series of the registry without a job of its own: pages forward
    from the cursor (the largest id archived; nothing archived: the whole history) with
    the endpoint's own page parameters (:class:`~collector.exchange.endpoints.Paging`).
    Ids need not be consecutive: one sequence may be shared by all symbols, so a page's
    neighbouring ids may lie up to :data:`HISTORY_ID_SPREAD` pages apart."""
    assert spec.cursor is not None
    key: Cursor = (spec.name, market, symbol)
    column = spec.cursor.column
    endpoint = spec.endpoints[0]
    parse: SeriesParser = getattr(parsers, spec.parser)
    rows = 0
    for _ in range(HISTORY_PAGES_PER_ROUND):
        known = ctx.state.cursors.get(key)
        cursor = 0 if known is None else known
        params: dict[str, Any] = {"symbol": symbol, endpoint.paging.size: spec.page_size}
        params.update(endpoint.paging.after(cursor))
        response = await ctx.client.get(endpoint, market=market, params=params)
        parsed = intake.parse(
            ctx, response, parse, market=market, symbol=symbol, received_at=response.received_at
        )
        parsed.table = parsed.table.filter(pc.greater(parsed.table[column], cursor))
        spread = spec.page_size * HISTORY_ID_SPREAD
        intake.set_aside_outliers(ctx, response, parsed, column, known, spread)
        cut = intake.cut_at_unreadable(ctx, parsed, key, cursor, column, intake.id_of)
        if parsed.rows:
            rows += keep(ctx, parsed)
            ctx.state.cursors[key] = int(pc.max(parsed.table[column]).as_py())
        if cut or len(response.payload) < spec.page_size or not parsed.rows:
            break
    return rows


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
    async def collect(ctx: JobContext, job: JobSettings, market: str) -> RoundResult:
        spec = datasets.get(name)
        symbols = ctx.symbols(job, market)
        return await for_each_symbol(name, market, symbols, lambda s: fetch(ctx, spec, market, s))

    return collect

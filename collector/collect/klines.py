"""The klines job: closed klines of every interval, paged by open time."""

from __future__ import annotations

import functools
import logging
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from collector.collect import intake
from collector.collect.context import (
    KLINE_CLOSE_MARGIN_MS,
    MAX_PAGES_PER_ROUND,
    WEEK_ALIGN_MS,
    Cursor,
    JobContext,
    RoundResult,
    for_each_symbol,
    keep,
)
from collector.config import KLINE_INTERVALS, JobSettings
from collector.exchange import endpoints, parsers

# The jobs log under one name (collector.collect.jobs), whichever family module runs.
log = logging.getLogger("collector.collect.jobs")


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
                market=market,
                symbol=symbol,
                received_at=response.received_at,
                interval=interval,
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
                rows += keep(ctx, parsed)
                ctx.state.cursors[key] = int(
                    pc.max(pc.cast(parsed.table["open_time"], pa.int64())).as_py()
                )
            if cut or cursor is None or len(response.payload) < params["limit"] or not parsed.rows:
                break
    return rows


async def collect_klines(ctx: JobContext, job: JobSettings, market: str) -> RoundResult:
    return await for_each_symbol(
        "klines", market, ctx.symbols(job, market), lambda s: _klines(ctx, job, market, s)
    )

"""Snapshot jobs: depth (with its levels), and one job for every other snapshot dataset of
the registry (one request per symbol, or one for all symbols when that costs no more
weight)."""

from __future__ import annotations

import logging
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from collector import datasets
from collector.collect import intake
from collector.collect.context import (
    JobContext,
    RoundResult,
    for_each_symbol,
    keep,
)
from collector.config import JobSettings
from collector.exchange import endpoints, parsers
from collector.exchange.parsers import Parsed

# The jobs log under one name (collector.collect.jobs), whichever family module runs.
log = logging.getLogger("collector.collect.jobs")


# -- snapshots: depth, tickers, average price, indices ----------------------------------------


async def collect_depth(ctx: JobContext, job: JobSettings, market: str) -> RoundResult:
    async def fetch(symbol: str) -> int:
        response = await ctx.client.get(
            endpoints.DEPTH, market=market, params={"symbol": symbol, "limit": job.limit or 20}
        )
        return keep(
            ctx,
            intake.parse(
                ctx,
                response,
                parsers.depth,
                market=market,
                symbol=symbol,
                received_at=response.received_at,
            ),
        )

    return await for_each_symbol("depth", market, ctx.symbols(job, market), fetch)


class SnapshotParser(Protocol):
    """A parser that reads one symbol's record or every symbol's at once."""

    def __call__(
        self, payload: Any, *, market: str, symbol: str | None = None, received_at: int
    ) -> Parsed: ...


async def collect_snapshot(
    ctx: JobContext, job: JobSettings, market: str, dataset: str
) -> RoundResult:
    """A snapshot dataset of the registry without a job of its own (the tickers, average
    price, index prices): one request per symbol, or, where the entry says so, one
    all-symbols request when it costs no more weight than one per symbol."""
    spec = datasets.get(dataset)
    endpoint = spec.endpoints[0]
    parse: SnapshotParser = getattr(parsers, spec.parser)
    symbols = ctx.symbols(job, market)
    if spec.request == "all_symbols_if_cheaper" and endpoint.all_symbols_is_cheaper(len(symbols)):
        report = RoundResult(dataset, market, symbols=len(symbols))
        response = await ctx.client.get(endpoint, market=market)
        parsed = intake.parse(
            ctx, response, parse, market=market, symbol=None, received_at=response.received_at
        )
        # Records of symbols not (or no longer) listed are not polled for, and not kept.
        parsed.table = parsed.table.filter(
            pc.is_in(parsed.table["symbol"], pa.array(symbols, pa.string()))
        )
        report.rows = keep(ctx, parsed)
        return report

    async def fetch(symbol: str) -> int:
        response = await ctx.client.get(endpoint, market=market, params={"symbol": symbol})
        return keep(
            ctx,
            intake.parse(
                ctx, response, parse, market=market, symbol=symbol, received_at=response.received_at
            ),
        )

    return await for_each_symbol(dataset, market, symbols, fetch)

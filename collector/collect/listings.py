"""The instrument lists (which also tell every other job what exists) and the
futures contract details."""

from __future__ import annotations

import logging

import pyarrow as pa
import pyarrow.compute as pc

from collector.collect import intake
from collector.collect.context import Intake, JobContext, RoundResult, keep
from collector.config import JobSettings
from collector.exchange import endpoints, instruments, parsers
from collector.exchange.client import JexClient
from collector.exchange.parsers import Parsed

# The jobs log under one name (collector.collect.jobs), whichever family module runs.
log = logging.getLogger("collector.collect.jobs")


# -- instruments and contract info ------------------------------------------------------------


async def read_listing(client: JexClient, reader: JobContext | Intake) -> Parsed:
    """Fetch the instrument lists, read them as every response is read, take the limits
    ``exchangeInfo`` announces into the client's budget, and tell ``reader.state`` what
    exists. Returns the instruments' rows."""
    info = await client.get(endpoints.EXCHANGE_INFO)
    options = await client.get(endpoints.OPTION_INFO)
    intake.parse(reader, options, parsers.expect_shape, list, "optionInfo")
    parsed, listing = intake.parse(
        reader,
        info,
        instruments.instruments,
        received_at=info.received_at,
        options=options.payload,
    )
    intake.note_problems(reader, info, parsed)
    limits = instruments.rate_limits(info.payload)
    budget = client.budget
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
    state = reader.state
    state.rate_limits = limits
    if parsed.rejected:
        listing = listing.including(state.listing)
    _log_listing_changes(state.listing, listing)
    state.listing = listing
    return parsed


async def refresh_instruments(ctx: JobContext, job: JobSettings | None = None) -> RoundResult:
    """Fetch the instrument lists, archive them (with ``job``), and tell the other jobs
    what exists."""
    report = RoundResult("instruments", "all")
    parsed = await read_listing(ctx.client, ctx)
    if job is not None:
        parsed.table = parsed.table.filter(
            pc.is_in(parsed.table["market"], pa.array(list(job.markets), pa.string()))
        )
        report.rows = keep(ctx, parsed)
    report.symbols = sum(len(names) for names in ctx.state.listing.symbols.values())
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


async def collect_contract_info(ctx: JobContext, job: JobSettings, market: str) -> RoundResult:
    report = RoundResult("contract_info", market)
    response = await ctx.client.get(endpoints.CONTRACT_INFO)
    parsed = intake.parse(
        ctx, response, instruments.contract_info, received_at=response.received_at
    )
    parsed.table = parsed.table.filter(
        pc.is_in(parsed.table["symbol"], pa.array(ctx.symbols(job, "contract"), pa.string()))
    )
    report.symbols = parsed.rows
    report.rows = keep(ctx, parsed)
    return report

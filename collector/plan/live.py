"""A schedule's plan against the exchange as it is now: its instruments and its limits.

One function for the daemon's start (:func:`start`: the plan, the budget's snapshot
reserve, refusing or stretching, the disk estimate, the log lines) and one for the
``plan`` command (:func:`ask`: the same plan from a client of its own). Both read the
exchange's responses as the jobs do (:func:`collector.collect.intake.parse`).
"""

from __future__ import annotations

import difflib
import fnmatch
import logging
import math
from collections.abc import Callable, Sequence

from collector.collect.context import CollectorState, Intake, JobContext
from collector.collect.listings import read_listing
from collector.config import JobSettings, Settings
from collector.errors import ConfigError
from collector.exchange.client import JexClient
from collector.exchange.instruments import Listing
from collector.plan.disk import FULL_WARNING_DAYS, DiskPlan, Reader, plan_disk
from collector.plan.schedule import Plan, make_plan
from collector.plan.table import format_plan, format_plan_and_disk

log = logging.getLogger("collector.collect.daemon")  # where the daemon's start is logged

Names = Callable[[JobSettings, str], Sequence[str]]
#: History pages leave the snapshot jobs this much more than their planned weight.
SNAPSHOT_RESERVE_MARGIN = 1.2


def unlisted_symbols(settings: Settings, listing: Listing) -> list[str]:
    """A note for each symbol (or pattern) of ``schedules.yaml`` that matches no symbol
    the exchange lists in the job's markets: a warning, not an error, since listings
    change (a symbol not yet listed is followed once it is)."""
    notes = []
    for name, job in settings.enabled_jobs().items():
        if job.symbols == "all":
            continue
        listed = sorted({s for m in job.markets for s in listing.symbols.get(m, ())})
        for pattern in job.symbols:
            if not any(fnmatch.fnmatchcase(symbol, pattern) for symbol in listed):
                close = difflib.get_close_matches(pattern.upper(), listed, n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                notes.append(
                    f"jobs.{name}.symbols: {pattern!r} matches no symbol the exchange lists in "
                    f"{', '.join(job.markets)}{hint}; it is collected once listed"
                )
    return notes


def for_client(settings: Settings, client: JexClient, names: Names, listing: Listing) -> Plan:
    """:func:`make_plan` with the client's limits (as ``exchangeInfo`` announced them), and
    a note for each scheduled symbol the exchange does not list."""
    budget = client.budget
    plan = make_plan(
        settings,
        lambda job, market: len(names(job, market)),
        has_api_key=client.has_api_key,
        weight_limit=budget.limit,
        raw_limit=budget.raw_limit,
        raw_interval_ms=budget.raw_window_ms,
    )
    plan.notes.extend(unlisted_symbols(settings, listing))
    return plan


def reserve_for_snapshots(client: JexClient, plan: Plan) -> None:
    """Snapshots first: history pages leave the snapshot jobs' weight (and a fifth more)
    of every window to them, so a first start's backfill or a catch-up never opens a
    hole in the depth and ticker series (:mod:`collector.exchange.budget`)."""
    budget = client.budget
    snapshots = sum(load.weight_per_minute for load in plan.loads if not load.paging)
    budget.snapshot_reserve = math.ceil(
        snapshots * SNAPSHOT_RESERVE_MARGIN * budget.window_ms / 60_000
    )


async def start(settings: Settings, ctx: JobContext) -> Plan:
    """The daemon's plan at start: the schedule's cost against the exchange's limits
    (stretched, or a :class:`ConfigError` when ``on_over_budget`` is ``refuse``), the
    snapshot reserve, and the disk per day (a warning when the disk fills within a week)."""
    plan = for_client(settings, ctx.client, ctx.symbols, ctx.state.listing)
    for note in unlisted_symbols(settings, ctx.state.listing):
        log.warning("%s", note)
    reserve_for_snapshots(ctx.client, plan)
    if not plan.fits and settings.exchange.on_over_budget == "refuse":
        # Before the disk estimate: refusing sends nothing more to the exchange.
        raise ConfigError(
            "the schedule needs more request weight than the exchange allows, and "
            "exchange.on_over_budget is refuse:\n" + format_plan(plan),
            source=settings.source,
            key="exchange.on_over_budget",
        )
    disk = await plan_disk(settings, plan, ctx.client, ctx.symbols, ctx)
    _log(plan, disk, settings)
    return plan


def _log(plan: Plan, disk: DiskPlan, settings: Settings) -> None:
    # One record per line of the table: log lines escape newlines (exchange text must not
    # forge a record), and a table in one record would be one unreadable line.
    level = logging.INFO if plan.fits else logging.WARNING
    if plan.fits:
        log.info("schedule plan:")
    else:
        log.warning(
            "the schedule does not fit the exchange's rate limits; intervals are "
            "stretched (exchange.on_over_budget: stretch):"
        )
    for line in format_plan_and_disk(plan, disk).splitlines():
        log.log(level, "  %s", line)
    days = disk.days_until_full
    if days is not None and days < FULL_WARNING_DAYS:
        log.warning(
            "the disk at %s fills in %.1f days at %.1f MB a day (compacted): free space "
            "or move storage.uri",
            settings.storage.data_dir,
            days,
            disk.compacted_bytes_per_day / 1e6,
        )


async def ask(settings: Settings) -> tuple[Plan, DiskPlan]:
    """The ``plan`` command's plan: a client of its own asks for the instruments and the
    limits (and the trade counts), read as the jobs read them."""
    async with JexClient.from_settings(settings) as client:
        await client.sync_clock()
        reader: Reader = Intake(state=CollectorState())
        await read_listing(client, reader)
        now = client.clock.now_ms()
        listing = reader.state.listing

        def names(job: JobSettings, market: str) -> list[str]:
            return [s for s in listing.active(market, now) if job.wants(s)]

        plan = for_client(settings, client, names, listing)
        return plan, await plan_disk(settings, plan, client, names, reader)

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

import logging
import time

from collector import datasets
from collector.collect.context import (
    KLINE_CLOSE_MARGIN_MS,
    MAX_PAGES_PER_ROUND,
    CollectorState,
    Cursor,
    JobContext,
    PerMarket,
    RoundResult,
)
from collector.collect.klines import collect_klines
from collector.collect.listings import collect_contract_info, refresh_instruments
from collector.collect.series import paged_by_id, paged_by_time, per_symbol
from collector.collect.snapshots import (
    collect_depth,
    collect_snapshot,
)
from collector.collect.trades import _overlap, collect_trades  # _overlap: for the tests
from collector.errors import CollectorError
from collector.exchange import endpoints
from collector.read import scan

__all__ = [
    "COLLECTORS",
    "KLINE_CLOSE_MARGIN_MS",
    "MAX_PAGES_PER_ROUND",
    "CollectorState",
    "Cursor",
    "JobContext",
    "RoundResult",
    "_overlap",
    "load_cursors",
    "refresh_instruments",
    "run_job",
]

# The jobs log under one name (collector.collect.jobs), whichever family module runs.
log = logging.getLogger("collector.collect.jobs")


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
        found = scan.max_by_group(data_dir, spec.name, spec.cursor.column, spec.cursor.group)
        for key, value in found.items():
            state.cursors[(spec.name, *key)] = int(value)
    # Without an API key, the first poll after a restart overlaps what was archived last.
    state.recent_trades.update(scan.last_recent_trades(data_dir, endpoints.RECENT_TRADES_MAX))


# -- dispatch ---------------------------------------------------------------------------------


COLLECTORS: dict[str, PerMarket] = {
    "depth": collect_depth,
    "trades": collect_trades,
    "klines": collect_klines,
    "contract_info": collect_contract_info,
}
# Snapshot datasets of the registry without a job of their own poll with the generic one.
COLLECTORS.update(
    {
        spec.name: (lambda n: lambda c, j, m: collect_snapshot(c, j, m, n))(spec.name)
        for spec in datasets.DATASETS.values()
        if spec.kind == "snapshot" and spec.name not in COLLECTORS
    }
)
# Paged datasets of the registry without a job of their own page with the generic ones.
_GENERIC = {"id_paged": paged_by_id, "time_paged": paged_by_time}
COLLECTORS.update(
    {
        spec.name: per_symbol(_GENERIC[spec.kind], spec.name)
        for spec in datasets.DATASETS.values()
        if spec.kind in _GENERIC and spec.name not in COLLECTORS
    }
)


async def run_job(ctx: JobContext, name: str) -> list[RoundResult]:
    """One round of job ``name`` over its markets; logs one line per market."""
    job = ctx.settings.jobs[name]
    reports: list[RoundResult] = []
    markets = ["all"] if name == "instruments" else list(job.markets)
    for market in markets:
        started = time.perf_counter()
        try:
            if name == "instruments":
                report = await refresh_instruments(ctx, job)
            else:
                report = await COLLECTORS[name](ctx, job, market)
        except CollectorError as exc:
            report = RoundResult(name, market, errors=[str(exc)])
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

"""The ``backfill`` command's driver: pick the groups, show progress, flush on the way out.

Sharing the exchange with a running daemon: both read ``X-MBX-USED-WEIGHT-1M`` from every
response, which counts the weight of every process on the IP, so each one slows down
when the two together reach the budget (``exchange.weight_fraction`` of the limit).
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Mapping, Sequence

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from collector.collect import jobs
from collector.collect.backfill import Backfill, Result
from collector.collect.quarantine import Quarantine
from collector.config import Settings
from collector.datasets import get as get_dataset
from collector.errors import ConfigError
from collector.exchange.client import JexClient
from collector.storage.writer import ArchiveWriter


async def run_backfill(
    settings: Settings,
    dataset: str,
    *,
    markets: tuple[str, ...],
    symbols: tuple[str, ...],
    intervals: tuple[str, ...],
    start_ms: int,
    end_ms: int | None,
) -> Result:
    job = settings.jobs.get(dataset)
    chosen_markets = markets or (job.markets if job else get_dataset(dataset).markets)
    chosen_intervals = intervals or (job.intervals if job and job.intervals else ("1m",))
    writer = ArchiveWriter(settings.storage.data_dir)
    secrets = [s.get_secret_value() for s in (settings.api_key, settings.api_secret) if s]
    quarantine = Quarantine(settings.storage.data_dir, redact=secrets)
    async with JexClient.from_settings(settings) as client:
        client.quarantine = quarantine
        await client.sync_clock()
        ctx = jobs.JobContext(client, writer, settings, quarantine=quarantine)
        await jobs.refresh_instruments(ctx)
        end = end_ms if end_ms is not None else client.clock.now_ms()
        groups: list[tuple[str, str, str | None]] = []
        for market in chosen_markets:
            if market not in get_dataset(dataset).markets:
                continue
            for symbol in ctx.state.listing.symbols.get(market, ()):
                if symbols and not any(fnmatch.fnmatchcase(symbol, p) for p in symbols):
                    continue
                if get_dataset(dataset).per_interval:
                    groups += [(market, symbol, interval) for interval in chosen_intervals]
                else:
                    groups.append((market, symbol, None))
        _check_patterns(symbols, chosen_markets, ctx.state.listing.symbols)
        filler = Backfill(client, writer, settings.storage.data_dir, quarantine=quarantine)
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} series"),
            TextColumn("{task.fields[rows]} rows, {task.fields[pages]} requests"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, transient=False) as progress:
            task = progress.add_task(f"backfill {dataset}", total=len(groups), rows=0, pages=0)

            def show(rows: int, pages: int) -> None:
                progress.update(task, rows=filler.result.rows, pages=filler.result.pages)

            filler.progress = show
            try:
                for market, symbol, interval in groups:
                    label = " ".join(p for p in (market, symbol, interval) if p)
                    progress.update(task, description=f"backfill {dataset} {label}")
                    await filler.fill(dataset, market, symbol, interval, start_ms, end)
                    progress.advance(task)
                    show(0, 0)
            finally:
                filler.flush()  # keep what was fetched, even when interrupted
        return filler.result


def _check_patterns(
    patterns: tuple[str, ...], markets: Sequence[str], listed: Mapping[str, Sequence[str]]
) -> None:
    """A ``--symbol`` that matches no symbol the exchange lists in ``markets`` is a
    ConfigError naming them (with the close match), instead of a backfill of nothing."""
    names = sorted({s for m in markets for s in listed.get(m, ())})
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            close = difflib.get_close_matches(pattern.upper(), names, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(
                f"{pattern!r} matches no symbol the exchange lists in {', '.join(markets)}"
                f"{hint} (listed: {', '.join(names[:30]) or 'none'})",
                source="--symbol",
            )

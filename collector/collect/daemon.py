"""The long-running collector: the only module that knows APScheduler.

Start-up: refuse an archive in the layout before Delta Lake (naming the ``migrate``
command), take the archive's lock (one daemon per archive), replay the write-ahead
log a crash left behind, remove temporary files, rebuild the DuckDB views, wait
out a ban or pause the exchange imposed on an earlier run, measure the exchange
clock, read the instrument lists and rate limits (retrying until the exchange
answers), plan the schedule against the budget (stretching it or refusing to
start when it does not fit, see :mod:`collector.plan.schedule`), resume every cursor from
the archive, then schedule one job per dataset, their first runs spread out and
their requests paced so the start is not a burst.

Shutdown (SIGTERM, SIGINT/Ctrl-C, or ``duration`` elapsed): no new runs, running
jobs get a few seconds to finish and are then cancelled, buffered rows are
flushed, the views are rebuilt. Cursors advance only with rows that reached the
buffer, so whatever a cancelled job had not buffered is fetched again next time.

A failed fsync (:class:`FatalStorageError`) stops the daemon at once without
flushing: :meth:`Daemon.run` raises it after shutting down, the CLI exits 1, and
the next start replays the write-ahead log.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from collector import datasets
from collector.collect import jobs
from collector.collect.quarantine import Quarantine
from collector.collect.views import ViewsRebuild
from collector.config import Settings
from collector.errors import (
    CollectorError,
    FatalStorageError,
    RateLimitError,
)
from collector.exchange.client import MAX_INLINE_WAIT_S, JexClient
from collector.memory import release_memory
from collector.ops import runstate
from collector.ops.metrics import Metrics, MetricsServer
from collector.plan import live
from collector.plan.schedule import Plan
from collector.storage import compaction, delta, legacy, wal
from collector.storage.location import Archive
from collector.storage.lock import ArchiveLock
from collector.storage.writer import ArchiveWriter

log = logging.getLogger(__name__)

#: Seconds between the first runs of consecutive jobs at start-up.
STAGGER_S = 0.5
#: How long running jobs may take to finish after a stop was asked for.
DRAIN_S = 5.0
#: Skipped rounds of a job are reported at most this often.
SKIP_LOG_EVERY_S = 60.0
#: Pause between attempts to reach the exchange at start-up.
STARTUP_RETRY_S = 10.0
#: How often a shard without the instruments job refreshes the instrument lists.
LISTING_EVERY_S = 300.0


class Daemon:
    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        writer: ArchiveWriter | None = None,
        metrics: Metrics | None = None,
        metrics_address: tuple[str, int] | None = None,
    ) -> None:
        """``metrics_address`` (host, port): serve ``metrics`` there while running (port 0:
        any free port, see :attr:`metrics_server`); None: metrics are kept, not served."""
        self.settings = settings
        self.archive = Archive.of(settings.storage.uri)
        self.data_dir = self.archive.uri
        #: This host's state: the write-ahead log, the pause file and the lock.
        self.state_dir = settings.state_dir()
        # Before the writer exists: it would start a write-ahead log in an old archive.
        legacy.refuse_legacy(self.data_dir)
        self.metrics = metrics or Metrics()
        self.metrics_address = metrics_address
        self.metrics_server: MetricsServer | None = None
        self.client = JexClient.from_settings(settings, transport=transport, metrics=self.metrics)
        # File names carry exchange time too, like every time the collector records.
        self.writer = writer or ArchiveWriter(
            self.archive,
            wal=True,
            state_dir=self.state_dir,
            clock_ms=self.client.clock.now_ms,
            metrics=self.metrics,
        )
        secrets = [s.get_secret_value() for s in (settings.api_key, settings.api_secret) if s]
        self.quarantine = Quarantine(self.archive, redact=secrets, metrics=self.metrics)
        self.client.quarantine = self.quarantine
        self.runstate = runstate.RunState(
            self.archive,
            name=settings.shard_name,
            state_dir=self.state_dir,
            redact=secrets,
            clock_offset_ms=lambda: self.client.clock.offset_ms,
        )
        self.ctx = jobs.JobContext(self.client, self.writer, settings, quarantine=self.quarantine)
        self.stop_event = asyncio.Event()
        self._vacuumed_full = False  # whether a full vacuum ran since start (see _compact)
        self._fatal: FatalStorageError | None = None
        self._running: set[asyncio.Task[Any]] = set()
        self._skip_logged: dict[str, float] = {}
        self._datasets_with_files = {
            name for name in datasets.DATASETS if delta.has_rows(self.archive.uri, name)
        }
        self.views = ViewsRebuild(self.archive)
        self.plan: Plan | None = None
        self._pause_logged = 0.0

    def stop(self) -> None:
        self.stop_event.set()

    async def run(self, duration: float | None = None, *, handle_signals: bool = True) -> None:
        """Collect until stopped. Raises ArchiveLockedError when another daemon holds the
        archive, and FatalStorageError (after shutting down) when an fsync failed."""
        loop = asyncio.get_running_loop()
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        try:
            with ArchiveLock(self.state_dir), self._serving_metrics():
                runstate.refuse_a_twin(
                    self.archive, self.settings.shard_name, self.state_dir, self.data_dir
                )
                self.runstate.started(self.settings.enabled_jobs())
                heartbeat = asyncio.create_task(self.runstate.heartbeat())
                try:
                    await self._run(duration)
                finally:
                    heartbeat.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await heartbeat
                    self.writer.close()
                    self.runstate.stopped()
        finally:
            if handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            await self.client.aclose()
        if self._fatal is not None:
            raise self._fatal

    @contextlib.contextmanager
    def _serving_metrics(self) -> Iterator[None]:
        """The metrics endpoint, from start (after the archive lock) to the end of shutdown.
        A port that cannot be bound raises ConfigError before anything is collected."""
        if self.metrics_address is None:
            yield
            return
        host, port = self.metrics_address
        self.metrics_server = self.metrics.serve(port, host)
        log.info("serving metrics at %s", self.metrics_server.url)
        try:
            yield
        finally:
            self.metrics_server.close()

    def _stop_fatally(self, exc: FatalStorageError) -> None:
        if self._fatal is None:
            self._fatal = FatalStorageError(
                f"{exc}. Stopped without writing anything more: after a failed fsync the "
                "kernel may have dropped the data, and a retry could report success without "
                "writing it. Check the disk (dmesg), then restart: the write-ahead log in "
                f"{self.state_dir / wal.WAL_DIR} is replayed and nothing already received "
                "is lost",
                dataset=exc.dataset,
                path=exc.path,
            )
            log.critical("%s", self._fatal)
        self.stop()

    async def _run(self, duration: float | None) -> None:
        try:
            # Before the cursors are read: replayed rows must count as archived.
            await asyncio.to_thread(self.writer.recover)
        except FatalStorageError as exc:
            self._stop_fatally(exc)
            return
        self.quarantine.remove_orphans()
        if self._datasets_with_files:
            self.views.request()
        log.info("collecting from %s into %s", self.settings.exchange.base_url, self.writer.root)
        if not self.client.has_api_key:
            log.warning(
                "no JEX_API_KEY: trades come from the recent-trades endpoint (60 per poll, no "
                "ids); busy symbols can lose trades between polls"
            )
        stop_at = None if duration is None else loop_time() + duration
        if not await self._first_contact(stop_at):
            return
        self.plan = await live.start(self.settings, self.ctx)
        await asyncio.to_thread(jobs.load_cursors, self.data_dir, self.ctx.state)
        scheduler = self._schedule(self.plan.intervals())
        scheduler.start()
        self.runstate.collecting(self.plan.intervals())
        try:
            timeout = None if stop_at is None else max(0.0, stop_at - loop_time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), timeout)
        finally:
            log.info("stopping: finishing running jobs and flushing")
            # Pause first: shutting APScheduler's asyncio executor down cancels running jobs
            # at once, and they deserve the drain period to finish their round.
            scheduler.pause()
            await self._drain()
            scheduler.shutdown(wait=False)
            if self._fatal is None:
                await self._flush()
                # Rows a failed final flush kept are only in the log: make it durable.
                await self._sync_wal()
            await self.views.finish()
            log.info("stopped")

    async def _first_contact(self, stop_at: float | None) -> bool:
        """Clock and instrument lists; retried until the exchange answers or we are stopped.

        A pause or ban the exchange imposed (also one recorded by an earlier run) is
        waited out before anything is sent."""
        while not self.stop_event.is_set():
            wait = STARTUP_RETRY_S
            try:
                if self.client.paused_for() > 0:
                    raise RateLimitError(
                        "the exchange asked us not to send", retry_at=self.client.paused_until
                    )
                await self.client.sync_clock()
                instruments_job = self.settings.enabled_jobs().get("instruments")
                report = await jobs.refresh_instruments(self.ctx, instruments_job)
                self.runstate.record("instruments", [report])
                return True
            except RateLimitError:
                wait = max(1.0, self.client.paused_for())
                log.warning("waiting %.0fs before the first request (exchange-imposed pause)", wait)
            except CollectorError as exc:
                self.runstate.record_failure("instruments", exc)
                log.error(
                    "first contact with the exchange at %s failed (%s); retrying in %.0fs "
                    "(check exchange.base_url and the network)",
                    self.settings.exchange.base_url,
                    exc,
                    STARTUP_RETRY_S,
                )
            if stop_at is not None:
                wait = min(wait, stop_at - loop_time())
            if wait <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), wait)
            if stop_at is not None and loop_time() >= stop_at:
                return False
        return False

    def _schedule(self, intervals: dict[str, float]) -> AsyncIOScheduler:
        scheduler = AsyncIOScheduler(timezone=dt.UTC)
        scheduler.add_listener(self._skipped, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
        now = dt.datetime.now(dt.UTC)
        enabled = self.settings.enabled_jobs()
        for name in set(enabled) - set(intervals):
            # Not in the plan (a dataset that needs an API key, without one): not run,
            # and not waited for by status.
            self.runstate.state.jobs.pop(name, None)
        for index, name in enumerate(n for n in enabled if n in intervals):
            every = intervals[name]
            first = now + dt.timedelta(seconds=index * STAGGER_S)
            if name == "instruments":
                first = now + dt.timedelta(seconds=every)  # it ran at start-up
            scheduler.add_job(
                self._guarded,
                "interval",
                args=[name],
                id=name,
                seconds=every,
                next_run_time=first,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=max(1, int(every)),
            )
        scheduler.add_job(
            self._flush,
            "interval",
            id="_flush",
            seconds=self.settings.storage.flush_every,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,  # a late flush still runs: buffered rows must reach disk
        )
        if self.writer.wal is not None:
            scheduler.add_job(
                self._sync_wal,
                "interval",
                id="_wal_sync",
                seconds=wal.SYNC_EVERY_S,
                max_instances=1,
                coalesce=True,
            )
        if self.settings.compacts:
            # One collector of an archive compacts and vacuums (the shards' compact flag);
            # a second one would be harmless (Delta refuses the later of two commits
            # replacing the same files), only wasteful.
            scheduler.add_job(
                self._compact,
                "interval",
                id="_compact",
                seconds=self.settings.storage.compact_every,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
            )
        if "instruments" not in enabled:
            # A shard that does not archive the instrument lists still follows them, so
            # that new and expired symbols reach its jobs (nothing is written).
            scheduler.add_job(
                self._follow_listing,
                "interval",
                id="_listing",
                seconds=LISTING_EVERY_S,
                max_instances=1,
                coalesce=True,
            )
        scheduler.add_job(
            self._sync_clock,
            "interval",
            id="_clock",
            seconds=self.settings.exchange.clock_sync_every,
            max_instances=1,
            coalesce=True,
        )
        return scheduler

    def _skipped(self, event: JobEvent) -> None:
        """One plain line per job and minute when rounds are skipped, instead of
        APScheduler's warning at every skipped run."""
        now = time.monotonic()
        if now - self._skip_logged.get(event.job_id, -SKIP_LOG_EVERY_S) < SKIP_LOG_EVERY_S:
            return
        self._skip_logged[event.job_id] = now
        reason = (
            "its previous round is still running (usually waiting for the weight budget)"
            if event.code == EVENT_JOB_MAX_INSTANCES
            else "the process was too busy to start it on time"
        )
        log.info("job %s skipped a round: %s", event.job_id, reason)

    async def _guarded(self, name: str) -> None:
        """Run one round of a job; a failure is logged and the next round runs as scheduled.

        While the exchange has told us to pause for longer than a request may wait
        (a ban), rounds are skipped quietly: one log line per pause, not one per job."""
        paused = self.client.paused_for()
        if paused > MAX_INLINE_WAIT_S:
            if self._pause_logged != self.client.paused_until:
                self._pause_logged = self.client.paused_until
                log.warning("exchange-imposed pause: every job skips its rounds for %.0fs", paused)
            return
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        try:
            reports = await self.runstate.track(name, jobs.run_job(self.ctx, name))
            self.metrics.job_rounds(name, reports)
        except asyncio.CancelledError:
            log.info("job %s cancelled at shutdown; it resumes from the archive next start", name)
        except Exception:
            log.exception("job %s failed unexpectedly; it will run again next round", name)
        finally:
            if task is not None:
                self._running.discard(task)

    async def _follow_listing(self) -> None:
        try:
            await jobs.refresh_instruments(self.ctx, None)
        except CollectorError as exc:
            log.warning("instrument lists not refreshed (the jobs keep the last ones): %s", exc)

    async def _sync_clock(self) -> None:
        try:
            await self.client.sync_clock()
        except CollectorError as exc:
            log.warning(
                "clock sync failed, keeping offset %+d ms: %s", self.client.clock.offset_ms, exc
            )

    async def _drain(self) -> None:
        running = [task for task in self._running if not task.done()]
        if not running:
            return
        _, pending = await asyncio.wait(running, timeout=DRAIN_S)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)
            log.info("cancelled %d job run(s) still going at shutdown", len(pending))

    async def _flush(self) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)  # a flush under way is waited for at shutdown
        started = time.perf_counter()
        try:
            result = await asyncio.to_thread(self.writer.flush)
        except FatalStorageError as exc:
            self._stop_fatally(exc)
            return
        finally:
            if task is not None:
                self._running.discard(task)
        if result.errors:
            self.runstate.flush_failed(result.errors[0])
        else:
            self.runstate.flushed()
        if result.files:
            log.info(
                "flushed %d file(s): %s",
                len(result.files),
                ", ".join(f"{name}={rows}" for name, rows in sorted(result.rows.items())),
                extra={
                    "files": len(result.files),
                    "rows": sum(result.rows.values()),
                    "duration_ms": round((time.perf_counter() - started) * 1000),
                },
            )
        new = set(result.rows) - self._datasets_with_files
        if new:
            self._datasets_with_files |= new
            self.views.request()

    async def _sync_wal(self) -> None:
        try:
            await asyncio.to_thread(self.writer.sync)
        except FatalStorageError as exc:
            self._stop_fatally(exc)

    async def _compact(self) -> None:
        """Compact in a worker thread: closed partitions whole, today's flush files merged
        as they pile up, then vacuum and checkpoint. Our own flushes meanwhile are appends,
        which never conflict with a compaction's commit."""
        closed_before = compaction.closed_before_ms(self.client.clock.now_ms())
        retention_s = self.settings.storage.retention
        try:
            report = await asyncio.to_thread(
                compaction.compact_archive,
                self.data_dir,
                closed_before_ms=closed_before,
                open_partitions=True,
                retention_hours=(
                    delta.RETENTION_HOURS if retention_s is None else retention_s / 3600
                ),
                should_stop=self.stop_event.is_set,
                # Listing every folder for never-committed files (only a crash leaves
                # them) once per start; later passes delete what the log says was replaced.
                full_vacuum=not self._vacuumed_full,
            )
        except Exception:
            log.exception("compaction failed unexpectedly; it runs again next round")
            return
        finally:
            await asyncio.to_thread(release_memory)  # a pass reads whole partitions
        self._vacuumed_full = self._vacuumed_full or not report.errors
        log.info("compaction: %s", report.summary())


def loop_time() -> float:
    return asyncio.get_running_loop().time()

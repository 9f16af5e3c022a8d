"""``jex-collector status``: are the collectors healthy, and what does the archive hold?

Reads, never the exchange and never the data itself:

* every daemon's state file (:mod:`collector.ops.runstate`, ``_state/daemons/<name>.json``:
  one per shard, ``all`` for a daemon that runs every job): whether it runs, and per
  job and market the last run, success and failure;
* each dataset's Delta log (:mod:`collector.storage.footers`): per dataset and market, rows
  today and in total, first and last event time, files and bytes, from the statistics
  the log keeps for every file (no data file is opened);
* the quarantine folder (:mod:`collector.collect.quarantine`): payloads set aside in the
  last hour, counted from the file names (and the ``market`` field at the top of
  each file);
* on this host only, the *state dir* (``state_dir``: the local folder of a daemon's
  lock and pause file; by default the archive folder of a local archive, none for an
  object store): whether a daemon holds its lock, and the exchange's pause.

All of the archive is read through :class:`~collector.storage.location.Archive` and
deltalake, so an archive on an object store is read from there, from any host.

A daemon runs when it holds its lock and its heartbeat is fresh; the lock is checked
only for the daemon whose state dir is ``state_dir``, on this host. Any other daemon
(on another host, or not the one of ``state_dir``) is judged by its heartbeat alone: it
runs while the heartbeat is fresh and it did not stop (``liveness``: ``heartbeat``).

Healthy means: every daemon found runs and every job of each succeeded in every
market within :data:`OVERDUE_INTERVALS` of its interval (the effective one, after the
plan stretched it). Without a state file (no daemon ever ran on this archive) the
archive is still shown, and the report is not healthy: nothing says it collects.

Every function takes ``now`` (UTC, the local clock), so that tests need no sleeping.
:mod:`collector.ops.status_table` draws the report for a terminal; :meth:`Report.as_dict`
is the ``--json`` document.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import re
import shutil
import socket
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from collector import datasets
from collector.collect.quarantine import DIR_NAME as QUARANTINE_DIR
from collector.collect.quarantine import _file_part as quarantine_name
from collector.exchange import endpoints
from collector.exchange.client import PAUSE_FILE
from collector.ops import runstate
from collector.storage import delta, footers, lock
from collector.storage.location import Archive

log = logging.getLogger(__name__)

#: A job is overdue when it has not succeeded for this many of its intervals.
OVERDUE_INTERVALS = 3
#: A round under way keeps its job from being overdue for this long at least (a first
#: start's backfill, or catching up after downtime, pages for minutes).
ROUND_GRACE_S = 900.0
#: A heartbeat older than this means the daemon is gone or hung (it beats every 2 s).
HEARTBEAT_STALE_S = 30.0
#: A local archive's disk with less free space than this is full (a flush file of a
#: busy minute is a few MB).
DISK_FULL_BYTES = 16_000_000
#: Error texts in the table view are cut to this many characters (``--json`` has all).
ERROR_DISPLAY_CHARS = 160
#: Quarantined payloads are counted over this window.
QUARANTINE_WINDOW = dt.timedelta(hours=1)
#: How much of a quarantine file is read to find its ``market`` (its fourth key).
_QUARANTINE_HEAD_BYTES = 2048

#: Quarantine file name part of each endpoint -> the dataset its responses feed.
_ENDPOINT_DATASETS: dict[str, str] = {
    quarantine_name(endpoint.name): spec.name
    for spec in datasets.DATASETS.values()
    for endpoint in spec.all_endpoints
}
#: Endpoints that serve one market only, whose quarantine files name none.
_ENDPOINT_MARKETS = {quarantine_name(endpoints.OPTION_INFO.name): "option"}
_QUARANTINE_NAME = re.compile(r"^(?P<time>\d{9})-(?P<endpoint>.+)-[0-9a-f]+\.json$")
_QUARANTINE_MARKET = re.compile(rb'"market":\s*(?:null|"(?P<market>[a-z]+)")')


@dataclass
class DaemonStatus:
    """``state``: ``running``, ``starting`` (first contact with the exchange), ``stuck``
    (holds the lock, heartbeat stale), ``stopped`` (clean shutdown), ``died`` (no clean
    shutdown: crash, kill -9, power cut; judged by the heartbeat alone, also a daemon that
    is hung or cannot reach the archive), ``never_ran`` (no state file), or ``unknown``
    (a daemon holds the lock of the state dir but wrote no state file).

    ``shard``: the daemon's name (``all`` for one that runs every job; None for
    ``never_ran`` and ``unknown``). ``liveness``: ``lock`` when the lock on this host
    was checked, ``heartbeat`` when only the heartbeat could tell (another host, or a
    daemon whose state dir is not the one checked), None without a state."""

    state: str
    message: str
    problem: str | None = None
    pid: int | None = None
    host: str | None = None
    version: str | None = None
    started_at: str | None = None
    collecting_since: str | None = None
    heartbeat_at: str | None = None
    heartbeat_age_s: float | None = None
    stopped_at: str | None = None
    shard: str | None = None
    liveness: str | None = None


@dataclass
class JobStatus:
    job: str
    market: str
    every_s: float
    configured_every_s: float
    overdue: bool
    reason: str | None
    record: runstate.MarketRecord
    running_since: str | None = None
    shard: str | None = None  # the daemon that runs it

    def as_dict(self) -> dict[str, Any]:
        return {
            "shard": self.shard,
            "job": self.job,
            "market": self.market,
            "every_s": self.every_s,
            "configured_every_s": self.configured_every_s,
            "running_since": self.running_since,
            **asdict(self.record),
            "overdue": self.overdue,
            "reason": self.reason,
        }


@dataclass
class QuarantineCount:
    last_hour: int = 0
    by_group: Counter[tuple[str, str]] = field(default_factory=Counter)  # (dataset, market)
    by_endpoint: Counter[str] = field(default_factory=Counter)
    not_attributed: int = 0  # no dataset or market can be told from the file


@dataclass
class Report:
    """``daemons``: one status per daemon found (by name), then an ``unknown`` one when a
    daemon holds the checked lock without a state file; empty when none ever ran.
    ``jobs``: every daemon's jobs (:attr:`JobStatus.shard` says whose). ``data_dir``: the
    archive (an absolute local path or ``s3://bucket/prefix``)."""

    generated_at: dt.datetime
    data_dir: str
    today: dt.date
    daemons: list[DaemonStatus]
    jobs: list[JobStatus]
    groups: dict[tuple[str, str], footers.GroupSummary]
    quarantine: QuarantineCount
    pause: dict[str, Any] | None
    clock_offset_ms: int = 0
    #: Data files that cannot be read (left out of every read until set aside).
    damaged: list[footers.DamagedFile] = field(default_factory=list)
    #: Why the archive's disk is full (free space near zero, or a daemon's last flush
    #: failed for it), or None.
    disk_full: str | None = None

    @property
    def daemon(self) -> DaemonStatus | None:
        """The archive's daemon when it has one (``never_ran`` when none); None when it
        has several (see :attr:`daemons`)."""
        if not self.daemons:
            return daemon_status(None, self.generated_at, None)
        return self.daemons[0] if len(self.daemons) == 1 else None

    @property
    def labelled(self) -> bool:
        """Whether lines name their daemon: several of them, or one that is a shard."""
        return len(self.daemons) > 1 or any(
            d.shard not in (None, runstate.UNSHARDED) for d in self.daemons
        )

    def label(self, daemon: DaemonStatus | JobStatus) -> str:
        """``[spot] `` before a daemon's lines when :attr:`labelled`, else nothing."""
        return f"[{daemon.shard or '?'}] " if self.labelled else ""

    def daemon_problems(self, daemon: DaemonStatus) -> list[str]:
        """Why ``daemon`` is not healthy: its own problem, then one line per overdue job
        (its markets together when the reason is the same)."""
        found = [daemon.problem] if daemon.problem else []
        markets: dict[tuple[str, str], list[str]] = {}
        for job in self.jobs:
            if job.overdue and job.shard == daemon.shard and daemon.shard is not None:
                markets.setdefault((job.job, job.reason or ""), []).append(job.market)
        found += [
            f"job {name} ({', '.join(names)}): {reason}"
            for (name, reason), names in markets.items()
        ]
        return [self.label(daemon) + line for line in found]

    @property
    def problems(self) -> list[str]:
        """Why the report is not healthy: a full disk, daemon after daemon, then each
        damaged data file."""
        shown = self.daemons or [daemon_status(None, self.generated_at, None)]
        found = [f"disk full: {self.disk_full}"] if self.disk_full else []
        found += [line for daemon in shown for line in self.daemon_problems(daemon)]
        found += [
            f"{file.line()}: left out of every read (`jex-collector verify --repair` sets "
            "it aside and fetches its rows again)"
            for file in self.damaged
        ]
        return found

    @property
    def healthy(self) -> bool:
        return not self.problems

    @property
    def verdict(self) -> str:
        """``healthy``; ``stopped`` when the only problem is that every daemon stopped
        cleanly (nothing is wrong, but nothing is collected: still exit 1);
        ``unhealthy`` otherwise."""
        if self.healthy:
            return "healthy"
        # A stopped daemon's jobs are overdue because it stopped: no other problem.
        quiet = (
            self.daemons
            and all(d.state == "stopped" for d in self.daemons)
            and not self.disk_full
            and not self.damaged
        )
        return "stopped" if quiet else "unhealthy"

    def job_for(self, dataset: str, market: str, shard: str | None = None) -> JobStatus | None:
        """The job that fills ``dataset`` in ``market``: daemon ``shard``'s, or with
        ``shard`` None every daemon's together (:func:`combine`)."""
        wanted = runstate.ALL_MARKETS if dataset == "instruments" else market
        found = [
            j
            for j in self.jobs
            if j.job == dataset
            and j.market == wanted
            and (shard is None or j.shard == shard)
            and (dataset != "instruments" or market in self._instrument_markets(j.shard))
        ]
        return combine(found) if found else None

    def _instrument_markets(self, shard: str | None) -> set[str]:
        """Markets whose instruments shard ``shard`` archives: its state records the job
        under ``all``, so they are taken as those of its other jobs (every market for the
        daemon without shards, or a shard that runs no other job)."""
        spec = datasets.get("instruments")
        if shard in (None, runstate.UNSHARDED):
            return set(spec.markets)
        markets = {
            m
            for j in self.jobs
            if j.shard == shard and j.job != "instruments"
            for m in ([j.market] if j.market in spec.markets else [])
        }
        return markets or set(spec.markets)

    def rows(self, shard: str | None = None) -> list[tuple[str, str]]:
        """(dataset, market) pairs to show, in registry order: those with files or with a
        job; with ``shard``, only those of that daemon's jobs."""
        wanted = set(self.groups) if shard is None else set()
        for job in self.jobs:
            if job.job in datasets.DATASETS and (shard is None or job.shard == shard):
                spec = datasets.get(job.job)
                markets: Iterable[str] = (
                    self._instrument_markets(job.shard)
                    if job.market == runstate.ALL_MARKETS
                    else (job.market,)
                )
                wanted |= {(job.job, m) for m in markets if m in spec.markets}
        return _in_registry_order(wanted)

    def unclaimed_rows(self) -> list[tuple[str, str]]:
        """(dataset, market) pairs with files that no daemon's job fills."""
        claimed = {
            pair for daemon in self.daemons if daemon.shard for pair in self.rows(daemon.shard)
        }
        return _in_registry_order(set(self.groups) - claimed)

    def lag_s(self, group: footers.GroupSummary | None) -> float | None:
        """Now (in exchange time) minus the newest event archived."""
        if group is None or group.last_ms is None:
            return None
        now_ms = epoch_ms(self.generated_at) + self.clock_offset_ms
        return round((now_ms - group.last_ms) / 1000, 3)

    def daemon_dict(self, daemon: DaemonStatus) -> dict[str, Any]:
        return {**asdict(daemon), "healthy": not self.daemon_problems(daemon)}

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` document (keys documented in the README's Status section).

        ``daemon`` (the one daemon, null when there are several) and ``jobs`` keep the
        layout of the release before shards; ``daemons`` lists every daemon."""
        rows = []
        for dataset, market in self.rows():
            group = self.groups.get((dataset, market))
            job = self.job_for(dataset, market)
            record = job.record if job is not None else None
            rows.append(
                {
                    "dataset": dataset,
                    "market": market,
                    "symbols": symbols_of(dataset, record),
                    "rows_today": group.rows_today if group else 0,
                    "rows_total": group.rows_total if group else 0,
                    "first_time": iso_ms(group.first_ms) if group else None,
                    "last_time": iso_ms(group.last_ms) if group else None,
                    "lag_s": self.lag_s(group),
                    "partitions": group.partitions if group else 0,
                    "files": group.files if group else 0,
                    "bytes": group.bytes if group else 0,
                    "job": job.job if job else None,
                    "shards": sorted(job.shard.split(",")) if job and job.shard else [],
                    "last_success_at": record.last_success_at if record else None,
                    "last_failure_at": record.last_failure_at if record else None,
                    "last_error": record.last_error if record else None,
                    "quarantined_last_hour": self.quarantine.by_group[(dataset, market)],
                }
            )
        daemon = self.daemon
        return {
            "generated_at": runstate.iso(self.generated_at),
            "data_dir": self.data_dir,
            "today": self.today.isoformat(),
            "healthy": self.healthy,
            "verdict": self.verdict,
            "problems": self.problems,
            "disk_full": self.disk_full,
            "damaged_files": [
                {"dataset": f.dataset, "path": f.path, "reason": f.reason} for f in self.damaged
            ],
            "daemon": None if daemon is None else self.daemon_dict(daemon),
            "daemons": [self.daemon_dict(d) for d in self.daemons],
            "exchange_pause": self.pause,
            "jobs": [job.as_dict() for job in self.jobs],
            "datasets": rows,
            "quarantine": {
                "last_hour": self.quarantine.last_hour,
                "by_endpoint": dict(sorted(self.quarantine.by_endpoint.items())),
                "not_attributed": self.quarantine.not_attributed,
            },
        }


def _in_registry_order(pairs: set[tuple[str, str]]) -> list[tuple[str, str]]:
    return [
        (name, market)
        for name, spec in datasets.DATASETS.items()
        for market in spec.markets
        if (name, market) in pairs
    ]


def report(
    archive: str | Path | Archive,
    *,
    now: dt.datetime,
    state_dir: str | Path | None = None,
    is_locked: bool | None = None,
    free_bytes: int | None = None,
) -> Report:
    """Everything ``status`` shows about ``archive`` (a local folder or
    ``s3://bucket/prefix``).

    ``state_dir``: this host's local folder of a daemon's lock and pause file; None: the
    archive folder of a local archive (where the daemon without shards keeps them), and
    nothing local for an object store. ``is_locked`` overrides the check of that lock
    (whether its daemon runs) for tests, ``free_bytes`` the free space measured at a
    local archive.
    """
    where = Archive.of(archive)
    local = (
        Path(state_dir).resolve()
        if state_dir is not None
        else (None if where.remote else where.path)
    )
    states = runstate.load_all(where)
    if is_locked is not None:
        holder = 0 if is_locked else None
    else:
        holder = lock.daemon_pid(local) if local is not None else None
    here = socket.gethostname()
    daemons: list[DaemonStatus] = []
    jobs: list[JobStatus] = []
    checked_one = False
    for name, state in states.items():
        checked = local is not None and state.host == here and _same_folder(state.state_dir, local)
        checked_one |= checked
        daemon = daemon_status(state, now, holder if checked else None, lock_checked=checked)
        daemon.shard = name
        if daemon.problem and daemon.state in ("stopped", "died"):
            daemon.problem += _retired_hint(where, name, state) if len(states) > 1 else ""
        daemons.append(daemon)
        jobs += job_statuses(state, now)
    if local is not None and holder is not None and not checked_one:
        daemons.append(daemon_status(None, now, holder))
    # The exchange's clock as the freshest daemon measured it.
    freshest = max(states.values(), key=lambda s: _time_key(s.heartbeat_at), default=None)
    offset = freshest.clock_offset_ms if freshest else 0
    today = (now + dt.timedelta(milliseconds=offset)).astimezone(dt.UTC).date()
    groups = table_groups(where, today)
    full = disk_full(where, states.values(), free_bytes)
    if full:
        for daemon in daemons:
            if daemon.state in ("stuck", "died") and daemon.problem:
                # Its state file could not be written either: not hung, out of space.
                daemon.problem += " (the disk is full: that is why, see above)"
    return Report(
        generated_at=now,
        data_dir=where.uri,
        today=today,
        daemons=daemons,
        jobs=jobs,
        groups=groups,
        quarantine=count_quarantine(where, now),
        pause=exchange_pause(local, now) if local is not None else None,
        clock_offset_ms=offset,
        damaged=footers.damaged(
            where, also=[file for group in groups.values() for file in group.damaged]
        ),
        disk_full=full,
    )


def disk_full(
    archive: Archive, states: Iterable[runstate.DaemonState], free_bytes: int | None = None
) -> str | None:
    """Why the archive's disk is full, or None: a local archive's free space under
    :data:`DISK_FULL_BYTES` (``free_bytes`` overrides the measure), or a daemon whose
    last flush failed for want of space (:attr:`runstate.DaemonState.flush_error`)."""
    if not archive.remote:
        if free_bytes is None:
            try:
                free_bytes = shutil.disk_usage(archive.path).free
            except OSError:
                free_bytes = None
        if free_bytes is not None and free_bytes < DISK_FULL_BYTES:
            return (
                f"{free_bytes / 1e6:.1f} MB free at {archive.uri}: nothing more can be "
                "archived; free space or move storage.uri (buffered rows are kept in "
                "memory and written once there is room)"
            )
    for state in states:
        error = state.flush_error or ""
        if state.stopped_at is None and runstate.DISK_FULL_TEXT in error:
            return f"the daemon {state.shard} cannot write: {error}"
    return None


def _same_folder(recorded: str | None, local: Path) -> bool:
    return recorded is not None and Path(recorded).resolve() == local


def _retired_hint(archive: Archive, name: str, state: runstate.DaemonState) -> str:
    """How to stop counting one of several daemons that is gone for good."""
    if state.from_legacy_file:
        return (
            f"; {runstate.LEGACY_STATE_FILE} was left by a release before shards: delete it "
            "once that daemon is retired"
        )
    return f"; if it is retired, delete {archive.uri}/{runstate.state_file(name)}"


def table_groups(archive: Archive, today: dt.date) -> dict[tuple[str, str], footers.GroupSummary]:
    """Per dataset and market, the figures of :func:`collector.storage.footers.summarize`: from
    each table's Delta log, opened by deltalake at the archive's URI.

    On an object store only the log is read: a file committed without statistics (the
    collector writes none such) is counted in files and bytes, as unreadable, rather than
    having its footer fetched.
    """
    if not archive.remote:
        return footers.summarize(archive.path, today)
    groups: dict[tuple[str, str], footers.GroupSummary] = {}
    for name, table in delta.tables(archive.uri):
        seen: set[tuple[str, dt.date]] = set()
        for file in delta.files(table, name):
            partition = file.partition
            group = groups.setdefault(
                (name, partition.market), footers.GroupSummary(name, partition.market)
            )
            if (partition.market, partition.date) not in seen:
                seen.add((partition.market, partition.date))
                group.partitions += 1
            complete = file.rows >= 0 and (
                file.rows == 0 or (file.min_time_ms is not None and file.max_time_ms is not None)
            )
            if complete:
                summary = footers.FileSummary(
                    file.rows, file.min_time_ms, file.max_time_ms, file.size
                )
                group.add(summary, partition.date == today)
            else:
                group.files += 1
                group.bytes += file.size
                group.unreadable += 1
    return groups


def daemon_status(
    state: runstate.DaemonState | None,
    now: dt.datetime,
    lock_holder: int | None,
    *,
    lock_checked: bool = True,
) -> DaemonStatus:
    """Whether the daemon runs: ``lock_holder`` is the pid holding its lock (0: unknown
    pid), None when nobody holds it; ``lock_checked`` False when its lock could not be
    looked at (then only the heartbeat tells, as for a daemon on another host)."""
    if state is None:
        if lock_holder is not None:
            return DaemonStatus(
                "unknown",
                f"a daemon (pid {lock_holder or '?'}) holds the archive but wrote no state "
                "file (an older version?)",
                problem="the running daemon keeps no state file: its jobs cannot be checked",
                pid=lock_holder or None,
            )
        return DaemonStatus(
            "never_ran",
            f"no state in {runstate.STATE_DIR}: the daemon has not run on this archive",
            problem="no daemon state: the collector has never run on this archive "
            "(start it with `jex-collector run`)",
        )
    heartbeat = runstate.parse_iso(state.heartbeat_at)
    age = None if heartbeat is None else round((now - heartbeat).total_seconds(), 1)
    fresh = age is not None and age <= HEARTBEAT_STALE_S
    # The lock tells on this host; on another one (a shared disk or an object store) only
    # the heartbeat can.
    running = (
        lock_holder is not None if lock_checked and state.host == socket.gethostname() else None
    )
    base = DaemonStatus(
        "",
        "",
        pid=state.pid,
        host=state.host,
        version=state.version,
        started_at=state.started_at,
        collecting_since=state.collecting_since,
        heartbeat_at=state.heartbeat_at,
        heartbeat_age_s=age,
        stopped_at=state.stopped_at,
        shard=state.shard,
        liveness="heartbeat" if running is None else "lock",
    )
    where = f"pid {state.pid} on {state.host}"
    if running or (running is None and state.stopped_at is None and fresh):
        if not fresh:
            base.state, base.message = "stuck", f"running ({where}) but not writing its state"
            base.problem = (
                f"the daemon ({where}) holds the archive but its last heartbeat is "
                f"{duration(age)} old: it may be hung (check its log)"
            )
        elif state.phase == "starting":
            base.state = "starting"
            base.message = f"starting ({where}, since {when(state.started_at, now)})"
        else:
            base.state = "running"
            base.message = f"running ({where}, up {_since(state.started_at, now)})"
        return base
    if state.stopped_at is not None:
        base.state = "stopped"
        base.message = f"stopped cleanly at {when(state.stopped_at, now)} (not collecting)"
        base.problem = (
            f"the daemon is not running (it stopped at {when(state.stopped_at, now)}, a "
            "clean shutdown: nothing is collected; start it with `jex-collector run`)"
        )
    else:
        base.state = "died"
        if running is None:  # only the heartbeat tells: it may live on, hung or cut off
            base.message = (
                f"not running: no heartbeat for {duration(age)} and no clean shutdown (crash, "
                "kill -9, power cut, hung, or cut off from the archive)"
            )
        else:
            base.message = (
                f"not running: it did not shut down cleanly (crash, kill -9 or power cut); "
                f"last heartbeat {when(state.heartbeat_at, now)}"
            )
        base.problem = (
            f"the daemon is not running (no clean shutdown; last heartbeat "
            f"{when(state.heartbeat_at, now)}): it died"
        )
    return base


def job_statuses(state: runstate.DaemonState | None, now: dt.datetime) -> list[JobStatus]:
    """Every job and market the daemon runs, with whether it is overdue and why; the
    intervals are the daemon's (after the plan stretched them), from its state file."""
    if state is None:
        return []
    found = []
    for name, job in state.jobs.items():
        every = job.every_s
        limit = OVERDUE_INTERVALS * every
        running = runstate.parse_iso(job.running_since)
        busy_s = None if running is None else (now - running).total_seconds()
        for market, record in job.markets.items():
            last_ok = runstate.parse_iso(record.last_success_at)
            since = (
                last_ok
                or runstate.parse_iso(state.collecting_since)
                or runstate.parse_iso(state.started_at)
            )
            overdue = since is None or (now - since).total_seconds() > limit
            if overdue and busy_s is not None and busy_s <= max(limit, ROUND_GRACE_S):
                overdue = False  # a long round (paging) is slow, not broken
            reason = None
            if overdue:
                reason = (
                    f"no success for {duration((now - last_ok).total_seconds())}"
                    if last_ok is not None
                    else "never succeeded"
                ) + f" (allowed: {OVERDUE_INTERVALS} x {duration(every)})"
                if busy_s is not None:
                    reason += f"; a round has been running for {duration(busy_s)}"
                if record.consecutive_failures and record.last_error:
                    reason += (
                        f"; {record.consecutive_failures} failed run(s) in a row, the last "
                        f"{duration(age_s(record.last_failure_at, now))} ago: "
                        + cut(record.last_error)
                    )
            found.append(
                JobStatus(
                    name,
                    market,
                    every,
                    job.configured_every_s,
                    overdue,
                    reason,
                    record,
                    job.running_since,
                    state.shard,
                )
            )
    return found


def combine(jobs: list[JobStatus]) -> JobStatus:
    """One job and market run by several daemons (shards splitting its symbols) as one:
    overdue when any part is, ``last_success_at`` the oldest part's (a part that never
    succeeded makes it null), the newest failure with its error, rows and symbols summed.
    ``shard`` names the daemons, comma-separated."""
    if len(jobs) == 1:
        return jobs[0]
    records = [j.record for j in jobs]
    successes = [r.last_success_at for r in records]
    newest_run = max(records, key=lambda r: _time_key(r.last_run_at))
    newest_failure = max(records, key=lambda r: _time_key(r.last_failure_at))
    record = replace(
        newest_failure,
        last_run_at=newest_run.last_run_at,
        last_outcome=newest_run.last_outcome,
        last_success_at=None if None in successes else min(successes, key=_time_key),
        last_rows=sum(r.last_rows for r in records),
        last_symbols=sum(r.last_symbols for r in records),
        last_duration_ms=max(r.last_duration_ms for r in records),
        consecutive_failures=max(r.consecutive_failures for r in records),
        runs=sum(r.runs for r in records),
        failed_runs=sum(r.failed_runs for r in records),
    )
    overdue = [j for j in jobs if j.overdue]
    running = [j.running_since for j in jobs if j.running_since]
    return JobStatus(
        jobs[0].job,
        jobs[0].market,
        max(j.every_s for j in jobs),
        max(j.configured_every_s for j in jobs),
        bool(overdue),
        overdue[0].reason if overdue else None,
        record,
        min(running, key=_time_key) if running else None,
        ",".join(sorted(j.shard or "?" for j in jobs)),
    )


def _time_key(value: str | None) -> dt.datetime:
    return runstate.parse_iso(value) or dt.datetime.min.replace(tzinfo=dt.UTC)


def count_quarantine(archive: str | Path | Archive, now: dt.datetime) -> QuarantineCount:
    """Quarantine files written in the hour before ``now``, listed per day folder through
    :meth:`Archive.list_names <collector.storage.location.Archive.list_names>`."""
    where = Archive.of(archive)
    counts = QuarantineCount()
    start = now - QUARANTINE_WINDOW
    days = {start.astimezone(dt.UTC).date(), now.astimezone(dt.UTC).date()}
    for day in sorted(days):
        folder = f"{QUARANTINE_DIR}/{day.isoformat()}"
        try:
            names = where.list_names(folder)
        except OSError as exc:
            log.warning("status: cannot list %s/%s: %s", where.uri, folder, exc)
            continue
        for name in names:
            match = _QUARANTINE_NAME.match(name)
            if match is None:
                continue  # not one of ours
            stamp = match["time"]
            with contextlib.suppress(ValueError):  # not a time of day: not one of ours
                written = dt.datetime.combine(
                    day,
                    dt.time(
                        int(stamp[:2]), int(stamp[2:4]), int(stamp[4:6]), int(stamp[6:]) * 1000
                    ),
                    tzinfo=dt.UTC,
                )
                if written < start:
                    continue
                counts.last_hour += 1
                endpoint = match["endpoint"]
                counts.by_endpoint[endpoint] += 1
                dataset = _ENDPOINT_DATASETS.get(endpoint)
                market = _ENDPOINT_MARKETS.get(endpoint) or _market_of(where, f"{folder}/{name}")
                if dataset is not None and market is None:
                    only = datasets.get(dataset).markets
                    market = only[0] if len(only) == 1 else None
                if dataset is None or market is None:
                    counts.not_attributed += 1
                else:
                    counts.by_group[(dataset, market)] += 1
    return counts


def _market_of(archive: Archive, relative: str) -> str | None:
    """The ``market`` field near the top of a quarantine file (its fourth key): only its
    first bytes are read (a ranged read on an object store)."""
    try:
        with archive.filesystem().open_input_stream(archive.fs_path(relative)) as source:
            head = bytes(source.read(_QUARANTINE_HEAD_BYTES))
    except OSError:
        return None
    match = _QUARANTINE_MARKET.search(head)
    market = match["market"].decode() if match and match["market"] else None
    return market if market in datasets.MARKETS else None


def exchange_pause(state_dir: str | Path, now: dt.datetime) -> dict[str, Any] | None:
    """The exchange-imposed pause (429/418) recorded in ``<state_dir>/_state/pause.json``
    (a local folder), while it lasts."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        record = json.loads((Path(state_dir) / PAUSE_FILE).read_text(encoding="utf-8"))
        until_ms = int(record["until_ms"])
        if until_ms > epoch_ms(now):
            return {"status": int(record.get("status", 0)), "until": iso_ms(until_ms)}
    return None


def symbols_of(dataset: str, record: runstate.MarketRecord | None) -> int | None:
    """Symbols the job polled in its last run (the instruments job counts every market's)."""
    if dataset == "instruments" or record is None or not record.runs:
        return None
    return record.last_symbols


# -- formatting helpers shared with the table ------------------------------------------------


def epoch_ms(value: dt.datetime) -> int:
    return (value - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(milliseconds=1)


def iso_ms(ms: int | None) -> str | None:
    if ms is None:
        return None
    return runstate.iso(dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms))


def duration(seconds: float | None) -> str:
    """``850ms``, ``4.2s``, ``42s``, ``4m12s``, ``5m``, ``2h05m``, ``3d02h``."""
    if seconds is None:
        return "?"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms" if seconds > 0 else "0s"
    whole = int(seconds)
    if whole < 60:
        return f"{seconds:.0f}s" if seconds >= 10 or seconds == whole else f"{seconds:.1f}s"
    if whole < 3600:
        minutes, rest = divmod(whole, 60)
        return f"{minutes}m{rest:02d}s" if rest else f"{minutes}m"
    if whole < 86_400:
        hours, rest = divmod(whole, 3600)
        return f"{hours}h{rest // 60:02d}m" if rest >= 60 else f"{hours}h"
    days, rest = divmod(whole, 86_400)
    return f"{days}d{rest // 3600:02d}h" if rest >= 3600 else f"{days}d"


def cut(error: str) -> str:
    """An error text cut for the terminal (``--json`` has it whole)."""
    return error if len(error) <= ERROR_DISPLAY_CHARS else error[: ERROR_DISPLAY_CHARS - 3] + "..."


def age_s(value: str | None, now: dt.datetime) -> float | None:
    """Seconds from the ISO time ``value`` to ``now`` (None when there is no time)."""
    then = runstate.parse_iso(value)
    return None if then is None else (now - then).total_seconds()


def _since(value: str | None, now: dt.datetime) -> str:
    return duration(age_s(value, now))


def when(value: str | None, now: dt.datetime) -> str:
    """``2026-11-24 03:10:05 UTC (4m12s ago)``."""
    then = runstate.parse_iso(value)
    if then is None:
        return "?"
    return f"{then:%Y-%m-%d %H:%M:%S} UTC ({duration((now - then).total_seconds())} ago)"

"""Each daemon's liveness and each job's verdict for ``jex-collector status``, from the
daemons' state files (:mod:`collector.ops.runstate`) and, on this host, the lock: whether
a daemon runs, starts, is stuck, stopped or died, and which of its jobs are overdue and
why; :func:`combine` merges the parts of one job that several shards share."""

from __future__ import annotations

import datetime as dt
import socket
from dataclasses import asdict, dataclass, replace
from typing import Any

from collector.ops import runstate
from collector.ops.status_format import _since, age_s, cut, duration, when

#: A job is overdue when it has not succeeded for this many of its intervals.
OVERDUE_INTERVALS = 3
#: A round under way keeps its job from being overdue for this long at least (a first
#: start's backfill, or catching up after downtime, pages for minutes).
ROUND_GRACE_S = 900.0
#: A heartbeat older than this means the daemon is gone or hung (it beats every 2 s).
HEARTBEAT_STALE_S = 30.0


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

"""``jex-collector status``: is the collector healthy, and what does the archive hold?

Reads three things, never the exchange and never the data itself:

* the daemon's state file (:mod:`collector.runstate`): whether it runs, and per job
  and market the last run, success and failure;
* each dataset's Delta log (:mod:`collector.footers`): per dataset and market, rows
  today and in total, first and last event time, files and bytes, from the statistics
  the log keeps for every file (no data file is opened);
* the quarantine folder (:mod:`collector.quarantine`): payloads set aside in the
  last hour, counted from the file names (and the ``market`` field at the top of
  each file).

Healthy means: the daemon runs (holds the archive's lock and its heartbeat is
fresh) and every job of the daemon succeeded in every market within
:data:`OVERDUE_INTERVALS` of its interval (the effective one, after the plan
stretched it). Without a state file (the daemon never ran on this archive) the
archive is still shown, and the report is not healthy: nothing says it collects.

Every function takes ``now`` (UTC, the local clock), so that tests need no sleeping.
:mod:`collector.status_table` draws the report for a terminal; :meth:`Report.as_dict`
is the ``--json`` document.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import socket
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from collector import datasets, footers, runstate
from collector.exchange import endpoints
from collector.exchange.client import PAUSE_FILE
from collector.quarantine import DIR_NAME as QUARANTINE_DIR
from collector.quarantine import _file_part as quarantine_name
from collector.storage import lock

#: A job is overdue when it has not succeeded for this many of its intervals.
OVERDUE_INTERVALS = 3
#: A round under way keeps its job from being overdue for this long at least (a first
#: start's backfill, or catching up after downtime, pages for minutes).
ROUND_GRACE_S = 900.0
#: A heartbeat older than this means the daemon is gone or hung (it beats every 2 s).
HEARTBEAT_STALE_S = 30.0
#: Error texts in the table view are cut to this many characters (``--json`` has all).
ERROR_DISPLAY_CHARS = 160
#: Quarantined payloads are counted over this window.
QUARANTINE_WINDOW = dt.timedelta(hours=1)

#: Quarantine file name part of each endpoint -> the dataset its responses feed.
_ENDPOINT_DATASETS: dict[str, str] = {
    quarantine_name(endpoint.name): dataset
    for endpoint, dataset in (
        (endpoints.DEPTH, "depth"),
        (endpoints.TRADES, "trades"),
        (endpoints.HISTORICAL_TRADES, "trades"),
        (endpoints.KLINES, "klines"),
        (endpoints.AVG_PRICE, "avg_price"),
        (endpoints.TICKER_24HR, "ticker_24hr"),
        (endpoints.TICKER_PRICE, "ticker_price"),
        (endpoints.BOOK_TICKER, "book_ticker"),
        (endpoints.INDICES_PRICE, "indices_price"),
        (endpoints.HISTORY_RATE, "funding_rate"),
        (endpoints.PROTECTION_FUND, "protection_fund"),
        (endpoints.CONTRACT_INFO, "contract_info"),
        (endpoints.EXCHANGE_INFO, "instruments"),
        (endpoints.OPTION_INFO, "instruments"),
    )
}
#: Endpoints that serve one market only, whose quarantine files name none.
_ENDPOINT_MARKETS = {quarantine_name(endpoints.OPTION_INFO.name): "option"}
_QUARANTINE_NAME = re.compile(r"^(?P<time>\d{9})-(?P<endpoint>.+)-[0-9a-f]+\.json$")
_QUARANTINE_MARKET = re.compile(rb'"market":\s*(?:null|"(?P<market>[a-z]+)")')


@dataclass
class DaemonStatus:
    """``state``: ``running``, ``starting`` (first contact with the exchange), ``stuck``
    (holds the lock, heartbeat stale), ``stopped`` (clean shutdown), ``died`` (no clean
    shutdown: crash, kill -9, power cut), ``never_ran`` (no state file), or ``unknown``
    (a daemon holds the lock but wrote no state file)."""

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

    def as_dict(self) -> dict[str, Any]:
        return {
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
    generated_at: dt.datetime
    data_dir: Path
    today: dt.date
    daemon: DaemonStatus
    jobs: list[JobStatus]
    groups: dict[tuple[str, str], footers.GroupSummary]
    quarantine: QuarantineCount
    pause: dict[str, Any] | None
    clock_offset_ms: int = 0

    @property
    def problems(self) -> list[str]:
        """Why the report is not healthy: the daemon's problem, then one line per overdue
        job (its markets together when the reason is the same)."""
        found = [self.daemon.problem] if self.daemon.problem else []
        markets: dict[tuple[str, str], list[str]] = {}
        for job in self.jobs:
            if job.overdue:
                markets.setdefault((job.job, job.reason or ""), []).append(job.market)
        return found + [
            f"job {name} ({', '.join(names)}): {reason}"
            for (name, reason), names in markets.items()
        ]

    @property
    def healthy(self) -> bool:
        return not self.problems

    def job_for(self, dataset: str, market: str) -> JobStatus | None:
        wanted = runstate.ALL_MARKETS if dataset == "instruments" else market
        return next((j for j in self.jobs if j.job == dataset and j.market == wanted), None)

    def rows(self) -> list[tuple[str, str]]:
        """(dataset, market) pairs to show: those with files or with a job, in registry order."""
        wanted = set(self.groups)
        for job in self.jobs:
            if job.job in datasets.DATASETS:
                spec = datasets.get(job.job)
                markets = spec.markets if job.market == runstate.ALL_MARKETS else (job.market,)
                wanted |= {(job.job, m) for m in markets if m in spec.markets}
        return [
            (name, market)
            for name, spec in datasets.DATASETS.items()
            for market in spec.markets
            if (name, market) in wanted
        ]

    def lag_s(self, group: footers.GroupSummary | None) -> float | None:
        """Now (in exchange time) minus the newest event archived."""
        if group is None or group.last_ms is None:
            return None
        now_ms = epoch_ms(self.generated_at) + self.clock_offset_ms
        return round((now_ms - group.last_ms) / 1000, 3)

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` document (keys documented in the README's Status section)."""
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
                    "last_success_at": record.last_success_at if record else None,
                    "last_failure_at": record.last_failure_at if record else None,
                    "last_error": record.last_error if record else None,
                    "quarantined_last_hour": self.quarantine.by_group[(dataset, market)],
                }
            )
        return {
            "generated_at": runstate.iso(self.generated_at),
            "data_dir": str(self.data_dir),
            "today": self.today.isoformat(),
            "healthy": self.healthy,
            "problems": self.problems,
            "daemon": asdict(self.daemon),
            "exchange_pause": self.pause,
            "jobs": [job.as_dict() for job in self.jobs],
            "datasets": rows,
            "quarantine": {
                "last_hour": self.quarantine.last_hour,
                "by_endpoint": dict(sorted(self.quarantine.by_endpoint.items())),
                "not_attributed": self.quarantine.not_attributed,
            },
        }


def report(data_dir: str | Path, *, now: dt.datetime, is_locked: bool | None = None) -> Report:
    """Everything ``status`` shows; ``is_locked`` overrides the check of the archive's
    lock (whether a daemon runs) for tests."""
    root = Path(data_dir)
    state = runstate.load(root)
    offset = state.clock_offset_ms if state else 0
    today = (now + dt.timedelta(milliseconds=offset)).astimezone(dt.UTC).date()
    holder = lock.daemon_pid(root) if is_locked is None else (0 if is_locked else None)
    return Report(
        generated_at=now,
        data_dir=root.resolve(),
        today=today,
        daemon=daemon_status(state, now, holder),
        jobs=job_statuses(state, now),
        groups=footers.summarize(root, today),
        quarantine=count_quarantine(root, now),
        pause=exchange_pause(root, now),
        clock_offset_ms=offset,
    )


def daemon_status(
    state: runstate.DaemonState | None, now: dt.datetime, lock_holder: int | None
) -> DaemonStatus:
    """Whether the daemon runs: ``lock_holder`` is the pid holding the archive's lock
    (0: unknown pid), None when nobody holds it."""
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
            f"no {runstate.STATE_FILE}: the daemon has not run on this archive",
            problem="no daemon state: the collector has never run on this archive "
            "(start it with `jex-collector run`)",
        )
    heartbeat = runstate.parse_iso(state.heartbeat_at)
    age = None if heartbeat is None else round((now - heartbeat).total_seconds(), 1)
    fresh = age is not None and age <= HEARTBEAT_STALE_S
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
    )
    where = f"pid {state.pid} on {state.host}"
    # The lock tells on this host; on another one (a shared disk) only the heartbeat can.
    running = lock_holder is not None if state.host == socket.gethostname() else None
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
        base.message = f"not running: stopped at {when(state.stopped_at, now)}"
        base.problem = f"the daemon is not running (it stopped at {when(state.stopped_at, now)})"
    else:
        base.state = "died"
        base.message = (
            f"not running: it did not shut down cleanly (crash, kill -9 or power cut); "
            f"last heartbeat {when(state.heartbeat_at, now)}"
        )
        base.problem = (
            f"the daemon is not running (no clean shutdown; last heartbeat "
            f"{when(state.heartbeat_at, now)})"
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
                )
            )
    return found


def count_quarantine(data_dir: str | Path, now: dt.datetime) -> QuarantineCount:
    """Quarantine files written in the hour before ``now``."""
    counts = QuarantineCount()
    start = now - QUARANTINE_WINDOW
    root = Path(data_dir) / QUARANTINE_DIR
    days = {start.astimezone(dt.UTC).date(), now.astimezone(dt.UTC).date()}
    for day in sorted(days):
        folder = root / day.isoformat()
        try:
            names = sorted(p.name for p in folder.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            continue
        for name in names:
            match = _QUARANTINE_NAME.match(name)
            if match is None:
                continue  # a temporary file, or not one of ours
            stamp = match["time"]
            written = dt.datetime.combine(
                day,
                dt.time(int(stamp[:2]), int(stamp[2:4]), int(stamp[4:6]), int(stamp[6:]) * 1000),
                tzinfo=dt.UTC,
            )
            if written < start:
                continue
            counts.last_hour += 1
            endpoint = match["endpoint"]
            counts.by_endpoint[endpoint] += 1
            dataset = _ENDPOINT_DATASETS.get(endpoint)
            market = _ENDPOINT_MARKETS.get(endpoint) or _market_of(folder / name)
            if dataset is not None and market is None:
                only = datasets.get(dataset).markets
                market = only[0] if len(only) == 1 else None
            if dataset is None or market is None:
                counts.not_attributed += 1
            else:
                counts.by_group[(dataset, market)] += 1
    return counts


def _market_of(path: Path) -> str | None:
    """The ``market`` field near the top of a quarantine file (its fourth key)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(2048)
    except OSError:
        return None
    match = _QUARANTINE_MARKET.search(head)
    market = match["market"].decode() if match and match["market"] else None
    return market if market in datasets.MARKETS else None


def exchange_pause(data_dir: str | Path, now: dt.datetime) -> dict[str, Any] | None:
    """The exchange-imposed pause (429/418) recorded in ``_state/pause.json``, while it lasts."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        record = json.loads((Path(data_dir) / PAUSE_FILE).read_text(encoding="utf-8"))
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

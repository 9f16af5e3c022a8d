"""The report of ``jex-collector status`` (:class:`Overview`): daemons, jobs, datasets,
quarantine, pause, disk and damaged files together, its problems and verdict, the rows
to show and the ``--json`` document."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from collector import datasets
from collector.ops import runstate
from collector.ops.status_daemons import DaemonStatus, JobStatus, combine, daemon_status
from collector.ops.status_format import epoch_ms, iso_ms
from collector.ops.status_quarantine import QuarantineCount
from collector.storage import footers


@dataclass
class Overview:
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


def symbols_of(dataset: str, record: runstate.MarketRecord | None) -> int | None:
    """Symbols the job polled in its last run (the instruments job counts every market's)."""
    if dataset == "instruments" or record is None or not record.runs:
        return None
    return record.last_symbols

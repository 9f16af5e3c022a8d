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
:mod:`collector.ops.status_table` draws the report for a terminal; :meth:`Overview.as_dict`
is the ``--json`` document.

This module assembles the report (:func:`report`) from what it reads of the archive;
the parts live beside it, and every name is re-exported here:
:mod:`~collector.ops.status_daemons` (each daemon's liveness, each job's verdict),
:mod:`~collector.ops.status_quarantine` (the quarantine count),
:mod:`~collector.ops.status_overview` (the :class:`Overview`, its problems, verdict and
JSON) and :mod:`~collector.ops.status_format` (times and durations as shown).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from collector.exchange.client import PAUSE_FILE
from collector.ops import runstate
from collector.ops.status_daemons import HEARTBEAT_STALE_S as HEARTBEAT_STALE_S
from collector.ops.status_daemons import OVERDUE_INTERVALS as OVERDUE_INTERVALS
from collector.ops.status_daemons import ROUND_GRACE_S as ROUND_GRACE_S
from collector.ops.status_daemons import DaemonStatus as DaemonStatus
from collector.ops.status_daemons import JobStatus as JobStatus
from collector.ops.status_daemons import _time_key as _time_key
from collector.ops.status_daemons import combine as combine
from collector.ops.status_daemons import daemon_status as daemon_status
from collector.ops.status_daemons import job_statuses as job_statuses
from collector.ops.status_format import ERROR_DISPLAY_CHARS as ERROR_DISPLAY_CHARS
from collector.ops.status_format import _since as _since
from collector.ops.status_format import age_s as age_s
from collector.ops.status_format import cut as cut
from collector.ops.status_format import duration as duration
from collector.ops.status_format import epoch_ms as epoch_ms
from collector.ops.status_format import iso_ms as iso_ms
from collector.ops.status_format import when as when
from collector.ops.status_overview import Overview as Overview
from collector.ops.status_overview import _in_registry_order as _in_registry_order
from collector.ops.status_overview import symbols_of as symbols_of
from collector.ops.status_quarantine import QUARANTINE_WINDOW as QUARANTINE_WINDOW
from collector.ops.status_quarantine import QuarantineCount as QuarantineCount
from collector.ops.status_quarantine import count_quarantine as count_quarantine
from collector.ops.status_quarantine import log as log
from collector.storage import delta, footers, lock
from collector.storage.location import Archive

#: A local archive's disk with less free space than this is full (a flush file of a
#: busy minute is a few MB).
DISK_FULL_BYTES = 16_000_000


def overview(
    archive: str | Path | Archive,
    *,
    now: dt.datetime,
    state_dir: str | Path | None = None,
    is_locked: bool | None = None,
    free_bytes: int | None = None,
) -> Overview:
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
    return Overview(
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


def exchange_pause(state_dir: str | Path, now: dt.datetime) -> dict[str, Any] | None:
    """The exchange-imposed pause (429/418) recorded in ``<state_dir>/_state/pause.json``
    (a local folder), while it lasts."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        record = json.loads((Path(state_dir) / PAUSE_FILE).read_text(encoding="utf-8"))
        until_ms = int(record["until_ms"])
        if until_ms > epoch_ms(now):
            return {"status": int(record.get("status", 0)), "until": iso_ms(until_ms)}
    return None

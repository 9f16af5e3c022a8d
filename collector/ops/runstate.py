"""Each daemon's state file, ``<archive>/_state/daemons/<name>.json``: what it runs and how it went.

Every daemon keeps its own file current so that ``jex-collector status``
(:mod:`collector.ops.status`), a monitoring script or a human with ``cat`` can tell, without
reading logs and from any host, whether each collector of the archive is alive and which
jobs work. ``<name>`` is the daemon's shard, or ``all`` for a daemon that runs every job
(:data:`UNSHARDED`); names are :data:`NAME` (lowercase letters, digits, ``_`` and ``-``,
at most 40), so a name is always a safe file name. The file goes through
:class:`~collector.storage.location.Archive`, so it lives beside the tables on a local
disk or an object store alike. It holds:

* the process: ``shard``, ``pid``, ``host``, ``version``, ``state_dir`` (the local folder
  of its lock and pause file, on ``host``; null when not known), ``started_at``,
  ``heartbeat_at`` (rewritten at least every :data:`HEARTBEAT_EVERY_S` seconds while the
  daemon runs), ``stopped_at`` (set on a clean shutdown, null while running or after a
  crash), ``phase`` (``starting``: first contact with the exchange; ``collecting``;
  ``stopped``), ``collecting_since`` and the exchange ``clock_offset_ms``;
* per enabled job: ``every_s`` (the interval it runs at, after the plan stretched it,
  see :mod:`collector.plan.schedule`), ``configured_every_s`` (schedules.yaml's),
  ``running_since`` (when the round under way started, null between rounds), and per market
  (``all`` for the instruments job) a :class:`MarketRecord`: the last run, the last
  success, the last failure with its first error, the rows, symbols and duration of the
  last run, consecutive failures and counters since the start;
* ``flush_error`` and ``flush_error_at``: the first error of the last flush that could
  not write (a full disk says so), null once a flush works again.

A run *succeeded* when at least one of its symbols worked (``ok``: no error,
``partial``: some symbols failed); it *failed* when nothing worked (every symbol
failed, the request for all of them failed, or the job raised). A partial run counts
as a success for health and records its first error as the last failure.

Times are ISO 8601 in UTC with milliseconds, from the local clock. Writes are atomic
(:meth:`Archive.write_bytes <collector.storage.location.Archive.write_bytes>`: a reader
sees the old state or the new one) and never go back to an older state; at most one a
second between the forced ones (start, collecting, stop): job results only mark the
state changed, and the heartbeat task writes it, in a worker thread, so that a slow
object store never holds up the event loop. A write never raises into the daemon: one
that fails (a full disk, an unreachable store) is logged once until one works again.
The file is not fsynced: after a power cut it may be an older state or unreadable,
which the reader treats as "no state". Error texts are truncated to
:data:`ERROR_CHARS` and the API key and secret are replaced by ``<redacted>`` wherever
they appear.

Releases before shards kept one file, ``_state/daemon.json`` (:data:`LEGACY_STATE_FILE`);
:func:`load` and :func:`load_all` read it as ``all`` while there is no
``_state/daemons/all.json``.

This module writes the file (:class:`RunState`); the records and the reading
(:func:`load`, :func:`load_all`) are in :mod:`collector.ops.runstate_files`, and
re-exported here.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from collector import __version__
from collector.errors import ArchiveLockedError, CollectorError
from collector.ops.runstate_files import ALL_MARKETS as ALL_MARKETS
from collector.ops.runstate_files import FORMAT as FORMAT
from collector.ops.runstate_files import LEGACY_STATE_FILE as LEGACY_STATE_FILE
from collector.ops.runstate_files import NAME as NAME
from collector.ops.runstate_files import STATE_DIR as STATE_DIR
from collector.ops.runstate_files import UNSHARDED as UNSHARDED
from collector.ops.runstate_files import DaemonState as DaemonState
from collector.ops.runstate_files import JobRecord as JobRecord
from collector.ops.runstate_files import MarketRecord as MarketRecord
from collector.ops.runstate_files import check_name as check_name
from collector.ops.runstate_files import iso as iso
from collector.ops.runstate_files import load as load
from collector.ops.runstate_files import load_all as load_all
from collector.ops.runstate_files import parse_iso as parse_iso
from collector.ops.runstate_files import state_file as state_file
from collector.ops.runstate_files import utc_now as utc_now
from collector.storage.location import Archive

if TYPE_CHECKING:
    from collector.collect.context import RoundResult
    from collector.config import JobSettings

log = logging.getLogger(__name__)

#: The heartbeat is written at least this often while the daemon runs.
HEARTBEAT_EVERY_S = 10.0
#: Writes are at most this frequent (job results arriving in between wait for the next).
MIN_WRITE_INTERVAL_S = 3.0
#: Error texts are cut to this many characters.
ERROR_CHARS = 300
#: Shorter "secrets" are not real keys, and replacing them would garble every text.
MIN_SECRET_LENGTH = 8
REDACTED = "<redacted>"
#: What the writer's error says when a flush failed for want of space
#: (:func:`collector.storage.writer._storage_error`); ``status`` looks for it.
DISK_FULL_TEXT = "the disk is full"


class RunState:
    """Keeps ``_state/daemons/<name>.json`` current for one daemon run. Used from the
    event loop.

    Call :meth:`started` once the daemon's lock is held, run :meth:`heartbeat` as a
    task, :meth:`collecting` when jobs are scheduled, :meth:`track` around each job
    round (or :meth:`record` with its reports, :meth:`record_failure` with what it
    raised), and :meth:`stopped` at the end. No method raises (but :meth:`track`
    re-raises what the round raised).
    """

    def __init__(
        self,
        archive: str | Path | Archive,
        *,
        name: str = UNSHARDED,
        redact: Iterable[str | None] = (),
        clock: Callable[[], dt.datetime] = utc_now,
        clock_offset_ms: Callable[[], int] = lambda: 0,
        monotonic: Callable[[], float] = time.monotonic,
        state_dir: str | Path | None = None,
    ) -> None:
        """``name``: the shard, or ``all`` (a ValueError when not a :data:`NAME`).
        ``state_dir``: the local folder of the daemon's lock and pause file, recorded so
        that ``status`` on this host can check the lock; by default the archive folder
        for ``all`` on a local archive (the layout before shards), else not recorded.
        ``clock`` stamps the times written; ``monotonic`` paces the writes."""
        self.archive = Archive.of(archive)
        self.name = check_name(name)
        self.relative = state_file(name)
        #: Where the state is written, for messages.
        self.location = f"{self.archive.uri}/{self.relative}"
        if state_dir is None and not self.archive.remote and name == UNSHARDED:
            state_dir = self.archive.path
        self._secrets = sorted(
            {s for s in redact if s and len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True
        )
        self._clock = clock
        self._clock_offset_ms = clock_offset_ms
        self._monotonic = monotonic
        self.state = DaemonState(
            pid=os.getpid(),
            host=socket.gethostname(),
            version=__version__,
            data_dir=self.archive.uri,
            started_at=None,
            heartbeat_at=None,
            shard=name,
            state_dir=None if state_dir is None else str(Path(state_dir).resolve()),
        )
        self._last_write = -math.inf  # monotonic seconds
        self._dirty = False
        # Writes may run in a worker thread (the heartbeat's) and in the event loop (the
        # forced ones): one at a time, and never an older state over a newer one.
        self._write_lock = threading.Lock()
        self._serial = 0  # of the newest state serialized
        self._written = 0  # of the newest state written
        self._failing = False  # a write failed: logged once until one works

    # -- the daemon's calls ------------------------------------------------------------------

    def started(self, jobs: Mapping[str, JobSettings]) -> None:
        """The daemon holds its lock: a fresh state with every enabled job."""
        self.state.started_at = iso(self._clock())
        self.state.jobs = {
            name: JobRecord(
                every_s=job.every,
                configured_every_s=job.every,
                markets={
                    market: MarketRecord()
                    for market in ([ALL_MARKETS] if name == "instruments" else job.markets)
                },
            )
            for name, job in jobs.items()
        }
        self.save(force=True)

    def collecting(self, intervals: Mapping[str, float]) -> None:
        """Jobs are scheduled, at ``intervals`` (the plan's, stretched or not)."""
        self.state.phase = "collecting"
        self.state.collecting_since = iso(self._clock())
        for name, job in self.state.jobs.items():
            job.every_s = float(intervals.get(name, job.configured_every_s))
        self.save(force=True)

    async def track(self, name: str, round_: Awaitable[list[RoundResult]]) -> list[RoundResult]:
        """Await one round of job ``name`` and record it: its reports, or the exception it
        raised (re-raised; a cancellation is not recorded)."""
        job = self.state.jobs.get(name)
        if job is not None:
            job.running_since = iso(self._clock())
            self.save()
        try:
            reports = await round_
        except Exception as exc:
            self.record_failure(name, exc)
            raise
        finally:
            if job is not None:
                job.running_since = None
        self.record(name, reports)
        return reports

    def record(self, name: str, reports: Iterable[RoundResult]) -> None:
        """One round of job ``name``: one report per market."""
        now = iso(self._clock())
        for report in reports:
            record = self._market(name, report.market)
            if record is None:
                continue
            record.runs += 1
            record.last_run_at = now
            record.last_rows = report.rows
            record.last_symbols = report.symbols
            record.last_duration_ms = round(report.ms, 1)
            if not report.errors:
                outcome = "ok"
            elif report.symbols > len(report.errors):
                outcome = "partial"
            else:
                outcome = "failed"
            record.last_outcome = outcome
            if outcome == "failed":
                record.failed_runs += 1
                record.consecutive_failures += 1
            else:
                record.last_success_at = now
                record.consecutive_failures = 0
            if report.errors:
                record.last_failure_at = now
                record.last_error = self._clean(report.errors[0])
                record.last_failure_outcome = outcome
                record.last_failure_errors = len(report.errors)
        self.save()

    def record_failure(self, name: str, error: BaseException | str) -> None:
        """A round of job ``name`` that raised (every market failed)."""
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        now = iso(self._clock())
        job = self.state.jobs.get(name)
        for record in job.markets.values() if job is not None else ():
            record.runs += 1
            record.failed_runs += 1
            record.consecutive_failures += 1
            record.last_run_at = record.last_failure_at = now
            record.last_outcome = "failed"
            record.last_error = self._clean(text)
            record.last_failure_outcome = "failed"
            record.last_failure_errors = 1
            record.last_rows = record.last_symbols = 0
        self.save()

    def flush_failed(self, error: BaseException | str) -> None:
        """A flush that could not write (its rows stay buffered): kept until one works,
        so that ``status`` can say why (``the disk is full``)."""
        self.state.flush_error = self._clean(str(error))
        self.state.flush_error_at = iso(self._clock())
        self.save()

    def flushed(self) -> None:
        """A flush that wrote everything: the last flush error is over."""
        if self.state.flush_error is not None:
            self.state.flush_error = self.state.flush_error_at = None
            self.save()

    async def heartbeat(self) -> None:
        """Run as a task until cancelled: the heartbeat, and results the throttle held."""
        while True:
            await asyncio.sleep(MIN_WRITE_INTERVAL_S)
            await self.beat()

    async def beat(self) -> bool:
        """One tick of :meth:`heartbeat`: write the state, in a worker thread, when results
        are waiting or the heartbeat is due; True when written."""
        if not self._dirty and self._monotonic() - self._last_write < HEARTBEAT_EVERY_S:
            return False
        serialized = self._serialize()
        if serialized is None:
            return False
        return await asyncio.to_thread(self._write, *serialized)

    def stopped(self) -> None:
        self.state.phase = "stopped"
        self.state.stopped_at = iso(self._clock())
        self.save(force=True)

    # -- writing -------------------------------------------------------------------------------

    def save(self, *, force: bool = False) -> bool:
        """``force``: write the state now, in the caller's thread; True when written.
        Otherwise mark it changed: the next :meth:`beat` writes it (False)."""
        if not force:
            self._dirty = True
            return False
        serialized = self._serialize()
        return serialized is not None and self._write(*serialized)

    def _serialize(self) -> tuple[int, bytes] | None:
        """The state as the file's bytes, with a new heartbeat, and its serial number."""
        self._last_write = self._monotonic()
        self._dirty = False
        try:
            self.state.heartbeat_at = iso(self._clock())
            self.state.clock_offset_ms = int(self._clock_offset_ms())
            data = json.dumps(self.state.to_dict(), indent=1).encode("utf-8")
        except Exception as exc:  # a status file never stops the collector
            with self._write_lock:
                self._failed(exc)
            return None
        self._serial += 1
        return self._serial, data

    def _write(self, serial: int, data: bytes) -> bool:
        """Write one serialized state (in the event loop or a worker thread); a state
        older than the one written already is dropped."""
        with self._write_lock:
            if serial <= self._written:
                return False
            try:
                self.archive.write_bytes(self.relative, data)
            except Exception as exc:  # a status file never stops the collector
                self._failed(exc)
                return False
            self._written = serial
            if self._failing:
                self._failing = False
                log.info("%s is written again", self.location)
            return True

    def _failed(self, exc: Exception) -> None:
        if not self._failing:
            self._failing = True
            log.warning(
                "could not write %s (%s); the collector goes on, `jex-collector status` "
                "shows an old state until it can be written again",
                self.location,
                exc,
            )

    # -- helpers -------------------------------------------------------------------------------

    def _market(self, name: str, market: str) -> MarketRecord | None:
        job = self.state.jobs.get(name)
        if job is None:
            return None  # not an enabled job (the start-up instrument refresh when disabled)
        return job.markets.setdefault(market, MarketRecord())

    def _clean(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        text = " ".join(text.split())  # one line: no newlines from an HTML error page
        return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 3] + "..."


def refuse_a_twin(archive: Archive, name: str, state_dir: Path, data_dir: str) -> None:
    """Refuse to start when the archive says a daemon of the same ``name`` (shard) runs
    elsewhere: another host, or another state dir here (the local lock only guards one
    state dir). Judged by its heartbeat: a daemon that died is taken over once its
    heartbeat is older than ``status.HEARTBEAT_STALE_S``."""
    from collector.ops.status import HEARTBEAT_STALE_S  # status reads this module

    try:
        other = load(archive, name)
    except CollectorError as exc:
        log.warning("could not read the archive's daemon states: %s", exc)
        return
    beat = None if other is None else parse_iso(other.heartbeat_at)
    if other is None or other.stopped_at is not None or beat is None:
        return
    age = (utc_now() - beat).total_seconds()
    here = socket.gethostname()
    mine = str(state_dir.resolve())
    if age > HEARTBEAT_STALE_S or (other.host == here and other.state_dir == mine):
        return  # dead, or our own earlier run (the lock we hold proves it ended)
    raise ArchiveLockedError(
        f"collector {name!r} is already running on host {other.host!r} (pid {other.pid}, "
        f"heartbeat {age:.0f}s ago) into {data_dir}; stop it, or run another shard (--shard)",
        pid=other.pid,
        path=data_dir,
    )

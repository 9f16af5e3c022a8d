"""The daemon's state file, ``<data_dir>/_state/daemon.json``: what it runs and how it went.

The daemon keeps it current so that ``jex-collector status`` (:mod:`collector.status`),
a monitoring script or a human with ``cat`` can tell, without reading logs, whether the
collector is alive and which jobs work. It holds:

* the process: ``pid``, ``host``, ``version``, ``started_at``, ``heartbeat_at``
  (rewritten at least every :data:`HEARTBEAT_EVERY_S` seconds while the daemon runs),
  ``stopped_at`` (set on a clean shutdown, null while running or after a crash),
  ``phase`` (``starting``: first contact with the exchange; ``collecting``;
  ``stopped``), ``collecting_since`` and the exchange ``clock_offset_ms``;
* per enabled job: ``every_s`` (the interval it runs at, after the plan stretched it,
  see :mod:`collector.plan`), ``configured_every_s`` (schedules.yaml's),
  ``running_since`` (when the round under way started, null between rounds), and per market
  (``all`` for the instruments job) a :class:`MarketRecord`: the last run, the last
  success, the last failure with its first error, the rows, symbols and duration of the
  last run, consecutive failures and counters since the start.

A run *succeeded* when at least one of its symbols worked (``ok``: no error,
``partial``: some symbols failed); it *failed* when nothing worked (every symbol
failed, the request for all of them failed, or the job raised). A partial run counts
as a success for health and records its first error as the last failure.

Times are ISO 8601 in UTC with milliseconds, from the local clock. Writes are atomic
(a temporary file renamed over the old one: a reader sees the old state or the new
one), throttled to one per :data:`MIN_WRITE_INTERVAL_S`, and never raise into the
daemon: a write that fails (a full disk) is logged once until one works again. The
file is not fsynced: after a power cut it may be an older state or unreadable, which
the reader treats as "no state". Error texts are truncated to :data:`ERROR_CHARS` and
the API key and secret are replaced by ``<redacted>`` wherever they appear.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import math
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from collector import __version__

if TYPE_CHECKING:
    from collector.config import JobSettings
    from collector.jobs import JobReport

log = logging.getLogger(__name__)

#: Where, under the data directory, the daemon's state is kept.
STATE_FILE = "_state/daemon.json"
#: Version of the file's layout; a reader refuses layouts it does not know.
FORMAT = 1
#: The heartbeat is written at least this often while the daemon runs.
HEARTBEAT_EVERY_S = 2.0
#: Writes are at most this frequent (job results arriving in between wait for the next).
MIN_WRITE_INTERVAL_S = 1.0
#: Error texts are cut to this many characters.
ERROR_CHARS = 300
#: Shorter "secrets" are not real keys, and replacing them would garble every text.
MIN_SECRET_LENGTH = 8
REDACTED = "<redacted>"
#: The market under which the instruments job (one request for every market) is recorded.
ALL_MARKETS = "all"


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(value: dt.datetime | None) -> str | None:
    """A UTC time as ISO 8601 with milliseconds (``2026-11-24T03:10:05.112+00:00``)."""
    return None if value is None else value.astimezone(dt.UTC).isoformat(timespec="milliseconds")


def parse_iso(value: object) -> dt.datetime | None:
    """The inverse of :func:`iso`; None for null or anything unreadable."""
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


@dataclass
class MarketRecord:
    """One job's results in one market (times as ISO strings, None when it never happened)."""

    last_run_at: str | None = None
    last_outcome: str | None = None  # ok, partial or failed
    last_success_at: str | None = None
    last_failure_at: str | None = None
    last_error: str | None = None
    last_failure_outcome: str | None = None  # partial or failed: the run with the error
    last_failure_errors: int = 0  # symbols (or requests) that failed in that run
    last_rows: int = 0
    last_symbols: int = 0
    last_duration_ms: float = 0.0
    consecutive_failures: int = 0
    runs: int = 0
    failed_runs: int = 0

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> MarketRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


@dataclass
class JobRecord:
    every_s: float
    configured_every_s: float
    running_since: str | None = None  # the round under way, if any
    markets: dict[str, MarketRecord] = field(default_factory=dict)


@dataclass
class DaemonState:
    """The state file's content (see the module docstring for each field)."""

    pid: int
    host: str
    version: str
    data_dir: str
    started_at: str | None
    heartbeat_at: str | None
    stopped_at: str | None = None
    phase: str = "starting"
    collecting_since: str | None = None
    clock_offset_ms: int = 0
    jobs: dict[str, JobRecord] = field(default_factory=dict)
    format: int = FORMAT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> DaemonState:
        """Raises ValueError when ``raw`` is not a state of a known format."""
        if raw.get("format") != FORMAT:
            raise ValueError(f"unknown state file format {raw.get('format')!r}")
        try:
            jobs = {
                name: JobRecord(
                    every_s=float(job["every_s"]),
                    configured_every_s=float(job.get("configured_every_s", job["every_s"])),
                    running_since=job.get("running_since"),
                    markets={
                        market: MarketRecord.from_dict(record)
                        for market, record in job.get("markets", {}).items()
                    },
                )
                for name, job in raw.get("jobs", {}).items()
            }
            return cls(
                pid=int(raw["pid"]),
                host=str(raw["host"]),
                version=str(raw.get("version", "")),
                data_dir=str(raw.get("data_dir", "")),
                started_at=raw.get("started_at"),
                heartbeat_at=raw.get("heartbeat_at"),
                stopped_at=raw.get("stopped_at"),
                phase=str(raw.get("phase", "")),
                collecting_since=raw.get("collecting_since"),
                clock_offset_ms=int(raw.get("clock_offset_ms", 0)),
                jobs=jobs,
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed state file: {exc!r}") from None


def state_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / STATE_FILE


def load(data_dir: str | Path) -> DaemonState | None:
    """The state the daemon last wrote, or None when there is none (never ran, or written
    by a version with another layout). An unreadable file is logged and taken as none."""
    path = state_path(data_dir)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        return DaemonState.from_dict(raw)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return None


class RunState:
    """Keeps ``_state/daemon.json`` current for one daemon run. Used from the event loop.

    Call :meth:`started` once the archive's lock is held, run :meth:`heartbeat` as a
    task, :meth:`collecting` when jobs are scheduled, :meth:`track` around each job
    round (or :meth:`record` with its reports, :meth:`record_failure` with what it
    raised), and :meth:`stopped` at the end. No method raises (but :meth:`track`
    re-raises what the round raised).
    """

    def __init__(
        self,
        data_dir: str | Path,
        *,
        redact: Iterable[str | None] = (),
        clock: Callable[[], dt.datetime] = utc_now,
        clock_offset_ms: Callable[[], int] = lambda: 0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock`` stamps the times written; ``monotonic`` paces the writes."""
        self.path = state_path(data_dir)
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
            data_dir=str(Path(data_dir).resolve()),
            started_at=None,
            heartbeat_at=None,
        )
        self._last_write = -math.inf  # monotonic seconds
        self._dirty = False
        self._failing = False  # a write failed: logged once until one works

    # -- the daemon's calls ------------------------------------------------------------------

    def started(self, jobs: Mapping[str, JobSettings]) -> None:
        """The daemon holds the archive: a fresh state with every enabled job."""
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

    async def track(self, name: str, round_: Awaitable[list[JobReport]]) -> list[JobReport]:
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

    def record(self, name: str, reports: Iterable[JobReport]) -> None:
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

    async def heartbeat(self) -> None:
        """Run as a task until cancelled: the heartbeat, and results the throttle held."""
        while True:
            await asyncio.sleep(MIN_WRITE_INTERVAL_S)
            if self._dirty or self._monotonic() - self._last_write >= HEARTBEAT_EVERY_S:
                self.save()

    def stopped(self) -> None:
        self.state.phase = "stopped"
        self.state.stopped_at = iso(self._clock())
        self.save(force=True)

    # -- writing -------------------------------------------------------------------------------

    def save(self, *, force: bool = False) -> bool:
        """Write the state now (or, throttled, at the next heartbeat); True when written."""
        if not force and self._monotonic() - self._last_write < MIN_WRITE_INTERVAL_S:
            self._dirty = True
            return False
        self._last_write = self._monotonic()
        self._dirty = False
        try:
            self.state.heartbeat_at = iso(self._clock())
            self.state.clock_offset_ms = int(self._clock_offset_ms())
            text = json.dumps(self.state.to_dict(), indent=1)
            self._write(text)
        except Exception as exc:  # a status file never stops the collector
            if not self._failing:
                self._failing = True
                log.warning(
                    "could not write %s (%s); the collector goes on, `jex-collector status` "
                    "shows an old state until it can be written again",
                    self.path,
                    exc,
                )
            return False
        if self._failing:
            self._failing = False
            log.info("%s is written again", self.path)
        return True

    def _write(self, text: str) -> None:
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temp.write_text(text, encoding="utf-8")
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise

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

"""The records of a daemon's state file and how they are read back.

The file's layout (``_state/daemons/<name>.json``, one per daemon, and the legacy
``_state/daemon.json``) is described in :mod:`collector.ops.runstate`, which writes it and
re-exports everything here: :class:`DaemonState` and its job and market records, the
names and times in them, and :func:`load` / :func:`load_all`, which read the files of an
archive on a local disk or an object store alike.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from collector.errors import StorageError
from collector.storage import files
from collector.storage.location import Archive

# The state files' messages keep the logger of collector.ops.runstate, which they came from.
log = logging.getLogger("collector.ops.runstate")

#: Where, under the archive, the daemons' state files are kept (``<name>.json`` each).
STATE_DIR = f"{files.STATE_DIR}/daemons"
#: The one state file of releases before shards, read as the daemon ``all``.
LEGACY_STATE_FILE = f"{files.STATE_DIR}/daemon.json"
#: The name of a daemon that runs every job (no shard).
UNSHARDED = "all"
#: What a daemon's name may be: it is a file name under :data:`STATE_DIR`.
NAME = re.compile(r"[a-z0-9_-]{1,40}")
_FILE_NAME = re.compile(r"(?P<name>[a-z0-9_-]{1,40})\.json")
#: Version of the file's layout; a reader refuses layouts it does not know.
FORMAT = 1
#: The market under which the instruments job (one request for every market) is recorded.
ALL_MARKETS = "all"


def check_name(name: str) -> str:
    """``name`` when it is a valid daemon name (:data:`NAME`), else a ValueError."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a collector name: 1 to 40 lowercase letters, digits, '_' or '-'"
        )
    return name


def state_file(name: str = UNSHARDED) -> str:
    """The state file of daemon ``name``, relative to the archive."""
    return f"{STATE_DIR}/{check_name(name)}.json"


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
        """Unknown keys are ignored; a known one of the wrong type is a ValueError (the
        file may come from another host: nothing in it is trusted)."""
        values: dict[str, Any] = {}
        for spec in fields(cls):
            if spec.name not in raw:
                continue
            value = raw[spec.name]
            if spec.default is None:  # the times, outcomes and error: text or null
                values[spec.name] = _optional_str(value, spec.name)
            elif isinstance(spec.default, float):
                values[spec.name] = float(_number(value, spec.name, float))
            else:
                values[spec.name] = _number(value, spec.name, int)
        return cls(**values)


def _optional_str(value: object, key: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"{key}: expected a string or null, got {type(value).__name__}")


def _number(value: object, key: str, kind: type[int] | type[float]) -> int | float:
    """``value`` when it is a number of ``kind`` (an int is a float too; a bool is not)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is float and isinstance(value, float) and math.isfinite(value):
        return value
    raise ValueError(f"{key}: expected {kind.__name__}, got {value!r:.40}")


@dataclass
class JobRecord:
    every_s: float
    configured_every_s: float
    running_since: str | None = None  # the round under way, if any
    markets: dict[str, MarketRecord] = field(default_factory=dict)


@dataclass
class DaemonState:
    """The state file's content (see the module docstring for each field).

    ``from_legacy_file`` is not written: it says the state was read from the file of a
    release before shards (:data:`LEGACY_STATE_FILE`)."""

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
    shard: str = UNSHARDED
    state_dir: str | None = None
    jobs: dict[str, JobRecord] = field(default_factory=dict)
    #: The first error of the last flush that failed, and when; null once one works.
    flush_error: str | None = None
    flush_error_at: str | None = None
    format: int = FORMAT
    from_legacy_file: bool = field(default=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        document = asdict(self)
        del document["from_legacy_file"]
        return document

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> DaemonState:
        """Raises ValueError when ``raw`` is not a state of a known format."""
        if raw.get("format") != FORMAT:
            raise ValueError(f"unknown state file format {raw.get('format')!r}")
        try:
            jobs = {
                str(name): JobRecord(
                    every_s=float(_number(job["every_s"], "every_s", float)),
                    configured_every_s=float(
                        _number(job.get("configured_every_s", job["every_s"]), "every_s", float)
                    ),
                    running_since=_optional_str(job.get("running_since"), "running_since"),
                    markets={
                        str(market): MarketRecord.from_dict(record)
                        for market, record in job.get("markets", {}).items()
                    },
                )
                for name, job in raw.get("jobs", {}).items()
            }
            texts = {
                key: _optional_str(raw.get(key), key)
                for key in (
                    "host",
                    "version",
                    "data_dir",
                    "started_at",
                    "heartbeat_at",
                    "stopped_at",
                    "phase",
                    "collecting_since",
                    "shard",
                    "state_dir",
                    "flush_error",
                    "flush_error_at",
                )
            }
            if texts["host"] is None:
                raise KeyError("host")
            return cls(
                pid=int(_number(raw["pid"], "pid", int)),
                host=texts["host"],
                version=texts["version"] or "",
                data_dir=texts["data_dir"] or "",
                started_at=texts["started_at"],
                heartbeat_at=texts["heartbeat_at"],
                stopped_at=texts["stopped_at"],
                phase=texts["phase"] or "",
                collecting_since=texts["collecting_since"],
                clock_offset_ms=int(_number(raw.get("clock_offset_ms", 0), "clock_offset_ms", int)),
                shard=texts["shard"] or UNSHARDED,
                state_dir=texts["state_dir"],
                jobs=jobs,
                flush_error=texts["flush_error"],
                flush_error_at=texts["flush_error_at"],
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed state file: {exc!r}") from None


def load(archive: str | Path | Archive, name: str = UNSHARDED) -> DaemonState | None:
    """The state daemon ``name`` last wrote, or None when there is none (never ran, or
    written by a version with another layout). An unreadable file is logged and taken as
    none. For ``all``, the file of a release before shards when there is no
    ``_state/daemons/all.json``."""
    where = Archive.of(archive)
    found, state = _read(where, state_file(name), name)
    if not found and name == UNSHARDED:
        return _read_legacy(where)
    return state


def load_all(archive: str | Path | Archive) -> dict[str, DaemonState]:
    """Every daemon's state in the archive, by name (sorted).

    Only files named ``<name>.json`` with a valid :data:`NAME` are read; others, and
    files that cannot be read or have an unknown layout, are skipped with a warning. A
    file's name is the daemon's name, whatever ``shard`` it holds. The file of a release
    before shards counts as ``all`` while there is no ``all.json``. A StorageError when the
    folder cannot be listed (an unreachable object store).
    """
    where = Archive.of(archive)
    try:
        names = where.list_names(STATE_DIR)
    except OSError as exc:
        raise StorageError(
            f"cannot list the collectors' states in {where.uri}/{STATE_DIR}: {exc}",
            path=f"{where.uri}/{STATE_DIR}",
        ) from exc
    states: dict[str, DaemonState] = {}
    for file_name in names:
        match = _FILE_NAME.fullmatch(file_name)
        if match is None:
            log.warning(
                "ignoring %s/%s/%r: not a collector's state file (<name>.json, the name "
                "of 1 to 40 lowercase letters, digits, '_' or '-')",
                where.uri,
                STATE_DIR,
                file_name,
            )
            continue
        name = match["name"]
        _, state = _read(where, f"{STATE_DIR}/{file_name}", name)
        if state is not None:
            states[name] = state
    if f"{UNSHARDED}.json" not in names:
        legacy = _read_legacy(where)
        if legacy is not None:
            states[UNSHARDED] = legacy
    return dict(sorted(states.items()))


def _read(archive: Archive, relative: str, name: str) -> tuple[bool, DaemonState | None]:
    """(whether the file exists, its state or None when unreadable)."""
    try:
        data = archive.read_bytes(relative)
    except OSError as exc:
        log.warning("ignoring unreadable %s/%s: %s", archive.uri, relative, exc)
        return True, None
    if data is None:
        return False, None
    try:
        raw = json.loads(data.decode("utf-8"))
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        state = DaemonState.from_dict(raw)
    except ValueError as exc:  # JSON and UTF-8 decoding errors are ValueErrors too
        log.warning("ignoring unreadable %s/%s: %s", archive.uri, relative, exc)
        return True, None
    state.shard = name
    return True, state


def _read_legacy(archive: Archive) -> DaemonState | None:
    _, state = _read(archive, LEGACY_STATE_FILE, UNSHARDED)
    if state is None:
        return None
    state.from_legacy_file = True
    if state.state_dir is None and not archive.remote:
        state.state_dir = archive.uri  # that release kept its lock in the archive folder
    return state

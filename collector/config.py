"""Settings: ``schedules.yaml`` and the environment, validated once into a frozen object.

A bad file raises :class:`ConfigError` naming the file, the key and what was
expected; the CLI turns it into exit status 2. Secrets come only from the
environment (``JEX_API_KEY``, ``JEX_API_SECRET``) and are held as
``SecretStr`` so that printing the settings never shows them.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from collector import datasets
from collector.errors import ConfigError

Market = Literal["spot", "option", "contract"]

KLINE_INTERVALS: dict[str, int] = {
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
    "3d": 259_200_000,
    "1w": 604_800_000,
}
DEPTH_LIMITS = (5, 10, 20, 50, 60)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: object) -> float:
    """Seconds from ``10``, ``2.5``, ``"500ms"``, ``"10s"``, ``"5m"``, ``"1h"`` or ``"1d"``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 10s, 5m or 1h, got a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError(f"expected a duration such as 10s, 5m or 1h, got {value!r}")
    if seconds <= 0:
        raise ValueError(f"a duration must be positive, got {value!r}")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExchangeSettings(_Strict):
    base_url: str = "https://www.jex.com"
    timeout: Duration = 10.0
    weight_fraction: float = Field(0.8, gt=0, le=1)
    max_attempts: int = Field(4, ge=1, le=10)
    concurrency: int = Field(4, ge=1, le=64)
    clock_sync_every: Duration = 600.0
    #: When the schedule needs more than the budget: stretch the intervals, or refuse to start.
    on_over_budget: Literal["stretch", "refuse"] = "stretch"
    #: TLS certificate verification; turning it off is logged as a warning at every start.
    verify_tls: bool = True
    #: Take proxy and CA settings from the environment (HTTPS_PROXY, SSL_CERT_FILE, ...).
    trust_env: bool = False

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"expected an http(s) URL such as https://www.jex.com, got {value!r}")
        return value.rstrip("/")


class StorageSettings(_Strict):
    data_dir: Path = Path("data")
    flush_every: Duration = 30.0
    #: How often the daemon compacts (collector/storage/compaction.py): closed partitions
    #: whole, and today's flush files merged, so that a query on today opens few files
    #: (at 30 s flushes, a partition gains 20 flush files between two passes).
    compact_every: Duration = 600.0
    #: How long a file replaced by a compaction stays on disk for readers still scanning
    #: an older table version, before vacuum deletes it (None: the table's default,
    #: collector.storage.delta.RETENTION_HOURS).
    retention: Duration | None = None


class JobSettings(_Strict):
    every: Duration
    enabled: bool = True
    markets: tuple[Market, ...] = ("spot", "option", "contract")
    symbols: Literal["all"] | tuple[str, ...] = "all"
    limit: int | None = Field(None, ge=1)
    intervals: tuple[str, ...] = ()
    #: trades and klines: how far back to fetch on first start (nothing archived yet).
    backfill: Duration | None = None
    #: trades: on first start, page forwards from this trade id instead.
    start_id: int | None = Field(None, ge=1)

    @field_validator("symbols", mode="before")
    @classmethod
    def _symbols(cls, value: object) -> object:
        if isinstance(value, str):
            return value if value == "all" else (value,)
        if isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ValueError(
            f"expected all, a symbol, or a list of symbols or glob patterns, got {value!r}"
        )

    @field_validator("intervals")
    @classmethod
    def _intervals(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [v for v in value if v not in KLINE_INTERVALS]
        if unknown:
            raise ValueError(
                f"unknown interval(s) {', '.join(unknown)}; "
                f"expected some of {', '.join(KLINE_INTERVALS)}"
            )
        return value

    def wants(self, symbol: str) -> bool:
        """Whether ``symbol`` is selected by ``symbols`` (``all``, names or glob patterns)."""
        if self.symbols == "all":
            return True
        return any(fnmatch.fnmatchcase(symbol, pattern) for pattern in self.symbols)


#: Datasets that have a job. ``instruments`` feeds every other job its symbols.
JOB_NAMES = tuple(datasets.DATASETS)


class Settings(_Strict):
    exchange: ExchangeSettings = ExchangeSettings()
    storage: StorageSettings = StorageSettings()
    jobs: dict[str, JobSettings]
    api_key: SecretStr | None = None
    api_secret: SecretStr | None = None
    source: str = "<defaults>"

    @model_validator(mode="after")
    def _jobs_fit_datasets(self) -> Settings:
        for name, job in self.jobs.items():
            if name not in datasets.DATASETS:
                raise ValueError(
                    f"jobs.{name}: unknown job; jobs are named after datasets: "
                    f"{', '.join(datasets.DATASETS)}"
                )
            allowed = datasets.DATASETS[name].markets
            extra = [m for m in job.markets if m not in allowed]
            if extra:
                raise ValueError(
                    f"jobs.{name}.markets: {', '.join(extra)} not available; "
                    f"{name} exists for {', '.join(allowed)}"
                )
            if name == "depth" and job.limit is not None and job.limit not in DEPTH_LIMITS:
                raise ValueError(
                    f"jobs.depth.limit: expected one of {DEPTH_LIMITS}, got {job.limit}"
                )
            if job.backfill is not None and name not in ("trades", "klines"):
                raise ValueError(
                    f"jobs.{name}.backfill: only trades and klines take a backfill "
                    "(funding_rate and protection_fund always fetch the whole history)"
                )
            if job.start_id is not None and name != "trades":
                raise ValueError(f"jobs.{name}.start_id: only trades take a start_id")
            if job.start_id is not None and job.backfill is not None:
                raise ValueError(f"jobs.{name}: give backfill or start_id, not both")
            if name == "trades" and job.limit is not None and job.limit > 500:
                raise ValueError(f"jobs.trades.limit: at most 500 (a page), got {job.limit}")
            if name == "klines" and not job.intervals:
                raise ValueError("jobs.klines.intervals: expected at least one interval")
        return self

    def enabled_jobs(self) -> dict[str, JobSettings]:
        return {name: job for name, job in self.jobs.items() if job.enabled}


def _format_location(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item in ("literal['all']", "tuple[str, ...]", "function-before[_symbols()]"):
            continue
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def from_mapping(
    raw: Mapping[str, Any],
    *,
    source: str,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Validate a parsed YAML mapping plus the environment and CLI overrides."""
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {key: value for key, value in raw.items()}
    exchange = dict(data.get("exchange") or {})
    storage = dict(data.get("storage") or {})
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key == "base_url":
            exchange["base_url"] = value
        elif key == "data_dir":
            storage["data_dir"] = value
        else:
            raise ConfigError(f"unknown override {key!r}", source="command line")
    data["exchange"] = exchange
    data["storage"] = storage
    for field, variable in (("api_key", "JEX_API_KEY"), ("api_secret", "JEX_API_SECRET")):
        if field in data:
            raise ConfigError(
                f"secrets are not read from files; set the environment variable {variable}",
                source=source,
                key=field,
            )
        if environ.get(variable):
            data[field] = environ[variable]
    data["source"] = source
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = _format_location(error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key (check the spelling against schedules.yaml's comments)"
        more = f" (and {len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
        raise ConfigError(message + more, source=source, key=key) from None


def load(
    path: str | Path = "schedules.yaml",
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read and validate ``path`` (YAML, loaded safely)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            "file not found; pass --config PATH or run from the repository root",
            source=str(path),
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror}", source=str(path)) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}not valid YAML: {problem}", source=str(path)) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("expected a mapping with exchange, storage and jobs", source=str(path))
    if "jobs" not in raw:
        raise ConfigError("missing the jobs section", source=str(path), key="jobs")
    return from_mapping(raw, source=str(path), environ=environ, overrides=overrides)

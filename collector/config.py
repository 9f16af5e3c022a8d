"""Settings: ``schedules.yaml`` and the environment, validated once into a frozen object.

A bad file raises :class:`ConfigError` naming the file, the key and what was
expected; the CLI turns it into exit status 2. Secrets come only from the
environment (``JEX_API_KEY``, ``JEX_API_SECRET``; for an S3 archive ``AWS_*``) and
are held as ``SecretStr`` so that printing the settings never shows them.

Several collectors (shards) may append to one archive: the ``shards:`` section gives
each its share of the jobs, markets and symbols (:mod:`collector.shards` checks that
no two shares meet), and ``overrides={"shard": name}`` gives the settings of one.
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from collector import datasets
from collector.errors import ConfigError
from collector.exchange import endpoints
from collector.shards import check_shards, markets_of

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


#: Bounds of a duration: below a millisecond (the exchange's precision) or above a
#: millennium, a value is a typo; a timer cannot even be set beyond ``timedelta.max``.
MIN_DURATION = 0.001
MAX_DURATION = 1000 * 365.25 * 86400.0


def parse_duration(value: object) -> float:
    """Seconds from ``10``, ``2.5``, ``"500ms"``, ``"10s"``, ``"5m"``, ``"1h"`` or ``"1d"``.

    YAML's ``.nan`` and ``.inf``, numbers too large for a float (``1.0e+400``) and values
    outside [1 ms, 1000 years] are refused with a ValueError.
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 10s, 5m or 1h, got a boolean")
    try:
        if isinstance(value, int | float):
            seconds = float(value)
        elif isinstance(value, str) and (match := _DURATION.match(value)):
            seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        else:
            raise ValueError(f"expected a duration such as 10s, 5m or 1h, got {value!r}")
    except OverflowError:  # an int of hundreds of digits
        seconds = -math.inf if isinstance(value, int) and value < 0 else math.inf
    if math.isnan(seconds):
        raise ValueError("expected a duration such as 10s, 5m or 1h, got nan")
    if seconds <= 0:
        raise ValueError(f"a duration must be positive, got {_short(value)}")
    if math.isinf(seconds) or seconds > MAX_DURATION:
        raise ValueError(f"a duration must be finite and at most 1000 years, got {_short(value)}")
    if seconds < MIN_DURATION:
        raise ValueError(f"a duration must be at least 1ms, got {_short(value)}")
    return seconds


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} characters)"


Duration = Annotated[float, BeforeValidator(parse_duration)]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$")
_UNIT_BYTES = {
    None: 1,
    "B": 1,
    "KB": 1000,
    "KiB": 1024,
    "MB": 1000**2,
    "MiB": 1024**2,
    "GB": 1000**3,
    "GiB": 1024**3,
}
#: Bounds of a response size cap: below 1 KiB not even an error message fits; above
#: 1 GiB a single response could take the machine's memory.
MIN_SIZE = 1024
MAX_SIZE = 1024**3


def parse_size(value: object) -> int:
    """Bytes from ``1048576``, ``"512KiB"``, ``"16MiB"``, ``"1GiB"`` (or KB, MB, GB: powers
    of 1000); a ValueError for anything else or outside [1 KiB, 1 GiB]."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (match := _SIZE.match(value)):
        size = int(float(match.group(1)) * _UNIT_BYTES[match.group(2)])
    else:
        raise ValueError(f"expected a size such as 512KiB, 16MiB or 1GiB, got {_short(value)}")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"a size must be between 1KiB and 1GiB, got {_short(value)}")
    return size


Size = Annotated[int, BeforeValidator(parse_size)]

#: The largest id a setting may give: ids are stored as int64.
INT64_MAX = 2**63 - 1

#: Endpoint names (as in collector.exchange.endpoints) that take a response size cap.
ENDPOINT_NAMES = tuple(
    sorted(e.name for e in vars(endpoints).values() if isinstance(e, endpoints.Endpoint))
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ExchangeSettings(_Strict):
    base_url: str = "https://www.jex.com"
    #: Per read (connect, each chunk of the body): how long the exchange may stay silent.
    timeout: Duration = 10.0
    #: The whole request (connect, headers and body), however slowly the body trickles
    #: in. On expiry the request fails like a timeout (retried up to max_attempts) and
    #: what had arrived is quarantined. None: the larger of 30 s and twice ``timeout``
    #: (collector.exchange.client.default_request_deadline): the largest documented
    #: response (a 1000-kline page, 250 KB) needs a fraction of that even on a slow link,
    #: and a request held longer makes its job miss rounds. At least ``timeout``.
    request_deadline: Duration | None = None
    #: Response body size caps, decoded (a gzip bomb is stopped while inflating), by
    #: endpoint name (``default``: every endpoint not named), as sizes such as ``16MiB``.
    #: Merged over the client's defaults: 16 MiB, and 64 MiB for exchangeInfo,
    #: optionInfo and contractInfo (collector.exchange.client.MAX_RESPONSE_BYTES_BY_ENDPOINT).
    #: A larger body fails the request and its first part is quarantined.
    max_response_size: dict[str, Size] = Field(default_factory=dict)
    weight_fraction: float = Field(0.8, gt=0, le=1)
    max_attempts: int = Field(4, ge=1, le=10, strict=True)
    concurrency: int = Field(4, ge=1, le=64, strict=True)
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

    @field_validator("max_response_size", mode="before")
    @classmethod
    def _known_endpoints(cls, value: object) -> object:
        if value is None:
            return {}
        if isinstance(value, Mapping):
            unknown = [str(k) for k in value if k not in ("default", *ENDPOINT_NAMES)]
            if unknown:
                raise ValueError(
                    f"unknown endpoint(s) {', '.join(unknown)}; expected default or some of "
                    f"{', '.join(ENDPOINT_NAMES)}"
                )
        return value


#: The environment variables an S3 archive's endpoint and credentials come from (read by
#: the object store client, never by this module): a file holding them would leak them.
AWS_ENVIRONMENT = (
    "AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION "
    "(and AWS_ALLOW_HTTP=true for a plain-http test server)"
)
_CREDENTIAL_KEY = re.compile(
    r"access_key|secret|token|password|credential|endpoint|region|allow_http|key_id",
    re.IGNORECASE,
)
_URI_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_ARCHIVE_FORMS = "a local path (such as data) or s3://bucket/prefix"
#: What collector.storage.location accepts between the slashes of a prefix.
_PREFIX_PART = re.compile(r"[A-Za-z0-9._=+-]+")


def _bucket_problem(bucket: str) -> str | None:
    """Why ``bucket`` is not a valid S3 bucket name (AWS's naming rules), or None."""
    if not 3 <= len(bucket) <= 63:
        return "is 3 to 63 characters long"
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]*[a-z0-9]", bucket):
        return (
            "holds only lowercase letters, digits, '.' and '-', and starts and ends with a "
            "letter or digit"
        )
    if ".." in bucket:
        return "has no '..'"
    if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", bucket):
        return "is not an IP address"
    if bucket.startswith(("xn--", "sthree-", "amzn-s3-demo-")) or bucket.endswith(
        ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
    ):
        return "does not use a prefix or suffix that S3 reserves"
    return None


def _archive_uri(value: str) -> str:
    """``value`` checked as an archive location: a local path (kept as given) or
    ``s3://bucket/prefix`` (scheme lowercased, trailing slashes dropped).

    An s3:// value may hold a credential, so no message repeats it.
    """
    if not value.strip():
        raise ValueError(f"expected {_ARCHIVE_FORMS}, got an empty string")
    scheme = _URI_SCHEME.match(value)
    if scheme is None:
        if value[:3].lower() == "s3:":
            raise ValueError("expected s3://bucket/prefix (with two slashes)")
        return value
    if scheme.group(1).lower() != "s3":
        raise ValueError(
            f"{scheme.group(1)}:// is not supported; expected {_ARCHIVE_FORMS} "
            "(S3 or an S3-compatible store)"
        )
    rest = value[scheme.end() :]
    if "?" in rest or "#" in rest:
        raise ValueError(
            "an s3:// URI takes no query string or fragment; the endpoint and credentials "
            f"come only from the environment variables {AWS_ENVIRONMENT}"
        )
    bucket, _, prefix = rest.partition("/")
    if "@" in bucket:
        raise ValueError(
            "an s3:// URI takes no user:password@ part; credentials come only from the "
            f"environment variables {AWS_ENVIRONMENT}"
        )
    if ":" in bucket:
        raise ValueError(
            "an s3:// URI names a bucket, not a host:port; the endpoint comes only from the "
            f"environment variables {AWS_ENVIRONMENT}"
        )
    problem = _bucket_problem(bucket)
    if problem is not None:
        shown = f" {bucket!r}" if re.fullmatch(r"[\w.-]{1,70}", bucket) else ""
        raise ValueError(f"the bucket name{shown} is not valid: a bucket name {problem}")
    prefix = prefix.rstrip("/")
    for part in prefix.split("/") if prefix else ():
        if part in ("", ".", ".."):
            raise ValueError("the prefix of an s3:// URI has no empty, '.' or '..' parts")
        if not _PREFIX_PART.fullmatch(part):
            raise ValueError(
                "the prefix of an s3:// URI holds only letters, digits and . _ = + - "
                "between its slashes"
            )
    return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``(bucket, prefix)`` of a validated ``s3://bucket/prefix`` (prefix ``""`` when
    absent); a ValueError for anything else."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    return bucket, prefix


def default_state_dir(
    uri: str, shard: str | None, *, environ: Mapping[str, str] | None = None
) -> Path:
    """Where one host keeps its state (write-ahead log, pause file, daemon lock) for the
    archive ``uri`` and ``shard`` (None: one daemon collects everything), when
    ``storage.state_dir`` is not given.

    - a local archive, no shard: the archive folder itself, as before shards existed
      (``data/_wal``, ``data/.collector.lock``);
    - a local archive, a shard: ``<archive>/_local/<shard>``;
    - an S3 archive: ``$XDG_STATE_HOME/jex-collector/<bucket>/<prefix>/<shard or all>``,
      where ``XDG_STATE_HOME`` defaults to ``~/.local/state``, and ``<prefix>`` is the
      prefix with ``/`` replaced by ``_``, or a short hash of the URI when there is no
      prefix. A prefix that already holds ``_`` gets a short hash of itself appended,
      so that ``a/b`` and ``a_b`` never share a folder.
    """
    if not uri.startswith("s3://"):
        return Path(uri) if shard is None else Path(uri) / "_local" / shard
    environ = os.environ if environ is None else environ
    state_home = environ.get("XDG_STATE_HOME", "")
    if not os.path.isabs(state_home):  # the XDG spec: a relative value is ignored
        home = environ.get("HOME")
        state_home = os.path.join(home if home else str(Path.home()), ".local", "state")
    bucket, prefix = split_s3_uri(uri)
    if not prefix:
        folder = _short_hash(uri)
    elif "_" in prefix:
        folder = f"{prefix.replace('/', '_')}-{_short_hash(prefix)}"
    else:
        folder = prefix.replace("/", "_")
    return Path(state_home) / "jex-collector" / bucket / folder / (shard or "all")


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class StorageSettings(_Strict):
    #: The archive: a local path (relative to the working directory, or absolute) or
    #: ``s3://bucket/prefix``. ``data_dir`` is its older name, still accepted.
    uri: str = Field("data", validation_alias=AliasChoices("uri", "data_dir"))
    #: This host's state (write-ahead log, pause file, daemon lock); a local path.
    #: None: :func:`default_state_dir`. See :meth:`Settings.state_dir`.
    state_dir: str | None = None
    flush_every: Duration = 30.0
    #: How often the daemon compacts (collector/storage/compaction.py): closed partitions
    #: whole, and today's flush files merged, so that a query on today opens few files
    #: (at 30 s flushes, a partition gains 20 flush files between two passes).
    compact_every: Duration = 600.0
    #: How long a file replaced by a compaction stays on disk for readers still scanning
    #: an older table version, before vacuum deletes it (None: the table's default,
    #: collector.storage.delta.RETENTION_HOURS).
    retention: Duration | None = None

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: str) -> str:
        return _archive_uri(value)

    @field_validator("state_dir")
    @classmethod
    def _state_dir(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.strip():
            raise ValueError("expected a local path, got an empty string")
        if _URI_SCHEME.match(value) or value[:3].lower() == "s3:":
            raise ValueError(
                "expected a local path: state stays on the host (the write-ahead log, the "
                "pause file and the daemon lock), even when the archive is on S3"
            )
        return value

    @property
    def data_dir(self) -> str:
        """The archive, as :attr:`uri` (the older name; callers move to ``uri``)."""
        return self.uri

    @property
    def is_remote(self) -> bool:
        """Whether the archive is on S3 (or an S3-compatible store)."""
        return self.uri.startswith("s3://")


class JobSettings(_Strict):
    every: Duration
    enabled: bool = True
    markets: tuple[Market, ...] = ("spot", "option", "contract")
    symbols: Literal["all"] | tuple[str, ...] = "all"
    limit: int | None = Field(None, ge=1, strict=True)
    intervals: tuple[str, ...] = ()
    #: trades and klines: how far back to fetch on first start (nothing archived yet).
    backfill: Duration | None = None
    #: trades: on first start, page forwards from this trade id instead (an int64).
    start_id: int | None = Field(None, ge=1, le=INT64_MAX, strict=True)

    #: Set only by selecting a shard (``overrides={"shard": ...}``): the shard's symbol
    #: patterns, which :meth:`wants` honours as well as ``symbols``. Refused in a file.
    shard_symbols: Literal["all"] | tuple[str, ...] = "all"

    @field_validator("symbols", mode="before")
    @classmethod
    def _symbols(cls, value: object) -> object:
        return _symbol_patterns(value)

    @field_validator("shard_symbols", mode="before")
    @classmethod
    def _not_in_a_file(cls, value: object) -> object:
        raise ValueError(
            "not a setting: a shard's symbols go under shards.<name>.symbols, and "
            "--shard <name> applies them"
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
        """Whether ``symbol`` is selected by ``symbols`` (``all``, names or glob patterns)
        and, in a shard's settings, by the shard's ``symbols`` too."""
        return _selects(self.symbols, symbol) and _selects(self.shard_symbols, symbol)


def _symbol_patterns(value: object) -> object:
    if isinstance(value, str):
        return value if value == "all" else (value,)
    if isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(
        f"expected all, a symbol, or a list of symbols or glob patterns, got {value!r}"
    )


def _selects(patterns: Literal["all"] | tuple[str, ...], symbol: str) -> bool:
    if patterns == "all":
        return True
    return any(fnmatch.fnmatchcase(symbol, pattern) for pattern in patterns)


#: Datasets that have a job. ``instruments`` feeds every other job its symbols.
JOB_NAMES = tuple(datasets.DATASETS)

#: Jobs that archive every symbol of a market whatever ``symbols`` says
#: (:func:`collector.collect.jobs.refresh_instruments`): two shards may not share their markets.
WHOLE_MARKET_JOBS = frozenset({"instruments"})


class ShardSettings(_Strict):
    """One collector's share of the archive: ``shards.<name>`` in the file."""

    #: The markets it collects (each job keeps only those of its own markets).
    markets: tuple[Market, ...] = ("spot", "option", "contract")
    #: The jobs it runs: ``all`` (every job under ``jobs:``) or a list of job names.
    jobs: Literal["all"] | tuple[str, ...] = "all"
    #: ``all``, or symbol names and glob patterns; a job's own ``symbols`` still apply.
    symbols: Literal["all"] | tuple[str, ...] = "all"
    #: Whether its daemon compacts the archive. Exactly one shard compacts: when none
    #: says ``compact: true``, the first shard in the file does.
    compact: bool = False

    @field_validator("markets")
    @classmethod
    def _some_markets(cls, value: tuple[Market, ...]) -> tuple[Market, ...]:
        if not value:
            raise ValueError("expected at least one of spot, option, contract")
        return value

    @field_validator("jobs", mode="before")
    @classmethod
    def _jobs(cls, value: object) -> object:
        if value == "all":
            return value
        if isinstance(value, str):
            return (value,)
        if isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ValueError(f"expected all or a list of job names, got {value!r}")

    @field_validator("symbols", mode="before")
    @classmethod
    def _symbols(cls, value: object) -> object:
        patterns = _symbol_patterns(value)
        if isinstance(patterns, tuple) and "" in patterns:
            raise ValueError("a symbol or pattern cannot be empty")
        return patterns


class Settings(_Strict):
    exchange: ExchangeSettings = ExchangeSettings()
    storage: StorageSettings = StorageSettings()
    jobs: dict[str, JobSettings]
    #: Shard name -> its share, in the file's order (empty: one daemon runs everything).
    shards: dict[str, ShardSettings] = Field(default_factory=dict)
    #: The shard these settings are for (None: all jobs, as without shards). Chosen only
    #: by ``overrides={"shard": name}`` or :meth:`for_shard`, never in the file.
    shard: str | None = None
    api_key: SecretStr | None = None
    api_secret: SecretStr | None = None
    source: str = "<defaults>"
    #: (job, market) pairs of enabled jobs that no shard collects, found at validation
    #: (before a shard is chosen, so a shard's settings still report them).
    _unsharded: tuple[tuple[str, str], ...] = PrivateAttr(())

    @field_validator("shards", mode="before")
    @classmethod
    def _no_shards(cls, value: object) -> object:
        return {} if value is None else value

    @field_validator("shard", mode="before")
    @classmethod
    def _shard_not_in_a_file(cls, value: object) -> object:
        raise ValueError("the shard is chosen on the command line (--shard NAME), not in a file")

    @model_validator(mode="after")
    def _deadline_covers_a_read(self) -> Settings:
        exchange = self.exchange
        if exchange.request_deadline is not None and exchange.request_deadline < exchange.timeout:
            raise ValueError(
                "exchange.request_deadline: expected at least exchange.timeout "
                f"({exchange.timeout:g}s), got {exchange.request_deadline:g}s"
            )
        return self

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

    @model_validator(mode="after")
    def _shards_fit_jobs(self) -> Settings:
        self._unsharded = tuple(check_shards(self.shards, self.jobs, WHOLE_MARKET_JOBS))
        return self

    def enabled_jobs(self) -> dict[str, JobSettings]:
        return {name: job for name, job in self.jobs.items() if job.enabled}

    def for_shard(self, name: str) -> Settings:
        """These settings restricted to shard ``name``'s share: jobs it does not run are
        removed, each job keeps the markets the shard collects (a job left with none is
        removed), and each job's :meth:`JobSettings.wants` honours the shard's symbols.

        A :class:`ConfigError` when there is no such shard, or no ``shards`` section.
        Call it on the settings of the whole file (``shard`` None).
        """
        if self.shard is not None and self.shard != name:
            raise ConfigError(
                f"--shard {name}: these settings are already shard {self.shard}'s",
                source=self.source,
                key="shards",
            )
        if not self.shards:
            raise ConfigError(
                f"--shard {name}: the file has no shards section", source=self.source, key="shards"
            )
        if name not in self.shards:
            raise ConfigError(
                f"no shard named {name!r}; the shards are {', '.join(self.shards)}",
                source=self.source,
                key="shards",
            )
        shard = self.shards[name]
        jobs = {
            job_name: job.model_copy(update={"markets": markets, "shard_symbols": shard.symbols})
            for job_name, job in self.jobs.items()
            if (markets := markets_of(job_name, job, shard))
        }
        return self.model_copy(update={"jobs": jobs, "shard": name})

    @property
    def shard_name(self) -> str:
        """The shard, or ``all`` without one: a name for files such as
        ``_state/daemons/<name>.json``."""
        return self.shard or "all"

    @property
    def compacting_shard(self) -> str | None:
        """The shard whose daemon compacts: the one with ``compact: true``, else the first
        (None without shards)."""
        for name, shard in self.shards.items():
            if shard.compact:
                return name
        return next(iter(self.shards), None)

    @property
    def compacts(self) -> bool:
        """Whether this daemon compacts the archive: always without a shard chosen (one
        daemon runs everything), else when the chosen shard is :attr:`compacting_shard`."""
        return self.shard is None or self.shard == self.compacting_shard

    def unsharded(self) -> list[tuple[str, str]]:
        """(job, market) pairs of enabled jobs that no shard collects, for a warning:
        nobody archives them. Empty without shards. Computed from the whole file, so a
        shard's settings (:meth:`for_shard`) report the same pairs."""
        return list(self._unsharded)

    def state_dir(self, environ: Mapping[str, str] | None = None) -> Path:
        """This host's state folder: ``storage.state_dir`` as given, else
        :func:`default_state_dir` of the archive and the chosen shard.

        An explicit ``state_dir`` is used as is, shard or not: two shards on one host
        need two different values (``--state-dir``), or their daemons would share one lock
        and one write-ahead log.
        """
        if self.storage.state_dir is not None:
            return Path(self.storage.state_dir)
        return default_state_dir(self.storage.uri, self.shard, environ=environ)


def _format_location(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item.startswith(("literal[", "tuple[", "function-")):
            continue  # pydantic's names for the branches of a union, not keys of the file
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def _refuse_credentials(node: object, where: str, source: str) -> None:
    """A ConfigError for a key under ``storage`` that looks like an endpoint or a
    credential, however deep: they come only from the environment."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            path = f"{where}.{key}"
            if isinstance(key, str) and _CREDENTIAL_KEY.search(key):
                raise ConfigError(
                    "endpoint and credentials are not read from files; set the environment "
                    f"variables {AWS_ENVIRONMENT}",
                    source=source,
                    key=path,
                )
            _refuse_credentials(value, path, source)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            _refuse_credentials(item, f"{where}[{index}]", source)


def _section(data: Mapping[str, Any], name: str, source: str) -> dict[str, Any]:
    section = data.get(name)
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"expected a mapping, got {section!r}", source=source, key=name)
    return dict(section)


def from_mapping(
    raw: Mapping[str, Any],
    *,
    source: str,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Validate a parsed YAML mapping plus the environment and CLI overrides.

    Overrides (None values are ignored): ``base_url``; ``data_dir`` or ``uri`` (the
    archive, ``storage.uri``); ``state_dir`` (``storage.state_dir``); ``shard`` (return
    the settings of that shard, :meth:`Settings.for_shard`).
    """
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {key: value for key, value in raw.items()}
    exchange = _section(data, "exchange", source)
    storage = _section(data, "storage", source)
    _refuse_credentials(storage, "storage", source)
    if "uri" in storage and "data_dir" in storage:
        raise ConfigError(
            "give uri or data_dir (its older name), not both", source=source, key="storage"
        )
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    if "uri" in given and "data_dir" in given:
        raise ConfigError("give data_dir or uri, not both", source="command line")
    shard: str | None = None
    for key, value in given.items():
        if key == "base_url":
            exchange["base_url"] = value
        elif key in ("data_dir", "uri"):
            storage.pop("data_dir", None)
            storage["uri"] = os.fspath(value) if isinstance(value, os.PathLike) else value
        elif key == "state_dir":
            storage["state_dir"] = os.fspath(value) if isinstance(value, os.PathLike) else value
        elif key == "shard":
            shard = str(value)
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
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = _format_location(error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key (check the spelling against schedules.yaml's comments)"
        more = f" (and {len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
        raise ConfigError(message + more, source=source, key=key) from None
    return settings if shard is None else settings.for_shard(shard)


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

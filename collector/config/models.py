"""The settings as pydantic models: the exchange, the storage, the shards and the whole
file (:class:`Settings`, with its checks across sections and its shard selection)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import (
    AliasChoices,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)

from collector.config.base import Market, _Strict
from collector.config.durations import Duration, Size
from collector.config.jobs import (
    WHOLE_MARKET_JOBS,
    JobSettings,
    _symbol_patterns,
    check_jobs,
)
from collector.config.storage_uri import _URI_SCHEME, _archive_uri, default_state_dir
from collector.errors import ConfigError
from collector.exchange import endpoints
from collector.shards import check_shards, markets_of

#: Endpoint names (as in collector.exchange.endpoints) that take a response size cap.
ENDPOINT_NAMES = tuple(
    sorted(e.name for e in vars(endpoints).values() if isinstance(e, endpoints.Endpoint))
)


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
        check_jobs(self.jobs)
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

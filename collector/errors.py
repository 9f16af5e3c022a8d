"""The project's exceptions, split by what the caller should do about them.

::

    CollectorError                  root: anything this package raises on purpose
    ├── ConfigError                 stop: the configuration is wrong (exit status 2)
    │   └── LegacyArchiveError      stop: the archive needs ``jex-collector migrate`` first
    ├── ExchangeError               a request to the exchange did not give usable data
    │   ├── TransientError          retry later: 5xx, timeout, connection error
    │   ├── RateLimitError          wait: 429 or 418; nothing may be sent until ``retry_at``
    │   │   └── BannedError         418: the IP is banned until ``retry_at``
    │   ├── RequestRejectedError    skip and record: a 4xx with an exchange error code
    │   │   └── UnknownSymbolError  -1121: the symbol is not (or no longer) listed
    │   └── PayloadError            skip and record: the body is not the documented shape
    └── StorageError                stop the flush, keep the rows: the archive could not be written
        ├── FatalStorageError       stop the process: an fsync failed, a retry could lie
        └── ArchiveLockedError      stop: another daemon is collecting into the same archive

Every exception carries its context (endpoint, market, symbol, dataset) as
attributes so a log line or a status report can name where it happened.
Secrets are never part of an exception: the client never puts headers into one.
"""

from __future__ import annotations


class CollectorError(Exception):
    """Root of every exception this package raises on purpose."""


class ConfigError(CollectorError):
    """The configuration file, a CLI flag or an environment variable is wrong.

    ``source`` is the file (or flag) and ``key`` the dotted path of the bad value.
    """

    def __init__(self, message: str, *, source: str = "", key: str = "") -> None:
        self.source = source
        self.key = key
        where = ": ".join(part for part in (source, key) if part)
        super().__init__(f"{where}: {message}" if where else message)


class LegacyArchiveError(ConfigError):
    """``data_dir`` holds an archive in the layout before Delta Lake; the message names
    the ``jex-collector migrate`` command that converts it."""

    def __init__(self, message: str, *, data_dir: str) -> None:
        self.data_dir = data_dir
        super().__init__(message)


class ExchangeError(CollectorError):
    """A request to the exchange did not give usable data."""

    def __init__(
        self,
        message: str,
        *,
        endpoint: str = "",
        market: str | None = None,
        symbol: str | None = None,
        status: int | None = None,
        code: int | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.market = market
        self.symbol = symbol
        self.status = status
        self.code = code
        context = " ".join(
            f"{name}={value}"
            for name, value in (
                ("endpoint", endpoint),
                ("market", market),
                ("symbol", symbol),
                ("status", status),
                ("code", code),
            )
            if value not in (None, "")
        )
        super().__init__(f"{message} [{context}]" if context else message)


class TransientError(ExchangeError):
    """5xx, timeout or connection failure: the outcome is unknown, retrying may help."""


class RateLimitError(ExchangeError):
    """The exchange said 429 (or 418): send nothing until ``retry_at`` (local monotonic s)."""

    def __init__(self, message: str, *, retry_at: float, **context: object) -> None:
        self.retry_at = retry_at
        super().__init__(message, **context)  # type: ignore[arg-type]


class BannedError(RateLimitError):
    """HTTP 418: the IP is banned until ``retry_at``."""


class RequestRejectedError(ExchangeError):
    """The exchange rejected the request (4xx with an error code); retrying will not help."""


class UnknownSymbolError(RequestRejectedError):
    """The exchange does not know the symbol (code -1121)."""


class PayloadError(ExchangeError):
    """The response body is not JSON or not of the documented shape."""


class StorageError(CollectorError):
    """The archive could not be written; the rows stay buffered."""

    def __init__(self, message: str, *, dataset: str = "", path: str = "") -> None:
        self.dataset = dataset
        self.path = path
        super().__init__(message)


class FatalStorageError(StorageError):
    """An fsync failed: stop writing, do not retry.

    After a failed fsync the kernel may already have dropped the dirty pages it could
    not write and marked them clean, so a second fsync can succeed without the data
    ever reaching the disk ("fsyncgate"). The only safe reaction is to stop; the
    write-ahead log still holds the received rows and is replayed at the next start.
    """


class ArchiveLockedError(StorageError):
    """Another daemon holds the archive's lock; ``pid`` is its process id (0 if unknown)."""

    def __init__(self, message: str, *, pid: int, path: str) -> None:
        self.pid = pid
        super().__init__(message, path=path)

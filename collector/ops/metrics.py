"""Prometheus metrics: what the collector did, for an operator's dashboard and alerts.

One :class:`Metrics` object per process owns a registry of its own (never
``prometheus_client``'s global one, so two daemons in one test process do not
mix) and is passed to the client, the writer, the quarantine and the daemon,
which each call one small method where something happens. Values that already
live somewhere (buffered rows, the write-ahead log's size, the weight limit)
are read when Prometheus scrapes, through callbacks, so nothing is kept twice.

``jex-collector run --metrics-port 9108`` serves them (:meth:`Metrics.serve`) on
127.0.0.1 unless ``--metrics-addr`` says otherwise. Every name starts ``jex_``;
the README lists them. Labels are bounded: the endpoint is a request's path
(``/api/v1/spot/depth``, never a URL with its query), datasets, markets, jobs and
statuses are closed sets.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from collector.errors import ConfigError

#: Job rounds last from milliseconds (a ticker) to minutes (a first start's backfill).
JOB_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
#: A flush writes one file per dataset, market and day: milliseconds to seconds.
FLUSH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
DEFAULT_ADDR = "127.0.0.1"


class RoundResultLike(Protocol):
    """What :meth:`Metrics.job_rounds` reads of a :class:`collector.collect.jobs.RoundResult`."""

    @property
    def market(self) -> str: ...

    @property
    def errors(self) -> Sequence[str]: ...

    @property
    def ms(self) -> float: ...


class Metrics:
    """Every metric of the collector, in a registry of its own.

    Thread-safe: the writer flushes in a worker thread and the HTTP server reads
    from its own. ``clock`` gives unix seconds for the last-success gauges.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry()
        self._clock = clock
        r = self.registry
        self._requests = Counter(
            "jex_requests",
            "Requests sent to the exchange, by endpoint path and HTTP status "
            "(timeout or connection_error when no response came).",
            ["endpoint", "status"],
            registry=r,
        )
        self._used_weight = Gauge(
            "jex_exchange_used_weight",
            "Request weight the exchange counts for this IP in the current minute "
            "(X-MBX-USED-WEIGHT-1M of the last response).",
            registry=r,
        )
        self._rate_limited = Counter(
            "jex_rate_limited_responses",
            "429 (rate limited) and 418 (IP banned) responses from the exchange.",
            ["status"],
            registry=r,
        )
        for status in ("429", "418"):  # present at zero: an alert on their rate needs a series
            self._rate_limited.labels(status)
        self._retries = Counter(
            "jex_retries",
            "Requests sent again, by endpoint path and reason (timeout, connection, "
            "http_<status>, rate_limited).",
            ["endpoint", "reason"],
            registry=r,
        )
        self._rows_written = Counter(
            "jex_rows_written",
            "Rows written to Parquet files of the archive, by dataset and market.",
            ["dataset", "market"],
            registry=r,
        )
        self._files_written = Counter(
            "jex_files_written",
            "Parquet files written by flushes, by dataset and market.",
            ["dataset", "market"],
            registry=r,
        )
        self._flush_errors = Counter(
            "jex_flush_errors",
            "Partitions a flush could not write (their rows stay buffered), by dataset.",
            ["dataset"],
            registry=r,
        )
        self._flush_seconds = Histogram(
            "jex_flush_duration_seconds",
            "How long a flush of buffered rows took.",
            buckets=FLUSH_BUCKETS,
            registry=r,
        )
        self._job_seconds = Histogram(
            "jex_job_duration_seconds",
            "How long one round of a job took, by job and market.",
            ["job", "market"],
            buckets=JOB_BUCKETS,
            registry=r,
        )
        self._job_runs = Counter(
            "jex_job_runs",
            "Rounds of a job by job, market and outcome (ok, or error when a symbol or the "
            "whole round failed).",
            ["job", "market", "outcome"],
            registry=r,
        )
        self._job_success = Gauge(
            "jex_job_last_success_timestamp_seconds",
            "Unix time of the end of the last round of a job without any error.",
            ["job", "market"],
            registry=r,
        )
        self._quarantined = Counter(
            "jex_quarantined_payloads",
            "Responses written to the quarantine, by endpoint and kind (invalid_json, "
            "wrong_shape, rejected_records, too_large, deadline_exceeded).",
            ["endpoint", "kind"],
            registry=r,
        )
        self._quarantine_dropped = Counter(
            "jex_quarantine_dropped_payloads",
            "Bad responses not written to the quarantine because its hourly or daily cap "
            "was reached, by endpoint and kind.",
            ["endpoint", "kind"],
            registry=r,
        )
        self._scraped = _ScrapeTime()
        r.register(self._scraped)
        # Memory, CPU and open files of a process that runs for months (process_*).
        ProcessCollector(registry=r)

    # -- the exchange client ---------------------------------------------------------------

    def request(self, endpoint: str, status: int | str) -> None:
        """One request to ``endpoint`` (a path, without the query) got ``status``."""
        self._requests.labels(endpoint, str(status)).inc()

    def used_weight(self, used: int) -> None:
        self._used_weight.set(used)

    def rate_limited(self, status: int) -> None:
        self._rate_limited.labels(str(status)).inc()

    def retry(self, endpoint: str, reason: str) -> None:
        self._retries.labels(endpoint, reason).inc()

    def watch_budget(self, limits: Callable[[], tuple[int, int]]) -> None:
        """``limits()`` gives (the exchange's weight limit per minute, the weight the budget
        allows itself per minute now); read at each scrape."""
        self._scraped.budget = limits

    # -- the writer ------------------------------------------------------------------------

    def written(self, dataset: str, market: str, rows: int) -> None:
        """One Parquet file of ``rows`` rows was written."""
        self._files_written.labels(dataset, market).inc()
        self._rows_written.labels(dataset, market).inc(rows)

    def flush_failed(self, dataset: str) -> None:
        self._flush_errors.labels(dataset).inc()

    def flushed(self, seconds: float) -> None:
        """A flush that had rows to write took ``seconds``."""
        self._flush_seconds.observe(seconds)

    def watch_buffers(self, rows: Callable[[], dict[str, int]]) -> None:
        """``rows()`` gives the rows buffered per dataset; read at each scrape."""
        self._scraped.buffers = rows

    def watch_wal(self, size: Callable[[], int]) -> None:
        """``size()`` gives the bytes in the write-ahead log; read at each scrape."""
        self._scraped.wal = size

    # -- the quarantine --------------------------------------------------------------------

    def quarantined(self, endpoint: str, kind: str) -> None:
        self._quarantined.labels(endpoint, kind).inc()

    def quarantine_dropped(self, endpoint: str, kind: str) -> None:
        self._quarantine_dropped.labels(endpoint, kind).inc()

    # -- the daemon ------------------------------------------------------------------------

    def job_rounds(self, job: str, reports: Iterable[RoundResultLike]) -> None:
        """The reports of one round of ``job`` (one per market, from ``jobs.run_job``)."""
        now = self._clock()
        for report in reports:
            self._job_seconds.labels(job, report.market).observe(report.ms / 1000)
            outcome = "error" if report.errors else "ok"
            self._job_runs.labels(job, report.market, outcome).inc()
            if not report.errors:
                self._job_success.labels(job, report.market).set(now)

    # -- serving ---------------------------------------------------------------------------

    def serve(self, port: int, addr: str = DEFAULT_ADDR) -> MetricsServer:
        """Serve ``/metrics`` over HTTP on ``addr:port`` in a daemon thread (port 0: any free
        port). Raises :class:`ConfigError` naming the flag when the address cannot be bound
        (the port is taken, the address is not this host's)."""
        try:
            server, thread = start_http_server(port, addr=addr, registry=self.registry)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if exc.errno == errno.EADDRINUSE:
                hint, flag = (
                    "another process listens there; choose another --metrics-port",
                    ("--metrics-port"),
                )
            elif exc.errno == errno.EACCES:
                hint, flag = (
                    "ports below 1024 need privileges; choose another --metrics-port",
                    ("--metrics-port"),
                )
            else:
                hint, flag = "give an address of this host with --metrics-addr", "--metrics-addr"
            raise ConfigError(
                f"cannot serve metrics on {addr}:{port}: {reason} ({hint})", source=flag
            ) from None
        return MetricsServer(server, thread)


@dataclass
class MetricsServer:
    """The running ``/metrics`` endpoint; :meth:`close` stops it and frees the port."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def host(self) -> str:
        return str(self.server.server_address[0])

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class _ScrapeTime(Collector):
    """Gauges read from their owners at each scrape."""

    def __init__(self) -> None:
        self.budget: Callable[[], tuple[int, int]] | None = None
        self.buffers: Callable[[], dict[str, int]] | None = None
        self.wal: Callable[[], int] | None = None
        # A dataset once buffered keeps its series (at 0) rather than vanishing from graphs.
        self._datasets: set[str] = set()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self.budget is not None:
            limit, allowed = self.budget()
            yield GaugeMetricFamily(
                "jex_weight_limit",
                "The exchange's request weight limit per minute (from exchangeInfo).",
                value=limit,
            )
            yield GaugeMetricFamily(
                "jex_weight_allowed",
                "Request weight per minute the collector allows itself now (the limit times "
                "exchange.weight_fraction, halved for a while after a 429).",
                value=allowed,
            )
        if self.buffers is not None:
            rows = self.buffers()
            self._datasets |= set(rows)
            family = GaugeMetricFamily(
                "jex_buffered_rows",
                "Rows received and not yet flushed to Parquet, by dataset.",
                labels=["dataset"],
            )
            for name in sorted(self._datasets):
                family.add_metric([name], rows.get(name, 0))
            yield family
        if self.wal is not None:
            yield GaugeMetricFamily(
                "jex_wal_bytes",
                "Bytes in the write-ahead log's open segments (rows not yet known flushed).",
                value=self.wal(),
            )

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())  # the families depend on what is watched; nothing to check up front

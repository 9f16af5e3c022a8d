"""Prometheus metrics: the daemon's endpoint scraped during a run against the simulator,
429 and 418 counted, the writer's and the quarantine's counts, and where it listens."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from collector import cli, datasets
from collector.collect.daemon import Daemon
from collector.collect.quarantine import Quarantine
from collector.errors import BannedError, ConfigError, RateLimitError
from collector.exchange import endpoints
from collector.exchange.client import JexClient
from collector.exchange.endpoints import Endpoint
from collector.ops.metrics import Metrics
from collector.sim import SimExchange, SimServer
from collector.storage.writer import ArchiveWriter
from tests.conftest import fast_settings, unpaced_budget
from tests.test_quarantine import response
from tests.test_storage import T0, trades

#: Not the client's default (1200): the gauge must show what the exchange announced.
SIM_WEIGHT_LIMIT = 2400
#: Longest the daemon runs in the scrape test; it is stopped as soon as a scrape shows
#: rows flushed and a successful round.
MAX_RUN_S = 25.0

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def parse(text: str) -> Samples:
    """Exposition text as {sample name: {sorted label pairs: value}}."""
    samples: Samples = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of ``name``'s samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for k, v in samples.get(name, {}).items() if wanted <= set(k))


def scrape(metrics: Metrics) -> Samples:
    return parse(generate_latest(metrics.registry).decode())


# -- the daemon, scraped over HTTP ---------------------------------------------------------------


def test_the_daemon_serves_metrics_that_tell_what_it_did(
    sim_exchange: SimExchange, tmp_path: Path
) -> None:
    scrapes: list[Samples] = []

    async def scenario(daemon: Daemon) -> tuple[float, float, str]:
        started = time.time()
        run = asyncio.create_task(daemon.run(MAX_RUN_S, handle_signals=False))
        async with httpx.AsyncClient(timeout=5) as http:
            while not run.done():
                await asyncio.sleep(0.5)
                if daemon.metrics_server is None:
                    continue
                response = await http.get(daemon.metrics_server.url)
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/plain")
                scrapes.append(parse(response.text))
                latest = scrapes[-1]
                # Every market's trades flushed: a flush may land between two markets'
                # rounds, so rows of one market say nothing of the others.
                flushed = all(
                    total(latest, "jex_rows_written_total", dataset="trades", market=market)
                    for market in datasets.MARKETS
                )
                if flushed and total(
                    latest, "jex_job_last_success_timestamp_seconds", job="trades"
                ):
                    daemon.stop()
                    break
        url = daemon.metrics_server.url if daemon.metrics_server else ""
        await run
        return started, time.time(), url

    with SimServer(sim_exchange, weight_limit=SIM_WEIGHT_LIMIT) as server:
        settings = fast_settings(server.base_url, tmp_path)
        daemon = Daemon(settings, metrics_address=("127.0.0.1", 0))
        started, ended, url = asyncio.run(scenario(daemon))

    assert url.startswith("http://127.0.0.1:")
    with pytest.raises(httpx.ConnectError):
        httpx.get(url)  # the endpoint closed with the daemon
    assert scrapes, "the endpoint answered while the daemon ran"
    final = scrapes[-1]
    requests = final["jex_requests_total"]
    ok = {dict(k)["endpoint"]: v for k, v in requests.items() if dict(k)["status"] == "200"}
    assert ok["/api/v1/exchangeInfo"] >= 1 and ok["/api/v1/spot/historicalTrades"] >= 1
    assert all(endpoint.startswith("/api/v1/") and "?" not in endpoint for endpoint in ok)
    for market in datasets.MARKETS:
        assert total(final, "jex_rows_written_total", dataset="trades", market=market) > 0
        assert total(final, "jex_files_written_total", dataset="trades", market=market) > 0
    assert total(final, "jex_weight_limit") == SIM_WEIGHT_LIMIT
    assert total(final, "jex_weight_allowed") == int(SIM_WEIGHT_LIMIT * 0.8)
    assert 0 < total(final, "jex_exchange_used_weight") <= SIM_WEIGHT_LIMIT
    assert total(final, "jex_rate_limited_responses_total", status="429") == 0
    assert total(final, "jex_flush_duration_seconds_count") >= 1
    assert total(final, "jex_job_duration_seconds_count", job="depth", market="spot") >= 1
    assert total(final, "jex_job_runs_total", job="trades", outcome="ok") >= 1
    for value in final["jex_job_last_success_timestamp_seconds"].values():
        assert started <= value <= ended
    assert "jex_buffered_rows" in final and total(final, "jex_wal_bytes") >= 0
    assert total(final, "process_resident_memory_bytes") > 0
    # What the run did, counted the same way by the client itself.
    assert total(scrape(daemon.metrics), "jex_requests_total") == daemon.client.stats["requests"]


# -- 429 and 418 from the simulator --------------------------------------------------------------


def test_429_and_418_from_the_simulator_are_counted(sim_exchange: SimExchange) -> None:
    metrics = Metrics()

    async def scenario(base_url: str) -> None:
        def client() -> JexClient:
            # The budget does not know the simulator's low limit (no exchangeInfo was read).
            return JexClient(base_url, budget=unpaced_budget(), max_attempts=1, metrics=metrics)

        async def until_refused(client: JexClient) -> None:
            for _ in range(30):
                await client.get(endpoints.DEPTH, market="spot", params={"symbol": "BTCUSDT"})

        async with client() as first:
            with pytest.raises(RateLimitError) as limited:
                await until_refused(first)
            assert limited.value.status == 429
        # Another process on the same IP, sending during the penalty: banned.
        async with client() as second:
            with pytest.raises(BannedError):
                await second.get(endpoints.DEPTH, market="spot", params={"symbol": "BTCUSDT"})

    with SimServer(sim_exchange, weight_limit=5) as server:
        asyncio.run(scenario(server.base_url))

    samples = scrape(metrics)
    assert total(samples, "jex_rate_limited_responses_total", status="429") == 1
    assert total(samples, "jex_rate_limited_responses_total", status="418") == 1
    depth = "/api/v1/spot/depth"
    assert total(samples, "jex_requests_total", endpoint=depth, status="429") == 1
    assert total(samples, "jex_requests_total", endpoint=depth, status="418") == 1
    assert total(samples, "jex_requests_total", endpoint=depth, status="200") >= 5
    assert total(samples, "jex_exchange_used_weight") >= 5


def test_retries_are_counted_by_endpoint_and_reason() -> None:
    answers = iter([503, 500, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(next(answers), json={"serverTime": 1})

    async def scenario(metrics: Metrics) -> None:
        async with JexClient(
            "https://jex.test",
            transport=httpx.MockTransport(handler),
            budget=unpaced_budget(),
            backoff_base=0.0,
            metrics=metrics,
        ) as client:
            await client.get(endpoints.TIME, params={"unused": "query"})

    metrics = Metrics()
    asyncio.run(scenario(metrics))
    samples = scrape(metrics)
    assert samples["jex_retries_total"] == {
        (("endpoint", "/api/v1/time"), ("reason", "http_503")): 1,
        (("endpoint", "/api/v1/time"), ("reason", "http_500")): 1,
    }
    assert total(samples, "jex_requests_total", endpoint="/api/v1/time") == 3


def test_timeouts_are_counted_as_requests_without_a_status() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    async def scenario(metrics: Metrics) -> None:
        async with JexClient(
            "https://jex.test",
            transport=httpx.MockTransport(handler),
            budget=unpaced_budget(),
            backoff_base=0.0,
            max_attempts=2,
            metrics=metrics,
        ) as client:
            await client.get(Endpoint("ping", "/api/v1/ping", 1))

    metrics = Metrics()
    with pytest.raises(Exception, match="timed out"):
        asyncio.run(scenario(metrics))
    samples = scrape(metrics)
    assert total(samples, "jex_requests_total", status="timeout") == 2
    assert total(samples, "jex_retries_total", reason="timeout") == 1


# -- the writer and the quarantine ---------------------------------------------------------------


def test_the_writer_counts_rows_and_files_per_dataset_and_market(tmp_path: Path) -> None:
    metrics = Metrics()
    writer = ArchiveWriter(tmp_path, wal=True, metrics=metrics)
    writer.add("trades", trades([("spot", "A", 1, T0), ("spot", "A", 2, T0 + 1)]))
    writer.add("trades", trades([("option", "B", 1, T0)]))
    before = scrape(metrics)
    assert total(before, "jex_buffered_rows", dataset="trades") == 3
    assert total(before, "jex_wal_bytes") > 0
    assert "jex_rows_written_total" not in before
    writer.flush()
    after = scrape(metrics)
    assert total(after, "jex_rows_written_total", dataset="trades", market="spot") == 2
    assert total(after, "jex_rows_written_total", dataset="trades", market="option") == 1
    assert total(after, "jex_files_written_total", dataset="trades") == 2
    assert total(after, "jex_buffered_rows", dataset="trades") == 0, "kept at zero, not dropped"
    assert total(after, "jex_flush_duration_seconds_count") == 1
    writer.flush()  # nothing buffered: not a flush worth timing
    assert total(scrape(metrics), "jex_flush_duration_seconds_count") == 1
    writer.close()


def test_a_failed_flush_is_counted_per_dataset(tmp_path: Path) -> None:
    metrics = Metrics()
    blocker = tmp_path / "trades"
    blocker.write_text("a file where the dataset's folder should be")
    writer = ArchiveWriter(tmp_path, metrics=metrics)
    writer.add("trades", trades([("spot", "A", 1, T0)]))
    assert writer.flush().errors
    samples = scrape(metrics)
    assert total(samples, "jex_flush_errors_total", dataset="trades") == 1
    assert "jex_rows_written_total" not in samples
    assert total(samples, "jex_buffered_rows", dataset="trades") == 1


def test_quarantined_and_dropped_payloads_are_counted(tmp_path: Path) -> None:
    metrics = Metrics()
    quarantine = Quarantine(tmp_path, max_files_per_hour=2, metrics=metrics)
    for _ in range(5):
        quarantine(response(), "not valid JSON")
    quarantine.rejected(response(endpoint="klines"), [({"x": 1}, "bad")])
    samples = scrape(metrics)
    assert samples["jex_quarantined_payloads_total"] == {
        (("endpoint", "ticker-24hr"), ("kind", "invalid_json")): 2,
        (("endpoint", "klines"), ("kind", "rejected_records")): 1,
    }
    assert samples["jex_quarantine_dropped_payloads_total"] == {
        (("endpoint", "ticker-24hr"), ("kind", "invalid_json")): 3
    }


def test_a_round_with_errors_does_not_move_the_last_success_time() -> None:
    from collector.collect.jobs import RoundResult

    now = [1000.0]
    metrics = Metrics(clock=lambda: now[0])
    metrics.job_rounds("depth", [RoundResult("depth", "spot", ms=20.0)])
    now[0] = 2000.0
    metrics.job_rounds("depth", [RoundResult("depth", "spot", errors=["BTCUSDT: timed out"])])
    samples = scrape(metrics)
    assert total(samples, "jex_job_last_success_timestamp_seconds", job="depth") == 1000.0
    assert total(samples, "jex_job_runs_total", outcome="ok") == 1
    assert total(samples, "jex_job_runs_total", outcome="error") == 1
    assert total(samples, "jex_job_duration_seconds_sum", job="depth") == pytest.approx(0.02)


def test_two_metrics_objects_do_not_share_counts() -> None:
    first, second = Metrics(), Metrics()
    first.request("/api/v1/time", 200)
    assert total(scrape(first), "jex_requests_total") == 1
    assert total(scrape(second), "jex_requests_total") == 0


# -- where the endpoint listens ------------------------------------------------------------------


def test_metrics_are_served_on_loopback_by_default() -> None:
    server = Metrics().serve(0)
    try:
        assert server.host == "127.0.0.1"
        assert httpx.get(server.url).status_code == 200
    finally:
        server.close()
    options = {p.name: p for p in cli.run.params}
    assert options["metrics_port"].default is None, "off unless asked for"
    run_help = subprocess.run(
        [sys.executable, "-m", "collector", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "--metrics-port" in run_help and "127.0.0.1" in run_help


def test_a_port_in_use_names_the_port_and_the_flag(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"127\.0\.0\.1:{port}.*--metrics-port"):
            Metrics().serve(port)
        config = tmp_path / "schedules.yaml"
        config.write_text("exchange: {base_url: 'http://127.0.0.1:9'}\njobs: {}\n")
        result = subprocess.run(
            [
                *(sys.executable, "-m", "collector", "run", "--config", str(config)),
                *("--data-dir", str(tmp_path / "data"), "--metrics-port", str(port)),
                *("--duration", "30"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2, result.stderr
    assert f"127.0.0.1:{port}" in result.stderr and "--metrics-port" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_metrics_address_without_a_port_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "schedules.yaml"
    config.write_text("jobs: {}\n")
    result = subprocess.run(
        [sys.executable, "-m", "collector", "run", "--config", str(config), "--metrics-addr", "::"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2 and "--metrics-addr needs --metrics-port" in result.stderr


def test_the_metrics_benchmark_runs() -> None:
    """bench/bench_metrics.py at a tiny size, so that it does not rot (no time is read)."""
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [
            *(sys.executable, str(root / "bench" / "bench_metrics.py")),
            *("--requests", "20", "--adds", "30", "--rounds", "1"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=root,
    )
    assert "JexClient.get" in result.stdout and "one scrape" in result.stdout


def test_a_request_cancelled_at_shutdown_is_counted(tmp_path: Path) -> None:
    """Issue 14, case 14: the metrics' request count equals the client's even when a
    request is cut short (the daemon's shutdown cancels what is in flight)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    release = threading.Event()

    class Slow(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            release.wait(5)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"[]")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    metrics = Metrics()

    async def scenario() -> int:
        client = JexClient(
            f"http://127.0.0.1:{server.server_address[1]}",
            budget=unpaced_budget(),
            metrics=metrics,
        )
        call = asyncio.create_task(
            client.get(endpoints.DEPTH, market="spot", params={"symbol": "BTCUSDT"})
        )
        await asyncio.sleep(0.3)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await client.aclose()
        return client.stats["requests"]

    try:
        sent = asyncio.run(scenario())
    finally:
        release.set()
        server.shutdown()
        server.server_close()
    assert sent == 1
    assert total(scrape(metrics), "jex_requests_total") == 1
    assert total(scrape(metrics), "jex_requests_total", status="cancelled") == 1

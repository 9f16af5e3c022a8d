"""Crash safety end to end: kill -9 at random moments, full disks, failing fsyncs.

Each test ends with the same audit of the archive (:func:`audit`): every file opens,
the views see no temporary file, no dataset has a duplicate key, no trade, funding or
protection-fund id is missing against the simulator's truth, and (where the daemon's
log lines are available) every snapshot row a job reported receiving is archived.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from collector import config, datasets
from collector.collect.daemon import Daemon
from collector.errors import FatalStorageError
from collector.read import catalog
from collector.sim import SimExchange, SimServer
from collector.storage import delta
from collector.storage.wal import WAL_DIR, read_stream
from tests.disk_faults import Disk

#: Datasets whose rows are snapshots (no id to re-fetch them by).
SNAPSHOTS = ("depth", "ticker_price", "book_ticker", "avg_price", "indices_price", "contract_info")
JOB_LINE = re.compile(r"job (\w+) market=(\w+) symbols=\d+ rows=(\d+)")


def settings_for(base_url: str, data_dir: Path, **storage: Any) -> config.Settings:
    """A fast schedule: flush every second, trades/funding/fund every second."""
    raw = {
        "exchange": {"base_url": base_url, "timeout": "5s", "max_attempts": 2},
        "storage": {"data_dir": str(data_dir), "flush_every": "1s", **storage},
        "jobs": JOBS,
    }
    return config.from_mapping(raw, source="<test>", environ={"JEX_API_KEY": "test-key"})


JOBS: dict[str, Any] = {
    "funding_rate": {"every": "1s", "markets": ["contract"]},
    "protection_fund": {"every": "1s", "markets": ["contract"]},
    "trades": {"every": "1s", "markets": ["spot", "contract"], "backfill": "2m"},
    "depth": {"every": "1s", "markets": ["spot", "contract"], "limit": 5},
    "ticker_price": {"every": "1s"},
    "indices_price": {"every": "1s", "markets": ["contract"]},
    "book_ticker": {"every": "2s"},
    "avg_price": {"every": "2s", "markets": ["spot"]},
    "contract_info": {"every": "2s", "markets": ["contract"]},
    "instruments": {"every": "1h"},
}


# -- the audit -------------------------------------------------------------------------------


@dataclass
class Audit:
    files: int = 0
    unreadable: list[str] = field(default_factory=list)
    temporary: list[str] = field(default_factory=list)
    duplicates: dict[str, int] = field(default_factory=dict)
    missing_ids: dict[str, int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    lost_snapshot_rows: dict[str, int] = field(default_factory=dict)

    def problems(self) -> list[str]:
        found = [f"unreadable {p}" for p in self.unreadable]
        found += [f"visible temporary file {p}" for p in self.temporary]
        found += [f"{n} duplicate key(s) in {d}" for d, n in self.duplicates.items() if n]
        found += [f"{n} missing id(s) in {d}" for d, n in self.missing_ids.items() if n]
        found += [f"{n} lost row(s) of {d}" for d, n in self.lost_snapshot_rows.items() if n]
        return found

    def summary(self) -> str:
        return (
            f"files={self.files} unreadable={len(self.unreadable)} "
            f"temporary={len(self.temporary)} duplicates={sum(self.duplicates.values())} "
            f"missing_ids={sum(self.missing_ids.values())} "
            f"lost_snapshot_rows={sum(self.lost_snapshot_rows.values())} rows={self.rows}"
        )


def query(data_dir: Path, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    table = catalog.query(data_dir, sql, params or None)
    columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
    return list(zip(*columns, strict=True))


def audit(data_dir: Path, truth: SimExchange, logged: Counter[tuple[str, str]] | None) -> Audit:
    """Check the archive; ``logged`` is rows per (snapshot dataset, market) the jobs reported."""
    result = Audit()
    for name in datasets.DATASETS:
        # What every Delta reader reads: the files of the table's current version.
        table = delta.open_table(data_dir, name)
        for file in delta.files(table, name) if table is not None else []:
            path = delta.file_path(data_dir, name, file.path)
            result.files += 1
            try:
                pq.ParquetFile(path).read()
            except Exception:
                result.unreadable.append(path)
    for name, spec in datasets.DATASETS.items():
        key = ", ".join(spec.key)
        ((rows, distinct),) = query(
            data_dir, f"SELECT count(*), count(DISTINCT ({key})) FROM {name}"
        )
        result.rows[name] = rows
        result.duplicates[name] = rows - distinct
    missing = 0
    for market, symbol, first, last in query(
        data_dir,
        "SELECT market, symbol, min(trade_id), max(trade_id) FROM trades GROUP BY ALL",
    ):
        expected = {t.id for t in truth.trades_from_id(market, symbol, first, last - first + 1)}
        archived = {
            r[0]
            for r in query(
                data_dir,
                "SELECT trade_id FROM trades WHERE market = $m AND symbol = $s",
                m=market,
                s=symbol,
            )
        }
        missing += len(expected - archived)
    result.missing_ids["trades"] = missing
    for dataset, events in (
        ("funding_rate", truth.funding_rates),
        ("protection_fund", truth.protection_fund),
    ):
        missing = 0
        for symbol, first, last in query(
            data_dir, f"SELECT symbol, min(id), max(id) FROM {dataset} GROUP BY 1"
        ):
            expected = {
                e.id for e in events(symbol, 0, truth.now_ms() + 1) if first <= e.id <= last
            }
            archived = {
                r[0]
                for r in query(data_dir, f"SELECT id FROM {dataset} WHERE symbol = $s", s=symbol)
            }
            missing += len(expected - archived)
        result.missing_ids[dataset] = missing
    if logged is not None:
        archived_by_market = Counter(
            {
                (name, market): count
                for name in SNAPSHOTS
                for market, count in query(
                    data_dir, f"SELECT market, count(*) FROM {name} GROUP BY 1"
                )
            }
        )
        for (name, market), count in logged.items():
            lost = max(0, count - archived_by_market[(name, market)])
            result.lost_snapshot_rows[name] = result.lost_snapshot_rows.get(name, 0) + lost
    return result


def logged_rows(lines: list[str]) -> Counter[tuple[str, str]]:
    """Rows per (snapshot dataset, market) that job log lines report as received."""
    counts: Counter[tuple[str, str]] = Counter()
    for line in lines:
        match = JOB_LINE.search(line)
        if match and match[1] in SNAPSHOTS:
            counts[(match[1], match[2])] += int(match[3])
    return counts


class JobLines(logging.Handler):
    """Collects the daemon's job lines in-process."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def job_lines() -> Iterator[JobLines]:
    handler = JobLines()
    jobs_log = logging.getLogger("collector.collect.jobs")
    previous = jobs_log.level
    jobs_log.setLevel(logging.INFO)
    jobs_log.addHandler(handler)
    try:
        yield handler
    finally:
        jobs_log.removeHandler(handler)
        jobs_log.setLevel(previous)


def received_ms(data_dir: Path, dataset: str) -> set[int]:
    return {r[0] for r in query(data_dir, f"SELECT DISTINCT epoch_ms(received_at) FROM {dataset}")}


# -- full disk and failing fsync, in-process ---------------------------------------------------


def test_a_full_disk_stops_nothing_and_every_row_lands_once_when_space_returns(
    sim_exchange: SimExchange, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    disk = Disk()
    data_dir = tmp_path / "data"

    async def scenario(daemon: Daemon) -> None:
        running = asyncio.create_task(daemon.run(8, handle_signals=False))
        await asyncio.sleep(2.5)
        disk.full = True
        await asyncio.sleep(3)
        disk.full = False
        await running  # the daemon did not stop: it runs its full 8 s

    with SimServer(sim_exchange) as server, job_lines() as lines:
        daemon = Daemon(settings_for(server.base_url, data_dir), writer=disk.writer(data_dir))
        with caplog.at_level(logging.ERROR):
            asyncio.run(scenario(daemon))

    # Both the log's appends and the Parquet files met the full disk ...
    assert disk.log_enospc > 0 and disk.file_enospc > 0
    assert "the disk is full: free space or move storage.uri" in caplog.text
    # ... and yet every row a job reported receiving is archived, once.
    found = audit(data_dir, sim_exchange, logged_rows(lines.lines))
    assert found.problems() == [], found.summary()
    assert not list((data_dir / WAL_DIR).glob("*/*"))


def test_a_failed_fsync_stops_the_daemon_and_the_next_start_loses_nothing(
    sim_exchange: SimExchange, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    disk = Disk()
    data_dir = tmp_path / "data"

    async def scenario(daemon: Daemon) -> None:
        running = asyncio.create_task(daemon.run(60, handle_signals=False))
        await asyncio.sleep(2.5)
        disk.fsync_fails = True
        await running

    with SimServer(sim_exchange) as server, job_lines() as lines:
        settings = settings_for(server.base_url, data_dir)
        daemon = Daemon(settings, writer=disk.writer(data_dir))
        with caplog.at_level(logging.ERROR), pytest.raises(FatalStorageError) as stopped:
            asyncio.run(scenario(daemon))
        assert "fsync of" in str(stopped.value) and "is replayed" in str(stopped.value)
        assert "restart: the write-ahead log" in caplog.text
        in_log: set[tuple[str, int]] = set()  # (dataset, received_at) of snapshot rows
        for name in SNAPSHOTS:
            for path in (data_dir / WAL_DIR).glob(f"*/{name}.arrows"):
                for table in read_stream(str(path), name)[0]:
                    in_log |= {(name, t.value) for t in table["received_at"]}
        assert in_log  # the stopped daemon left rows in its log

        asyncio.run(Daemon(settings).run(3, handle_signals=False))

    archived = {(name, t) for name in SNAPSHOTS for t in received_ms(data_dir, name)}
    assert in_log <= archived
    found = audit(data_dir, sim_exchange, logged_rows(lines.lines))
    assert found.problems() == [], found.summary()


def test_a_really_full_filesystem(
    sim_exchange: SimExchange, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The same on a small tmpfs filled up for real (skipped where mounting is not allowed)."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(
        # Room for what the daemon writes before the ballast (a first start's history and its
        # write-ahead log): the disk must fill because of the ballast, not by itself.
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        data_dir = mount_point / "data"
        ballast = mount_point / "ballast"

        def fill() -> None:
            with contextlib.suppress(OSError), open(ballast, "wb") as handle:
                while True:
                    handle.write(b"\0" * 65536)
                    handle.flush()

        async def scenario(daemon: Daemon) -> None:
            running = asyncio.create_task(daemon.run(8, handle_signals=False))
            await asyncio.sleep(2.5)
            await asyncio.to_thread(fill)
            await asyncio.sleep(3)
            ballast.unlink()
            await running

        with SimServer(sim_exchange) as server, job_lines() as lines:
            daemon = Daemon(settings_for(server.base_url, data_dir))
            with caplog.at_level(logging.ERROR):
                asyncio.run(scenario(daemon))

        assert "No space left on device (the disk is full" in caplog.text
        found = audit(data_dir, sim_exchange, logged_rows(lines.lines))
        assert found.problems() == [], found.summary()
        assert not list((data_dir / WAL_DIR).glob("*/*"))
    finally:
        # A file still open on the tmpfs (a leak) makes umount fail: detach it anyway, and fail.
        unmounted = subprocess.run(["umount", str(mount_point)], capture_output=True, check=False)
        if unmounted.returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=False)
        assert unmounted.returncode == 0, f"files left open: {unmounted.stderr.decode()}"


# -- the kill -9 loop ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def simulator_process(seed: int, log_path: Path) -> Iterator[str]:
    """``jex-collector sim`` in a process of its own, so it outlives every collector."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    with (
        open(log_path, "w") as log_file,
        subprocess.Popen(
            [
                *(sys.executable, "-m", "collector", "sim"),
                *("--port", str(port), "--seed", str(seed)),
                # No 429s: they would only slow the test down, not change what it checks.
                *("--weight-limit", "100000"),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        ) as sim,
    ):
        try:
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{base_url}/api/v1/time", timeout=1).status_code == 200:
                        break
                assert sim.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "the simulator did not start"
                time.sleep(0.2)
            yield base_url
        finally:
            sim.terminate()
            sim.wait(timeout=10)


def test_kill_9_at_random_moments_loses_and_duplicates_nothing(
    tmp_path: Path, long_run: bool
) -> None:
    kills = 30 if long_run else 6
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    data_dir = tmp_path / "data"
    config_path = tmp_path / "schedules.yaml"
    config_path.write_text(
        "storage: {flush_every: 1s}\njobs:\n"
        + "".join(f"  {name}: {settings}\n" for name, settings in _yaml_jobs().items())
    )
    env = {**os.environ, "JEX_API_KEY": "test-key", "PYTHONUNBUFFERED": "1"}
    logs: list[Path] = []
    with simulator_process(3, tmp_path / "sim.log") as base_url:
        truth = SimExchange(seed=3)  # the same market as the simulator process
        command = [
            *(sys.executable, "-m", "collector", "run", "--config", str(config_path)),
            *("--data-dir", str(data_dir), "--base-url", base_url),
        ]
        for run in range(kills + 1):
            logs.append(tmp_path / f"run-{run}.log")
            with (
                open(logs[-1], "w") as log_file,
                subprocess.Popen(command, env=env, stdout=log_file, stderr=log_file) as daemon,
            ):
                if run < kills:
                    if rng.random() < 0.25:  # during start-up, often mid-replay
                        time.sleep(rng.uniform(0.2, 2.0))
                    else:  # while collecting: mid-job, mid-flush, mid-append
                        _wait_for(logs[-1], "collecting from", daemon)
                        time.sleep(rng.uniform(0.5, 5.0))
                    daemon.send_signal(signal.SIGKILL)
                    daemon.wait(timeout=30)
                else:  # a last, clean run: collect a few seconds, then SIGTERM
                    _wait_for(logs[-1], "flushed", daemon)
                    time.sleep(2)
                    daemon.send_signal(signal.SIGTERM)
                    assert daemon.wait(timeout=30) == 0, logs[-1].read_text()
    lines = [line for path in logs for line in path.read_text().splitlines()]
    found = audit(data_dir, truth, logged_rows(lines))
    replays = sum("write-ahead log: replayed" in line for line in lines)
    print(f"\nkill loop (seed {seed}): kills={kills} replays={replays} {found.summary()}")
    assert found.problems() == [], f"seed {seed}: {found.summary()}"
    assert found.rows["depth"] and found.rows["trades"]
    assert not list((data_dir / WAL_DIR).glob("*/*")), "a clean stop leaves no log behind"


def _yaml_jobs() -> dict[str, str]:
    def flow(value: Any) -> str:
        if isinstance(value, dict):
            return "{" + ", ".join(f"{k}: {flow(v)}" for k, v in value.items()) + "}"
        if isinstance(value, list):
            return "[" + ", ".join(flow(v) for v in value) + "]"
        return str(value)

    return {name: flow(job) for name, job in JOBS.items()}


def _wait_for(log_path: Path, text: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while text not in log_path.read_text():
        assert process.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, f"no {text!r} in {log_path}"
        time.sleep(0.1)

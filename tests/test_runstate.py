"""The daemon's state file: what it records, that it is atomic, and that it never fails."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import threading
from pathlib import Path

import pytest

from collector import runstate
from collector.daemon import Daemon
from collector.jobs import JobReport
from collector.sim import SimServer
from tests.conftest import fast_settings

T0 = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)
API_KEY = "test-key-0123456789abcdef"


class FakeClock:
    def __init__(self, now: dt.datetime = T0) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def new_state(data_dir: Path, clock: FakeClock, **job_overrides: object) -> runstate.RunState:
    settings = fast_settings("http://127.0.0.1:9", data_dir, **job_overrides)
    state = runstate.RunState(data_dir, redact=[API_KEY], clock=clock)
    state.started(settings.enabled_jobs())
    return state


def test_a_round_is_recorded_per_market_with_outcome_and_streaks(tmp_path: Path) -> None:
    clock = FakeClock()
    state = new_state(tmp_path, clock)
    state.collecting({"depth": 5.0})
    state.record("depth", [JobReport("depth", "spot", symbols=3, rows=30, ms=12.5)])
    clock.advance(10)
    state.record("depth", [JobReport("depth", "spot", symbols=3, errors=["BTCUSDT: boom"])])
    clock.advance(10)
    state.record("depth", [JobReport("depth", "spot", symbols=3, errors=["a", "b", "c"])])
    state.save(force=True)

    saved = runstate.load(tmp_path)
    assert saved is not None
    assert saved.phase == "collecting"
    assert saved.jobs["depth"].every_s == 5.0  # the plan's interval
    assert saved.jobs["depth"].configured_every_s == 2.0  # schedules.yaml's
    spot = saved.jobs["depth"].markets["spot"]
    # The partial run (one symbol of three failed) still counts as a success.
    assert spot.last_success_at == runstate.iso(T0 + dt.timedelta(seconds=10))
    assert spot.last_failure_at == runstate.iso(T0 + dt.timedelta(seconds=20))
    assert (spot.last_outcome, spot.last_failure_outcome) == ("failed", "failed")
    assert (spot.last_error, spot.last_failure_errors) == ("a", 3)
    assert (spot.consecutive_failures, spot.runs, spot.failed_runs) == (1, 3, 1)
    assert saved.jobs["instruments"].markets.keys() == {runstate.ALL_MARKETS}


def test_errors_are_redacted_cut_and_on_one_line(tmp_path: Path) -> None:
    state = new_state(tmp_path, FakeClock())
    error = f"rejected: bad key {API_KEY}\n<html>" + "x" * 1000
    state.record("trades", [JobReport("trades", "spot", symbols=1, errors=[error])])
    state.record_failure("klines", RuntimeError(f"header X-JEX-APIKEY: {API_KEY}"))
    state.save(force=True)

    text = runstate.state_path(tmp_path).read_text()
    assert API_KEY not in text
    saved = runstate.load(tmp_path)
    assert saved is not None
    trades = saved.jobs["trades"].markets["spot"].last_error
    assert trades is not None
    assert trades.startswith("rejected: bad key <redacted> <html>xxx")
    assert len(trades) == runstate.ERROR_CHARS
    klines = saved.jobs["klines"].markets
    assert {r.last_error for r in klines.values()} == {
        "RuntimeError: header X-JEX-APIKEY: <redacted>"
    }
    assert all(r.consecutive_failures == 1 for r in klines.values())


def test_track_records_the_round_and_when_it_is_under_way(tmp_path: Path) -> None:
    clock = FakeClock()
    state = new_state(tmp_path, clock)
    seen: list[str | None] = []

    async def round_() -> list[JobReport]:
        seen.append(state.state.jobs["depth"].running_since)
        return [JobReport("depth", "spot", symbols=1, rows=5)]

    async def failing() -> list[JobReport]:
        raise RuntimeError("surprise")

    asyncio.run(state.track("depth", round_()))
    with pytest.raises(RuntimeError):
        asyncio.run(state.track("klines", failing()))

    assert seen == [runstate.iso(T0)]
    assert state.state.jobs["depth"].running_since is None
    assert state.state.jobs["depth"].markets["spot"].last_rows == 5
    assert state.state.jobs["klines"].markets["spot"].last_error == "RuntimeError: surprise"


def test_a_write_that_fails_is_logged_once_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "_state").write_text("a file where the folder should be")
    state = runstate.RunState(tmp_path, clock=FakeClock())
    with caplog.at_level(logging.WARNING, logger="collector.runstate"):
        results = [state.save(force=True) for _ in range(3)]
        state.record("depth", [JobReport("depth", "spot")])
        state.stopped()
    assert results == [False, False, False]
    assert len([r for r in caplog.records if "could not write" in r.message]) == 1
    assert not list(tmp_path.glob(".daemon.json*"))


def test_writes_are_throttled_but_not_lost(tmp_path: Path) -> None:
    seconds = [100.0]
    settings = fast_settings("http://127.0.0.1:9", tmp_path)
    state = runstate.RunState(tmp_path, clock=FakeClock(), monotonic=lambda: seconds[0])
    state.started(settings.enabled_jobs())
    path = runstate.state_path(tmp_path)
    before = path.read_text()
    seconds[0] += 0.5
    state.record("depth", [JobReport("depth", "spot", rows=7)])
    assert path.read_text() == before  # held back by the throttle...
    seconds[0] += 0.5
    state.record("depth", [JobReport("depth", "spot", rows=8)])
    assert '"last_rows": 8' in path.read_text()  # ...and written a second after the last


def test_the_daemon_keeps_the_state_current_and_atomic(
    sim_server: SimServer, tmp_path: Path
) -> None:
    """Read the file while the daemon runs: always whole JSON, the heartbeat moving,
    jobs succeeding; after the run, a clean stop."""
    settings = fast_settings(sim_server.base_url, tmp_path)
    path = runstate.state_path(tmp_path)
    snapshots: list[dict[str, object]] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            try:
                text = path.read_text()
            except FileNotFoundError:
                continue
            snapshots.append(json.loads(text))  # a torn write would raise here
            done.wait(0.05)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        asyncio.run(Daemon(settings).run(5.0, handle_signals=False))
    finally:
        done.set()
        thread.join()

    running = [s for s in snapshots if s["stopped_at"] is None]
    beats = {s["heartbeat_at"] for s in running}
    assert len(beats) >= 3, "the heartbeat was not rewritten while running"
    assert {s["pid"] for s in snapshots} == {os.getpid()}
    assert any(s["phase"] == "collecting" for s in running)
    final = runstate.load(tmp_path)
    assert final is not None
    assert final.phase == "stopped" and final.stopped_at is not None
    assert final.jobs["depth"].markets["spot"].last_success_at is not None
    assert final.jobs["depth"].markets["spot"].last_symbols == 3
    assert not list(path.parent.glob(".*.tmp"))

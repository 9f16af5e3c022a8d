"""The daemons' state files: what they record, that they are atomic and never fail,
several daemons (shards) in one archive, the file of the release before shards, and an
archive on an object store."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import socket
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.collect.daemon import Daemon
from collector.collect.jobs import RoundResult
from collector.ops import runstate
from collector.sim import SimServer
from collector.storage.location import Archive
from tests.conftest import fast_settings
from tests.s3server import start_seaweedfs

T0 = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)
API_KEY = "test-key-0123456789abcdef"


class FakeClock:
    def __init__(self, now: dt.datetime = T0) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def new_state(
    data_dir: Path | str, clock: FakeClock, name: str = "all", **job_overrides: object
) -> runstate.RunState:
    settings = fast_settings("http://127.0.0.1:9", Path("unused"), **job_overrides)
    state = runstate.RunState(data_dir, name=name, redact=[API_KEY], clock=clock)
    state.started(settings.enabled_jobs())
    return state


def state_path(data_dir: Path, name: str = "all") -> Path:
    return data_dir / "_state" / "daemons" / f"{name}.json"


BUCKET = "archive"


@contextlib.contextmanager
def s3_server_bucket() -> Iterator[str]:
    """A SeaweedFS S3 server with bucket ``archive``, its endpoint and credentials in the
    environment (only there) until the block ends; yields ``s3://archive``."""
    server = start_seaweedfs(Path(tempfile.mkdtemp(prefix="weed-")))
    server.cleanup.append(Path(server.log_path).parent)
    try:
        server.create_bucket(BUCKET)
        with pytest.MonkeyPatch.context() as env:
            for name in list(os.environ):
                if name.startswith(("AWS_", "DUCKDB_S3_")):
                    env.delenv(name)
            for name, value in server.env().items():
                env.setenv(name, value)
            yield f"s3://{BUCKET}"
    finally:
        server.stop()


def fresh_prefix(bucket: str) -> str:
    return f"{bucket}/{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def s3_bucket() -> Iterator[str]:
    with s3_server_bucket() as bucket:
        yield bucket


def test_a_round_is_recorded_per_market_with_outcome_and_streaks(tmp_path: Path) -> None:
    clock = FakeClock()
    state = new_state(tmp_path, clock)
    state.collecting({"depth": 5.0})
    state.record("depth", [RoundResult("depth", "spot", symbols=3, rows=30, ms=12.5)])
    clock.advance(10)
    state.record("depth", [RoundResult("depth", "spot", symbols=3, errors=["BTCUSDT: boom"])])
    clock.advance(10)
    state.record("depth", [RoundResult("depth", "spot", symbols=3, errors=["a", "b", "c"])])
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
    state.record("trades", [RoundResult("trades", "spot", symbols=1, errors=[error])])
    state.record_failure("klines", RuntimeError(f"header X-JEX-APIKEY: {API_KEY}"))
    state.save(force=True)

    text = state_path(tmp_path).read_text()
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

    async def round_() -> list[RoundResult]:
        seen.append(state.state.jobs["depth"].running_since)
        return [RoundResult("depth", "spot", symbols=1, rows=5)]

    async def failing() -> list[RoundResult]:
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
    with caplog.at_level(logging.WARNING, logger="collector.ops.runstate"):
        results = [state.save(force=True) for _ in range(3)]
        state.record("depth", [RoundResult("depth", "spot")])
        state.stopped()
    assert results == [False, False, False]
    assert len([r for r in caplog.records if "could not write" in r.message]) == 1
    assert not list(tmp_path.rglob("*.tmp"))
    # Once the folder can be made, the next write works and says so.
    (tmp_path / "_state").unlink()
    with caplog.at_level(logging.INFO, logger="collector.ops.runstate"):
        assert state.save(force=True)
    assert "is written again" in caplog.text
    saved = runstate.load(tmp_path)
    assert saved is not None and saved.phase == "stopped"


def test_results_wait_for_the_heartbeat_which_writes_at_most_once_a_second(
    tmp_path: Path,
) -> None:
    seconds = [100.0]
    clock = FakeClock()
    settings = fast_settings("http://127.0.0.1:9", tmp_path)
    state = runstate.RunState(tmp_path, clock=clock, monotonic=lambda: seconds[0])
    state.started(settings.enabled_jobs())
    path = state_path(tmp_path)
    before = path.read_text()
    seconds[0] += 0.5
    state.record("depth", [RoundResult("depth", "spot", rows=7)])
    assert path.read_text() == before  # held back for the heartbeat...
    assert asyncio.run(state.beat()) is True
    assert '"last_rows": 7' in path.read_text()  # ...which writes it
    seconds[0] += 1.0
    clock.advance(1.0)
    assert asyncio.run(state.beat()) is False  # nothing new, heartbeat not due
    assert json.loads(path.read_text())["heartbeat_at"] == runstate.iso(T0)
    seconds[0] += runstate.HEARTBEAT_EVERY_S
    clock.advance(runstate.HEARTBEAT_EVERY_S)
    assert asyncio.run(state.beat()) is True  # the heartbeat alone
    assert json.loads(path.read_text())["heartbeat_at"] == runstate.iso(clock.now)


@dataclasses.dataclass(frozen=True)
class SlowArchive(Archive):
    """A local archive whose second write (the heartbeat's) waits for ``release``."""

    release: threading.Event = dataclasses.field(default_factory=threading.Event)
    writes: list[bytes] = dataclasses.field(default_factory=list)

    def write_bytes(self, relative: str, data: bytes) -> None:
        self.writes.append(data)
        if len(self.writes) == 2:
            self.release.wait(5)
        super().write_bytes(relative, data)


def test_a_heartbeat_still_writing_at_shutdown_never_overwrites_the_stopped_state(
    tmp_path: Path,
) -> None:
    """The heartbeat writes in a worker thread; the daemon cancels it and writes the
    stopped state while that write (a slow object store) is still under way. The stopped
    state must be the one that stays."""
    archive = SlowArchive(str(tmp_path.resolve()))
    settings = fast_settings("http://127.0.0.1:9", tmp_path)
    state = runstate.RunState(archive, clock=FakeClock())
    state.started(settings.enabled_jobs())
    state.record("depth", [RoundResult("depth", "spot", rows=7)])

    async def shutdown() -> None:
        beat = asyncio.create_task(state.beat())
        await asyncio.sleep(0.1)  # the thread is inside the slow write
        beat.cancel()
        threading.Timer(0.2, archive.release.set).start()
        state.stopped()  # waits for the slow write, then writes its own

    asyncio.run(shutdown())
    saved = runstate.load(tmp_path)
    assert saved is not None
    assert saved.phase == "stopped" and saved.stopped_at is not None
    assert len(archive.writes) == 3


def test_the_daemon_keeps_the_state_current_and_atomic(
    sim_server: SimServer, tmp_path: Path
) -> None:
    """Read the file while the daemon runs: always whole JSON, the heartbeat moving,
    jobs succeeding; after the run, a clean stop."""
    settings = fast_settings(sim_server.base_url, tmp_path)
    path = state_path(tmp_path)
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


# -- several daemons, names, the file before shards ------------------------------------------


def test_two_shards_keep_a_state_file_each(tmp_path: Path) -> None:
    spot = new_state(tmp_path, FakeClock(), name="spot")
    derivs = new_state(tmp_path, FakeClock(T0 + dt.timedelta(seconds=5)), name="derivs")
    spot.record("depth", [RoundResult("depth", "spot", symbols=3, rows=30)])
    derivs.record("depth", [RoundResult("depth", "option", symbols=2, errors=["x", "y"])])
    spot.save(force=True)
    derivs.save(force=True)

    assert sorted(p.name for p in (tmp_path / "_state" / "daemons").iterdir()) == [
        "derivs.json",
        "spot.json",
    ]
    found = runstate.load_all(tmp_path)
    assert list(found) == ["derivs", "spot"]
    assert {name: s.shard for name, s in found.items()} == {"derivs": "derivs", "spot": "spot"}
    assert found["spot"].jobs["depth"].markets["spot"].last_rows == 30
    assert found["derivs"].jobs["depth"].markets["option"].consecutive_failures == 1
    assert found["derivs"].heartbeat_at == runstate.iso(T0 + dt.timedelta(seconds=5))
    assert {s.host for s in found.values()} == {socket.gethostname()}
    assert {s.pid for s in found.values()} == {os.getpid()}
    # A shard records no state dir unless given one: its lock is not in the archive.
    assert found["spot"].state_dir is None
    loaded = runstate.load(tmp_path, "spot")
    assert loaded is not None and loaded.jobs == found["spot"].jobs
    assert runstate.load(tmp_path) is None  # no daemon "all"


def test_the_daemon_without_shards_records_the_archive_as_its_state_dir(tmp_path: Path) -> None:
    new_state(tmp_path, FakeClock())
    given = runstate.RunState(tmp_path, name="spot", state_dir=tmp_path / "local" / "spot")
    given.save(force=True)
    found = runstate.load_all(tmp_path)
    assert found["all"].state_dir == str(tmp_path.resolve())
    assert found["spot"].state_dir == str((tmp_path / "local" / "spot").resolve())


@pytest.mark.parametrize("name", ["Spot", "../all", "", "a" * 41, "spot.json", "sp ot", "é"])
def test_a_name_that_is_not_a_safe_file_name_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="is not a collector name"):
        runstate.RunState(tmp_path, name=name)
    with pytest.raises(ValueError, match="is not a collector name"):
        runstate.load(tmp_path, name)
    assert not (tmp_path / "_state").exists()


def test_load_all_reads_only_valid_names_and_skips_what_it_cannot_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    new_state(tmp_path, FakeClock(), name="spot")
    folder = tmp_path / "_state" / "daemons"
    good = (folder / "spot.json").read_text()
    for name in ("Spot.json", "a" * 41 + ".json", "spot.json.bak", "notes.txt"):
        (folder / name).write_text(good)
    (folder / "torn.json").write_text(good[: len(good) // 2])
    (folder / "future.json").write_text(json.dumps({**json.loads(good), "format": 99}))
    (folder / "typed.json").write_text(json.dumps({**json.loads(good), "pid": "1; rm -rf"}))
    (folder / "list.json").write_text("[]")
    (folder / "binary.json").write_bytes(b"\xff\xfe{")
    (folder / ".derivs.json.123.tmp").write_text(good)  # a write under way
    with caplog.at_level(logging.WARNING, logger="collector.ops.runstate"):
        found = runstate.load_all(tmp_path)
    assert list(found) == ["spot"]
    warned = " ".join(r.getMessage() for r in caplog.records)
    for name in ("Spot.json", "spot.json.bak", "notes.txt", "torn.json", "future.json"):
        assert name in warned, name
    for name in ("typed.json", "list.json", "binary.json"):
        assert name in warned, name
    assert ".derivs" not in warned


def test_a_record_of_the_wrong_type_makes_the_file_unreadable(tmp_path: Path) -> None:
    new_state(tmp_path, FakeClock(), name="spot")
    path = state_path(tmp_path, "spot")
    document = json.loads(path.read_text())
    document["jobs"]["depth"]["markets"]["spot"]["last_error"] = {"nested": True}
    path.write_text(json.dumps(document))
    assert runstate.load_all(tmp_path) == {}


def legacy_document(**changes: object) -> dict[str, object]:
    """A state file as the release before shards wrote it."""
    document: dict[str, object] = {
        "pid": 4242,
        "host": "old-host",
        "version": "0.1.0",
        "data_dir": "/srv/data",
        "started_at": runstate.iso(T0),
        "heartbeat_at": runstate.iso(T0),
        "stopped_at": runstate.iso(T0),
        "phase": "stopped",
        "collecting_since": runstate.iso(T0),
        "clock_offset_ms": 12,
        "jobs": {"depth": {"every_s": 2.0, "configured_every_s": 2.0, "markets": {"spot": {}}}},
        "format": 1,
    }
    document.update(changes)
    return document


def test_the_state_file_of_the_release_before_shards_is_read_as_all(tmp_path: Path) -> None:
    (tmp_path / "_state").mkdir()
    (tmp_path / runstate.LEGACY_STATE_FILE).write_text(json.dumps(legacy_document()))
    new_state(tmp_path, FakeClock(), name="spot")

    found = runstate.load_all(tmp_path)
    assert list(found) == ["all", "spot"]
    legacy = found["all"]
    assert (legacy.pid, legacy.host, legacy.shard) == (4242, "old-host", "all")
    assert legacy.from_legacy_file and not found["spot"].from_legacy_file
    assert legacy.state_dir == str(tmp_path.resolve())  # its lock was in the archive
    assert legacy.jobs["depth"].markets["spot"] == runstate.MarketRecord()
    loaded = runstate.load(tmp_path)
    assert loaded is not None and loaded.pid == 4242

    # Once a daemon "all" of this release has written its own file, the old one is ignored.
    new_state(tmp_path, FakeClock())
    found = runstate.load_all(tmp_path)
    assert found["all"].pid == os.getpid() and not found["all"].from_legacy_file
    loaded = runstate.load(tmp_path)
    assert loaded is not None and loaded.pid == os.getpid()
    # Even when that file cannot be read: it is newer than the old one.
    state_path(tmp_path).write_text("{")
    assert "all" not in runstate.load_all(tmp_path)
    assert runstate.load(tmp_path) is None
    # The new file never carries the field that marks a legacy state.
    new_state(tmp_path, FakeClock())
    assert "from_legacy_file" not in json.loads(state_path(tmp_path).read_text())


# -- on an object store ------------------------------------------------------------------------


def test_state_files_on_an_object_store(
    s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two daemons write their state to S3 (heartbeat included) and any host reads them
    back; nothing lands on the local disk."""
    monkeypatch.chdir(tmp_path)  # a path mistaken for a local one would land here
    uri = fresh_prefix(s3_bucket)
    spot = new_state(uri, FakeClock(), name="spot")
    derivs = new_state(uri, FakeClock(), name="derivs")
    spot.record("trades", [RoundResult("trades", "spot", symbols=3, rows=9)])
    assert asyncio.run(spot.beat()) is True
    derivs.stopped()

    found = runstate.load_all(uri)
    assert list(found) == ["derivs", "spot"]
    assert found["spot"].jobs["trades"].markets["spot"].last_rows == 9
    assert found["spot"].data_dir == uri and found["spot"].state_dir is None
    assert found["derivs"].phase == "stopped"
    assert runstate.load(uri) is None
    assert Archive.of(uri).list_names(runstate.STATE_DIR) == ["derivs.json", "spot.json"]
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_object_store_never_fails_the_daemon(
    s3_bucket: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    missing = "s3://no-such-bucket-" + uuid.uuid4().hex[:8]
    state = runstate.RunState(missing, name="spot", clock=FakeClock())
    with caplog.at_level(logging.WARNING, logger="collector.ops.runstate"):
        assert state.save(force=True) is False
        state.record("depth", [RoundResult("depth", "spot", rows=1)])  # for the heartbeat
        assert asyncio.run(state.beat()) is False
        state.stopped()
    assert len([r for r in caplog.records if "could not write" in r.getMessage()]) == 1
    assert missing in caplog.text

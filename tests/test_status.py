"""``jex-collector status``: what it says about a simulator-filled archive and the daemon."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from deltalake.transaction import AddAction

from collector import catalog, datasets, runstate, status
from collector.cli import main
from collector.exchange.client import Response
from collector.jobs import JobReport
from collector.quarantine import Quarantine
from collector.storage import compaction, delta, layout
from collector.storage.lock import ArchiveLock
from tests.conftest import fast_settings
from tests.test_runstate import FakeClock

NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)


def invoke(data_dir: Path, *args: str) -> Any:
    return CliRunner().invoke(main, ["status", "--data-dir", str(data_dir), *args])


def duckdb_groups(data_dir: Path, today: dt.date) -> dict[tuple[str, str], tuple[int, ...]]:
    """(rows, rows today, first ms, last ms, distinct symbols) per dataset and market."""
    found = {}
    for name, spec in datasets.DATASETS.items():
        time = spec.time_column
        table = catalog.query(
            data_dir,
            f"SELECT market, count(*), count(*) FILTER (WHERE date = $today), "
            f"epoch_ms(min({time})), epoch_ms(max({time})), count(DISTINCT symbol) "
            f"FROM {name} GROUP BY market",
            {"today": today},
        )
        for market, *values in zip(*table.to_pydict().values(), strict=True):
            found[(name, market)] = tuple(values)
    return found


def ms(iso: str | None) -> int | None:
    parsed = runstate.parse_iso(iso)
    return None if parsed is None else status.epoch_ms(parsed)


def record_round(
    data_dir: Path, clock: FakeClock, reports: dict[str, list[JobReport]], **jobs: Any
) -> runstate.RunState:
    """A state file as a daemon started at ``clock`` would write it after ``reports``."""
    settings = fast_settings("http://127.0.0.1:9", data_dir, **jobs)
    state = runstate.RunState(data_dir, clock=clock)
    state.started(settings.enabled_jobs())
    state.collecting({})
    for name, job_reports in reports.items():
        state.record(name, job_reports)
    state.save(force=True)
    return state


def all_ok(symbols: int = 1) -> dict[str, list[JobReport]]:
    settings = fast_settings("http://127.0.0.1:9", Path("unused"))
    return {
        name: [
            JobReport(name, market, symbols=symbols, rows=1)
            for market in (["all"] if name == "instruments" else job.markets)
        ]
        for name, job in settings.enabled_jobs().items()
    }


# -- the archive, from the Delta log ---------------------------------------------------------------


def test_json_matches_duckdb_for_every_dataset_and_market(sim_archive: Path) -> None:
    result = invoke(sim_archive, "--json")
    document = json.loads(result.output)
    today = dt.date.fromisoformat(document["today"])
    truth = duckdb_groups(sim_archive, today)

    shown = {(row["dataset"], row["market"]): row for row in document["datasets"]}
    assert set(truth) <= set(shown)
    for key, (rows, rows_today, first, last, symbols) in truth.items():
        row = shown[key]
        assert (row["rows_total"], row["rows_today"]) == (rows, rows_today), key
        assert (ms(row["first_time"]), ms(row["last_time"])) == (first, last), key
        assert row["files"] >= 1 and row["bytes"] > 0, key
        if key[0] != "protection_fund":  # its first round (all the history) outlasts 8 s
            assert row["last_success_at"] is not None, key
        if key[0] in ("trades", "depth", "ticker_price"):
            assert row["symbols"] == symbols, key
    # The daemon of the fixture has stopped: not healthy, and it says so.
    assert result.exit_code == 1
    assert document["daemon"]["state"] == "stopped"
    assert document["problems"][0].startswith("the daemon is not running")


def test_lag_is_the_age_of_the_newest_row(sim_archive: Path) -> None:
    state = runstate.load(sim_archive)
    assert state is not None and state.stopped_at is not None
    stopped = runstate.parse_iso(state.stopped_at)
    assert stopped is not None
    report = status.report(sim_archive, now=stopped + dt.timedelta(seconds=60))
    rows = {(r["dataset"], r["market"]): r for r in report.as_dict()["datasets"]}
    every = state.jobs["depth"].every_s  # the plan stretches the test schedule
    for market in datasets.MARKETS:
        # Polled every `every` seconds until the stop, which was a minute ago.
        assert 60 <= rows[("depth", market)]["lag_s"] <= 60 + every + 5, market


def test_the_table_has_one_line_per_dataset_and_market_within_120_columns(
    sim_archive: Path,
) -> None:
    result = invoke(sim_archive)
    lines = result.output.splitlines()
    assert max(len(line.rstrip()) for line in lines if not line.startswith("  ")) <= 120
    table = [line.split() for line in lines]
    for name, spec in datasets.DATASETS.items():
        for market in spec.markets:
            assert [name, market] in [cells[:2] for cells in table], (name, market)
    assert "…" not in result.output  # nothing cut to fit
    assert "NOT HEALTHY" in result.output


def test_the_figures_come_from_the_delta_log_without_opening_a_file(
    sim_archive: Path, tmp_path: Path
) -> None:
    """Every data file's bytes destroyed: status still shows the same rows and times
    (from the log's statistics). A file the log does not name (written, never committed)
    and files a compaction replaced (on disk until vacuumed) are not counted."""
    archive = tmp_path / "archive"
    shutil.copytree(sim_archive, archive, symlinks=True)
    before = status.report(archive, now=NOW).groups
    partition = next((archive / "depth" / "market=spot").glob("date=*"))
    stray = partition / "part-20261124T000000000-0000abcd.parquet"
    shutil.copyfile(next(partition.glob("*.parquet")), stray)
    for path in archive.glob("*/market=*/date=*/*.parquet"):
        path.write_bytes(b"\0" * path.stat().st_size)
    after = status.report(archive, now=NOW).groups
    assert after.keys() == before.keys()
    for key, group in before.items():
        assert (after[key].rows_total, after[key].first_ms, after[key].last_ms) == (
            group.rows_total,
            group.first_ms,
            group.last_ms,
        ), key
        assert (after[key].files, after[key].bytes, after[key].unreadable) == (
            group.files,
            group.bytes,
            0,
        ), key


def test_replaced_files_awaiting_vacuum_are_not_counted(sim_archive: Path, tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    shutil.copytree(sim_archive, archive, symlinks=True)
    groups = status.report(archive, now=NOW).groups
    # A group with partitions of several files: compaction replaces them.
    (dataset, market), before = max(groups.items(), key=lambda item: item[1].files)
    folder = archive / dataset / f"market={market}"
    on_disk = len(list(folder.glob("date=*/*.parquet")))
    assert before.files == on_disk > before.partitions
    report = compaction.compact_archive(archive)  # replaced files stay until vacuumed
    assert not report.errors
    compacted = report.group(dataset, market)
    after = status.report(archive, now=NOW).groups[(dataset, market)]
    assert after.files == after.partitions == before.partitions
    assert len(list(folder.glob("date=*/*.parquet"))) > on_disk
    assert (before.rows_total, after.rows_total) == (compacted.rows_before, compacted.rows_after)
    assert (after.first_ms, after.last_ms) == (before.first_ms, before.last_ms)


def test_a_file_committed_without_statistics_has_its_footer_read(tmp_path: Path) -> None:
    """Files the collector did not write may come without statistics in the log (rows,
    times) or in their footer: the footer, then the time column, give them."""
    spec = datasets.get("depth")
    partition = layout.Partition("depth", "spot", NOW.date())
    times = [status.epoch_ms(NOW) - 5000, status.epoch_ms(NOW) - 1000]
    rows = pa.table(
        {
            "received_at": times,
            "symbol": ["A", "A"],
            "update_id": [1, 2],
            "side": ["bid", "ask"],
            "level": [0, 0],
            "price": [1.0, 2.0],
            "qty": [1.0, 1.0],
        }
    )
    rows = rows.select(delta.file_schema("depth").names).cast(delta.file_schema("depth"))
    assert spec.time_column == "received_at"
    relative = f"market=spot/date={NOW.date().isoformat()}/part-20261124T115955000-0000abcd.parquet"
    path = tmp_path / "depth" / relative
    path.parent.mkdir(parents=True)
    pq.write_table(rows, path, write_statistics=False)
    table = delta.ensure_table(tmp_path, "depth")
    add = AddAction(
        relative,
        path.stat().st_size,
        delta.partition_values(partition),
        status.epoch_ms(NOW),
        True,
        None,  # type: ignore[arg-type]  # no statistics, as other writers may commit
    )
    delta.commit(table, "depth", [add])
    group = status.report(tmp_path, now=NOW).groups[("depth", "spot")]
    assert (group.rows_total, group.rows_today, group.files) == (2, 2, 1)
    assert (group.first_ms, group.last_ms) == tuple(times)
    assert group.unreadable == 0


# -- health -------------------------------------------------------------------------------


def test_healthy_daemon_exits_0(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    record_round(tmp_path, FakeClock(now - dt.timedelta(seconds=1)), all_ok())
    with ArchiveLock(tmp_path):
        result = invoke(tmp_path)
    assert result.exit_code == 0, result.output
    assert "daemon: running" in result.output
    assert result.output.rstrip().endswith("healthy")


def test_a_job_without_success_for_three_intervals_exits_1_naming_it(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    clock = FakeClock(now - dt.timedelta(seconds=100))
    reports = all_ok()
    state = record_round(tmp_path, clock, {"trades": reports.pop("trades")})
    clock.now = now - dt.timedelta(seconds=1)
    for name, job_reports in reports.items():  # every other job is fine
        state.record(name, job_reports)
    state.save(force=True)

    with ArchiveLock(tmp_path):
        result = invoke(tmp_path)
        document = json.loads(invoke(tmp_path, "--json").output)
    assert result.exit_code == 1
    assert re.search(
        r"job trades \(spot, option, contract\): no success for 1m4\ds \(allowed: 3 x 1s\)",
        result.output,
    )
    assert document["healthy"] is False
    overdue = {(j["job"], j["market"]) for j in document["jobs"] if j["overdue"]}
    assert overdue == {("trades", "spot"), ("trades", "option"), ("trades", "contract")}


def test_overdue_uses_the_stretched_interval_and_spares_a_long_round(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    state = record_round(tmp_path, clock, {"depth": [JobReport("depth", "spot", symbols=3)]})
    state.collecting({"depth": 60.0})  # the plan stretched 2 s to 60 s
    state.record("depth", [JobReport("depth", "spot", symbols=3)])
    state.save(force=True)

    def depth_spot(now: dt.datetime) -> status.JobStatus:
        report = status.report(tmp_path, now=now, is_locked=True)
        return next(j for j in report.jobs if (j.job, j.market) == ("depth", "spot"))

    assert not depth_spot(NOW + dt.timedelta(seconds=170)).overdue
    assert depth_spot(NOW + dt.timedelta(seconds=190)).overdue

    state.state.jobs["depth"].running_since = runstate.iso(NOW + dt.timedelta(seconds=100))
    state.save(force=True)
    assert not depth_spot(NOW + dt.timedelta(seconds=600)).overdue  # paging, not broken
    late = depth_spot(NOW + dt.timedelta(seconds=100 + status.ROUND_GRACE_S + 1))
    assert late.overdue and late.reason and "a round has been running for 15m01s" in late.reason


def test_a_failed_job_shows_its_error(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    reports = all_ok()
    reports["klines"][0] = JobReport(
        "klines", "spot", symbols=3, errors=["BTCUSDT: server error 503 [endpoint=klines]"] * 3
    )
    record_round(tmp_path, FakeClock(now - dt.timedelta(seconds=30)), reports)
    with ArchiveLock(tmp_path):
        table = invoke(tmp_path)
        document = json.loads(invoke(tmp_path, "--json").output)
    assert re.search(
        r"klines spot 3\ds ago \(failed run, 3 errors\): BTCUSDT: server error 503 "
        r"\[endpoint=klines\]",
        table.output,
    )
    assert "job klines (spot): never succeeded (allowed: 3 x 2s); 1 failed run(s) in a row" in (
        table.output
    )
    job = next(j for j in document["jobs"] if (j["job"], j["market"]) == ("klines", "spot"))
    assert job["last_error"] == "BTCUSDT: server error 503 [endpoint=klines]"
    assert job["consecutive_failures"] == 1


def test_without_a_state_file_it_shows_the_archive_and_exits_1(
    sim_archive: Path, tmp_path: Path
) -> None:
    archive = tmp_path / "archive"
    shutil.copytree(sim_archive, archive, symlinks=True)
    runstate.state_path(archive).unlink()
    result = invoke(archive)
    document = json.loads(invoke(archive, "--json").output)
    assert result.exit_code == 1
    assert "the daemon has not run on this archive" in result.output
    assert document["daemon"]["state"] == "never_ran"
    assert document["jobs"] == []
    assert all(row["rows_total"] > 0 for row in document["datasets"])


def test_no_archive_at_all(tmp_path: Path) -> None:
    result = invoke(tmp_path / "missing")
    assert result.exit_code == 1
    assert "no archive at" in result.output


@pytest.mark.parametrize(
    ("stopped", "locked", "heartbeat_age", "expected"),
    [
        (False, True, 1, "running"),
        (False, True, 120, "stuck"),
        (True, False, 5, "stopped"),
        (False, False, 5, "died"),
    ],
)
def test_daemon_states(
    tmp_path: Path, stopped: bool, locked: bool, heartbeat_age: float, expected: str
) -> None:
    clock = FakeClock(NOW - dt.timedelta(seconds=heartbeat_age))
    state = record_round(tmp_path, clock, all_ok())
    if stopped:
        state.stopped()
    report = status.report(tmp_path, now=NOW, is_locked=locked)
    assert report.daemon.state == expected
    assert (report.daemon.problem is None) == (expected == "running")


# -- quarantine ---------------------------------------------------------------------------


def test_quarantined_payloads_of_the_last_hour_are_counted_per_dataset_and_market(
    tmp_path: Path,
) -> None:
    now = dt.datetime(2026, 11, 24, 0, 20, tzinfo=dt.UTC)  # the hour spans two UTC days
    written = [
        (now - dt.timedelta(minutes=70), "depth", "spot"),  # too old
        (now - dt.timedelta(minutes=50), "depth", "spot"),  # yesterday's folder
        (now - dt.timedelta(minutes=5), "depth", "spot"),
        (now - dt.timedelta(minutes=5), "historicalTrades", "option"),
        (now - dt.timedelta(minutes=1), "historyRate", None),  # contract only
        (now - dt.timedelta(minutes=1), "time", None),  # no dataset
    ]
    for when, endpoint, market in written:
        quarantine = Quarantine(tmp_path, clock_ms=lambda when=when: status.epoch_ms(when))
        response = Response(None, 0, 200, None, endpoint=endpoint, market=market, body=b"{")
        assert quarantine.add(response, kind="invalid_json", error="bad") is not None
    counts = status.count_quarantine(tmp_path, now)
    assert counts.last_hour == 5
    assert counts.by_group == {
        ("depth", "spot"): 2,
        ("trades", "option"): 1,
        ("funding_rate", "contract"): 1,
    }
    assert counts.not_attributed == 1
    record_round(tmp_path, FakeClock(now), {})
    shown = status.report(tmp_path, now=now, is_locked=True).as_dict()
    depth = next(r for r in shown["datasets"] if (r["dataset"], r["market"]) == ("depth", "spot"))
    assert depth["quarantined_last_hour"] == 2
    assert shown["quarantine"]["by_endpoint"]["depth"] == 2


def test_every_json_key_is_documented_in_the_readme(sim_archive: Path) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("\n## Status\n", 1)[1].split("\n## ", 1)[0]
    document = json.loads(invoke(sim_archive, "--json").output)
    keys = {
        *document,
        *document["daemon"],
        *document["datasets"][0],
        *document["jobs"][0],
        *document["quarantine"],
    }
    assert sorted(k for k in keys if f"`{k}`" not in section) == []

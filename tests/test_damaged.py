"""A damaged data file (a committed Parquet file cut short) never stops the collector: the
cursors come from what is readable, the file is named in the log, ``status``, ``verify``
and ``report`` (one line each, no traceback), and ``verify --repair`` sets it aside and
fetches its rows again from the exchange."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from collector.check.verify import verify
from collector.cli import main
from collector.collect import jobs
from collector.collect.daemon import Daemon
from collector.read import catalog
from collector.sim import SimExchange, SimServer
from collector.storage import delta, footers
from tests.conftest import fast_settings


def damage(sim_archive: Path, tmp_path: Path, dataset: str, *, middle: bool = False) -> str:
    """A copy of the shared archive with one committed file of ``dataset`` (spot) cut to
    1000 bytes: the newest partition's first file, or with ``middle`` the first file of
    a partition that has partitions before and after it. Returns its name."""
    data_dir = tmp_path / "archive"
    shutil.copytree(sim_archive, data_dir)
    table = delta.open_table(str(data_dir), dataset)
    assert table is not None
    files = [f for f in delta.files(table, dataset) if f.partition.market == "spot"]
    dates = sorted({f.partition.date for f in files})
    date = dates[len(dates) // 2] if middle else dates[-1]
    assert not middle or 0 < dates.index(date) < len(dates) - 1
    victim = next(f for f in files if f.partition.date == date)
    with open(data_dir / dataset / victim.path, "r+b") as handle:
        handle.truncate(1000)
    return f"{dataset}/{victim.path}"


def test_the_cursors_come_from_the_readable_files_and_the_log_names_the_damaged_one(
    sim_archive: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    name = damage(sim_archive, tmp_path, "trades")
    intact = jobs.CollectorState()
    jobs.load_cursors(str(sim_archive), intact)
    state = jobs.CollectorState()
    with caplog.at_level(logging.WARNING, logger="collector.read.catalog"):
        jobs.load_cursors(str(tmp_path / "archive"), state)
    assert [r.getMessage() for r in caplog.records if name in r.getMessage()], caplog.text
    # Every series resumes; the damaged file's trades only are not counted (a series
    # whose every trade was in that file starts again as on a first start).
    in_victim = set(pq.read_table(sim_archive / name, columns=["symbol"])["symbol"].to_pylist())
    for key, value in intact.cursors.items():
        if key[:2] == ("trades", "spot") and key[2] in in_victim:
            assert state.cursors.get(key, -1) <= value, key
        else:
            assert state.cursors.get(key) == value, key
    assert set(state.cursors) <= set(intact.cursors)
    assert state.recent_trades.keys() <= intact.recent_trades.keys()
    assert [f.name for f in catalog.damaged_files(tmp_path / "archive")] == [name]


def test_the_daemon_starts_and_collects_with_a_damaged_file(
    sim_archive: Path, sim_exchange: SimExchange, tmp_path: Path
) -> None:
    damage(sim_archive, tmp_path, "klines")
    data_dir = tmp_path / "archive"
    table = delta.open_table(str(data_dir), "trades")
    assert table is not None
    before = len(delta.files(table, "trades"))
    with SimServer(sim_exchange) as server:
        settings = fast_settings(server.base_url, data_dir)
        asyncio.run(Daemon(settings).run(4, handle_signals=False))
    table = delta.open_table(str(data_dir), "trades")
    assert table is not None and len(delta.files(table, "trades")) > before


def test_status_verify_and_report_name_the_file_in_one_line_without_a_traceback(
    sim_archive: Path, tmp_path: Path
) -> None:
    name = damage(sim_archive, tmp_path, "trades")
    data_dir = str(tmp_path / "archive")
    runner = CliRunner(env={"COLUMNS": "250"})

    checked = runner.invoke(main, ["verify", "--data-dir", data_dir])
    assert checked.exit_code == 1, checked.output
    lines = [line for line in checked.output.splitlines() if name in line]
    assert len(lines) == 1 and lines[0].startswith(f"damaged file {name}: ")
    assert "1 damaged file(s)" in checked.output and "Traceback" not in checked.output

    health = runner.invoke(main, ["status", "--data-dir", data_dir])
    assert health.exit_code == 1
    assert len([line for line in health.output.splitlines() if name in line]) == 1
    assert "verify --repair" in health.output and "Traceback" not in health.output

    out = tmp_path / "report.html"
    drawn = runner.invoke(main, ["report", "--data-dir", data_dir, "--out", str(out)])
    assert drawn.exit_code == 0, drawn.output
    assert out.stat().st_size > 0
    assert len([line for line in drawn.output.splitlines() if name in line]) == 1


def test_status_finds_a_truncated_file_by_its_size_alone(sim_archive: Path, tmp_path: Path) -> None:
    """No reader has met the file yet: the size the log recorded tells."""
    name = damage(sim_archive, tmp_path, "depth")
    data_dir = tmp_path / "archive"
    assert footers.recorded_damaged(data_dir) == []
    result = CliRunner().invoke(main, ["status", "--data-dir", str(data_dir), "--json"])
    assert result.exit_code == 1
    assert f'"path": "{name.split("/", 1)[1]}"' in result.output


def test_repair_sets_the_file_aside_and_fetches_its_rows_again(
    sim_archive: Path, sim_exchange: SimExchange, tmp_path: Path
) -> None:
    name = damage(sim_archive, tmp_path, "klines", middle=True)
    data_dir = tmp_path / "archive"
    expected = (
        catalog.query(
            sim_archive,
            "SELECT count(*) AS n FROM klines WHERE market = 'spot' AND interval = '1h'",
        )
        .column("n")[0]
        .as_py()
    )
    holes = [f for f in verify(data_dir) if f.dataset == "klines" and f.holes]
    assert holes, "the damaged day's klines are missing"
    config = tmp_path / "schedules.yaml"
    config.write_text("jobs: {}\n")
    runner = CliRunner(env={"JEX_API_KEY": "k", "COLUMNS": "250"})
    with SimServer(sim_exchange) as server:
        result = runner.invoke(
            main,
            ["verify", "--repair", "--config", str(config), "--data-dir", str(data_dir),
             "--base-url", server.base_url],
        )  # fmt: skip
    assert f"repair: set aside the damaged file {name}" in result.output, result.output
    kept = data_dir / "_quarantine" / "damaged" / name
    assert kept.stat().st_size == 1000  # the evidence, as it was
    assert catalog.damaged_files(data_dir) == []
    table = delta.open_table(str(data_dir), "klines")
    assert table is not None
    assert name.split("/", 1)[1] not in {f.path for f in delta.files(table, "klines")}
    after = (
        catalog.query(
            data_dir, "SELECT count(*) AS n FROM klines WHERE market = 'spot' AND interval = '1h'"
        )
        .column("n")[0]
        .as_py()
    )
    assert after >= expected
    assert not [f for f in verify(data_dir) if f.dataset == "klines" and f.holes]

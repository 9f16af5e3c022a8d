"""jex-collector migrate: an archive of the layout before Delta Lake (plain ``date=D``
folders and ``date=D -> .date=D.gN`` generations) becomes one Delta table per dataset,
every visible row once, the old archive untouched, resumable after kill -9; and every
command that reads or writes an archive refuses the old layout with one line."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from deltalake import DeltaTable

from collector import config, datasets
from collector.cli import main
from collector.collect.daemon import Daemon
from collector.errors import LegacyArchiveError
from collector.read import catalog
from collector.storage import compaction, delta, layout, legacy
from collector.storage.migrate import app_id, migrate_archive
from collector.storage.writer import ArchiveWriter, dedupe_on_key

DAY = dt.date(2026, 1, 5)
DAY_MS = 86_400_000


def day_ms(date: dt.date) -> int:
    return (date - dt.date(1970, 1, 1)).days * DAY_MS


def trades(ids: list[int | None], date: dt.date, *, market: str = "spot") -> pa.Table:
    """Trades of ``date`` with these ids (None: a recent trade without an id); the same id
    always gives the same row, so a duplicate is a true one."""
    start = day_ms(date)
    return pa.table(
        {
            "market": [market] * len(ids),
            "symbol": [f"S{(i or k) % 3}" for k, i in enumerate(ids)],
            "trade_id": ids,
            "time": [start + ((i or k) * 7919) % DAY_MS for k, i in enumerate(ids)],
            "price": [100.0 + (i or k) for k, i in enumerate(ids)],
            "qty": [1.5] * len(ids),
            "is_buyer_maker": [(i or k) % 2 == 0 for k, i in enumerate(ids)],
            "received_at": [start + DAY_MS - 1] * len(ids),
        },
        schema=datasets.get("trades").schema,
    )


def klines(minutes: list[int], date: dt.date, *, market: str = "contract") -> pa.Table:
    start = day_ms(date)
    n = len(minutes)
    prices = [50.0 + m for m in minutes]
    return pa.table(
        {
            "market": [market] * n,
            "symbol": ["BTCUSDT"] * n,
            "interval": ["1m"] * n,
            "open_time": [start + m * 60_000 for m in minutes],
            "close_time": [start + m * 60_000 + 59_999 for m in minutes],
            "open": prices,
            "high": prices,
            "low": prices,
            "close": prices,
            "volume": [2.0] * n,
            "quote_volume": [p * 2 for p in prices],
            "trade_count": [3] * n,
            "taker_buy_volume": [1.0] * n,
            "taker_buy_quote_volume": prices,
        },
        schema=datasets.get("klines").schema,
    )


def write_old(directory: Path, name: str, rows: pa.Table) -> None:
    """A data file as the previous release wrote it: every column, ``market`` included."""
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(rows, directory / name, compression="zstd")


def old_name(date: dt.date, hour: int, token: str) -> str:
    return f"part-{date:%Y%m%d}T{hour:02d}0000000-{token}.parquet"


def build_old_archive(root: Path) -> dict[layout.Partition, pa.Table]:
    """An old archive with a plain partition, a generation behind a symlink next to a
    stale one, a lock, a temporary file, daemon state and views; returns each
    partition's visible rows."""
    visible: dict[layout.Partition, list[pa.Table]] = {}

    def add(partition: layout.Partition, directory: Path, name: str, rows: pa.Table) -> None:
        write_old(directory, name, rows)
        visible.setdefault(partition, []).append(rows)

    # trades/spot/2026-01-05: a plain folder, two flush files overlapping on 10 ids.
    plain = layout.Partition("trades", "spot", DAY)
    folder = root / plain.path
    add(plain, folder, old_name(DAY, 10, "aaaaaaaa"), trades(list(range(100)), DAY))
    add(plain, folder, old_name(DAY, 11, "bbbbbbbb"), trades(list(range(90, 150)), DAY))
    # A file being written when the old daemon stopped: not data.
    write_old(folder, ".part-20260105T120000000-cccccccc.parquet.tmp", trades([999], DAY))

    # trades/spot/2026-01-06: date=D -> .date=D.g1; g0 is the stale generation before it.
    next_day = DAY + dt.timedelta(days=1)
    linked = layout.Partition("trades", "spot", next_day)
    market_dir = root / "trades" / "market=spot"
    current = market_dir / f".date={next_day}.g1"
    add(
        linked,
        current,
        f"part-{next_day:%Y%m%d}T230000000-dddddddd-c00.parquet",
        trades([*range(1000, 1200), None, None], next_day),
    )
    write_old(
        market_dir / f".date={next_day}.g0",
        old_name(next_day, 9, "eeeeeeee"),
        trades(list(range(5000, 5050)), next_day),  # replaced: must not be migrated
    )
    os.symlink(current.name, market_dir / f"date={next_day}")
    (market_dir / f".date={next_day}.lock").write_bytes(b"")

    # trades/option/2026-01-05 and klines/contract/2026-01-05: plain folders.
    option = layout.Partition("trades", "option", DAY)
    add(
        option,
        root / option.path,
        old_name(DAY, 8, "ffffffff"),
        trades([7, 8, 9], DAY, market="option"),
    )
    kline = layout.Partition("klines", "contract", DAY)
    add(kline, root / kline.path, old_name(DAY, 1, "12345678"), klines(list(range(60)), DAY))
    add(kline, root / kline.path, old_name(DAY, 2, "23456789"), klines(list(range(30, 120)), DAY))

    (root / "_state").mkdir()
    (root / "_state" / "daemon.json").write_text("{}")
    (root / "archive.duckdb").write_bytes(b"not really")
    return {partition: pa.concat_tables(tables) for partition, tables in visible.items()}


def tree_digest(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry under ``root``: kind, mode, mtime, and content or link target."""
    found: dict[str, tuple[object, ...]] = {}
    for directory, names, files in os.walk(root):
        for name in [*names, *files]:
            path = Path(directory) / name
            info = path.lstat()
            if path.is_symlink():
                content: object = os.readlink(path)
            elif path.is_dir():
                content = "dir"
            else:
                content = hashlib.sha256(path.read_bytes()).hexdigest()
            found[str(path.relative_to(root))] = (info.st_mode, info.st_mtime_ns, content)
    found["."] = (root.stat().st_mode, root.stat().st_mtime_ns, "dir")
    return found


def expected_rows(rows: pa.Table, dataset: str) -> list[dict[str, Any]]:
    spec = datasets.get(dataset)
    found: list[dict[str, Any]] = dedupe_on_key(rows, spec.key).sort_by(spec.sort_keys).to_pylist()
    return found


def table_rows(root: Path, partition: layout.Partition) -> list[dict[str, Any]]:
    """The partition's rows as a Delta reader sees them, with the dataset's columns."""
    spec = datasets.get(partition.dataset)
    rows = DeltaTable(str(root / partition.dataset)).to_pyarrow_table()
    mask = [
        m == partition.market and d == partition.date
        for m, d in zip(rows["market"].to_pylist(), rows["date"].to_pylist(), strict=True)
    ]
    mine = rows.filter(pa.array(mask)).select(spec.column_names).cast(spec.schema)
    found: list[dict[str, Any]] = mine.sort_by(spec.sort_keys).to_pylist()
    return found


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "collector", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


# -- the conversion -------------------------------------------------------------------------


def test_every_visible_row_is_migrated_once_and_nothing_else(tmp_path: Path) -> None:
    old, new = tmp_path / "data", tmp_path / "data-delta"
    visible = build_old_archive(old)
    before = tree_digest(old)

    result = run_cli("migrate", "--from", str(old), "--to", str(new))

    assert result.returncode == 0, result.stderr
    assert tree_digest(old) == before  # not a byte, name or time changed
    for partition, rows in visible.items():
        assert table_rows(new, partition) == expected_rows(rows, partition.dataset), partition
    # 10 trade ids and 30 kline minutes were in two files; recent trades (no id) all stay.
    assert "trades/market=spot/date=2026-01-05: 150 row(s), files 2 -> 1" in result.stdout
    assert "10 duplicate(s) removed" in result.stdout
    assert "klines/market=contract/date=2026-01-05: 120 row(s)" in result.stdout
    assert (
        "4 partition(s) migrated, 0 already done, 0 empty; 475 row(s) "
        "(40 duplicate(s) removed); files 6 -> 4" in result.stdout
    )
    assert "not copied from" in result.stdout and "_state" in result.stdout
    assert not (new / "_state").exists() and not (new / "archive.duckdb").exists()
    # The stale generation, the lock and the temporary file were not read.
    ids = DeltaTable(str(new / "trades")).to_pyarrow_table()["trade_id"].to_pylist()
    assert not {999, *range(5000, 5050)} & set(ids)
    assert not legacy.is_legacy_archive(new)


def test_migrated_files_are_compacted_ones_with_the_partition_outside_the_file(
    tmp_path: Path,
) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    visible = build_old_archive(old)
    report = migrate_archive(old, new, file_rows=100)  # 150 rows -> two files of 75
    assert report.errors == []
    table = delta.open_table(new, "trades")
    assert table is not None
    plain = layout.Partition("trades", "spot", DAY)
    files = delta.files(table, "trades", market="spot", date=DAY)
    assert [f.rows for f in files] == [75, 75]
    for file in files:
        schema = pq.read_schema(delta.file_path(new, "trades", file.path))
        assert "market" not in schema.names and "date" not in schema.names
    assert table_rows(new, plain) == expected_rows(visible[plain], "trades")
    # Named as one compaction's output: compaction leaves closed partitions alone.
    done = compaction.compact_archive(new)
    assert done.errors == [] and done.partitions == 0


def test_a_migration_killed_after_its_first_commit_resumes_and_keeps_every_row_once(
    tmp_path: Path,
) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    visible: dict[layout.Partition, pa.Table] = {}
    for day in range(40):
        date = DAY + dt.timedelta(days=day)
        partition = layout.Partition("trades", "spot", date)
        first = trades(list(range(0, 3000)), date)
        second = trades(list(range(2500, 4000)), date)
        write_old(old / partition.path, old_name(date, 1, "aaaaaaaa"), first)
        write_old(old / partition.path, old_name(date, 2, "bbbbbbbb"), second)
        visible[partition] = pa.concat_tables([first, second])
    before = tree_digest(old)
    first_commit = new / "trades" / delta.LOG_DIR / f"{1:020d}.json"

    with subprocess.Popen(
        [sys.executable, "-m", "collector", "migrate", "--from", str(old), "--to", str(new)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as killed:
        try:
            deadline = time.monotonic() + 120
            while not first_commit.exists() and killed.poll() is None:
                assert time.monotonic() < deadline, "no commit within two minutes"
                time.sleep(0.002)
            killed.send_signal(signal.SIGKILL)
            killed.wait(timeout=10)
        finally:
            killed.kill()
    table = DeltaTable(str(new / "trades"))
    committed = [p for p in visible if table.transaction_version(app_id(p)) is not None]
    assert 1 <= len(committed) < len(visible), "the kill must land mid-migration"

    result = run_cli("migrate", "--from", str(old), "--to", str(new), "--quiet")

    assert result.returncode == 0, result.stderr
    assert f"{len(visible) - len(committed)} partition(s) migrated, {len(committed)} " in (
        result.stdout
    )
    rows = DeltaTable(str(new / "trades")).to_pyarrow_table()
    assert rows.num_rows == 4000 * len(visible)
    for partition, old_rows in visible.items():
        assert table_rows(new, partition) == expected_rows(old_rows, "trades")
    assert tree_digest(old) == before


def test_a_partition_already_migrated_is_not_read_again(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    build_old_archive(old)
    first = migrate_archive(old, new)
    second = migrate_archive(old, new)
    assert [p.status for p in first.partitions] == ["migrated"] * 4
    assert [p.status for p in second.partitions] == ["done"] * 4
    assert DeltaTable(str(new / "trades")).to_pyarrow_table().num_rows == 150 + 202 + 3


def test_rows_collected_into_the_new_archive_before_the_migration_stay(tmp_path: Path) -> None:
    """The new daemon can start collecting before the history is migrated into its
    archive: its files and the migrated ones sit side by side."""
    old, new = tmp_path / "old", tmp_path / "new"
    visible = build_old_archive(old)
    writer = ArchiveWriter(new)
    writer.add("trades", trades([150, 151], DAY))  # the day went on after the old daemon
    assert writer.flush().errors == []

    report = migrate_archive(old, new)

    assert report.errors == []
    plain = layout.Partition("trades", "spot", DAY)
    together = pa.concat_tables([visible[plain], trades([150, 151], DAY)])
    assert table_rows(new, plain) == expected_rows(together, "trades")


def test_rows_left_in_the_old_write_ahead_log_stop_the_migration(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    build_old_archive(old)
    segment = old / "_wal" / f"{3:012d}"
    segment.mkdir(parents=True)
    rows = trades([42, 43], DAY)
    with ipc.new_stream(str(segment / "trades.arrows"), rows.schema) as stream:
        stream.write_table(rows)

    refused = run_cli("migrate", "--from", str(old), "--to", str(new))
    assert refused.returncode == 1
    assert "holds 2 row(s) the previous release never wrote to Parquet" in refused.stderr
    assert not new.exists()

    forced = run_cli("migrate", "--from", str(old), "--to", str(new), "--ignore-wal", "--quiet")
    assert forced.returncode == 0, forced.stderr


@pytest.mark.parametrize(
    ("source", "target", "message"),
    [
        ("data", "data", "--from and --to must be different directories"),
        ("data", "data/delta", "must not be inside one another"),
        ("empty", "out", "holds no archive in the layout before Delta Lake"),
    ],
)
def test_wrong_directories_are_a_usage_error(
    tmp_path: Path, source: str, target: str, message: str
) -> None:
    build_old_archive(tmp_path / "data")
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(
        main, ["migrate", "--from", str(tmp_path / source), "--to", str(tmp_path / target)]
    )
    assert result.exit_code == 2
    assert message in result.output


# -- the old layout is refused --------------------------------------------------------------


def test_an_old_archive_is_recognised_and_a_new_one_is_not(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    build_old_archive(old)
    assert legacy.is_legacy_archive(old)
    assert legacy.legacy_datasets(old) == ["trades", "klines"]
    assert legacy.list_partitions(old, "trades") == [
        layout.Partition("trades", "option", DAY),
        layout.Partition("trades", "spot", DAY),
        layout.Partition("trades", "spot", DAY + dt.timedelta(days=1)),
    ]
    linked = legacy.data_files(old, layout.Partition("trades", "spot", DAY + dt.timedelta(days=1)))
    assert [p.name for p in linked] == ["part-20260106T230000000-dddddddd-c00.parquet"]
    migrate_archive(old, new)
    assert not legacy.is_legacy_archive(new)
    assert not legacy.is_legacy_archive(tmp_path / "nothing")
    legacy.refuse_legacy(new)


def test_query_refuses_an_old_archive_with_the_command_that_converts_it(tmp_path: Path) -> None:
    old = tmp_path / "data"
    build_old_archive(old)
    result = CliRunner().invoke(
        main, ["query", "SELECT 1", "--data-dir", str(old), "--config", str(tmp_path / "none")]
    )
    assert result.exit_code == 2
    assert result.output == (
        f"error: {old} holds the archive in the layout before Delta Lake; convert it with: "
        f"jex-collector migrate --from {old} --to {old}-delta\n"
    )


def test_the_daemon_refuses_an_old_archive_before_writing_anything(tmp_path: Path) -> None:
    old = tmp_path / "data"
    build_old_archive(old)
    before = tree_digest(old)
    cfg = tmp_path / "schedules.yaml"
    cfg.write_text("jobs:\n  instruments: {every: 1h}\n")

    result = run_cli(
        "run", "--config", str(cfg), "--data-dir", str(old), "--base-url", "http://127.0.0.1:9"
    )

    assert result.returncode == 2  # a configuration error: systemd does not restart it
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {old} holds the archive in the layout before Delta Lake; convert it with: "
        f"jex-collector migrate --from {old} --to {old}-delta"
    )
    assert tree_digest(old) == before
    settings = config.load(cfg, overrides={"data_dir": old}, environ={})
    with pytest.raises(LegacyArchiveError):
        asyncio.run(Daemon(settings).run(0.1, handle_signals=False))
    assert tree_digest(old) == before


def test_the_loaders_refuse_an_old_archive_with_the_command_that_converts_it(
    tmp_path: Path,
) -> None:
    from collector.read import loaders

    old = tmp_path / "data"
    build_old_archive(old)
    with pytest.raises(LegacyArchiveError, match="jex-collector migrate --from"):
        loaders.load_trades(data_dir=old)


# -- an archive written by the previous release ---------------------------------------------

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def test_an_archive_made_by_the_previous_release_migrates_row_for_row(tmp_path: Path) -> None:
    """``fixtures/archive-0.1.0.tar.gz`` was written by jex-collector 0.1.0 itself (its
    writer, then its compaction of the first day: symlinked generations, lock files, an
    ``archive.duckdb`` of read_parquet views); the JSON beside it holds what that
    release's views returned, per partition."""
    with tarfile.open(FIXTURES / "archive-0.1.0.tar.gz") as archive:
        archive.extractall(tmp_path, filter="tar")
    old = tmp_path / "archive"
    expected = json.loads((FIXTURES / "archive-0.1.0.json").read_text())["partitions"]
    before = tree_digest(old)

    result = run_cli("migrate", "--from", str(old), "--to", str(tmp_path / "new"))

    assert result.returncode == 0, result.stderr
    assert tree_digest(old) == before
    for dataset, partitions in expected.items():
        got = catalog.query(
            tmp_path / "new",
            f"SELECT market, CAST(date AS VARCHAR) AS date, count(*) AS n, sum(price) AS s "
            f"FROM {dataset} GROUP BY ALL ORDER BY ALL",
        ).to_pylist()
        assert got == partitions, dataset

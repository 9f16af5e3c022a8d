"""Compaction on Delta tables: every row once, sorted, few files, one commit that replaces
exactly what it read, safe beside writers, other compactions and kill -9."""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import importlib.util
import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from collector import datasets
from collector.cli import main
from collector.collect.daemon import Daemon
from collector.read import catalog
from collector.sim import SimServer
from collector.storage import compaction, delta, layout
from collector.storage.writer import ArchiveWriter, dedupe_on_key
from tests.conftest import fast_settings

T0 = 1_764_000_000_000  # 2025-11-24T16:00:00Z
DAY_MS = 86_400_000
DAY0 = dt.date(2025, 11, 24)
ROOT = Path(__file__).resolve().parent.parent


def trades(
    ids: list[int | None], *, market: str = "spot", start: int = T0, symbols: int = 3
) -> pa.Table:
    """Trades with the given ids (None: a recent trade without id), symbols interleaved."""
    n = len(ids)
    return pa.table(
        {
            "market": [market] * n,
            "symbol": [f"S{(i or k) % symbols}" for k, i in enumerate(ids)],
            "trade_id": ids,
            "time": [start + ((i or k) * 7919) % 3_600_000 for k, i in enumerate(ids)],
            "price": [100.0 + k for k in range(n)],
            "qty": [1.5] * n,
            "is_buyer_maker": [k % 2 == 0 for k in range(n)],
            "received_at": [start + 3_600_000] * n,
        },
        schema=datasets.get("trades").schema,
    )


def flush(writer: ArchiveWriter, dataset: str, table: pa.Table) -> None:
    writer.add(dataset, table)
    result = writer.flush()
    assert result.errors == []


def visible_files(root: Path, dataset: str = "trades") -> list[Path]:
    """The files of the table's current version (what every Delta reader reads)."""
    table = delta.open_table(root, dataset)
    if table is None:
        return []
    return sorted(Path(delta.file_path(root, dataset, f.path)) for f in delta.files(table, dataset))


def files_on_disk(root: Path, dataset: str = "trades") -> list[Path]:
    return sorted((root / dataset).glob("market=*/date=*/*.parquet"))


def read_visible(root: Path, dataset: str) -> pa.Table:
    """The table's rows with the dataset's columns and types (times in ms)."""
    table = delta.open_table(root, dataset)
    assert table is not None
    rows = table.to_pyarrow_table()
    return rows.select(datasets.get(dataset).column_names).cast(datasets.get(dataset).schema)


def multiset(table: pa.Table) -> collections.Counter[tuple[Any, ...]]:
    return collections.Counter(
        zip(*(table.column(i).to_pylist() for i in range(table.num_columns)), strict=True)
    )


class Clock:
    """A settable clock in milliseconds."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


# -- what compaction does -------------------------------------------------------------------


def test_compaction_keeps_every_row_once_sorted_in_one_file(tmp_path: Path) -> None:
    clock = Clock(T0)
    writer = ArchiveWriter(tmp_path, clock_ms=clock)
    for k in range(40):
        clock.ms += 30_000
        # Overlapping id ranges (duplicates across files) and recent trades without ids,
        # some identical (all kept: no key to tell them apart).
        flush(writer, "trades", trades([*range(k * 10, k * 10 + 15), None, None]))
    assert len(visible_files(tmp_path)) == 40
    # In creation order, as compaction reads them: the first row of a key is kept.
    before = pa.concat_tables(
        [
            pq.read_table(p).add_column(
                0, "market", pa.array(["spot"] * pq.read_metadata(p).num_rows)
            )
            for p in visible_files(tmp_path)
        ]
    ).cast(datasets.get("trades").schema)
    version = delta.open_table(tmp_path, "trades").version()  # type: ignore[union-attr]

    report = compaction.compact_archive(tmp_path)

    assert report.errors == []
    group = report.groups[("trades", "spot")]
    assert (group.files_before, group.files_after) == (40, 1)
    files = visible_files(tmp_path)
    assert len(files) == 1
    after = read_visible(tmp_path, "trades")
    expected = dedupe_on_key(before, datasets.get("trades").key)
    assert multiset(after) == multiset(expected)
    ids = [i for i in after["trade_id"].to_pylist() if i is not None]
    assert sorted(ids) == list(range(405)), "every id once"
    assert after["trade_id"].null_count == 80, "every row without an id kept"
    assert group.duplicates_removed == before.num_rows - after.num_rows == 40 * 15 - 405
    assert after.equals(after.sort_by(datasets.get("trades").sort_keys))
    # One commit replaced the 40 files; they stay on disk for readers of older versions
    # until the retention has passed (the default, an hour).
    table = delta.open_table(tmp_path, "trades")
    assert table is not None and table.version() == version + 1
    assert len(files_on_disk(tmp_path)) == 41
    old = delta.DeltaTable(str(tmp_path / "trades"), version=version).to_pyarrow_table()
    assert old.num_rows == before.num_rows


def test_vacuum_deletes_replaced_files_after_the_retention_and_the_log_stays_small(
    tmp_path: Path,
) -> None:
    writer = ArchiveWriter(tmp_path)
    for k in range(120):
        flush(writer, "trades", trades([k]))
    compaction.compact_archive(tmp_path, retention_hours=1)
    assert len(files_on_disk(tmp_path)) == 121  # within the retention: kept
    report = compaction.compact_archive(tmp_path, retention_hours=0)
    assert report.removed == 120
    assert files_on_disk(tmp_path) == visible_files(tmp_path)
    assert read_visible(tmp_path, "trades").num_rows == 120
    # 122 commits: checkpoints were written, so a reader replays a handful of entries.
    log_dir = tmp_path / "trades" / delta.LOG_DIR
    assert list(log_dir.glob("*.checkpoint.parquet"))
    assert (log_dir / "_last_checkpoint").exists()


def test_a_large_partition_is_split_into_equal_files_of_full_row_groups(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path)
    for k in range(10):
        flush(writer, "trades", trades(list(range(k * 1000, k * 1000 + 1000)), symbols=5))

    report = compaction.compact_archive(tmp_path, row_group_rows=256, file_rows=4096)

    files = visible_files(tmp_path)
    assert report.groups[("trades", "spot")].files_after == len(files) == 3
    tables = [pq.read_table(f) for f in files]
    assert [t.num_rows for t in tables] == [3334, 3334, 3332]
    assert all(pq.ParquetFile(f).metadata.row_group(0).num_rows == 256 for f in files)
    # File names sort in row order: the files read one after the other are sorted too.
    whole = pa.concat_tables(tables)
    keys = [(n, "ascending") for n, _ in datasets.get("trades").sort_keys]
    assert whole.equals(whole.sort_by(keys))
    assert sorted(whole["trade_id"].to_pylist()) == list(range(10_000))


def test_a_compact_partition_is_left_as_it_is(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path)
    for k in range(3):
        flush(writer, "trades", trades([k]))
    compaction.compact_archive(tmp_path)
    first = visible_files(tmp_path)
    version = delta.open_table(tmp_path, "trades").version()  # type: ignore[union-attr]

    report = compaction.compact_archive(tmp_path)

    assert report.partitions == 0 and report.groups[("trades", "spot")].unchanged == 1
    assert visible_files(tmp_path) == first
    table = delta.open_table(tmp_path, "trades")
    assert table is not None and table.version() == version  # no commit at all
    flush(writer, "trades", trades([99]))  # something new: compacted again
    assert compaction.compact_archive(tmp_path).partitions == 1
    assert len(visible_files(tmp_path)) == 1


def test_only_closed_partitions_are_compacted_when_asked(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path)
    for k in range(4):
        flush(writer, "trades", trades([k]))  # 2025-11-24
        flush(writer, "trades", trades([100 + k], start=T0 + DAY_MS))  # 2025-11-25
    end_of_first_day = (DAY0 - dt.date(1970, 1, 1)).days * DAY_MS + DAY_MS

    compaction.compact_archive(tmp_path, closed_before_ms=end_of_first_day, open_partitions=False)

    by_day = collections.Counter(p.parent.name for p in visible_files(tmp_path))
    assert by_day == {"date=2025-11-24": 1, "date=2025-11-25": 4}


def test_an_open_partition_stays_under_fifty_files_all_day(tmp_path: Path) -> None:
    """Today's partition, flushed every 30 s and compacted every 10 min: the files a
    query opens never exceed about 50, and every row is there once."""
    clock = Clock(T0)
    writer = ArchiveWriter(tmp_path, clock_ms=clock)
    most = 0
    for k in range(600):  # five hours of flushes
        clock.ms += 30_000
        flush(writer, "trades", trades([k], start=T0 + k))
        most = max(most, len(visible_files(tmp_path)))
        if k % 20 == 19:
            report = compaction.compact_archive(tmp_path, closed_before_ms=T0)
            assert report.errors == []
    assert most <= 50
    rows = read_visible(tmp_path, "trades")
    assert sorted(rows["trade_id"].to_pylist()) == list(range(600))
    names = [p.name for p in visible_files(tmp_path)]
    assert any("-m" in name for name in names) or any("-c" in name for name in names)


# -- writers and other compactions during compaction -------------------------------------


def test_a_file_committed_while_the_partition_is_compacted_stays(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path)
    for k in range(5):
        flush(writer, "trades", trades([k]))
    table = delta.open_table(tmp_path, "trades")  # the compaction's snapshot
    assert table is not None
    inputs = delta.files(table, "trades")
    flush(writer, "trades", trades([77]))  # lands between the snapshot and the commit

    partition = inputs[0].partition
    compaction._rewrite(
        str(tmp_path),
        table,
        partition,
        inputs,
        total=len(inputs),
        final=True,
        clock_ms=Clock(T0),
        row_group_rows=compaction.ROW_GROUP_ROWS,
        file_rows=compaction.FILE_ROWS,
    )

    rows = read_visible(tmp_path, "trades")
    assert sorted(rows["trade_id"].to_pylist()) == [0, 1, 2, 3, 4, 77]
    assert len(visible_files(tmp_path)) == 2


def test_a_flush_whose_snapshot_predates_a_compaction_still_commits(tmp_path: Path) -> None:
    """The writer reads the table, a compaction commits (removing files), then the
    writer commits its append on the older snapshot: deltalake refuses that once (it
    checks an append as if it had read the table), and the commit is made again on the
    newer version: the rows land once, nothing is reported as failed."""
    writer = ArchiveWriter(tmp_path)
    for k in range(5):
        flush(writer, "trades", trades([k]))
    stale = delta.open_table(tmp_path, "trades")  # the writer's snapshot
    assert stale is not None
    assert compaction.compact_archive(tmp_path).partitions == 1  # lands in between
    partition = delta.files(stale, "trades")[0].partition
    added = delta.write_file(
        pafs.LocalFileSystem(),
        str(tmp_path),
        partition,
        trades([77]),
        layout.part_name(T0 + 1),
        {"compression": "zstd"},
    )

    delta.commit(stale, "trades", [added])

    rows = read_visible(tmp_path, "trades")
    assert sorted(rows["trade_id"].to_pylist()) == [0, 1, 2, 3, 4, 77]


def test_a_second_compaction_of_the_same_files_is_refused_and_changes_nothing(
    tmp_path: Path,
) -> None:
    writer = ArchiveWriter(tmp_path)
    for k in range(5):
        flush(writer, "trades", trades([k, k + 100]))
    first = delta.open_table(tmp_path, "trades")
    second = delta.open_table(tmp_path, "trades")
    assert first is not None and second is not None
    inputs = delta.files(first, "trades")
    options: dict[str, Any] = {
        "total": len(inputs),
        "final": True,
        "clock_ms": Clock(T0),
        "row_group_rows": compaction.ROW_GROUP_ROWS,
        "file_rows": compaction.FILE_ROWS,
    }
    compaction._rewrite(str(tmp_path), first, inputs[0].partition, inputs, **options)
    with pytest.raises(delta.ConflictError, match="concurrent"):
        compaction._rewrite(str(tmp_path), second, inputs[0].partition, inputs, **options)

    rows = read_visible(tmp_path, "trades")
    assert sorted(rows["trade_id"].to_pylist()) == sorted([*range(5), *range(100, 105)])
    assert len(visible_files(tmp_path)) == 1
    # The loser's files were deleted, not left for vacuum.
    assert len(files_on_disk(tmp_path)) == 5 + 1


def depth_rows(n: int, *, received_at: int, market: str = "spot") -> pa.Table:
    return pa.table(
        {
            "market": [market] * n,
            "symbol": ["BTCUSDT"] * n,
            "received_at": [received_at] * n,
            "update_id": [1] * n,
            "side": ["bid"] * n,
            "level": pa.array(range(n), pa.int16()),
            "price": [100.0] * n,
            "qty": [1.0] * n,
        },
        schema=datasets.get("depth").schema,
    )


# -- kill -9 --------------------------------------------------------------------------------

KILLABLE = """
import os, sys
from collector.storage import compaction
print("ready", flush=True)
report = compaction.compact_archive(sys.argv[1], retention_hours=0)
assert not report.errors, report.errors
sys.stdout.flush()
os._exit(0)  # as the CLI does: no teardown race between pyarrow's and delta-rs's threads
"""


def test_kill_9_at_any_moment_leaves_every_row_once(tmp_path: Path, long_run: bool) -> None:
    """Compaction in a process killed at random moments: after every kill each row is
    visible exactly once and every visible file opens; a clean pass then leaves no file
    on disk that the table does not reference."""
    kills = 40 if long_run else 8
    rng = random.Random(9)
    archive = tmp_path / "archive"
    writer = ArchiveWriter(archive)
    next_id = 0

    def add_files(count: int) -> None:
        nonlocal next_id
        for _ in range(count):
            for market in datasets.MARKETS:
                for day in range(3):
                    ids: list[int | None] = list(range(next_id, next_id + 50))
                    next_id += 50
                    flush(writer, "trades", trades(ids, market=market, start=T0 + day * DAY_MS))

    add_files(30)
    expected = next_id

    # How long one uninterrupted pass takes, on a copy: the kills fall within it.
    probe = tmp_path / "probe"
    subprocess.run(["cp", "-a", str(archive), str(probe)], check=True)
    started = time.monotonic()
    run_killable(probe, kill_after=None)
    pass_s = time.monotonic() - started

    outcomes = collections.Counter[str]()
    for _ in range(kills):
        outcomes[run_killable(archive, kill_after=rng.uniform(0, pass_s))] += 1
        assert_every_row_once(archive, expected)
        add_files(1)  # something new, so that the next pass has every partition to rewrite
        expected = next_id

    # Files a killed pass wrote but never committed are older than the retention (0 h).
    time.sleep(1.1)
    report = compaction.compact_archive(archive, retention_hours=0)
    assert report.errors == []
    assert_every_row_once(archive, expected)
    assert files_on_disk(archive) == visible_files(archive)
    assert outcomes["killed"] > 0, outcomes


def run_killable(archive: Path, kill_after: float | None) -> str:
    """Run a compaction pass in a process; SIGKILL it ``kill_after`` seconds after it
    is ready (None: let it finish). Returns "killed" or "finished"."""
    process = subprocess.Popen(
        [sys.executable, "-c", KILLABLE, str(archive)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    try:
        process.wait(timeout=kill_after if kill_after is not None else 300)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return "killed"
    finally:
        process.stdout.close()
        stderr = process.stderr.read() if process.stderr else ""
        if process.stderr:
            process.stderr.close()
    assert process.returncode == 0, stderr
    return "finished"


def assert_every_row_once(archive: Path, expected: int) -> None:
    for path in visible_files(archive):
        pq.read_metadata(path)  # every visible file is whole
    rows = read_visible(archive, "trades")
    ids = rows["trade_id"].to_pylist()
    assert (len(ids), len(set(ids)), max(ids)) == (expected, expected, expected - 1)


# -- the command line and the daemon --------------------------------------------------------


def test_compact_command_prints_files_before_and_after(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path)
    for k in range(6):
        flush(writer, "trades", trades([k]))  # 2025-11-24: closed
    result = CliRunner().invoke(main, ["compact", "--data-dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert [
        (g["dataset"], g["files_before"], g["files_after"], g["rows_after"]) for g in lines
    ] == [("trades", 6, 1, 6)]
    assert len(visible_files(tmp_path)) == 1


def test_compact_command_fails_clearly_without_an_archive(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["compact", "--data-dir", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "no archive" in result.output


def test_the_daemon_compacts_closed_days_while_it_keeps_collecting(
    sim_server: SimServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An old day's small files are merged by the daemon's own compaction job while it
    collects; what it collects meanwhile (the protection fund's history, which reaches
    into the simulator's past days) arrives complete."""
    writer = ArchiveWriter(tmp_path)
    for k in range(5):
        flush(writer, "depth", depth_rows(10, received_at=T0 + k * 10_000))
    settings = fast_settings(sim_server.base_url, tmp_path)
    settings = settings.model_copy(
        update={"storage": settings.storage.model_copy(update={"compact_every": 1.0})}
    )
    caplog.set_level("INFO", logger="collector.collect.daemon")

    asyncio.run(Daemon(settings).run(8.0, handle_signals=False))

    assert any("compaction: " in r.getMessage() for r in caplog.records)
    old_day = [p for p in visible_files(tmp_path, "depth") if "date=2025-11-24" in str(p)]
    assert len(old_day) == 1 and "-c00" in old_day[0].name  # compacted by the daemon
    assert read_visible(tmp_path, "depth").num_rows >= 50
    groups = catalog.query(
        tmp_path,
        "SELECT symbol, count(*) AS n, count(DISTINCT id) AS ids, min(id) AS lo, max(id) AS hi "
        "FROM protection_fund GROUP BY 1",
    ).to_pylist()
    assert groups and all(g["n"] == g["ids"] == g["hi"] - g["lo"] + 1 for g in groups), groups


def test_a_day_of_the_default_schedule_ends_with_at_most_four_files(tmp_path: Path) -> None:
    """The benchmark's archive, half an hour of it: one file per dataset and market."""
    spec = importlib.util.spec_from_file_location("bench_compaction", ROOT / "bench/compaction.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # its dataclasses look their module up
    spec.loader.exec_module(bench)

    rows = bench.build(tmp_path, 60)
    before = bench.files_by_group(tmp_path)
    report = compaction.compact_archive(tmp_path, retention_hours=0)

    after = bench.files_by_group(tmp_path)
    assert set(after) == set(before) == set(rows)
    assert before[("depth", "option")][0] == 60
    assert all(files <= 4 for files, _ in after.values()), after
    for key, count in rows.items():
        assert report.groups[key].rows_after == count, key

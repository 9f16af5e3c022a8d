"""Compaction: fewer, sorted, de-duplicated files, and no reader ever sees it half-done."""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import fcntl
import importlib.util
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from collector import catalog, datasets
from collector.cli import main
from collector.daemon import Daemon
from collector.sim import SimServer
from collector.storage import compaction, layout, partitions
from collector.storage.writer import ArchiveWriter, dedupe_on_key
from tests.conftest import fast_settings

DAY_MS = 86_400_000
T0 = 1_764_000_000_000  # 2025-11-24T16:00:00Z
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


def visible_files(root: Path, dataset: str = "*") -> list[Path]:
    return sorted(root.glob(f"{dataset}/market=*/date=*/*.parquet"))


def read_visible(root: Path, dataset: str) -> pa.Table:
    files = visible_files(root, dataset)
    schema = datasets.get(dataset).schema
    return pa.concat_tables([pq.read_table(f, schema=schema) for f in files])


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
    flushed = []
    for k in range(40):
        clock.ms += 30_000
        # Overlapping id ranges (duplicates across files) and recent trades without ids,
        # some identical (all kept: no key to tell them apart).
        table = trades([*range(k * 10, k * 10 + 15), None, None])
        flushed.append(table)
        flush(writer, "trades", table)
    assert len(visible_files(tmp_path)) == 40
    before = read_visible(tmp_path, "trades")

    report = compaction.compact_archive(tmp_path, grace_s=0)

    assert report.errors == []
    group = report.groups[("trades", "spot")]
    assert (group.files_before, group.files_after) == (40, 1)
    files = visible_files(tmp_path)
    assert len(files) == 1
    after = pq.read_table(files[0])
    assert after.schema.equals(datasets.get("trades").schema)
    expected = dedupe_on_key(before, datasets.get("trades").key)
    assert multiset(after) == multiset(expected)
    ids = [i for i in after["trade_id"].to_pylist() if i is not None]
    assert sorted(ids) == list(range(405)), "every id once"
    assert after["trade_id"].null_count == 80, "every row without an id kept"
    assert group.duplicates_removed == before.num_rows - after.num_rows == 40 * 15 - 405
    assert after.equals(after.sort_by(datasets.get("trades").sort_keys))
    # Only the current generation is left (grace 0), and no temporary file.
    assert sorted(p.name for p in (tmp_path / "trades/market=spot").iterdir()) == [
        ".date=2025-11-24.g1",
        ".date=2025-11-24.lock",
        "date=2025-11-24",
    ]


def test_a_large_partition_is_split_into_equal_files_of_full_row_groups(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path)
    for k in range(10):
        flush(writer, "trades", trades(list(range(k * 1000, k * 1000 + 1000)), symbols=5))

    report = compaction.compact_archive(tmp_path, grace_s=0, row_group_rows=256, file_rows=4096)

    files = visible_files(tmp_path)
    assert report.groups[("trades", "spot")].files_after == len(files) == 3
    tables = [pq.read_table(f) for f in files]
    assert [t.num_rows for t in tables] == [3334, 3334, 3332]
    assert all(pq.ParquetFile(f).metadata.row_group(0).num_rows == 256 for f in files)
    # File names sort in row order: the files read one after the other are sorted too.
    whole = pa.concat_tables(tables)
    assert whole.equals(whole.sort_by(datasets.get("trades").sort_keys))
    assert sorted(whole["trade_id"].to_pylist()) == list(range(10_000))


def test_a_compact_partition_is_left_as_it_is(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path)
    for k in range(3):
        flush(writer, "trades", trades([k]))
    compaction.compact_archive(tmp_path, grace_s=0)
    first = visible_files(tmp_path)

    report = compaction.compact_archive(tmp_path, grace_s=0)

    assert report.partitions == 0 and report.groups[("trades", "spot")].unchanged == 1
    assert visible_files(tmp_path) == first
    flush(writer, "trades", trades([99]))  # something new: compacted again
    assert compaction.compact_archive(tmp_path, grace_s=0).partitions == 1
    assert len(visible_files(tmp_path)) == 1


def test_only_closed_partitions_are_compacted_when_asked(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path)
    for day in range(3):
        for k in range(2):
            flush(writer, "trades", trades([day * 10 + k], start=T0 + day * DAY_MS))
    # 2025-11-26 ends at T0 + 2 days + 8 h; an hour later it is closed.
    day2_end = T0 + 2 * DAY_MS + 8 * 3_600_000
    report = compaction.compact_archive(
        tmp_path, closed_before_ms=compaction.closed_before_ms(day2_end + 1_800_000)
    )
    assert report.partitions == 2
    counts = {f.parent.name: 0 for f in visible_files(tmp_path)}
    for f in visible_files(tmp_path):
        counts[f.parent.name] += 1
    assert counts == {"date=2025-11-24": 1, "date=2025-11-25": 1, "date=2025-11-26": 2}


def test_compaction_runs_one_at_a_time_per_archive(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path)
    for k in range(2):
        flush(writer, "trades", trades([k]))
    with compaction.archive_lock(tmp_path) as acquired:
        assert acquired
        report = compaction.compact_archive(tmp_path)
        assert report.locked and report.partitions == 0
        with pytest.raises(compaction.StorageError, match="another compaction"):
            compaction.compact_partition(tmp_path, layout.Partition("trades", "spot", DAY0))
    assert len(visible_files(tmp_path)) == 2
    assert compaction.compact_archive(tmp_path).partitions == 1


# -- generations, locks and the writer ------------------------------------------------------


def test_the_writer_creates_a_symlinked_generation_and_reuses_it(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path)
    flush(writer, "trades", trades([1]))
    flush(writer, "trades", trades([2]))
    market = tmp_path / "trades/market=spot"
    assert os.readlink(market / "date=2025-11-24") == ".date=2025-11-24.g0"
    assert len(list((market / ".date=2025-11-24.g0").glob("*.parquet"))) == 2
    assert catalog.has_files(tmp_path, "trades")


def test_writers_racing_to_create_a_partition_share_it(tmp_path: Path) -> None:
    errors: list[BaseException] = []

    def write(offset: int) -> None:
        writer = ArchiveWriter(tmp_path)
        try:
            for k in range(20):
                flush(writer, "trades", trades([offset + k], start=T0 + k * DAY_MS))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n * 1000,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(visible_files(tmp_path)) == 80
    assert not list((tmp_path / "trades/market=spot").glob(".date=*.g1"))


def test_old_plain_partitions_keep_working_and_are_converted_in_place(tmp_path: Path) -> None:
    plain = tmp_path / "trades/market=spot/date=2025-11-24"
    plain.mkdir(parents=True)
    for k in range(3):
        pq.write_table(trades([k]), plain / layout.part_name(T0 + k))
    writer = ArchiveWriter(tmp_path)
    flush(writer, "trades", trades([3]))  # the writer writes into the plain directory
    assert not plain.is_symlink() and len(list(plain.glob("*.parquet"))) == 4
    names_before = sorted(p.name for p in plain.glob("*.parquet"))

    found = partitions.current(tmp_path, layout.Partition("trades", "spot", DAY0))
    assert found is not None
    with partitions.locked(tmp_path, layout.Partition("trades", "spot", DAY0), exclusive=True):
        partitions.convert_plain(
            tmp_path, layout.Partition("trades", "spot", DAY0), flip_time_s=time.time()
        )
    # Same names behind the link: a reader that listed the plain directory still opens them.
    assert plain.is_symlink()
    assert sorted(p.name for p in plain.glob("*.parquet")) == names_before

    compaction.compact_archive(tmp_path, grace_s=0)
    assert sorted(read_visible(tmp_path, "trades")["trade_id"].to_pylist()) == [0, 1, 2, 3]
    flush(writer, "trades", trades([4]))
    assert sorted(read_visible(tmp_path, "trades")["trade_id"].to_pylist()) == [0, 1, 2, 3, 4]


def test_a_conversion_interrupted_between_its_two_renames_is_repaired(tmp_path: Path) -> None:
    # The state the two-rename fallback leaves when killed between the renames: the
    # complete generation 0 exists, date=D does not.
    market = tmp_path / "trades/market=spot"
    for day in (0, 1):
        generation = market / f".date={DAY0 + dt.timedelta(days=day)}.g0"
        generation.mkdir(parents=True)
        for k in range(2):
            table = trades([day * 10 + k], start=T0 + day * DAY_MS)
            pq.write_table(table, generation / layout.part_name(T0 + k))
    assert visible_files(tmp_path) == []

    # A writer arriving first adopts it; so does the next compaction pass.
    flush(ArchiveWriter(tmp_path), "trades", trades([17], start=T0 + DAY_MS))
    compaction.compact_archive(tmp_path, grace_s=0)

    assert sorted(read_visible(tmp_path, "trades")["trade_id"].to_pylist()) == [0, 1, 10, 11, 17]


def test_replaced_generations_stay_for_the_grace_period(tmp_path: Path) -> None:
    clock = Clock(T0)
    writer = ArchiveWriter(tmp_path)
    for k in range(3):
        flush(writer, "trades", trades([k]))
    market = tmp_path / "trades/market=spot"
    old = market / ".date=2025-11-24.g0"
    old_files = sorted(old.glob("*.parquet"))

    compaction.compact_archive(tmp_path, grace_s=600, clock_ms=clock)
    assert all(f.exists() for f in old_files), "a reader holding these paths can still read"
    clock.ms += 599_000
    compaction.compact_archive(tmp_path, grace_s=600, clock_ms=clock)
    assert old.exists()
    clock.ms += 1_000
    report = compaction.compact_archive(tmp_path, grace_s=600, clock_ms=clock)
    assert not old.exists() and report.removed == 1


def test_orphaned_temp_files_in_generations_are_removed_once(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path)
    flush(writer, "depth", depth_rows(10, received_at=T0))
    current = tmp_path / "depth/market=spot/.date=2025-11-24.g0"
    orphan = current / layout.temp_name(layout.part_name(T0))
    orphan.write_bytes(b"half a file")
    # A generation a running compaction is writing is not the writer's to clean.
    unfinished = tmp_path / "depth/market=spot/.date=2025-11-24.g1"
    unfinished.mkdir()
    in_progress = unfinished / layout.temp_name(layout.part_name(T0 + 1))
    in_progress.write_bytes(b"being written")

    removed = writer.remove_orphans()

    assert removed == [str(tmp_path / "depth/market=spot/date=2025-11-24" / orphan.name)]
    assert not orphan.exists() and in_progress.exists()


def test_exchange_swaps_a_directory_and_a_symlink_atomically(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    os.symlink("elsewhere", tmp_path / "link")
    if not partitions._exchange(tmp_path / "link", tmp_path / "dir"):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not supported here: the fallback is used")
    assert (tmp_path / "dir").is_symlink() and os.readlink(tmp_path / "dir") == "elsewhere"
    assert (tmp_path / "link").is_dir() and not (tmp_path / "link").is_symlink()


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


# -- writers during compaction --------------------------------------------------------------


def test_a_file_flushed_while_the_partition_is_compacted_is_carried_over(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path)
    for k in range(5):
        flush(writer, "trades", trades([k]))
    partition = layout.Partition("trades", "spot", DAY0)
    outcome: list[Any] = []
    market = tmp_path / "trades/market=spot"
    # Hold the partition as a writer does: compaction reads and writes its new generation,
    # then waits for the lock to switch.
    with partitions.locked(tmp_path, partition, exclusive=False):
        thread = threading.Thread(
            target=lambda: outcome.append(
                compaction.compact_partition(tmp_path, partition, grace_s=0)
            )
        )
        thread.start()
        wait_for(lambda: any((market / ".date=2025-11-24.g1").glob("*-c00.parquet")))
        assert thread.is_alive(), "compaction must wait for the writer before switching"
        flush(writer, "trades", trades([100, 101]))  # lands in generation 0
    thread.join()

    result = outcome[0]
    assert (result.files_before, result.files_after) == (6, 2)
    assert sorted(read_visible(tmp_path, "trades")["trade_id"].to_pylist()) == [
        0,
        1,
        2,
        3,
        4,
        100,
        101,
    ]


def wait_for(condition: Any, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


class Ledger:
    """Rows per partition whose flush started and whose flush finished."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started: collections.Counter[str] = collections.Counter()
        self.done: collections.Counter[str] = collections.Counter()

    def snapshot(self) -> tuple[dict[str, int], dict[str, int]]:
        with self.lock:
            return dict(self.started), dict(self.done)


def test_readers_never_see_a_partition_half_compacted(tmp_path: Path, long_run: bool) -> None:
    """A writer keeps flushing into four partitions, compaction keeps rewriting them, and
    readers count each partition: a count is never below what had been flushed before
    the read, never above what had started by its end, and never shows an id twice.

    Exact: ``catalog.query`` (the DuckDB views) and pyarrow reading a partition's
    resolved generation. Listing ``date=D`` directly with pyarrow is only guaranteed
    never to show a duplicate (see the README's Compaction section)."""
    rounds = 200 if long_run else 20
    dates = [T0 + d * DAY_MS for d in range(2)]
    markets = ["spot", "option"]
    ledger = Ledger()
    writer = ArchiveWriter(tmp_path)
    next_id = iter(range(10**9))

    def write_round() -> None:
        for market in markets:
            for start in dates:
                ids: list[int | None] = [next(next_id) for _ in range(5)]
                key = f"{market}/{layout.date_of_ms(start)}"
                with ledger.lock:
                    ledger.started[key] += 5
                flush(writer, "trades", trades(ids, market=market, start=start))
                with ledger.lock:
                    ledger.done[key] += 5

    for _ in range(3):
        write_round()
    stop = threading.Event()
    duckdb_read = threading.Event()
    failures: list[str] = []
    counted = collections.Counter[str]()

    def check(
        how: str,
        counts: dict[str, tuple[int, int]],
        before: dict[str, int],
        after: dict[str, int],
        exact: bool = True,
    ) -> None:
        for key, floor in before.items():
            count, distinct = counts.get(key, (0, 0))
            low = floor if exact else 0
            if not low <= count <= after[key] or count != distinct:
                failures.append(
                    f"{how} {key}: {count} rows, {distinct} ids; expected {low}..{after[key]}"
                )
        counted[how] += 1

    def duckdb_reader() -> None:
        while not stop.is_set():
            _, done = ledger.snapshot()
            table = catalog.query(
                tmp_path,
                "SELECT market || '/' || date AS key, count(*), count(DISTINCT trade_id) "
                "FROM trades GROUP BY 1",
            )
            started, _ = ledger.snapshot()
            rows = zip(*(table.column(i).to_pylist() for i in range(3)), strict=True)
            check("duckdb", {k: (c, d) for k, c, d in rows}, done, started)
            duckdb_read.set()

    def pyarrow_reader(resolve: bool) -> None:
        while not stop.is_set():
            _, done = ledger.snapshot()
            counts = {}
            for key in done:
                market, date = key.split("/")
                directory = tmp_path / f"trades/market={market}/date={date}"
                counts[key] = count_with_pyarrow(directory.resolve() if resolve else directory)
            started, _ = ledger.snapshot()
            check(f"pyarrow resolve={resolve}", counts, done, started, exact=resolve)

    def writer_loop() -> None:
        while not stop.is_set():
            write_round()

    def guarded(target: Any, *args: Any) -> threading.Thread:
        def run() -> None:
            try:
                target(*args)
            except Exception as exc:
                failures.append(f"{target.__name__}{args}: {exc!r}")
                stop.set()

        return threading.Thread(target=run)

    threads = [
        guarded(duckdb_reader),
        guarded(pyarrow_reader, True),
        guarded(pyarrow_reader, False),
        guarded(writer_loop),
    ]
    for thread in threads:
        thread.start()
    flips = 0
    try:
        for _ in range(rounds):
            # A query that overlapped a switch runs again (catalog.query); it gets a
            # quiet moment after each round, as it would between real compactions,
            # which switch a partition about once a day.
            duckdb_read.clear()
            # The default grace period: a reader that resolved a generation a moment
            # before it was replaced still reads all of it.
            report = compaction.compact_archive(tmp_path)
            assert report.errors == []
            flips += report.partitions
            while not (duckdb_read.wait(0.1) or stop.is_set()):
                pass
            if stop.is_set():
                break
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []
    assert min(counted.values()) > 0 and len(counted) == 3
    assert flips >= rounds  # the writer kept giving compaction something to switch
    table = read_visible(tmp_path, "trades")
    assert table.num_rows == sum(ledger.done.values()) == len(set(table["trade_id"].to_pylist()))


def count_with_pyarrow(directory: Path) -> tuple[int, int]:
    """Rows and distinct ids in one partition, as a pyarrow user reads it. A read that
    spans a switch can find a listed file gone (FileNotFoundError): read again."""
    for _ in range(10):
        try:
            dataset = ds.dataset(str(directory), format="parquet")
            if not dataset.files:  # listed nothing (a listing that straddled a switch)
                return 0, 0
            table = dataset.to_table(columns=["trade_id"])
        except FileNotFoundError:
            continue
        return table.num_rows, len(set(table["trade_id"].to_pylist()))
    raise AssertionError(f"{directory} kept changing under ten reads in a row")


# -- kill -9 --------------------------------------------------------------------------------

KILLABLE = """
import sys
from collector.storage import compaction
print("ready", flush=True)
report = compaction.compact_archive(sys.argv[1], grace_s=0)
assert not report.errors, report.errors
"""


def test_kill_9_at_any_moment_leaves_every_row_once(tmp_path: Path, long_run: bool) -> None:
    """Compaction in a process killed at random moments: after every kill each row is
    visible exactly once and every visible file opens; a clean pass then leaves no
    temporary file and no generation but the current ones."""
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

    add_files(40)
    # One partition in the plain form of older archives, converted by the first pass.
    plain = archive / "trades/market=spot/date=2025-11-20"
    plain.mkdir()
    for _ in range(20):
        ids = list(range(next_id, next_id + 50))
        next_id += 50
        pq.write_table(trades(ids, start=T0 - 4 * DAY_MS), plain / layout.part_name(T0))
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

    report = compaction.compact_archive(archive, grace_s=0)
    assert report.errors == []
    assert_every_row_once(archive, expected)
    leftovers = [
        p.relative_to(archive)
        for p in archive.rglob("*")
        if p.name.endswith(".tmp") or ".tmp-" in p.name
    ]
    assert leftovers == []
    for market_dir in archive.glob("trades/market=*"):
        generations = sorted(p.name for p in market_dir.glob(".date=*.g*"))
        current = sorted(os.readlink(link) for link in market_dir.glob("date=*"))
        assert generations == current, market_dir
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
    counted = catalog.query(
        archive,
        "SELECT count(*) AS n, count(DISTINCT trade_id) AS ids, max(trade_id) AS top FROM trades",
    ).to_pylist()[0]
    assert counted == {"n": expected, "ids": expected, "top": expected - 1}


# -- the command line and the daemon --------------------------------------------------------


def test_compact_command_prints_files_before_and_after_and_respects_the_daemon(
    tmp_path: Path,
) -> None:
    writer = ArchiveWriter(tmp_path)
    today = int(time.time() * 1000)
    for k in range(6):
        flush(writer, "trades", trades([k]))  # 2025-11-24: closed
        flush(writer, "trades", trades([100 + k], start=today))  # today: open
    runner = CliRunner()
    lock = tmp_path / compaction.DAEMON_LOCK_NAME
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # what a running daemon holds
        refused = runner.invoke(main, ["compact", "--data-dir", str(tmp_path), "--all"])
        assert refused.exit_code == 2
        assert "daemon is running" in refused.output and "--all" in refused.output
        assert len(visible_files(tmp_path)) == 12

        closed_only = runner.invoke(main, ["compact", "--data-dir", str(tmp_path)])
        assert closed_only.exit_code == 0, closed_only.output
        assert "closed partitions only" in closed_only.output
        assert "trades" in closed_only.output and "6 -> 1" in closed_only.output
        assert len(visible_files(tmp_path)) == 7
    finally:
        os.close(fd)

    everything = runner.invoke(main, ["compact", "--data-dir", str(tmp_path), "--json"])
    assert everything.exit_code == 0, everything.output
    lines = [json.loads(line) for line in everything.output.splitlines()]
    assert lines == [
        {
            "dataset": "trades",
            "market": "spot",
            "partitions": 1,
            "unchanged": 1,
            "files_before": 7,
            "files_after": 2,
            "rows_before": 12,
            "rows_after": 12,
            "duplicates_removed": 0,
            "bytes_before": lines[0]["bytes_before"],
            "bytes_after": lines[0]["bytes_after"],
        }
    ]
    assert len(visible_files(tmp_path)) == 2


def test_compact_command_fails_clearly_without_an_archive(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["compact", "--data-dir", str(tmp_path / "nothing")])
    assert result.exit_code == 1 and "no archive" in result.output


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
    caplog.set_level("INFO", logger="collector.daemon")

    asyncio.run(Daemon(settings).run(8.0, handle_signals=False))

    assert any("compaction: " in r.getMessage() for r in caplog.records)
    old_day = tmp_path / "depth/market=spot/date=2025-11-24"
    assert os.readlink(old_day) != ".date=2025-11-24.g0"  # switched by the daemon
    assert len(list(old_day.glob("*.parquet"))) == 1
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
    report = compaction.compact_archive(tmp_path, grace_s=0)

    after = bench.files_by_group(tmp_path)
    assert set(after) == set(before) == set(rows)
    assert before[("depth", "option")][0] == 60
    assert all(files <= 4 for files, _ in after.values()), after
    for key, count in rows.items():
        assert report.groups[key].rows_after == count, key

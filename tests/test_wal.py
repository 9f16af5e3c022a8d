"""The write-ahead log: rows survive a crash, replay duplicates nothing, failures are safe."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from collector import datasets
from collector.errors import FatalStorageError, StorageError
from collector.storage import delta, legacy
from collector.storage.wal import WAL_DIR, WriteAheadLog
from collector.storage.writer import ArchiveWriter
from tests.disk_faults import Disk
from tests.test_storage import DAY_MS, T0, read_all, trades


def depth(market: str, symbol: str, received_ms: int, levels: int = 2) -> pa.Table:
    """One order-book snapshot: ``levels`` bids and asks received at ``received_ms``."""
    sides = ["bid"] * levels + ["ask"] * levels
    return pa.table(
        {
            "market": [market] * 2 * levels,
            "symbol": [symbol] * 2 * levels,
            "received_at": [received_ms] * 2 * levels,
            "update_id": [received_ms] * 2 * levels,
            "side": sides,
            "level": [i % levels for i in range(2 * levels)],
            "price": [100.0 + i for i in range(2 * levels)],
            "qty": [1.0] * 2 * levels,
        },
        schema=datasets.get("depth").schema,
    )


def segments(root: Path) -> list[str]:
    wal = root / WAL_DIR
    return sorted(p.name for p in wal.iterdir() if p.name.isdigit()) if wal.exists() else []


def keys(table: pa.Table, *columns: str) -> list[tuple[object, ...]]:
    return sorted(zip(*(table[c].to_pylist() for c in columns), strict=True))


def crash(writer: ArchiveWriter) -> None:
    """What kill -9 leaves: the log's files closed, the buffers gone, nothing flushed."""
    writer.close()


def test_rows_added_before_a_crash_are_replayed_at_the_next_start(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path, wal=True)
    writer.add("trades", trades([("spot", "BTC", 1, T0), ("spot", "BTC", 2, T0 + DAY_MS)]))
    writer.add("depth", depth("spot", "BTC", T0))
    writer.add("depth", depth("contract", "BTC", T0 + 1))
    crash(writer)
    assert read_all(tmp_path, "depth").num_rows == 0

    recovery = ArchiveWriter(tmp_path, wal=True).recover()

    assert recovery.restored == {"trades": 2, "depth": 8}
    assert recovery.flush.errors == []
    assert keys(read_all(tmp_path, "trades"), "trade_id") == [(1,), (2,)]
    assert (
        keys(read_all(tmp_path, "depth"), "market", "side", "level").count(("spot", "bid", 0)) == 1
    )
    assert read_all(tmp_path, "depth").num_rows == 8
    assert segments(tmp_path) == []  # replayed segments are gone


def test_a_crash_after_the_flush_but_before_the_log_was_deleted_duplicates_nothing(
    tmp_path: Path,
) -> None:
    writer = ArchiveWriter(tmp_path, wal=True)
    writer.add("trades", trades([("spot", "BTC", 1, T0), ("spot", "BTC", 2, T0)]))
    # Recent trades have no id: two equal-looking rows are two trades, both kept once.
    writer.add("trades", trades([("spot", "ETH", None, T0 + 5)] * 2))
    writer.add("depth", depth("spot", "BTC", T0))
    saved = tmp_path / "saved-wal"
    shutil.copytree(tmp_path / WAL_DIR, saved)
    assert writer.flush().errors == []
    crash(writer)
    # As if the process died between writing the Parquet files and deleting the segment.
    shutil.rmtree(tmp_path / WAL_DIR)
    shutil.copytree(saved, tmp_path / WAL_DIR)

    recovery = ArchiveWriter(tmp_path, wal=True).recover()

    assert recovery.replayed == {"trades": 4, "depth": 4}
    assert recovery.restored == {"trades": 0, "depth": 0}
    table = read_all(tmp_path, "trades")
    assert keys(table, "symbol", "trade_id") == [
        ("BTC", 1),
        ("BTC", 2),
        ("ETH", None),
        ("ETH", None),
    ]
    assert read_all(tmp_path, "depth").num_rows == 4


def test_a_crash_after_a_failed_flush_replays_the_whole_uncommitted_dataset(
    tmp_path: Path,
) -> None:
    writer = ArchiveWriter(tmp_path, wal=True)
    writer.add("trades", trades([("spot", "BTC", 1, T0), ("spot", "BTC", 2, T0 + DAY_MS)]))
    # The second day cannot be written: a file stands where its directory goes.
    blocker = tmp_path / "trades/market=spot/date=2025-11-25"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a directory")
    result = writer.flush()
    # A dataset's flush is one commit: the first day was not committed either.
    assert result.files == [] and len(result.errors) == 1
    assert segments(tmp_path) != []  # a failed flush keeps the log: it holds the kept rows
    crash(writer)
    blocker.unlink()

    recovery = ArchiveWriter(tmp_path, wal=True).recover()

    assert recovery.restored == {"trades": 2}
    assert keys(read_all(tmp_path, "trades"), "trade_id") == [(1,), (2,)]


def test_a_record_cut_by_a_crash_is_skipped_and_the_rest_replayed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer = ArchiveWriter(tmp_path, wal=True)
    for received in (T0, T0 + 1000, T0 + 2000):
        writer.add("depth", depth("spot", "BTC", received))
    crash(writer)
    (log_file,) = (tmp_path / WAL_DIR).glob("*/depth.arrows")
    os.truncate(log_file, log_file.stat().st_size - 10)  # the last write was cut short

    with caplog.at_level(logging.WARNING):
        recovery = ArchiveWriter(tmp_path, wal=True).recover()

    assert recovery.restored == {"depth": 8}
    received = {
        t.timestamp() * 1000 for t in read_all(tmp_path, "depth")["received_at"].to_pylist()
    }
    assert received == {T0, T0 + 1000}
    assert "depth.arrows: kept 8 row(s); the last" in caplog.text


def test_a_failed_flush_keeps_the_log_and_a_successful_one_deletes_it(tmp_path: Path) -> None:
    disk = Disk()
    writer = disk.writer(tmp_path)
    writer.add("depth", depth("spot", "BTC", T0))
    disk.full = True
    writer.add("depth", depth("spot", "BTC", T0 + 1000))  # its log append fails too
    first = writer.flush()
    assert first.files == [] and "the disk is full" in str(first.errors[0])
    assert len(segments(tmp_path)) == 1
    disk.full = False
    writer.add("depth", depth("spot", "BTC", T0 + 2000))
    assert writer.flush().errors == []
    assert segments(tmp_path) == []
    assert read_all(tmp_path, "depth").num_rows == 12


def test_a_full_disk_during_appends_loses_no_row_and_leaves_a_replayable_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    disk = Disk()
    writer = disk.writer(tmp_path)
    writer.add("depth", depth("spot", "BTC", T0))
    disk.full = True
    with caplog.at_level(logging.WARNING):
        for second in range(1, 4):
            writer.add("depth", depth("spot", "BTC", T0 + second * 1000))
    disk.full = False
    writer.add("depth", depth("spot", "BTC", T0 + 9000))
    # Every row is in memory; the log holds those whose append worked.
    assert writer.buffered_rows() == {"depth": 5 * 4}
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "the disk is full" in errors[0].getMessage()
    assert disk.log_enospc == 3
    crash(writer)

    ArchiveWriter(tmp_path, wal=True).recover()

    received = {
        t.timestamp() * 1000 for t in read_all(tmp_path, "depth")["received_at"].to_pylist()
    }
    assert received == {T0, T0 + 9000}  # the torn appends were cut back, the later one kept


def test_a_full_disk_during_a_flush_leaves_no_file_and_resumes(
    tmp_path: Path,
) -> None:
    disk = Disk()
    writer = disk.writer(tmp_path)
    writer.add("trades", trades([("spot", "BTC", i, T0 + i) for i in range(1, 50)]))
    disk.full = True
    for _ in range(3):
        result = writer.flush()
        assert result.files == [] and "the disk is full" in str(result.errors[0])
        # The half-written file is deleted (it was never committed, but it held space).
        assert not list(tmp_path.glob("trades/*/*/*.parquet"))
    disk.full = False
    assert writer.flush().errors == []
    assert keys(read_all(tmp_path, "trades"), "trade_id") == [(i,) for i in range(1, 50)]


def test_a_failed_fsync_of_a_data_file_stops_the_writer_for_good(tmp_path: Path) -> None:
    disk = Disk()
    writer = disk.writer(tmp_path)
    writer.add("trades", trades([("spot", "BTC", 1, T0), ("spot", "BTC", 2, T0)]))
    disk.fsync_fails = True
    with pytest.raises(FatalStorageError, match=r"fsync of .* failed: Input/output error"):
        writer.flush()
    disk.fsync_fails = False
    # No retry, even though fsync works again: the first failure may have dropped data.
    with pytest.raises(FatalStorageError):
        writer.flush()
    assert segments(tmp_path) != []
    crash(writer)

    recovery = ArchiveWriter(tmp_path, wal=True).recover()

    assert recovery.flush.errors == []
    assert keys(read_all(tmp_path, "trades"), "trade_id") == [(1,), (2,)]


def test_a_failed_fsync_of_the_log_is_fatal(tmp_path: Path) -> None:
    disk = Disk()
    writer = disk.writer(tmp_path)
    writer.add("depth", depth("spot", "BTC", T0))
    disk.fsync_fails = True
    with pytest.raises(FatalStorageError, match="write-ahead log"):
        writer.sync()
    with pytest.raises(FatalStorageError):
        writer.flush()
    assert read_all(tmp_path, "depth").num_rows == 0


def test_sync_fsyncs_only_what_changed(tmp_path: Path) -> None:
    disk = Disk()
    writer = disk.writer(tmp_path)
    writer.add("depth", depth("spot", "BTC", T0))
    writer.sync()
    after_first = disk.fsyncs
    assert after_first >= 1
    writer.sync()
    assert disk.fsyncs == after_first  # nothing appended since: no disk flush
    writer.add("depth", depth("spot", "BTC", T0 + 1))
    writer.sync()
    assert disk.fsyncs == after_first + 1


def test_segments_of_a_running_writer_are_never_replayed_by_its_own_flush(
    tmp_path: Path,
) -> None:
    # A segment that no replay has read must survive a flush (it may be another run's).
    foreign = tmp_path / WAL_DIR / "000000000007"
    foreign.mkdir(parents=True)
    (foreign / "depth.arrows").write_bytes(b"")
    writer = ArchiveWriter(tmp_path, wal=True)
    writer.add("depth", depth("spot", "BTC", T0))
    assert writer.flush().errors == []
    assert foreign.exists()
    assert segments(tmp_path) == ["000000000007"]


def test_replay_refuses_a_log_of_an_incompatible_schema(tmp_path: Path) -> None:
    log = WriteAheadLog(str(tmp_path / WAL_DIR))
    log.append("depth", pa.table({"market": ["spot"]}))
    log.close()
    with pytest.raises(StorageError, match="move the file out of the archive"):
        ArchiveWriter(tmp_path, wal=True).recover()


def test_recovery_trusts_each_tables_application_transaction(tmp_path: Path) -> None:
    # Segment 1 reaches both tables; segment 2 reaches depth only (trades failed to commit).
    writer = ArchiveWriter(tmp_path, wal=True)
    writer.add("trades", trades([("spot", "BTC", 1, T0)]))
    writer.add("depth", depth("spot", "BTC", T0))
    assert writer.flush().errors == []
    writer.add("trades", trades([("spot", "BTC", 2, T0 + 1)]))
    writer.add("depth", depth("spot", "BTC", T0 + 1))
    blocker = tmp_path / "trades/market=spot/date=2025-11-24"
    shutil.move(str(blocker), str(tmp_path / "moved"))
    blocker.write_text("not a directory")
    result = writer.flush()
    assert [e.dataset for e in result.errors] == ["trades"]
    crash(writer)
    blocker.unlink()
    shutil.move(str(tmp_path / "moved"), str(blocker))
    trades_table = delta.open_table(tmp_path, "trades")
    depth_table = delta.open_table(tmp_path, "depth")
    assert trades_table is not None and depth_table is not None
    writer_id = (tmp_path / WAL_DIR / "writer-id").read_text().strip()
    assert delta.committed_segment(trades_table, writer_id) == 1
    assert delta.committed_segment(depth_table, writer_id) == 2

    recovery = ArchiveWriter(tmp_path, wal=True).recover()

    # Only the uncommitted trade comes back; depth's segment 2 is already in its table.
    assert recovery.restored == {"trades": 1, "depth": 0}
    assert keys(read_all(tmp_path, "trades"), "trade_id") == [(1,), (2,)]
    assert read_all(tmp_path, "depth").num_rows == 8


def test_segment_numbers_never_go_back_below_a_committed_one(tmp_path: Path) -> None:
    # The log is emptied after every successful flush; a new run must not number its
    # segments from 1 again, or its rows would look committed already.
    writer = ArchiveWriter(tmp_path, wal=True)
    for i in range(3):
        writer.add("trades", trades([("spot", "BTC", i, T0 + i)]))
        assert writer.flush().errors == []
    writer.close()
    assert segments(tmp_path) == []
    second = ArchiveWriter(tmp_path, wal=True)
    second.recover()
    second.add("trades", trades([("spot", "BTC", 10, T0 + 10)]))
    crash(second)

    recovery = ArchiveWriter(tmp_path, wal=True).recover()

    assert recovery.restored == {"trades": 1}
    assert keys(read_all(tmp_path, "trades"), "trade_id") == [(0,), (1,), (2,), (10,)]


def test_a_failed_fsync_on_the_first_flush_leaves_a_delta_archive_that_restarts(
    tmp_path: Path,
) -> None:
    # The first flush of a dataset creates its table before writing any file: a stop
    # then (failed fsync, kill -9) must not leave data folders without a _delta_log,
    # which the next start would take for the layout before Delta Lake and refuse.
    disk = Disk()
    writer = disk.writer(tmp_path)
    writer.add("trades", trades([("spot", "BTC", 1, T0), ("spot", "BTC", 2, T0 + DAY_MS)]))
    disk.fsync_fails = True
    with pytest.raises(FatalStorageError):
        writer.flush()
    crash(writer)
    assert not legacy.is_legacy_archive(tmp_path)
    assert not list(tmp_path.glob("trades/*/*/*.parquet"))

    recovery = ArchiveWriter(tmp_path, wal=True).recover()

    assert recovery.restored == {"trades": 2}
    assert keys(read_all(tmp_path, "trades"), "trade_id") == [(1,), (2,)]

"""Storage: partition paths, Delta commits, schemas, no duplicates, nothing lost on failure."""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector import datasets
from collector.errors import StorageError
from collector.storage import compaction, delta, layout
from collector.storage.writer import ArchiveWriter

DAY_MS = 86_400_000
T0 = 1_764_000_000_000  # 2025-11-24T16:00:00Z


def trades(rows: list[tuple[str, str, int | None, int]]) -> pa.Table:
    """(market, symbol, trade_id, time_ms) rows as a trades table."""
    return pa.table(
        {
            "market": [r[0] for r in rows],
            "symbol": [r[1] for r in rows],
            "trade_id": [r[2] for r in rows],
            "time": [r[3] for r in rows],
            "price": [100.0 + i for i in range(len(rows))],
            "qty": [1.5] * len(rows),
            "is_buyer_maker": [True] * len(rows),
            "received_at": [r[3] + 5 for r in rows],
        },
        schema=datasets.get("trades").schema,
    )


def read_all(root: Path, dataset: str) -> pa.Table:
    """The table's current rows, as a Delta reader sees them."""
    table = delta.open_table(root, dataset)
    return table.to_pyarrow_table() if table is not None else pa.table({})


@given(
    st.sampled_from(list(datasets.DATASETS)),
    st.sampled_from(datasets.MARKETS),
    st.dates(min_value=dt.date(1970, 1, 1), max_value=dt.date(9999, 12, 31)),
)
def test_partition_path_round_trips(dataset: str, market: str, date: dt.date) -> None:
    partition = layout.Partition(dataset, market, date)
    assert layout.Partition.from_path(partition.path) == partition
    assert partition.path == f"{dataset}/market={market}/date={date.isoformat()}"


@pytest.mark.parametrize(
    ("dataset", "market"), [("trades", "../etc"), ("trades", "SPOT"), ("../x", "spot")]
)
def test_partition_refuses_names_outside_the_registry(dataset: str, market: str) -> None:
    with pytest.raises((KeyError, ValueError)):
        layout.Partition(dataset, market, dt.date(2026, 1, 1))


@given(st.integers(min_value=0, max_value=4_102_444_800_000))
def test_date_of_ms_is_the_utc_date(ms: int) -> None:
    expected = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).date()
    assert layout.date_of_ms(ms) == expected


def test_flush_writes_hive_partitions_by_market_and_event_date(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path)
    writer.add(
        "trades",
        trades(
            [
                ("spot", "BTCUSDT", 2, T0),
                ("spot", "BTCUSDT", 1, T0 - 1),
                ("contract", "BTCUSDT", 1, T0),
                ("spot", "ETHUSDT", 7, T0 + DAY_MS),
            ]
        ),
    )
    result = writer.flush()
    assert result.errors == []
    relative = sorted(str(Path(f).relative_to(tmp_path).parent) for f in result.files)
    assert relative == [
        "trades/market=contract/date=2025-11-24",
        "trades/market=spot/date=2025-11-24",
        "trades/market=spot/date=2025-11-25",
    ]
    spot_day = pq.read_table(next((tmp_path / "trades/market=spot/date=2025-11-24").glob("*")))
    # The partition values live in the Delta log and the path, not inside the file.
    assert spot_day.schema.equals(delta.file_schema("trades"))
    assert spot_day["trade_id"].to_pylist() == [1, 2]  # sorted by symbol, then time
    # One flush, one commit for the dataset, however many partitions it touched.
    table = delta.open_table(tmp_path, "trades")
    assert table is not None and table.version() == 1  # 0 created the table
    assert read_all(tmp_path, "trades").num_rows == 4
    meta = pq.ParquetFile(
        next((tmp_path / "trades/market=spot/date=2025-11-24").glob("*"))
    ).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"
    assert writer.buffered_rows() == {}


def test_rows_are_sorted_by_symbol_then_time(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path)
    writer.add(
        "trades",
        trades(
            [("spot", "ETH", 1, T0 + 5), ("spot", "BTC", 9, T0 + 9), ("spot", "BTC", 8, T0 + 1)]
        ),
    )
    writer.flush()
    table = read_all(tmp_path, "trades")
    assert list(zip(table["symbol"].to_pylist(), table["trade_id"].to_pylist(), strict=True)) == [
        ("BTC", 8),
        ("BTC", 9),
        ("ETH", 1),
    ]


def test_a_flush_never_writes_a_key_twice(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path)
    writer.add("trades", trades([("spot", "BTC", 1, T0), ("spot", "BTC", 2, T0)]))
    writer.add("trades", trades([("spot", "BTC", 2, T0), ("spot", "ETH", 2, T0)]))
    writer.flush()
    table = read_all(tmp_path, "trades")
    keys = list(zip(table["symbol"].to_pylist(), table["trade_id"].to_pylist(), strict=True))
    assert sorted(keys) == [("BTC", 1), ("BTC", 2), ("ETH", 2)]


def test_rows_without_a_trade_id_are_all_kept(tmp_path: Path) -> None:
    # Recent trades have no id: equal-looking rows are distinct trades, not duplicates.
    writer = ArchiveWriter(tmp_path)
    writer.add("trades", trades([("spot", "BTC", None, T0)] * 3))
    writer.flush()
    assert read_all(tmp_path, "trades").num_rows == 3


def test_add_rejects_a_table_with_another_schema(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path)
    with pytest.raises(StorageError, match="trades schema"):
        writer.add("trades", pa.table({"market": ["spot"]}))


def test_a_failed_write_keeps_the_rows_and_commits_nothing(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path)
    writer.add("trades", trades([("spot", "BTC", 1, T0), ("spot", "BTC", 2, T0 + DAY_MS)]))
    # Make the second day's partition directory unwritable by putting a file where it goes.
    (tmp_path / "trades/market=spot").mkdir(parents=True)
    (tmp_path / "trades/market=spot/date=2025-11-25").write_text("not a directory")
    result = writer.flush()
    assert result.files == [] and len(result.errors) == 1
    assert "trades" in str(result.errors[0])
    # A dataset's flush is one commit: nothing of it is visible, all of it stays buffered,
    # and the file written for the first day is deleted again.
    assert writer.buffered_rows() == {"trades": 2}
    assert read_all(tmp_path, "trades").num_rows == 0
    assert not list((tmp_path / "trades/market=spot").glob("date=2025-11-24/*.parquet"))
    (tmp_path / "trades/market=spot/date=2025-11-25").unlink()
    second = writer.flush()
    assert second.errors == []
    table = read_all(tmp_path, "trades")
    assert sorted(table["trade_id"].to_pylist()) == [1, 2]


def test_a_file_never_committed_is_invisible_and_vacuumed(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path)
    writer.add("trades", trades([("spot", "BTC", 1, T0)]))
    writer.flush()
    # What a crash between writing a file and committing it leaves behind.
    directory = tmp_path / "trades/market=spot/date=2025-11-24"
    orphan = directory / layout.part_name(T0)
    pq.write_table(pq.read_table(next(directory.glob("*.parquet"))), orphan)
    hour_ago = time.time() - 3600
    os.utime(orphan, (hour_ago, hour_ago))
    assert read_all(tmp_path, "trades").num_rows == 1
    compaction.housekeeping(str(tmp_path), "trades", retention_hours=0)
    assert not orphan.exists()
    assert read_all(tmp_path, "trades").num_rows == 1


def test_every_dataset_schema_has_its_key_and_time_columns() -> None:
    for dataset in datasets.DATASETS.values():
        names = dataset.column_names
        assert names[:2] == ["market", "symbol"], dataset.name
        assert set(dataset.key) <= set(names), dataset.name
        assert dataset.schema.field(dataset.time_column).type == datasets.TIMESTAMP
        assert len(set(names)) == len(names)


def test_an_archive_path_with_a_percent_sign_is_refused_clearly(tmp_path: Path) -> None:
    # deltalake decodes percent escapes in paths: "a%20b" would be read as "a b".
    root = tmp_path / "a%20b"
    with pytest.raises(StorageError, match="contains '%'"):
        delta.open_table(root, "trades")
    writer = ArchiveWriter(root)
    writer.add("trades", trades([("spot", "BTC", 1, T0)]))
    result = writer.flush()
    assert "contains '%'" in str(result.errors[0])
    assert writer.buffered_rows() == {"trades": 1}

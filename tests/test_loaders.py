"""pandas loaders and research helpers: the same rows as DuckDB and the simulator, only
the files and row groups asked for are read, and compaction never shows a row twice."""

from __future__ import annotations

import collections
import datetime as dt
import inspect
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

import collector
from collector import datasets
from collector.read import catalog, loaders
from collector.read.research import book_top, depth_wide, trades_to_bars, trades_with_book
from collector.sim import SimExchange
from collector.storage import compaction, delta, layout
from collector.storage.writer import ArchiveWriter

DAY_MS = 86_400_000
T0 = 1_764_028_800_000  # 2025-11-25T00:00:00Z
UTC = dt.UTC


def canonical(table: pa.Table, dataset: str) -> pa.Table:
    """Rows in a comparable form: the dataset's schema, sorted by every column."""
    spec = datasets.get(dataset)
    table = table.select(spec.column_names).cast(spec.schema)
    return table.sort_by([(name, "ascending") for name in spec.column_names])


def from_loader(frame: pd.DataFrame, dataset: str) -> pa.Table:
    return canonical(pa.Table.from_pandas(frame.reset_index(), preserve_index=False), dataset)


def trades_table(rows: list[tuple[str, int, int, float]], market: str = "spot") -> pa.Table:
    """Trades from (symbol, trade_id, time_ms, price) tuples."""
    return pa.table(
        {
            "market": [market] * len(rows),
            "symbol": [r[0] for r in rows],
            "trade_id": [r[1] for r in rows],
            "time": [r[2] for r in rows],
            "price": [r[3] for r in rows],
            "qty": [1.0] * len(rows),
            "is_buyer_maker": [r[1] % 2 == 0 for r in rows],
            "received_at": [r[2] + 5 for r in rows],
        },
        schema=datasets.get("trades").schema,
    )


def write(root: Path, dataset: str, table: pa.Table) -> None:
    writer = ArchiveWriter(root)
    writer.add(dataset, table)
    assert writer.flush().errors == []


# -- the same rows as DuckDB and the simulator ------------------------------------------------


@pytest.mark.parametrize("dataset", list(datasets.DATASETS))
def test_every_dataset_loads_the_rows_duckdb_reads(sim_archive: Path, dataset: str) -> None:
    frame = loaders.load(dataset, data_dir=sim_archive)
    spec = datasets.get(dataset)
    duck = catalog.query(sim_archive, f"SELECT {', '.join(spec.column_names)} FROM {dataset}")
    assert len(frame) > 0, f"the simulator archive has no {dataset}"
    assert from_loader(frame, dataset).equals(canonical(duck, dataset))
    assert isinstance(frame.index, pd.DatetimeIndex) and str(frame.index.tz) == "UTC"
    assert frame.index.name == spec.time_column and frame.index.is_monotonic_increasing
    assert frame.index.dtype == "datetime64[ms, UTC]"


def test_filters_select_what_duckdb_selects(sim_archive: Path) -> None:
    span = catalog.query(
        sim_archive,
        "SELECT min(time) AS lo, max(time) AS hi FROM trades "
        "WHERE market IN ('spot', 'contract') AND symbol IN ('BTCUSDT', 'ETHUSDT')",
    )
    low, high = span["lo"][0].as_py(), span["hi"][0].as_py()
    start, end = low + (high - low) / 3, low + (high - low) * 2 / 3
    frame = loaders.load_trades(
        market=["spot", "contract"],
        symbols=["BTCUSDT", "ETHUSDT"],
        start=start,
        end=end,
        columns=["price", "symbol", "market"],
        data_dir=sim_archive,
    )
    duck = catalog.query(
        sim_archive,
        "SELECT market, symbol, time, price FROM trades WHERE market IN ('spot', 'contract') "
        "AND symbol IN ('BTCUSDT', 'ETHUSDT') AND time >= $start AND time < $end",
        {"start": start, "end": end},
    )
    assert list(frame.columns) == ["market", "symbol", "trade_id", "price"]  # the key first
    assert len(frame) == duck.num_rows > 0
    assert frame.index.min() >= start and frame.index.max() < end
    got = sorted(zip(frame["market"], frame["symbol"], frame.index, frame["price"], strict=True))
    want = sorted(
        zip(*(duck[c].to_pylist() for c in ("market", "symbol", "time", "price")), strict=True)
    )
    assert got == [(m, s, pd.Timestamp(t), p) for m, s, t, p in want]
    assert set(frame["market"].cat.categories) <= {"spot", "contract"}


def test_trades_equal_what_the_simulator_generated(
    sim_archive: Path, sim_exchange: SimExchange
) -> None:
    trades = loaders.load_trades(market="contract", symbols="BTCUSDT", data_dir=sim_archive)
    ids = trades["trade_id"].to_numpy(dtype=np.int64)
    assert len(ids) > 0 and len(set(ids)) == len(ids)
    first, last = int(ids.min()), int(ids.max())
    truth = sim_exchange.trades_from_id("contract", "BTCUSDT", first, last - first + 1)
    by_id = trades.reset_index().set_index("trade_id").sort_index()
    expected = [(t.id, t.time, float(t.price), float(t.qty), t.buyer_maker) for t in truth]
    assert [
        (i, int(t.value // 1_000_000), p, q, b)
        for i, t, p, q, b in zip(
            by_id.index,
            by_id["time"],
            by_id["price"],
            by_id["qty"],
            by_id["is_buyer_maker"],
            strict=True,
        )
    ] == expected


def test_klines_of_one_interval(sim_archive: Path) -> None:
    klines = loaders.load_klines(interval="1h", market="spot", data_dir=sim_archive)
    count = catalog.query(
        sim_archive, "SELECT count(*) AS n FROM klines WHERE market = 'spot' AND interval = '1h'"
    )["n"][0].as_py()
    assert len(klines) == count > 0
    assert set(klines["interval"]) == {"1h"}
    assert list(klines["interval"].cat.categories) == ["1h"]


def test_depth_wide_has_one_row_per_snapshot(sim_archive: Path) -> None:
    long = loaders.load_depth(market="spot", data_dir=sim_archive)
    wide = loaders.load_depth(market="spot", wide=True, data_dir=sim_archive)
    snapshots = long.reset_index()[["symbol", "received_at"]].drop_duplicates()
    assert len(wide) == len(snapshots) > 0
    assert wide.index.is_monotonic_increasing and wide.index.name == "received_at"
    prices = [c for c in wide.columns if c.startswith("bid_price_")]
    assert prices == [f"bid_price_{i}" for i in range(5)]  # the fixture's depth limit
    row = wide.iloc[len(wide) // 2]
    snapshot = long[(long.index == wide.index[len(wide) // 2]) & (long["symbol"] == row["symbol"])]
    for side, level, price, qty in zip(
        snapshot["side"], snapshot["level"], snapshot["price"], snapshot["qty"], strict=True
    ):
        assert row[f"{side}_price_{level}"] == price and row[f"{side}_qty_{level}"] == qty
    two = loaders.load_depth(market="spot", levels=2, wide=True, data_dir=sim_archive)
    assert [c for c in two.columns if c.startswith("ask_qty_")] == ["ask_qty_0", "ask_qty_1"]
    assert two["ask_qty_1"].equals(wide["ask_qty_1"])


# -- dtypes and empty results -----------------------------------------------------------------


def dtypes(frame: pd.DataFrame) -> list[tuple[str, str]]:
    return [(name, str(dtype)) for name, dtype in frame.dtypes.items()] + [
        (str(frame.index.name), str(frame.index.dtype))
    ]


@pytest.mark.parametrize("dataset", list(datasets.DATASETS))
def test_an_empty_result_has_the_columns_and_dtypes_of_a_full_one(
    sim_archive: Path, dataset: str
) -> None:
    full = loaders.load(dataset, data_dir=sim_archive)
    empty_range = loaders.load(dataset, start="2001-01-01", end="2001-01-02", data_dir=sim_archive)
    symbol = str(full["symbol"].iloc[0])  # archived, but not in that range: no error
    one_symbol = loaders.load(
        dataset, symbols=symbol, start="2001-01-01", end="2001-01-02", data_dir=sim_archive
    )
    for empty in (empty_range, one_symbol):
        assert len(empty) == 0
        assert dtypes(empty) == dtypes(full)


def test_dtypes_follow_the_schema(sim_archive: Path) -> None:
    trades = loaders.load_trades(data_dir=sim_archive)
    assert dict(trades.dtypes.astype(str)) == {
        "market": "category",
        "symbol": "category",
        "trade_id": "Int64",
        "price": "float64",
        "qty": "float64",
        "is_buyer_maker": "boolean",
        "received_at": "datetime64[ms, UTC]",
    }
    depth = loaders.load_depth(data_dir=sim_archive)
    assert depth["side"].dtype == "category" and depth["level"].dtype == np.int16
    assert depth["update_id"].dtype == np.int64  # not nullable: plain numpy


def test_ids_without_values_stay_integers(tmp_path: Path) -> None:
    table = trades_table([("A", 1, T0, 1.0), ("A", 2, T0 + 1, 2.0)])
    table = table.set_column(2, "trade_id", pa.array([None, 7], pa.int64()))
    table = table.set_column(6, "is_buyer_maker", pa.array([None, True]))
    write(tmp_path, "trades", table)
    trades = loaders.load_trades(data_dir=tmp_path)
    assert trades["trade_id"].dtype == "Int64" and trades["trade_id"].isna().tolist() == [
        True,
        False,
    ]
    assert trades["trade_id"].iloc[1] == 7
    assert trades["is_buyer_maker"].dtype == "boolean"
    assert trades["is_buyer_maker"].isna().tolist() == [True, False]


# -- time ranges ------------------------------------------------------------------------------


def test_times_in_any_form_mean_the_same_range(tmp_path: Path) -> None:
    start_ms, end_ms = T0 + 3_600_000, T0 + 7_200_000  # 01:00 to 02:00 UTC
    times = [start_ms - 1, start_ms, start_ms + 1, end_ms - 1, end_ms, end_ms + 1]
    write(tmp_path, "trades", trades_table([("A", i, t, 1.0) for i, t in enumerate(times)]))
    berlin = ZoneInfo("Europe/Berlin")  # UTC+1 in November
    forms: list[tuple[Any, Any]] = [
        ("2025-11-25 01:00", "2025-11-25T02:00:00"),
        ("2025-11-25T02:00+01:00", "2025-11-25T03:00:00+01:00"),
        (dt.datetime(2025, 11, 25, 1), dt.datetime(2025, 11, 25, 2)),  # naive: UTC
        (dt.datetime(2025, 11, 25, 2, tzinfo=berlin), dt.datetime(2025, 11, 25, 3, tzinfo=berlin)),
        (pd.Timestamp("2025-11-25 01:00"), pd.Timestamp("2025-11-25 02:00")),
        (
            pd.Timestamp("2025-11-25 10:00", tz="Asia/Tokyo"),
            pd.Timestamp("2025-11-25 11:00", tz="Asia/Tokyo"),
        ),
    ]
    results = [loaders.load_trades(start=s, end=e, data_dir=tmp_path) for s, e in forms]
    expected = pd.to_datetime([start_ms, start_ms + 1, end_ms - 1], unit="ms", utc=True)
    for result in results:
        assert list(result.index) == list(expected)  # start inclusive, end exclusive
        assert str(result.index.tz) == "UTC"
        pd.testing.assert_frame_equal(result, results[0])


def test_rows_are_sorted_by_time_keeping_archive_order_for_equal_times(tmp_path: Path) -> None:
    # Two symbols interleaved in time, across two flushes: files hold A then B.
    write(tmp_path, "trades", trades_table([("A", 1, T0 + 10, 1.0), ("B", 2, T0 + 5, 2.0)]))
    write(tmp_path, "trades", trades_table([("A", 3, T0 + 5, 3.0), ("B", 4, T0 + 1, 4.0)]))
    trades = loaders.load_trades(data_dir=tmp_path)
    assert list(trades.index.asi8 - T0) == [1, 5, 5, 10]  # milliseconds
    assert list(trades["trade_id"]) == [4, 2, 3, 1]  # at +5: the first file's row first


def test_partitions_outside_the_range_are_never_opened(tmp_path: Path) -> None:
    rows = [
        ("A", day * 10 + i, T0 + day * DAY_MS + i * 1000, 1.0) for day in range(3) for i in range(4)
    ]
    write(tmp_path, "trades", trades_table(rows))
    third = tmp_path / "trades/market=spot/date=2025-11-27"
    for file in third.glob("*.parquet"):
        file.write_bytes(b"not a parquet file")
    two_days = loaders.load_trades(start="2025-11-25", end="2025-11-27", data_dir=tmp_path)
    assert sorted(two_days["trade_id"]) == [0, 1, 2, 3, 10, 11, 12, 13]
    with pytest.raises(pa.ArrowInvalid):  # the corrupt partition is read when asked for
        loaders.load_trades(start="2025-11-26", end="2025-11-27 00:00:00.001", data_dir=tmp_path)


def test_files_whose_times_are_outside_the_range_are_never_opened(tmp_path: Path) -> None:
    """Within one day's partition, the Delta log's time range of each file decides."""
    write(tmp_path, "trades", trades_table([("A", 1, T0 + 1000, 1.0), ("A", 2, T0 + 2000, 1.0)]))
    write(tmp_path, "trades", trades_table([("A", 3, T0 + 9000, 1.0)]))
    first, _ = sorted((tmp_path / "trades/market=spot/date=2025-11-25").glob("*.parquet"))
    first.write_bytes(b"not a parquet file")
    later = loaders.load_trades(start="2025-11-25 00:00:05", data_dir=tmp_path)
    assert list(later["trade_id"]) == [3]
    with pytest.raises(pa.ArrowInvalid):
        loaders.load_trades(start="2025-11-25 00:00:02", data_dir=tmp_path)


def test_only_files_the_delta_log_names_are_read(tmp_path: Path) -> None:
    """A file written but never committed (a crash before the commit) and the files a
    compaction replaced (kept for readers until vacuumed) are on disk, never loaded."""
    write(tmp_path, "trades", trades_table([("A", 1, T0, 1.0)]))
    write(tmp_path, "trades", trades_table([("A", 2, T0 + 1, 1.0)]))
    assert compaction.compact_archive(tmp_path).partitions == 1
    partition = tmp_path / "trades/market=spot/date=2025-11-25"
    pq.write_table(
        trades_table([("A", 99, T0 + 2, 1.0)]).drop_columns(["market"]),
        partition / "part-20251125T000000000-deadbeef.parquet",
    )
    assert len(list(partition.glob("*.parquet"))) == 4  # two replaced, one merged, one stray
    assert list(loaders.load_trades(data_dir=tmp_path)["trade_id"]) == [1, 2]


def test_a_symbol_filter_skips_the_row_groups_of_other_symbols(tmp_path: Path) -> None:
    """Row groups of symbol B have their bytes destroyed: a load of A must never read them."""
    rows = [(symbol, n, T0 + n, float(n)) for symbol in "AB" for n in range(3000)]
    partition = layout.Partition("trades", "spot", dt.date(2025, 11, 25))
    table = delta.ensure_table(tmp_path, "trades")
    name = "part-20251125T000000000-0000abcd.parquet"
    add = delta.write_file(
        pafs.LocalFileSystem(),
        str(tmp_path),
        partition,
        trades_table(rows),
        name,
        {"row_group_size": 1000, "compression": "zstd"},
    )
    delta.commit(table, "trades", [add])
    path = tmp_path / partition.path / name
    metadata = pq.ParquetFile(path).metadata
    data = bytearray(path.read_bytes())
    for group in range(3, 6):  # the three row groups of B
        for column in range(metadata.num_columns):
            chunk = metadata.row_group(group).column(column)
            begin = chunk.dictionary_page_offset or chunk.data_page_offset
            data[begin : begin + chunk.total_compressed_size] = (
                b"\xff" * chunk.total_compressed_size
            )
    path.write_bytes(bytes(data))
    only_a = loaders.load_trades(symbols="A", data_dir=tmp_path)
    assert len(only_a) == 3000 and set(only_a["symbol"]) == {"A"}
    assert set(only_a["market"]) == {"spot"}
    with pytest.raises((OSError, pa.ArrowException)):
        loaders.load_trades(symbols=["B"], data_dir=tmp_path)


# -- errors ------------------------------------------------------------------------------------


def test_errors_name_what_exists(tmp_path: Path) -> None:
    write(tmp_path, "trades", trades_table([("A", 1, T0, 1.0)]))
    with pytest.raises(ValueError, match=r"unknown dataset 'trade'.*trades, depth"):
        loaders.load("trade", data_dir=tmp_path)
    with pytest.raises(ValueError, match=r"no column 'size'.*columns are: market, symbol"):
        loaders.load_trades(columns=["price", "size"], data_dir=tmp_path)
    with pytest.raises(ValueError, match=r"unknown market 'futures'.*spot, option, contract"):
        loaders.load_trades(market="futures", data_dir=tmp_path)
    with pytest.raises(ValueError, match=r"funding_rate exists only for contract, not for 'spot'"):
        loaders.load_funding_rate(market="spot", data_dir=tmp_path)
    with pytest.raises(ValueError, match=r"unknown kline interval '1s'.*1m, 3m, 5m.*1w"):
        loaders.load_klines(interval="1s", data_dir=tmp_path)
    with pytest.raises(ValueError, match=r"start='yesterday-ish' is not a time"):
        loaders.load_trades(start="yesterday-ish", data_dir=tmp_path)
    with pytest.raises(TypeError, match=r"start=1764028800000: pass a string"):
        loaders.load_trades(start=T0, data_dir=tmp_path)  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match=r"no archive at .*typo.*does not exist"):
        loaders.load_trades(data_dir=tmp_path / "typo")


def archived_symbols(archive: Path, dataset: str, market: str) -> list[str]:
    table = catalog.query(
        archive, f"SELECT DISTINCT symbol FROM {dataset} WHERE market = $m", {"m": market}
    )
    return sorted(table["symbol"].to_pylist())


def test_a_symbol_the_archive_does_not_hold_is_an_error_naming_those_it_holds(
    sim_archive: Path,
) -> None:
    spot = archived_symbols(sim_archive, "trades", "spot")
    assert "BTCUSDT" in spot
    with pytest.raises(
        ValueError, match=r"no symbol 'BTCUSD' in trades\b.*symbols archived: "
    ) as e:
        loaders.load_trades(symbols="BTCUSD", data_dir=sim_archive)
    assert all(name in str(e.value) for name in spot)
    with pytest.raises(ValueError, match=r"no symbol 'btcusdt' in trades .*did you mean 'BTCUSDT'"):
        loaders.load_trades(symbols="btcusdt", data_dir=sim_archive)
    # A symbol of another market: named as archived there, the market's own listed.
    option = archived_symbols(sim_archive, "trades", "option")
    with pytest.raises(ValueError, match=r"no symbol 'BTCUSDT' in trades of option") as e:
        loaders.load_trades(market="option", symbols="BTCUSDT", data_dir=sim_archive)
    assert "archived for contract, spot" in str(e.value)
    assert (
        f"symbols archived: {', '.join(option[:30])}" in str(e.value)
        if option
        else "the archive holds no trades of option" in str(e.value)
    )
    # One unknown name among known ones is an error too, though rows came back.
    with pytest.raises(ValueError, match=r"no symbol 'NOPEUSDT'"):
        loaders.load_trades(market="spot", symbols=["BTCUSDT", "NOPEUSDT"], data_dir=sim_archive)


def test_a_symbol_of_the_market_not_in_this_archive_is_an_error(
    sim_archive: Path, tmp_path: Path
) -> None:
    """An archive with BTCUSDT's funding rates alone: ETHUSDT is no symbol of it."""
    spec = datasets.get("funding_rate")
    rows = catalog.query(
        sim_archive,
        f"SELECT {', '.join(spec.column_names)} FROM funding_rate WHERE symbol = 'BTCUSDT'",
    )
    write(tmp_path, "funding_rate", rows.cast(spec.schema))
    assert len(loaders.load_funding_rate(symbols="BTCUSDT", data_dir=tmp_path)) == rows.num_rows > 0
    with pytest.raises(
        ValueError, match=r"^no symbol 'ETHUSDT' in funding_rate; symbols archived: BTCUSDT$"
    ):
        loaders.load_funding_rate(symbols=["ETHUSDT", "BTCUSDT"], data_dir=tmp_path)


def test_a_backwards_or_empty_range_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "trades", trades_table([("A", 1, T0, 1.0)]))
    with pytest.raises(ValueError, match=r"start='2025-11-26' is after end='2025-11-25'"):
        loaders.load_trades(start="2025-11-26", end="2025-11-25", data_dir=tmp_path)
    with pytest.raises(ValueError, match=r"start=.* equals end=.*end is exclusive"):
        loaders.load_trades(start="2025-11-25", end=dt.datetime(2025, 11, 25), data_dir=tmp_path)
    with pytest.raises(ValueError, match=r"is after end"):
        loaders.load("depth", start="2030-01-02", end="2030-01-01", data_dir=tmp_path)


def test_an_archive_without_the_dataset_names_the_datasets_it_has(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no trades in .*; datasets there: none"):
        loaders.load_trades(data_dir=tmp_path)
    write(tmp_path, "trades", trades_table([("A", 1, T0, 1.0)]))
    with pytest.raises(FileNotFoundError, match=r"no depth in .*; datasets there: trades$"):
        loaders.load_depth(data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no liquidation_orders in .*: trades$"):
        loaders.load("liquidation_orders", data_dir=tmp_path)


def test_klines_need_an_interval_when_the_archive_holds_several(
    sim_archive: Path, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=r"several intervals .*\(1m, 1h\): pass interval="):
        loaders.load_klines(market="spot", data_dir=sim_archive)
    with pytest.raises(ValueError, match=r"no 5m klines are archived .*intervals there: 1m, 1h"):
        loaders.load_klines(interval="5m", market="spot", data_dir=sim_archive)
    spec = datasets.get("klines")
    hourly = catalog.query(
        sim_archive, f"SELECT {', '.join(spec.column_names)} FROM klines WHERE interval = '1h'"
    )
    write(tmp_path, "klines", hourly.cast(spec.schema))
    only = loaders.load_klines(data_dir=tmp_path)  # one interval: none needed
    assert len(only) == hourly.num_rows > 0 and set(only["interval"]) == {"1h"}
    pd.testing.assert_frame_equal(only, loaders.load_klines(interval="1h", data_dir=tmp_path))
    assert len(loaders.load("klines", data_dir=sim_archive)) > 0  # load() reads them all


def test_asked_columns_come_with_the_key_columns(sim_archive: Path) -> None:
    klines = loaders.load_klines(interval="1h", columns=["close"], data_dir=sim_archive)
    assert list(klines.columns) == ["market", "symbol", "interval", "close"]
    depth = loaders.load_depth(columns=["qty", "price", "side"], data_dir=sim_archive)
    assert list(depth.columns) == ["market", "symbol", "side", "level", "qty", "price"]
    funding = loaders.load_funding_rate(columns=["funding_rate"], data_dir=sim_archive)
    assert list(funding.columns) == ["market", "symbol", "id", "funding_rate"]
    assert funding.index.name == "time"


SHARED = ["market", "symbols", "start", "end", "columns", "data_dir"]


def loader_names() -> list[str]:
    names = [name for name in collector._LOADERS if name != "load"]
    return [
        *names,
        *(spec.loader for spec in datasets.DATASETS.values() if spec.loader not in names),
    ]


@pytest.mark.parametrize("name", loader_names())
def test_every_loader_shows_its_options_in_its_signature(name: str) -> None:
    loader = getattr(loaders, name)
    parameters = inspect.signature(loader).parameters
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters.values())
    assert [p for p in parameters if p in SHARED] == SHARED
    assert parameters["data_dir"].default == "data" and parameters["market"].default is None
    extra = {"load_klines": ["interval"], "load_depth": ["levels", "wide"]}.get(name, [])
    assert [p for p in parameters if p not in SHARED] == extra
    assert loader.__doc__
    with pytest.raises(
        TypeError,
        match=rf"{name}\(\) got an unexpected keyword argument 'symbol'; did you mean symbols=\?",
    ):
        loader(symbol="BTCUSDT")
    with pytest.raises(
        TypeError, match=rf"{name}\(\) takes its options by keyword \((\w+=, )*market=, symbols="
    ):
        loader("BTCUSDT")


def test_the_load_function_and_generated_loaders_explain_themselves() -> None:
    parameters = inspect.signature(loaders.load).parameters
    assert list(parameters) == ["dataset", *SHARED]
    with pytest.raises(TypeError, match=r"load\(\) got .* 'symbol'; did you mean symbols=\?"):
        loaders.load("trades", symbol="BTCUSDT")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"'markets'; did you mean market=\?"):
        loaders.load_trades(markets="spot")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"'interval'.*\(its options: market="):
        loaders.load_trades(interval="1m")  # type: ignore[call-arg]
    generated = loaders.load_liquidation_orders
    assert generated.__name__ == "load_liquidation_orders"
    doc = generated.__doc__ or ""
    for option in SHARED:
        assert f"``{option}``" in doc
    assert "(market, symbol, order_id)" in doc and "default: contract" in doc


# -- compaction under a load ------------------------------------------------------------------


def test_a_load_while_compaction_rewrites_the_partition_returns_every_row_once(
    tmp_path: Path,
) -> None:
    """Compaction keeps rewriting one partition while loads run: each one reads one
    version of the table, so it returns at least the rows written before it began, at
    most those written by its end, none twice."""
    writer = ArchiveWriter(tmp_path)
    started = written = 0
    lock = threading.Lock()

    def write_batch() -> None:
        nonlocal started, written
        ids = range(written, written + 50)
        with lock:
            started += 50
        writer.add("trades", trades_table([("A", i, T0 + i, 1.0) for i in ids]))
        assert writer.flush().errors == []
        with lock:
            written += 50

    for _ in range(4):
        write_batch()
    stop = threading.Event()
    loaded = threading.Event()
    failures: list[str] = []
    loads = collections.Counter[str]()

    def reader() -> None:
        try:
            while not stop.is_set():
                with lock:
                    floor = written
                trades = loaders.load_trades(data_dir=tmp_path, columns=["trade_id"])
                with lock:
                    ceiling = started
                ids = trades["trade_id"].tolist()
                if not floor <= len(ids) <= ceiling or len(set(ids)) != len(ids):
                    failures.append(f"{len(ids)} rows, {len(set(ids))} ids; {floor}..{ceiling}")
                loads["done"] += 1
                loaded.set()
        except Exception as exc:
            failures.append(repr(exc))
            stop.set()

    thread = threading.Thread(target=reader)
    thread.start()
    rewrites = 0
    try:
        for _ in range(15):
            write_batch()
            loaded.clear()
            rewrites += compaction.compact_archive(tmp_path).partitions
            # Each rewrite is followed by a load that completes: the loads overlap the
            # writes and rewrites, not only what is between them.
            while not (loaded.wait(0.1) or stop.is_set()):
                pass
    finally:
        stop.set()
        thread.join()
    assert failures == []
    assert rewrites == 15 and loads["done"] >= 15
    final = loaders.load_trades(data_dir=tmp_path)
    assert sorted(final["trade_id"]) == list(range(written))


# -- research helpers --------------------------------------------------------------------------


def utc(*stamps: str) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(list(stamps), utc=True, format="ISO8601")).as_unit("ms")


def test_trades_to_bars_by_hand() -> None:
    trades = pd.DataFrame(
        {
            "market": pd.Categorical(["spot"] * 5),
            "symbol": pd.Categorical(["A", "B", "A", "A", "A"]),
            "price": [10.0, 99.0, 12.0, 9.0, 11.0],
            "qty": [1.0, 5.0, 3.0, 2.0, 2.0],
        },
        index=utc(
            "2025-11-25 00:00:10",
            "2025-11-25 00:00:20",
            "2025-11-25 00:00:50",
            "2025-11-25 00:00:50",
            "2025-11-25 00:02:05",
        ).rename("time"),
    )
    bars = trades_to_bars(trades, "1min")
    nan = np.nan
    expected = pd.DataFrame(
        {
            "market": pd.Categorical(["spot"] * 4),
            "symbol": pd.Categorical(["A", "B", "A", "A"]),
            "open": [10.0, 99.0, nan, 11.0],
            "high": [12.0, 99.0, nan, 11.0],
            "low": [9.0, 99.0, nan, 11.0],
            "close": [9.0, 99.0, nan, 11.0],
            "volume": [6.0, 5.0, 0.0, 2.0],
            "vwap": [(10 + 36 + 18) / 6, 99.0, nan, 11.0],
            "trade_count": np.array([3, 1, 0, 1], dtype=np.int64),
            # A's first trade is 10 s into its bar, its last 5 s into its bar; B's one
            # trade is 20 s into its only bar.
            "partial": [True, True, False, True],
        },
        index=utc(
            "2025-11-25 00:00", "2025-11-25 00:00", "2025-11-25 00:01", "2025-11-25 00:02"
        ).rename("open_time"),
    )
    expected["symbol"] = expected["symbol"].astype(trades["symbol"].dtype)
    pd.testing.assert_frame_equal(bars, expected)
    assert trades_to_bars(trades, "1m").equals(bars)  # the kline spelling
    assert len(trades_to_bars(trades.iloc[:0], "1min")) == 0
    with pytest.raises(ValueError, match="fixed length"):
        trades_to_bars(trades, "1 month")


def two_symbols() -> pd.DataFrame:
    """A trades at 00:00:00 (10) and 00:02:30 (11); B at 00:00:30 (99) and 00:03:00 (98)."""
    return pd.DataFrame(
        {
            "market": pd.Categorical(["spot"] * 4),
            "symbol": pd.Categorical(["A", "B", "A", "B"]),
            "price": [10.0, 99.0, 11.0, 98.0],
            "qty": [1.0, 1.0, 1.0, 1.0],
        },
        index=utc(
            "2025-11-25 00:00:00",
            "2025-11-25 00:00:30",
            "2025-11-25 00:02:30",
            "2025-11-25 00:03:00",
        ).rename("time"),
    )


def closes(bars: pd.DataFrame, symbol: str, column: str = "close") -> list[float]:
    return bars.loc[bars["symbol"] == symbol, column].tolist()


def test_bars_fill_carries_each_symbols_close_within_its_own_series() -> None:
    trades = two_symbols()
    plain = trades_to_bars(trades, "1min")
    assert np.isnan(closes(plain, "A")[1]) and np.isnan(closes(plain, "B")[1])
    filled = trades_to_bars(trades, "1min", fill=True)
    assert closes(filled, "A") == [10.0, 10.0, 11.0]  # never B's 99
    assert closes(filled, "B") == [99.0, 99.0, 99.0, 98.0]  # never A's 10 or 11
    for column in ("open", "high", "low"):
        assert closes(filled, "A", column) == [10.0, 10.0, 11.0]
    assert np.isnan(closes(filled, "A", "vwap")[1])
    assert closes(filled, "A", "volume") == [1.0, 0.0, 1.0]
    # The same as a per-series forward fill of the plain bars' close.
    per_series = plain.groupby(["market", "symbol"], observed=True)["close"].ffill()
    assert filled["close"].tolist() == per_series.tolist()
    assert filled.drop(columns=["open", "high", "low", "close"]).equals(
        plain.drop(columns=["open", "high", "low", "close"])
    )


def test_bars_mark_the_first_and_last_bar_of_each_symbol_when_partial() -> None:
    trades = two_symbols()
    # Without a range: A starts on a bar boundary, B 30 s in; both end inside a bar.
    bars = trades_to_bars(trades, "1min")
    assert closes(bars, "A", "partial") == [False, False, True]
    assert closes(bars, "B", "partial") == [True, False, False, True]
    # Loaded for [00:00, 00:04): every bar inside the range is whole.
    whole = trades_to_bars(trades, "1min", start="2025-11-25", end="2025-11-25 00:04")
    assert not whole["partial"].any()
    # A range starting or ending inside a bar: those bars are partial, of every symbol.
    cut = trades_to_bars(
        trades, "1min", start="2025-11-24 23:59:59", end=pd.Timestamp("2025-11-25 00:03:10")
    )
    assert closes(cut, "A", "partial") == [False, False, False]
    assert closes(cut, "B", "partial") == [False, False, False, True]
    late = trades_to_bars(trades, "1min", start="2025-11-25 00:00:20", end="2025-11-25 00:04")
    assert closes(late, "A", "partial") == [True, False, False]
    assert late["partial"].dtype == bool
    assert trades_to_bars(trades.iloc[:0], "1min")["partial"].dtype == bool


def test_bars_in_wide_form_have_one_column_per_symbol() -> None:
    trades = two_symbols()
    wide = trades_to_bars(trades, "1min", wide="close")
    assert list(wide.columns) == ["A", "B"] and wide.index.name == "open_time"
    assert len(wide) == 4 and wide.index.is_monotonic_increasing
    assert wide["A"].iloc[0] == 10.0 and wide["A"].iloc[2] == 11.0
    assert np.isnan(wide["A"].iloc[1]) and np.isnan(wide["A"].iloc[3])  # no trade, no price
    assert wide["B"].iloc[0] == 99.0 and wide["B"].iloc[3] == 98.0
    filled = trades_to_bars(trades, "1min", wide="close", fill=True)
    assert filled["A"].tolist() == [10.0, 10.0, 11.0, 11.0]
    assert filled["B"].tolist() == [99.0, 99.0, 99.0, 98.0]
    volume = trades_to_bars(trades, "1min", wide="volume")
    assert volume["A"].tolist()[:3] == [1.0, 0.0, 1.0]
    two_markets = pd.concat([trades, trades.assign(market="contract")]).sort_index(kind="stable")
    two_markets["market"] = two_markets["market"].astype("category")
    by_market = trades_to_bars(two_markets, "1min", wide="close")
    assert list(by_market.columns) == [
        ("contract", "A"), ("contract", "B"), ("spot", "A"), ("spot", "B"),
    ]  # fmt: skip
    assert by_market.columns.names == ["market", "symbol"]
    with pytest.raises(ValueError, match=r"wide='price' is not a bar column; bar columns: open"):
        trades_to_bars(trades, "1min", wide="price")


def test_bars_of_the_simulator_archive_fill_per_symbol(sim_archive: Path) -> None:
    trades = loaders.load_trades(data_dir=sim_archive)
    plain = trades_to_bars(trades, "1s")
    filled = trades_to_bars(trades, "1s", fill=True)
    assert plain["symbol"].nunique() > 1 and plain["close"].isna().any()
    per_series = plain.groupby(["market", "symbol"], observed=True)["close"].ffill()
    np.testing.assert_array_equal(filled["close"].to_numpy(), per_series.to_numpy())
    middle = plain.groupby(["market", "symbol"], observed=True)["partial"].apply(
        lambda flags: bool(flags.iloc[1:-1].any())
    )
    assert not middle.any()  # only a series' first and last bars can be partial


def depth_rows(snapshots: list[tuple[str, str, list[float], list[float]]]) -> pd.DataFrame:
    """Long depth rows from (time, symbol, bid quantities, ask quantities); the price of
    bid level i is 100 - i, of ask level i 101 + i."""
    frames = []
    for time, symbol, bids, asks in snapshots:
        for side, quantities, sign in (("bid", bids, -1), ("ask", asks, 1)):
            base = 100.0 if side == "bid" else 101.0
            frames += [
                (time, "spot", symbol, 1, side, level, base + sign * level, qty)
                for level, qty in enumerate(quantities)
            ]
    columns = ["received_at", "market", "symbol", "update_id", "side", "level", "price", "qty"]
    frame = pd.DataFrame(frames, columns=columns)
    frame["received_at"] = pd.to_datetime(
        frame["received_at"], utc=True, format="ISO8601"
    ).dt.as_unit("ms")
    for name in ("market", "symbol", "side"):
        frame[name] = frame[name].astype("category")
    frame["level"] = frame["level"].astype(np.int16)
    return frame.set_index("received_at")


def test_book_top_sums_the_best_five_levels() -> None:
    depth = depth_rows(
        [
            ("2025-11-25 00:00:01", "A", [1, 1, 1, 1, 1, 100], [2, 2, 2, 2, 2, 100]),
            ("2025-11-25 00:00:02", "A", [3], []),
        ]
    )
    top = book_top(depth)
    assert list(top.columns) == [
        "market", "symbol", "best_bid", "best_ask", "bid_qty_0", "ask_qty_0", "mid", "spread",
        "spread_bps", "bid_depth", "ask_depth", "imbalance",
    ]  # fmt: skip
    first, second = top.iloc[0], top.iloc[1]
    assert (first.best_bid, first.best_ask, first.mid, first.spread) == (100, 101, 100.5, 1)
    assert (first.bid_depth, first.ask_depth) == (5, 10)  # level 5 (the sixth) not counted
    assert first.imbalance == pytest.approx((5 - 10) / 15)
    # Only bids: no best ask, no mid, an ask depth of 0 and an imbalance of 1 (as in SQL).
    assert second.best_bid == 100 and np.isnan(second.best_ask) and np.isnan(second.mid)
    assert (second.ask_depth, second.imbalance) == (0, 1)
    assert book_top(depth_wide(depth)).equals(top)
    assert book_top(depth, levels=1).iloc[0].imbalance == pytest.approx((1 - 2) / 3)


def test_trades_with_book_takes_the_last_snapshot_strictly_before_each_trade() -> None:
    book = book_top(
        depth_rows(
            [
                ("2025-11-25 00:00:01", "A", [1], [1]),
                ("2025-11-25 00:00:01.500", "B", [9], [1]),
                ("2025-11-25 00:00:02", "A", [3], [1]),
            ]
        )
    )
    times = ["00:00:00.5", "00:00:01", "00:00:01.5", "00:00:02", "00:00:02.5"]
    trades = pd.DataFrame(
        {
            "market": pd.Categorical(["spot"] * 5),
            "symbol": pd.Categorical(["A"] * 5),
            "price": [1.0, 2.0, 3.0, 4.0, 5.0],
        },
        index=utc(*(f"2025-11-25 {t}" for t in times)).rename("time"),
    )
    joined = trades_with_book(trades, book)
    assert joined.index.equals(trades.index) and joined["price"].equals(trades["price"])
    snapshot_times = [None if pd.isna(t) else t.strftime("%S.%f")[:6] for t in joined["book_time"]]
    # Before any snapshot, and at exactly the first one: nothing. B's book is never used.
    assert snapshot_times == [None, None, "01.000", "01.000", "02.000"]
    assert joined["bid_qty_0"].tolist()[2:] == [1.0, 1.0, 3.0]
    assert joined["symbol"].dtype == "category"
    stale = trades_with_book(trades, book, tolerance="600ms")
    assert stale["book_time"].isna().tolist() == [True, True, False, True, False]


def test_the_package_exports_the_loaders_without_importing_pandas_for_the_cli() -> None:
    code = (
        "import sys, collector.cli; assert 'pandas' not in sys.modules; "
        "import collector; collector.load_trades; assert 'pandas' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert collector.load_trades is loaders.load_trades
    assert collector.trades_to_bars is trades_to_bars
    assert set(collector.__all__) == {"__version__", *collector._LAZY}
    with pytest.raises(AttributeError):
        collector.load_everything  # noqa: B018


def test_book_top_equals_the_sql_view_depth_top(sim_archive: Path) -> None:
    top = book_top(loaders.load_depth(data_dir=sim_archive))
    view = catalog.query(
        sim_archive, "SELECT * EXCLUDE (update_id, date) FROM depth_top"
    ).to_pandas()
    assert len(view) == len(top) > 0
    order = ["market", "symbol", "received_at"]
    view = view.sort_values(order, ignore_index=True)
    top = top.reset_index().astype({"market": str, "symbol": str})
    top = top.sort_values(order, ignore_index=True)[list(view.columns)]
    assert (view["received_at"] == top["received_at"]).all()
    for column in view.columns:
        if column in ("market", "symbol"):
            assert view[column].tolist() == top[column].tolist(), column
        elif column != "received_at":
            np.testing.assert_allclose(
                view[column].to_numpy(dtype=float),
                top[column].to_numpy(dtype=float),
                rtol=1e-12,
                err_msg=column,
            )


def test_the_first_release_loader_names_still_work_with_a_warning(sim_archive: Path) -> None:
    for old, new in (
        ("load_tickers", "load_ticker_24hr"),
        ("load_indices", "load_indices_price"),
        ("load_funding", "load_funding_rate"),
    ):
        with pytest.warns(DeprecationWarning, match=f"{old} is deprecated.*use {new}"):
            frame = getattr(collector, old)(data_dir=sim_archive)
        pd.testing.assert_frame_equal(frame, getattr(collector, new)(data_dir=sim_archive))

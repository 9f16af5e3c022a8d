"""The loaders' reading and conversion (collector/read/arrow_read.py): a load holds a few
row groups of Arrow memory beside the frame, never the whole read, and the frame it builds
batch by batch is the one Arrow's own conversion gives, sorted by time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import given
from hypothesis import strategies as st

from collector import datasets
from collector.read import arrow_read, frames, loaders
from collector.storage import delta
from collector.storage.location import Archive
from collector.storage.writer import ArchiveWriter

T0 = 1_764_028_800_000  # 2025-11-25T00:00:00Z


def trades(first_id: int, times: list[int], symbol: str, market: str = "spot") -> pa.Table:
    """Trades with ids from ``first_id``; every third id and every fifth side unknown."""
    ids = range(first_id, first_id + len(times))
    return pa.table(
        {
            "market": [market] * len(times),
            "symbol": [symbol] * len(times),
            "trade_id": [None if i % 3 == 0 else i for i in ids],
            "time": times,
            "price": [float(i) for i in ids],
            "qty": [i / 8 for i in ids],
            "is_buyer_maker": [None if i % 5 == 0 else i % 2 == 0 for i in ids],
            "received_at": [t + 7 for t in times],
        },
        schema=datasets.get("trades").schema,
    )


def flush(root: Path, *tables: pa.Table) -> None:
    """One flush: one file per partition, one commit."""
    writer = ArchiveWriter(root)
    for table in tables:
        writer.add("trades", table)
    assert writer.flush().errors == []


def expected(tables: list[pa.Table]) -> pd.DataFrame:
    """Arrow's own conversion of the rows in archive order, with the loaders' dtypes,
    sorted by time (stable)."""
    frame = pa.concat_tables(tables).to_pandas()
    frame["trade_id"] = frame["trade_id"].astype("Int64")
    frame["is_buyer_maker"] = frame["is_buyer_maker"].astype("boolean")
    frame = frame.astype({"market": "category", "symbol": "category"})
    return frame.set_index("time").sort_index(kind="stable")


def test_a_load_holds_a_few_row_groups_of_arrow_memory_never_the_whole_read(
    tmp_path: Path,
) -> None:
    """Pyarrow's own count of the bytes allocated through the read's pool, so no
    resident-memory noise: 64 files of 1,500 rows, of which the read holds a few at a
    time (seen: 6-8% of the frame), even for a consumer slower than the reads (Arrow's
    own dataset scan then read 60 of the 64 ahead). The whole read as one table, as the
    loaders held it before, is about the frame's size."""
    for part in range(64):
        times = [T0 + part * 1_000_000 + i for i in range(1500)]
        flush(tmp_path, trades(part * 1500, times, "BTCUSDT"))
    spec = datasets.get("trades")
    archive = Archive.of(tmp_path)
    table = delta.open_table(archive.uri, "trades")
    assert table is not None
    found = arrow_read.files(table, "trades", ["spot"], None, None)
    assert len(found) == 64
    pool = pa.proxy_memory_pool(pa.system_memory_pool())
    rows = arrow_read.read(archive, found, spec, spec.column_names, None, memory_pool=pool)
    rows.batches = slowly(rows.batches)
    frame, loaded = arrow_read.to_frame(rows, spec)
    assert len(frame) == loaded.rows == 96_000
    frame_bytes = int(frame.memory_usage(deep=True).sum())
    assert pool.max_memory() < frame_bytes / 4, (pool.max_memory(), frame_bytes)


def slowly(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """The batches, each after a pause: a consumer slower than the reads."""
    for batch in batches:
        time.sleep(0.002)
        yield batch


def test_rows_of_files_out_of_time_order_come_sorted_with_arrow_own_values(
    tmp_path: Path,
) -> None:
    """Three flushes whose times overlap, ties across files, nulls in the nullable
    columns, symbols and markets that differ by file (so do the files' dictionaries)."""
    first = [
        trades(1, [T0 + t for t in (50, 10, 10, 70)], "ETHUSDT"),
        trades(5, [T0 + t for t in (10, 60)], "BTCUSDT", market="contract"),
    ]
    second = [trades(7, [T0 + t for t in (10, 5, 80, 50)], "BTCUSDT")]
    third = [trades(11, [T0 + t for t in (0, 10, 90)], "SOLUSDT")]
    for tables in (first, second, third):
        flush(tmp_path, *tables)
    frame = loaders.load_trades(market=["spot", "contract"], data_dir=tmp_path)
    # Archive order (date, market as asked, file): spot's files, then contract's.
    want = expected([first[0], second[0], third[0], first[1]])
    pd.testing.assert_frame_equal(frame, want, check_categorical=False)
    assert frame["trade_id"].isna().any() and frame["is_buyer_maker"].isna().any()
    assert list(frame["symbol"].cat.categories) == ["ETHUSDT", "BTCUSDT", "SOLUSDT"]


def test_every_column_of_a_load_can_be_changed_in_place(tmp_path: Path) -> None:
    """No column is a read-only view of Arrow memory (a one-file load's ids were)."""
    flush(tmp_path, trades(1, [T0 + t for t in range(5)], "BTCUSDT"))
    frame = loaders.load_trades(data_dir=tmp_path)
    for position in range(len(frame.columns)):
        frame.iloc[0, position] = frame.iloc[1, position]
    assert frame.iloc[0].equals(frame.iloc[1])


def test_a_bound_on_rows_below_the_rows_read_only_grows_the_arrays() -> None:
    spec = datasets.get("trades")
    batches = [
        trades(i * 100, [T0 + 1000 - i * 10 - j for j in range(100)], "BTCUSDT")
        .cast(arrow_read.read_schema(spec))
        .to_batches()[0]
        for i in range(5)
    ]
    schema = batches[0].schema
    frame, _ = arrow_read.to_frame(arrow_read.Read(schema, iter(batches), most_rows=3), spec)
    want = expected([pa.Table.from_batches(batches)])
    pd.testing.assert_frame_equal(frame, want, check_categorical=False)


def test_a_non_nullable_int_column_with_nulls_converts_as_arrow_does() -> None:
    """A column added to a dataset is null in the files written before it: Arrow makes
    such int64 floats (NaN), and so does the load (rows out of time order too)."""
    spec = datasets.get("depth")
    full = pa.table(
        {
            "received_at": pa.array([T0 + 2, T0, T0 + 1], pa.timestamp("ms", tz="UTC")),
            "update_id": pa.array([4, None, 6], pa.int64()),
        }
    )
    schema = pa.schema([spec.schema.field("received_at"), spec.schema.field("update_id")])
    batches = [full.slice(0, 1).to_batches()[0], full.slice(1).to_batches()[0]]
    frame, _ = arrow_read.to_frame(arrow_read.Read(schema, iter(batches), most_rows=3), spec)
    assert frame["update_id"].dtype == np.float64
    assert frame["update_id"].isna().tolist() == [True, False, False]
    assert frame["update_id"].tolist()[1:] == [6.0, 4.0]


@st.composite
def dictionary_chunks(draw: st.DrawFn) -> list[pa.DictionaryArray]:
    """Chunks of a dictionary column as Parquet gives them: each its own dictionary of
    distinct values, some unused by its rows, some rows null."""
    chunks = []
    for _ in range(draw(st.integers(1, 4))):
        words = draw(st.lists(st.sampled_from("ABCDEFG"), min_size=1, max_size=4, unique=True))
        rows = draw(st.lists(st.integers(0, len(words) - 1) | st.none(), max_size=6))
        indices = pa.array(rows, pa.int32())
        chunks.append(pa.DictionaryArray.from_arrays(indices, pa.array(words)))
    return chunks


@given(dictionary_chunks())
def test_categories_are_those_arrow_gives_the_chunks_cut_to_the_values_used(
    chunks: list[pa.DictionaryArray],
) -> None:
    """Arrow's own conversion of the whole column, each chunk with unused values first
    re-encoded (what the loaders did before building columns batch by batch)."""
    kind = pa.dictionary(pa.int32(), pa.string())
    cut = [
        chunk.dictionary_decode().dictionary_encode()
        if len(chunk.dictionary) > 1 and len(pc.unique(chunk.indices)) < len(chunk.dictionary)
        else chunk
        for chunk in chunks
    ]
    want = pa.chunked_array(cut, kind).to_pandas().array
    column: frames._Column = frames._Categories(kind, 0)
    start = 0
    for chunk in chunks:
        column = column.add(chunk, start, start + len(chunk))
        start += len(chunk)
    assert isinstance(column, frames._Categories)
    got = column.pandas(start, None)
    assert got.dtype == want.dtype  # the categories, their order and their dtype
    assert got.codes.tolist() == want.codes.tolist()
    # What the load found: the values of its rows (a category may have none).
    assert column.present() == set(pd.Series(want).dropna())

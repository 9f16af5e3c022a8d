"""The archive's Parquet encodings (collector.storage.parquet_format).

What a user relies on: the smaller files hold exactly the rows written, through
DuckDB's views and pyarrow, also when a partition mixes them with files written
before the encodings changed (zstd with pyarrow's defaults).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from collector import datasets
from collector.read import catalog
from collector.storage import compaction, delta, parquet_format
from collector.storage.writer import ArchiveWriter

T0 = 1_764_000_000_000  # 2025-11-24T16:00:00Z


def trades(first_id: int, n: int) -> pa.Table:
    return pa.table(
        {
            "market": ["spot"] * n,
            "symbol": ["BTCUSDT" if (first_id + k) % 3 else "ETHUSDT" for k in range(n)],
            "trade_id": list(range(first_id, first_id + n)),
            "time": [T0 + (first_id + k) * 250 for k in range(n)],
            "price": [65_000.0 + ((first_id + k) * 37 % 1000) / 100 for k in range(n)],
            "qty": [round(0.001 * ((first_id + k) % 97 + 1), 6) for k in range(n)],
            "is_buyer_maker": [(first_id + k) % 2 == 0 for k in range(n)],
            "received_at": [T0 + (first_id + k) * 250 + 10_000 for k in range(n)],
        },
        schema=datasets.get("trades").schema,
    )


@pytest.mark.parametrize("name", list(datasets.DATASETS))
def test_every_dataset_round_trips(name: str, tmp_path: Path) -> None:
    spec = datasets.get(name)
    rows = pa.table(
        {
            c.name: pa.array([None] * 3, c.type)
            if c.nullable
            else pa.array(
                {
                    pa.string(): ["a", "b", "a"],
                    pa.float64(): [0.1, 2.5, 1e9],
                    pa.int64(): [3, 1, 2],
                    pa.int16(): [0, 1, 2],
                    pa.bool_(): [True, False, True],
                    datasets.TIMESTAMP: [T0, T0 + 1, T0 - 5],
                }[c.type],
                c.type,
            )
            for c in spec.columns
        },
        schema=spec.schema,
    )
    for compacted in (True, False):
        path = tmp_path / f"{name}-{compacted}.parquet"
        pq.write_table(rows, path, **parquet_format.write_options(name, compacted=compacted))
        assert pq.read_table(path).equals(rows)


def test_compacted_files_use_the_encodings_and_mix_with_old_files(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path)
    for first in (1, 5_001):
        writer.add("trades", trades(first, 5_000))
        assert writer.flush().errors == []
    report = compaction.compact_archive(tmp_path)
    assert report.errors == []
    table = delta.open_table(tmp_path, "trades")
    assert table is not None
    (file,) = delta.files(table, "trades")
    compacted = delta.file_path(tmp_path, "trades", file.path)
    metadata = pq.ParquetFile(compacted).metadata.row_group(0)
    columns = {metadata.column(i).path_in_schema: metadata.column(i) for i in range(6)}
    assert "DELTA_BINARY_PACKED" in columns["trade_id"].encodings

    # A file written the old way (pyarrow's defaults) committed next to it, as after an
    # upgrade: readers mix the two.
    old_rows = trades(10_001, 2_000)
    added = delta.write_file(
        pafs.LocalFileSystem(),
        str(tmp_path),
        file.partition,
        old_rows,
        "part-20251124T170000000-0123abcd.parquet",
        {"compression": "zstd"},
    )
    delta.commit(table, "trades", [added])

    expected = pa.concat_tables([trades(1, 10_000), old_rows]).sort_by("trade_id")
    through_views = catalog.query(tmp_path, "SELECT * EXCLUDE (date) FROM trades ORDER BY trade_id")
    assert through_views.cast(expected.schema).equals(expected)
    sums = catalog.query(tmp_path, "SELECT sum(price), sum(qty) FROM trades").to_pylist()[0]
    assert sums == pytest.approx(
        {
            "sum(price)": sum(expected.column("price").to_pylist()),
            "sum(qty)": sum(expected.column("qty").to_pylist()),
        }
    )

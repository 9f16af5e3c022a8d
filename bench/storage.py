"""Benchmark (issue 5, 1): bytes per row of the archive against zipped and plain CSV.

    .venv/bin/python bench/make_archive.py --out /tmp/bench-archive    # once
    .venv/bin/python bench/storage.py --archive /tmp/bench-archive [--levers] [--json F]

For trades, depth and klines: the rows and bytes of the archive's Parquet files (the
current generation of every partition, as the views read them) against the same rows
as one zipped CSV per symbol and day (how data.binance.vision ships) and as the plain
CSVs, all written by ``make_archive.py``.

``--levers`` also re-encodes the archive's files of the first ``--lever-days`` days
with each storage lever added in turn (same files, same 128Ki-row groups) and prints
bytes per row for each, with the zipped CSV of the same days for the ratio, and the
bytes per row of every column under the chosen options.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DEFAULT_ARCHIVE, machine, table, write_json

from collector.storage import compaction, delta, parquet_format

DATASETS = ("trades", "depth", "klines")


def parquet_files(archive: Path, dataset: str) -> list[Path]:
    """The files readers read: a Delta table's current files, or (an archive of the
    layout before Delta, for comparison) each partition's current folder."""
    data_dir = archive / "data"
    table = delta.open_table(data_dir, dataset)
    if table is not None:
        return sorted(
            Path(delta.file_path(data_dir, dataset, f.path)) for f in delta.files(table, dataset)
        )
    return sorted((data_dir / dataset).glob("market=*/date=*/*.parquet"))


def sizes(archive: Path, dataset: str) -> dict[str, Any]:
    files = parquet_files(archive, dataset)
    rows = sum(pq.read_metadata(path).num_rows for path in files)
    out: dict[str, Any] = {"rows": rows, "parquet_files": len(files)}
    out["parquet_bytes"] = sum(path.stat().st_size for path in files)
    for kind in ("zip", "csv"):
        found = list((archive / kind / dataset).glob(f"*/*.{kind}"))
        out[f"{kind}_files"] = len(found)
        out[f"{kind}_bytes"] = sum(path.stat().st_size for path in found)
    for kind in ("parquet", "zip", "csv"):
        out[f"{kind}_per_row"] = out[f"{kind}_bytes"] / rows if rows else 0.0
    out["parquet_vs_zip"] = out["parquet_bytes"] / out["zip_bytes"] if out["zip_bytes"] else 0.0
    out["parquet_vs_csv"] = out["parquet_bytes"] / out["csv_bytes"] if out["csv_bytes"] else 0.0
    return out


# -- levers ---------------------------------------------------------------------------------


def _options(dataset: str, *, floats: bool, delta: bool, level: int | None) -> dict[str, Any]:
    """The chosen encodings with some levers taken out, at one zstd level."""
    encodings = parquet_format.column_encodings(dataset)
    schema = {c.name: c.type for c in parquet_format.datasets.get(dataset).columns}
    for name, encoding in list(encodings.items()):
        if not delta and encoding == "DELTA_BINARY_PACKED":
            encodings[name] = parquet_format.DICTIONARY
        if not floats and pa.types.is_floating(schema[name]):
            encodings[name] = parquet_format.DICTIONARY
    options: dict[str, Any] = {
        "compression": "zstd",
        "use_dictionary": [n for n, e in encodings.items() if e == parquet_format.DICTIONARY],
        "column_encoding": {n: e for n, e in encodings.items() if e != parquet_format.DICTIONARY},
    }
    if level is not None:
        options["compression_level"] = level
    return options


def levers(dataset: str) -> list[tuple[str, Callable[[], dict[str, Any]]]]:
    """(label, options) in the order the levers were added."""
    return [
        ("zstd, pyarrow defaults (before)", lambda: {"compression": "zstd"}),
        ("zstd level 19 alone", lambda: {"compression": "zstd", "compression_level": 19}),
        (
            "BYTE_STREAM_SPLIT on every float alone",
            lambda: {
                "compression": "zstd",
                # Without a dictionary for those columns, which pyarrow would prefer.
                "use_dictionary": [
                    c.name
                    for c in parquet_format.datasets.get(dataset).columns
                    if not pa.types.is_floating(c.type)
                ],
                "use_byte_stream_split": [
                    c.name
                    for c in parquet_format.datasets.get(dataset).columns
                    if pa.types.is_floating(c.type)
                ],
            },
        ),
        (
            "+ DELTA_BINARY_PACKED ints and times",
            lambda: _options(dataset, floats=False, delta=True, level=None),
        ),
        (
            "+ float encodings per dataset",
            lambda: _options(dataset, floats=True, delta=True, level=None),
        ),
        ("+ zstd level 9", lambda: _options(dataset, floats=True, delta=True, level=9)),
        ("+ level 19 on floats (chosen)", lambda: parquet_format.write_options(dataset)),
    ]


def lever_days(archive: Path, dataset: str, days: int) -> tuple[list[Path], list[Path]]:
    """The Parquet files and zipped CSVs of the first ``days`` dates."""
    files = parquet_files(archive, dataset)
    dates = sorted({path.parent.name.removeprefix("date=") for path in files})[:days]
    chosen = [p for p in files if p.parent.name.removeprefix("date=") in dates]
    # Zip names end in the date: <SYMBOL>-<dataset>-<YYYY-MM-DD>.zip
    zips = [p for p in (archive / "zip" / dataset).glob("*/*.zip") if p.stem[-10:] in dates]
    return chosen, zips


def encode(tables: list[pa.Table], options: dict[str, Any]) -> tuple[int, dict[str, int]]:
    """Bytes of the tables written as files with ``options``, and bytes per column."""
    total = 0
    columns: dict[str, int] = {}
    for rows in tables:
        sink = pa.BufferOutputStream()
        pq.write_table(rows, sink, row_group_size=compaction.ROW_GROUP_ROWS, **options)
        buffer = sink.getvalue()
        total += buffer.size
        metadata = pq.ParquetFile(pa.BufferReader(buffer)).metadata
        for group in range(metadata.num_row_groups):
            for index in range(metadata.num_columns):
                chunk = metadata.row_group(group).column(index)
                name = chunk.path_in_schema
                columns[name] = columns.get(name, 0) + chunk.total_compressed_size
    return total, columns


def measure_levers(archive: Path, days: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dataset in DATASETS:
        files, zips = lever_days(archive, dataset, days)
        tables = [pq.read_table(path) for path in files]
        rows = sum(t.num_rows for t in tables)
        zip_per_row = sum(p.stat().st_size for p in zips) / rows
        results = []
        chosen_columns: dict[str, int] = {}
        before_columns: dict[str, int] = {}
        for label, options in levers(dataset):
            started = time.perf_counter()
            size, columns = encode(tables, options())
            seconds = time.perf_counter() - started
            if label.endswith("(before)"):
                before_columns = columns
            if label.endswith("(chosen)"):
                chosen_columns = columns
            results.append(
                {
                    "lever": label,
                    "bytes_per_row": size / rows,
                    "vs_zip": size / rows / zip_per_row,
                    "write_s_per_million_rows": seconds / rows * 1e6,
                }
            )
        out[dataset] = {
            "rows": rows,
            "files": len(files),
            "zip_per_row": zip_per_row,
            "levers": results,
            "columns_before": {k: v / rows for k, v in before_columns.items()},
            "columns_chosen": {k: v / rows for k, v in chosen_columns.items()},
            "encodings": parquet_format.column_encodings(dataset),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE)
    parser.add_argument("--levers", action="store_true", help="also measure each lever")
    parser.add_argument("--lever-days", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    result: dict[str, Any] = {"machine": machine(), "archive": str(args.archive)}
    result["sizes"] = {dataset: sizes(args.archive, dataset) for dataset in DATASETS}
    rows = [
        [
            d,
            s["rows"],
            s["parquet_files"],
            round(s["parquet_per_row"], 2),
            round(s["zip_per_row"], 2),
            round(s["csv_per_row"], 2),
            round(s["parquet_vs_zip"], 3),
            round(s["parquet_vs_csv"], 3),
        ]
        for d, s in result["sizes"].items()
    ]
    print(
        table(
            [
                "dataset",
                "rows",
                "files",
                "parquet B/row",
                "zip B/row",
                "csv B/row",
                "vs zip",
                "vs csv",
            ],
            rows,
        )
    )
    if args.levers:
        result["levers"] = measure_levers(args.archive, args.lever_days)
        for dataset, found in result["levers"].items():
            print(
                f"\n{dataset}: {found['rows']:,} rows in {found['files']} files "
                f"({args.lever_days} days), zipped CSV {found['zip_per_row']:.2f} B/row"
            )
            print(
                table(
                    ["lever", "B/row", "vs zip", "write s/M rows"],
                    [
                        [
                            r["lever"],
                            round(r["bytes_per_row"], 2),
                            round(r["vs_zip"], 3),
                            round(r["write_s_per_million_rows"], 2),
                        ]
                        for r in found["levers"]
                    ],
                )
            )
            print(
                table(
                    ["column", "encoding", "B/row before", "B/row chosen"],
                    [
                        [
                            name,
                            found["encodings"].get(name, ""),
                            round(found["columns_before"].get(name, 0.0), 3),
                            round(value, 3),
                        ]
                        for name, value in found["columns_chosen"].items()
                    ],
                )
            )
    write_json(args.json, result)


if __name__ == "__main__":
    main()

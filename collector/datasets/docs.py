"""``docs/datasets.md`` from the registry (``jex-collector schema``; a test checks it)."""

from __future__ import annotations

import pyarrow as pa

from collector.datasets import DATASETS
from collector.datasets.model import BOOL, F64, I64, STR, TIMESTAMP

_TYPE_NAMES = {
    STR: "string",
    F64: "float64",
    I64: "int64",
    pa.int16(): "int16",
    BOOL: "bool",
    TIMESTAMP: "timestamp[ms, UTC]",
}


def markdown() -> str:
    """Every dataset's columns as Markdown: the source of ``docs/datasets.md``."""
    lines = [
        "# Datasets",
        "",
        "Generated from `collector/datasets.py` by `jex-collector schema`; a test keeps it",
        "current. Every dataset is a Delta Lake table `data/<dataset>/`, partitioned by",
        "`market` and `date` (the UTC date of the time column; folders",
        "`market=<m>/date=<YYYY-MM-DD>/`), a DuckDB view of the same name (its columns,",
        'then `date`) and a pandas loader: `collector.load("<dataset>")` or the typed one',
        "(`load_trades`, `load_klines`, `load_depth`, ...; `collector/read/loaders.py`).",
        "",
        "In the table, `market` and `date` are partition columns: their values are in the",
        "Delta log and the folder names, not inside the data files. Delta readers",
        "(`delta_scan`, polars, deltalake) give `market`, the columns below and `date`;",
        "they show times as Delta's microsecond timestamps holding the exchange's",
        "millisecond values, which the views and loaders give as listed here.",
        "",
        "Times are UTC timestamps with millisecond precision; prices, quantities and rates",
        "are float64 parsed from the exchange's decimal strings (exact for up to 15",
        "significant digits); ids are int64.",
    ]
    for dataset in DATASETS.values():
        lines += [
            "",
            f"## `{dataset.name}`",
            "",
            dataset.doc,
            "",
            f"Markets: {', '.join(dataset.markets)}. Key: {', '.join(dataset.key)}. "
            f"Partition date from `{dataset.time_column}`.",
            "",
            "| column | type | null | meaning |",
            "|---|---|---|---|",
        ]
        for column in dataset.columns:
            null = "yes" if column.nullable else ""
            lines.append(
                f"| `{column.name}` | {_TYPE_NAMES[column.type]} | {null} | {column.doc} |"
            )
    return "\n".join(lines) + "\n"

"""Files generated from the registry, each checked by a test: ``docs/datasets.md``
(``jex-collector schema``) and the cookbook's ``queries/coverage_per_day.sql``."""

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


_COVERAGE_HEADER = """\
-- title: Data coverage per day
-- question: What did the archive collect each day, per dataset and market?
-- read: One row per (dataset, market, date) of the newest `days` UTC days of the
--   archive (counted back from the newest date of any dataset): rows, distinct
--   symbols, and the first and last event time. A dataset missing from a day, or a day
--   with fewer rows or a later first / earlier last time than its neighbours, had an
--   outage; use `jex-collector verify` for holes in trade ids and funding events
--   (judged by the funding interval, not by ids; fund records have no such rule).
-- generated: from the dataset registry (collector/datasets); a test checks it.
-- param: days = 7           # the newest N days of the archive (date partitions)
"""


def coverage_sql() -> str:
    """``queries/coverage_per_day.sql``: one ``UNION ALL`` branch per dataset of the
    registry, each over its time column. The text holds registry names only."""
    names = list(DATASETS)
    newest = ",\n".join(f"        (SELECT max(date) FROM {name})" for name in names)  # noqa: S608
    branches = "\n    UNION ALL\n".join(
        f"    SELECT '{name}' AS dataset, market, date, count(*) AS rows,\n"  # noqa: S608
        f"           count(DISTINCT symbol) AS symbols, min({spec.time_column}) AS first,\n"
        f"           max({spec.time_column}) AS last\n"
        f"    FROM {name} WHERE date > (SELECT day FROM since) GROUP BY ALL"
        for name, spec in DATASETS.items()
    )
    return (
        _COVERAGE_HEADER  # noqa: S608 (registry names only)
        + f"WITH since AS (\n    SELECT greatest(\n{newest}\n    ) - $days::INTEGER AS day\n)\n"
        + f"SELECT * FROM (\n{branches}\n)\nORDER BY dataset, market, date;\n"  # noqa: S608
    )

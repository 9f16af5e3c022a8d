"""Benchmark (issue 5, 2): SQL through the views against one ideally sorted Parquet file.

    .venv/bin/python bench/make_archive.py --out /tmp/bench-archive    # once
    .venv/bin/python bench/views.py --archive /tmp/bench-archive [--repeat 7] [--json F]

Each query runs in one DuckDB connection twice: ``FROM trades`` (the view of
``collector.catalog``, over the archive's partitions) and ``FROM ideal`` (a view over
``ideal/trades.parquet``: every trade in one file sorted by market, symbol and time,
with a ``date`` column, written by ``make_archive.py`` with the archive's Parquet
options: the format's limit). Only the FROM differs. After one warm-up run each, the
two sides run alternately ``--repeat`` times; the table shows the best and median
times and their ratio (views / one file).

Queries, on spot BTCUSDT and the archive's middle day:

* ``vwap_month``: hourly VWAP of one symbol over the whole month;
* ``day_all_symbols``: per symbol counts, volume and range for one day (``date = D``);
* ``hour_with_date``: one hour of one symbol's rows, with ``date = D`` (partition
  pruning) and a time range (row-group pruning), as the README advises;
* ``hour_without_date``: the same hour with the time range only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DEFAULT_ARCHIVE, machine, table, timed, write_json

from collector import catalog


def queries(day: dt.date) -> dict[str, str]:
    """The SQL of each query, ``{source}`` for the FROM; values are our own dates."""
    hour = dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC)
    start = hour.strftime("%Y-%m-%d %H:%M:%S+00")
    end = (hour + dt.timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S+00")
    one_hour = (
        "SELECT * FROM {source} WHERE market = 'spot' AND symbol = 'BTCUSDT' "  # noqa: S608
        f"AND time >= TIMESTAMPTZ '{start}' AND time < TIMESTAMPTZ '{end}'"
    )
    return {
        "vwap_month": (
            "SELECT date_trunc('hour', time) AS hour, sum(price * qty) / sum(qty) AS vwap, "
            "sum(qty) AS volume FROM {source} "
            "WHERE market = 'spot' AND symbol = 'BTCUSDT' GROUP BY ALL ORDER BY hour"
        ),
        "day_all_symbols": (
            "SELECT market, symbol, count(*) AS trades, sum(qty) AS volume, "  # noqa: S608
            "min(price) AS low, max(price) AS high FROM {source} "
            f"WHERE date = DATE '{day}' GROUP BY ALL ORDER BY ALL"
        ),
        "hour_with_date": one_hour + f" AND date = DATE '{day}' ORDER BY time, trade_id",
        "hour_without_date": one_hour + " ORDER BY time, trade_id",
    }


def connect(archive: Path) -> duckdb.DuckDBPyConnection:
    connection = catalog.connect(archive / "data")
    ideal = (archive / "ideal" / "trades.parquet").resolve()
    connection.execute(
        f"CREATE VIEW ideal AS SELECT * FROM read_parquet({catalog.path_literal(ideal)})"  # noqa: S608
    )
    return connection


def middle_day(archive: Path) -> dt.date:
    manifest = json.loads((archive / "manifest.json").read_text())
    start = dt.date.fromisoformat(manifest["start"])
    return start + dt.timedelta(days=manifest["days"] // 2)


def same(a: pa.Table, b: pa.Table) -> bool:
    """Equal, floats within rounding (sums over differently ordered rows differ slightly)."""
    if a.schema != b.schema or a.num_rows != b.num_rows:
        return False
    for name in a.column_names:
        left, right = a.column(name).to_numpy(), b.column(name).to_numpy()
        if pa.types.is_floating(a.schema.field(name).type):
            if not np.allclose(left, right, rtol=1e-9):
                return False
        elif not (left == right).all():
            return False
    return True


def run(archive: Path, repeat: int) -> dict[str, Any]:
    connection = connect(archive)
    results: dict[str, Any] = {}
    for name, sql in queries(middle_day(archive)).items():
        sides = {"views": sql.format(source="trades"), "ideal": sql.format(source="ideal")}
        answers = {}
        for side, text in sides.items():
            answers[side] = connection.sql(text).to_arrow_table()  # warm-up
        if not same(answers["views"], answers["ideal"]):
            raise RuntimeError(f"{name}: the views and the single file disagree")
        times: dict[str, list[float]] = {"views": [], "ideal": []}
        for _ in range(repeat):
            for side, text in sides.items():
                best, _, _ = timed(lambda text=text: connection.sql(text).to_arrow_table(), 1)
                times[side].append(best)
        entry: dict[str, Any] = {"rows": answers["views"].num_rows, "sql": sql}
        for side in sides:
            ordered = sorted(times[side])
            entry[f"{side}_best_s"] = ordered[0]
            entry[f"{side}_median_s"] = ordered[len(ordered) // 2]
        entry["ratio_best"] = entry["views_best_s"] / entry["ideal_best_s"]
        entry["ratio_median"] = entry["views_median_s"] / entry["ideal_median_s"]
        results[name] = entry
    connection.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results = run(args.archive, args.repeat)
    print(
        table(
            ["query", "rows", "views best ms", "file best ms", "ratio", "median ratio"],
            [
                [
                    name,
                    r["rows"],
                    round(r["views_best_s"] * 1000, 1),
                    round(r["ideal_best_s"] * 1000, 1),
                    round(r["ratio_best"], 2),
                    round(r["ratio_median"], 2),
                ]
                for name, r in results.items()
            ],
        )
    )
    write_json(args.json, {"machine": machine(), "archive": str(args.archive), "queries": results})


if __name__ == "__main__":
    main()

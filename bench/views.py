"""Benchmark (issue 5, 2): SQL through the views against one ideally sorted Parquet file.

    .venv/bin/python bench/make_archive.py --out /tmp/bench-archive    # once
    .venv/bin/python bench/views.py --archive /tmp/bench-archive [--repeat 7] [--json F]

Each query runs in one DuckDB connection on three sources; only the FROM differs:

* ``trades``: the view of ``collector.read.catalog`` (``delta_scan`` over the trades
  table: its log read at every query, then its current files);
* ``files``: ``read_parquet`` over the same current files, listed once from the Delta
  log when the connection is made (market and date from the hive paths): the table's
  files without the log, to tell what ``delta_scan`` itself costs;
* ``ideal``: a view over ``ideal/trades.parquet`` (every trade in one file sorted by
  market, symbol and time, with a ``date`` column, written by ``make_archive.py`` with
  the archive's Parquet options): the format's limit, the baseline.

Before timing, the trades table's log is brought to the state a month-old archive is in:
``make_archive.py`` builds the month in minutes, so its checkpoint still lists every
file its compactions replaced (about 2,200 removals beside 90 files), which each query
reads; a live archive's next checkpoint drops removals older than the retention
(``delta.RETENTION_HOURS``). :func:`settle` commits nothing and checkpoints once that
retention has passed since the archive was made (the daemon's checkpoint every 100
commits does the same); on an archive made less than that ago it says so, and the hour
queries measure about 4 ms slower.

After one warm-up run each (all three must return the same rows), the sources run in
turn ``--repeat`` times; the table shows the best times and the ratios views / one
file (best and median) and views / files.

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
import time
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DEFAULT_ARCHIVE, machine, run_main, table, timed, write_json

from collector import datasets
from collector.read import catalog
from collector.storage import delta

SIDES = {"views": "trades", "files": "table_files", "ideal": "ideal"}


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


def current_files(data_dir: Path) -> list[Path]:
    """The trades table's current files, from its Delta log (never a glob: that would
    also find replaced files not vacuumed yet)."""
    root = data_dir.resolve()
    table = delta.open_table(root, "trades")
    if table is None:
        raise RuntimeError(f"no trades table in {data_dir}")
    return [Path(delta.file_path(root, "trades", f.path)) for f in delta.files(table, "trades")]


def settle(archive: Path) -> str:
    """Checkpoint the trades table as the daemon's next checkpoint would (see the module
    docstring); say what was done."""
    root = (archive / "data").resolve()
    table = delta.open_table(root, "trades")
    if table is None:
        raise RuntimeError(f"no trades table in {archive}")
    log_dir = Path(delta.table_uri(root, "trades")) / delta.LOG_DIR
    checkpoints = sorted(log_dir.glob("*.checkpoint.parquet"))
    newest = max((p.stat().st_mtime for p in log_dir.glob("*.json")), default=0.0)
    age_h = (time.time() - newest) / 3600
    if age_h < delta.RETENTION_HOURS:
        return (
            f"the archive's last commit is {age_h * 60:.0f} min old: its checkpoint still "
            "lists the files its compactions replaced (not yet a month-old archive's log)"
        )
    if checkpoints and int(checkpoints[-1].name.split(".")[0]) == table.version():
        delta.commit(table, "trades", [])
        table.update_incremental()
        table.create_checkpoint()
        return f"checkpointed at version {table.version()} (expired removals dropped)"
    return "the log is settled already"


def connect(archive: Path) -> duckdb.DuckDBPyConnection:
    connection = catalog.connect(archive / "data", derived_views=False, only=("trades",))
    ideal = (archive / "ideal" / "trades.parquet").resolve()
    connection.execute(
        f"CREATE VIEW ideal AS SELECT * FROM read_parquet({catalog.path_literal(ideal)})"  # noqa: S608
    )
    files = ", ".join(catalog.path_literal(path) for path in current_files(archive / "data"))
    columns = ", ".join(datasets.get("trades").column_names)
    connection.execute(
        f"CREATE VIEW table_files AS SELECT {columns}, date FROM read_parquet([{files}], "  # noqa: S608
        "hive_partitioning = true, hive_types = {'market': VARCHAR, 'date': DATE})"
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
    print(f"log: {settle(archive)}", file=sys.stderr)
    connection = connect(archive)
    results: dict[str, Any] = {}
    for name, sql in queries(middle_day(archive)).items():
        sides = {side: sql.format(source=source) for side, source in SIDES.items()}
        answers = {}
        for side, text in sides.items():
            answers[side] = connection.sql(text).to_arrow_table()  # warm-up
        for side in ("files", "ideal"):
            if not same(answers["views"], answers[side]):
                raise RuntimeError(f"{name}: the views and the {side} source disagree")
        times: dict[str, list[float]] = {side: [] for side in sides}
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
        entry["views_vs_files"] = entry["views_best_s"] / entry["files_best_s"]
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
            [
                "query",
                "rows",
                "views ms",
                "files ms",
                "one file ms",
                "ratio",
                "median ratio",
                "views / files",
            ],
            [
                [
                    name,
                    r["rows"],
                    round(r["views_best_s"] * 1000, 1),
                    round(r["files_best_s"] * 1000, 1),
                    round(r["ideal_best_s"] * 1000, 1),
                    round(r["ratio_best"], 2),
                    round(r["ratio_median"], 2),
                    round(r["views_vs_files"], 2),
                ]
                for name, r in results.items()
            ],
        )
    )
    write_json(args.json, {"machine": machine(), "archive": str(args.archive), "queries": results})


if __name__ == "__main__":
    run_main(main)

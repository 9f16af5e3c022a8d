"""Benchmark (issue 5, 3 and 4): ``load_trades`` against pyarrow and pandas.read_csv.

    .venv/bin/python bench/make_archive.py --out /tmp/bench-archive    # once
    .venv/bin/python bench/loaders.py --archive /tmp/bench-archive [--repeat 3] [--json F]

3. Speed: one symbol's month (spot BTCUSDT, 10.4 million rows at the archive's
   default scale) loaded by ``collector.read.loaders.load_trades``, against the same rows by

   * ``pq.read_table`` of ``ideal/trades.parquet`` (one sorted file) with the symbol as
     filter, then ``to_pandas()``: the format's limit;
   * the same, on the archive's own files of that market (the trades table's current
     files, listed from its Delta log as the loader does; ``market`` from the paths);
   * ``pandas.read_csv`` of the symbol's 30 plain CSVs, concatenated, with ``time``
     made the UTC index as the loader does; and of the 30 zips (unzip included).

   Best of ``--repeat`` runs (of two for the CSV reads), all in one process: wall time,
   and the process's CPU time (all threads), which a busy shared machine disturbs less.

4. Memory: ``load_trades`` of one day (every symbol) and of the month of spot BTCUSDT,
   each in a fresh process: the peak RSS growth (VmHWM minus the RSS after the imports)
   against the result's ``memory_usage(deep=True)``; also the baseline
   (``read_table(...).to_pandas()``) for the same day.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DEFAULT_ARCHIVE, machine, run_main, table, timed, write_json

from collector import datasets
from collector.read.loaders import load_trades
from collector.storage import delta

MARKET = "spot"
SYMBOL = "BTCUSDT"
COLUMNS = [c for c in datasets.get("trades").column_names]


def manifest(archive: Path) -> dict[str, Any]:
    return dict(json.loads((archive / "manifest.json").read_text()))


# -- 3. speed -------------------------------------------------------------------------------


def read_ideal(archive: Path, market: str, symbol: str) -> pd.DataFrame:
    return pq.read_table(
        archive / "ideal" / "trades.parquet",
        columns=COLUMNS,
        filters=[("market", "=", market), ("symbol", "=", symbol)],
    ).to_pandas()


def read_archive_files(archive: Path, market: str, symbol: str) -> pd.DataFrame:
    """The market's current files of the trades table (from the Delta log: a glob would
    also find replaced files not vacuumed yet), read with pyarrow, ``market`` from the
    hive paths (the files do not hold it)."""
    data_dir = (archive / "data").resolve()
    table = delta.open_table(data_dir, "trades")
    assert table is not None, f"no trades table in {data_dir}"
    files = [
        delta.file_path(data_dir, "trades", f.path)
        for f in delta.files(table, "trades", market=market)
    ]
    dataset = pads.dataset(
        files,
        format="parquet",
        schema=datasets.get("trades").schema,
        partitioning=pads.partitioning(pa.schema([("market", pa.string())]), flavor="hive"),
        partition_base_dir=str(data_dir / "trades"),
    )
    return dataset.to_table(filter=pads.field("symbol") == symbol).to_pandas()


def read_csvs(archive: Path, kind: str, market: str, symbol: str) -> pd.DataFrame:
    """The symbol's daily CSVs (``kind`` "csv" or "zip") as one frame indexed by UTC time."""
    paths = sorted((archive / kind / "trades" / market).glob(f"{symbol}-trades-*.{kind}"))
    frame = pd.concat([pd.read_csv(path) for path in paths], ignore_index=True)
    frame["time"] = pd.to_datetime(frame["time"], unit="ms", utc=True)
    frame["received_at"] = pd.to_datetime(frame["received_at"], unit="ms", utc=True)
    return frame.set_index("time")


def speed(archive: Path, repeat: int) -> dict[str, Any]:
    data_dir = archive / "data"
    cases: dict[str, Any] = {}
    cases["load_trades"] = (
        lambda: load_trades(market=MARKET, symbols=[SYMBOL], data_dir=data_dir),
        repeat,
    )
    cases["read_table(ideal file).to_pandas()"] = (
        lambda: read_ideal(archive, MARKET, SYMBOL),
        repeat,
    )
    cases["read_table(archive files).to_pandas()"] = (
        lambda: read_archive_files(archive, MARKET, SYMBOL),
        repeat,
    )
    # Several seconds each: best of two at most.
    csv_runs = min(repeat, 2)
    cases["pandas.read_csv(csv)"] = (lambda: read_csvs(archive, "csv", MARKET, SYMBOL), csv_runs)
    cases["pandas.read_csv(zip)"] = (lambda: read_csvs(archive, "zip", MARKET, SYMBOL), csv_runs)
    results: dict[str, Any] = {}
    for name, (run, times) in cases.items():
        cpu: list[float] = []
        best, median, frame = timed(_cpu_timed(run, cpu), times)
        results[name] = {
            "best_s": best,
            "median_s": median,
            "best_cpu_s": min(cpu),
            "runs": times,
            "rows": len(frame),
        }
        del frame
    rows = {r["rows"] for r in results.values()}
    if len(rows) != 1:
        raise RuntimeError(f"the readers returned different row counts: {results}")
    limit = results["read_table(ideal file).to_pandas()"]
    ours = results["load_trades"]["best_s"]
    for name in ("pandas.read_csv(csv)", "pandas.read_csv(zip)"):
        results[name]["times_slower_than_load_trades"] = results[name]["best_s"] / ours
    for result in results.values():
        result["vs_limit"] = result["best_s"] / limit["best_s"]
        result["cpu_vs_limit"] = result["best_cpu_s"] / limit["best_cpu_s"]
    return results


def _cpu_timed(run: Callable[[], pd.DataFrame], cpu: list[float]) -> Callable[[], pd.DataFrame]:
    """``run``, noting the process's CPU seconds of each call in ``cpu``."""

    def measured() -> pd.DataFrame:
        started = time.process_time()
        frame = run()
        cpu.append(time.process_time() - started)
        return frame

    return measured


# -- 4. memory (in a child process) ---------------------------------------------------------


def _status(field: str) -> int:
    """A size from /proc/self/status (``VmRSS``, ``VmHWM``), in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    """Start the peak RSS (VmHWM) over from the current RSS, where Linux allows it."""
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        pass


def child(archive: Path, what: str, day: str) -> dict[str, Any]:
    """Run in a fresh process: one load, then the peak RSS growth and the result's size."""
    start = dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC)
    # The peak is the process's own (VmHWM, per address space), not ru_maxrss: that one
    # keeps the parent's peak across fork and exec, so a child of a process that had
    # just read 10 million rows would report their size.
    _reset_peak()
    before = _status("VmRSS")
    if what == "day":
        frame = load_trades(
            start=start, end=start + dt.timedelta(days=1), data_dir=archive / "data"
        )
    elif what == "month":
        frame = load_trades(market=MARKET, symbols=[SYMBOL], data_dir=archive / "data")
    elif what == "day_baseline":
        frame = pq.read_table(
            archive / "ideal" / "trades.parquet",
            columns=COLUMNS,
            filters=[("date", "=", start.date())],
        ).to_pandas()
    else:
        raise ValueError(what)
    peak = _status("VmHWM")
    size = int(frame.memory_usage(deep=True, index=True).sum())
    return {
        "rows": len(frame),
        "rss_after_imports": before,
        "peak_growth": peak - before,
        "result_bytes": size,
        "peak_vs_result": (peak - before) / size if size else 0.0,
    }


def memory(archive: Path) -> dict[str, Any]:
    info = manifest(archive)
    day = (dt.date.fromisoformat(info["start"]) + dt.timedelta(days=info["days"] // 2)).isoformat()
    results: dict[str, Any] = {"date": day}
    for what in ("day", "month", "day_baseline"):
        output = subprocess.run(  # noqa: S603 (our own script, our own arguments)
            [sys.executable, __file__, "--archive", str(archive), "--child", what, "--day", day],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        results[what] = json.loads(output.strip().splitlines()[-1])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", choices=["day", "month", "day_baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--day", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.archive, args.child, args.day)))
        return
    results = {"machine": machine(), "archive": str(args.archive)}
    results["speed"] = speed(args.archive, args.repeat)
    print(f"{SYMBOL} ({MARKET}), one month:")
    print(
        table(
            ["reader", "rows", "best s", "runs", "vs read_table", "best cpu s", "cpu vs"],
            [
                [
                    name,
                    r["rows"],
                    round(r["best_s"], 3),
                    r["runs"],
                    round(r["vs_limit"], 2),
                    round(r["best_cpu_s"], 3),
                    round(r["cpu_vs_limit"], 2),
                ]
                for name, r in results["speed"].items()
            ],
        )
    )
    results["memory"] = memory(args.archive)
    print(f"\nmemory, fresh process per load (day {results['memory']['date']}):")
    print(
        table(
            ["load", "rows", "peak growth MB", "result MB", "peak / result"],
            [
                [
                    name,
                    r["rows"],
                    round(r["peak_growth"] / 1e6, 1),
                    round(r["result_bytes"] / 1e6, 1),
                    round(r["peak_vs_result"], 2),
                ]
                for name, r in results["memory"].items()
                if isinstance(r, dict)
            ],
        )
    )
    write_json(args.json, results)


if __name__ == "__main__":
    run_main(main)

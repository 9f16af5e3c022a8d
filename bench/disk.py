"""Benchmark: bytes per row and per file of every dataset, flushed and compacted.

    .venv/bin/python bench/make_archive.py --days 1 --scale 1 --out /tmp/day   # 15 s
    .venv/bin/python bench/disk.py --day-archive /tmp/day [--minutes 30] [--warmup 300]
        [--seed 1] [--keep DIR] [--json F]
    .venv/bin/python bench/disk.py --analyze DIR --day-archive /tmp/day   # a kept run again

Runs the daemon with the shipped ``schedules.yaml`` against the simulator (in-process,
as ``jex-collector run --sim``): a warm-up run that does the first-start backfills, then
the measured run. The files the measured run's flushes committed (every
``storage.flush_every``; read from the Delta log's commits tagged ``jex.operation:
flush``, with the rows and bytes the log records, so that flush files the daemon's
compaction merged meanwhile count too) give, per dataset, rows, files and bytes; every
row of the archive's current files written once more and compacted
(``compact_archive``) gives the compacted ones. Each is split into a cost per file (the
size of a one-row file written with the same options: footer, page headers) and a cost
per row (the rest over the rows), which is the table ``collector/plan/disk.py`` holds
(``BYTES``): the script prints it in that form, to paste there with the date. A
30-minute sample compacts worse than a whole day, so with ``--day-archive`` the compacted
bytes of trades, depth and klines come from a ``make_archive.py --days 1 --scale 1``
archive instead (a day of the simulator's market at its own rates, compacted); the
other datasets are small either way. Datasets with fewer than 1,000 rows flushed in the
run get their flush bytes per row from all their rows in one file (their flush files
are nearly all per-file cost anyway).

Then it extrapolates the measured run to a day (rows and bytes times 86,400 s over the
run's length) and prints that next to what ``collector.plan.disk`` predicts for the same
schedule from the table in the code (trades from the simulator's 24-hour trade counts,
as ``jex-collector plan --sim`` does). Nothing is asserted: ``tests/test_disk.py``
checks the table against a small archive.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import run_main
from common import table as text_table

from collector import config, datasets
from collector.storage import compaction, delta, parquet_format
from collector.storage.writer import ArchiveWriter

RUN_FILE = "run.json"
#: Fewer rows flushed in the measured run than this: flush bytes per row from one file.
MIN_FLUSHED_ROWS = 1000


def file_body(table: pa.Table) -> pa.Table:
    """The columns a data file holds: ``market`` is the table's partition (in the Delta
    log and the path), not in the file (``delta.write_file``)."""
    return table.drop_columns(["market"]) if "market" in table.column_names else table


def one_row_file_bytes(dataset: str, table: pa.Table, *, compacted: bool) -> int:
    """The size of a file holding one row: what every file costs whatever its rows."""
    sink = io.BytesIO()
    options = parquet_format.write_options(dataset, compacted=compacted)
    pq.write_table(file_body(table.slice(0, 1)), sink, **options)
    return len(sink.getvalue())


def versions(data_dir: Path) -> dict[str, int]:
    """Each dataset table's current version (-1: no table yet)."""
    found = {}
    for name in datasets.DATASETS:
        table = delta.open_table(data_dir, name)
        found[name] = -1 if table is None else table.version()
    return found


def flushed_files(data_dir: Path, since: dict[str, int]) -> dict[str, list[tuple[int, int]]]:
    """(rows, bytes) of every file the writer's flushes committed after ``since``, per
    dataset, from the tables' commits (``_delta_log/<version>.json``): later merged
    and removed by the daemon's compaction or not."""
    found: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for name in datasets.DATASETS:
        table = delta.open_table(data_dir, name)
        if table is None:
            continue
        log_dir = Path(delta.table_uri(data_dir, name)) / delta.LOG_DIR
        for version in range(since.get(name, -1) + 1, table.version() + 1):
            lines = (log_dir / f"{version:020d}.json").read_text().splitlines()
            actions = [json.loads(line) for line in lines if line.strip()]
            info: dict[str, Any] = next((a["commitInfo"] for a in actions if "commitInfo" in a), {})
            if info.get("jex.operation") != "flush":
                continue
            for action in actions:
                if "add" in action:
                    add = action["add"]
                    rows = json.loads(add["stats"])["numRecords"]
                    found[name].append((int(rows), int(add["size"])))
    return found


def current_files(data_dir: Path) -> dict[str, list[delta.DataFile]]:
    """Each table's current files, from its Delta log (a glob would also find replaced
    files not vacuumed yet, and files of writes never committed)."""
    return {name: delta.files(table, name) for name, table in delta.tables(data_dir.resolve())}


def read_current(data_dir: Path, name: str, files: list[delta.DataFile]) -> pa.Table:
    """The rows of ``files`` (one table's) with the dataset's columns."""
    by_partition: dict[Any, list[delta.DataFile]] = defaultdict(list)
    for file in files:
        by_partition[file.partition].append(file)
    root = str(data_dir.resolve())
    return pa.concat_tables(
        compaction.read_files(root, partition, found)
        for partition, found in sorted(by_partition.items())
    )


# -- collecting --------------------------------------------------------------------------------


def collect(out: Path, *, minutes: float, warmup: float, seed: int) -> None:
    """Warm-up run, then the measured run; what the analysis needs goes to ``run.json``."""
    from collector.collect.daemon import Daemon
    from collector.sim import SimExchange, SimServer

    data_dir = out / "data"
    with SimServer(SimExchange(seed=seed)) as server:
        settings = config.load(
            "schedules.yaml",
            environ={"JEX_API_KEY": "sim-demo-key"},
            overrides={"base_url": server.base_url, "data_dir": str(data_dir)},
        )
        print(f"warm-up ({warmup:.0f} s: first-start backfills) into {data_dir}", flush=True)
        asyncio.run(Daemon(settings).run(warmup, handle_signals=False))
        before = versions(data_dir)
        print(f"measured run ({minutes:g} min)", flush=True)
        started = time.time()
        asyncio.run(Daemon(settings).run(minutes * 60, handle_signals=False))
        ended = time.time()
    (out / RUN_FILE).write_text(
        json.dumps(
            {
                "seed": seed,
                "started": started,
                "ended": ended,
                "flush_every": settings.storage.flush_every,
                "versions_before": before,
            },
            indent=1,
        )
    )


# -- analysing ---------------------------------------------------------------------------------


def day_archive(archive: Path) -> dict[str, dict[str, Any]]:
    """Compacted bytes per row of the datasets a ``make_archive.py --days 1`` archive holds
    (trades, depth, klines): whole days in one file each, as a day of the daemon's
    compacts, where a 30-minute run's sample compresses worse."""
    data_dir = (archive / "data").resolve()
    found: dict[str, dict[str, Any]] = {}
    for name, files in current_files(data_dir).items():
        if not files:
            continue
        rows = sum(f.rows for f in files)
        size = sum(f.size for f in files)
        sample = pq.read_table(delta.file_path(data_dir, name, files[0].path)).slice(0, 1)
        per_file = one_row_file_bytes(name, sample, compacted=True)
        found[name] = {
            "compacted_files": len(files),
            "compacted_rows": rows,
            "compacted_bytes": size,
            "compacted_file": per_file,
            "compacted_row": (size - len(files) * per_file) / rows,
            "compacted_source": "day archive",
        }
    return found


def analyze(out: Path, day: Path | None = None) -> dict[str, Any]:
    """Flushed bytes from the measured run's files; compacted bytes from every row the
    archive holds (the warm-up's too: funding and the fund are mostly history)."""
    run = json.loads((out / RUN_FILE).read_text())
    data_dir = (out / "data").resolve()
    seconds = run["ended"] - run["started"]
    flushed = flushed_files(data_dir, run["versions_before"])
    tables = {
        name: read_current(data_dir, name, files)
        for name, files in current_files(data_dir).items()
        if files
    }

    # Every row once more, in two flushes (a partition of one file counts as compact and
    # is left as it is), then compacted.
    compacted_dir = out / "compacted"
    shutil.rmtree(compacted_dir, ignore_errors=True)
    writer = ArchiveWriter(compacted_dir)
    for half in (0, 1):
        for name, table in tables.items():
            middle = table.num_rows // 2
            writer.add(name, table.slice(0, middle) if half == 0 else table.slice(middle))
        result = writer.flush()
        if result.errors:
            raise result.errors[0]
    writer.close()
    report = compaction.compact_archive(compacted_dir, retention_hours=0)
    if report.errors:
        raise RuntimeError(report.errors)
    compacted_files = current_files(compacted_dir)

    measured: dict[str, Any] = {}
    for name in datasets.DATASETS:
        if name not in tables:
            continue
        table = tables[name]
        files = flushed.get(name, [])
        rows = sum(count for count, _ in files)
        flush_bytes = sum(size for _, size in files)
        flush_file = one_row_file_bytes(name, table, compacted=False)
        if rows >= MIN_FLUSHED_ROWS:
            flush_row = (flush_bytes - len(files) * flush_file) / rows
            flush_source = "flushes"
        else:  # too few rows flushed to tell: every row in one file at the flush level
            sink = io.BytesIO()
            options = parquet_format.write_options(name, compacted=False)
            pq.write_table(file_body(table), sink, **options)
            flush_row = (len(sink.getvalue()) - flush_file) / table.num_rows
            flush_source = "one file"
        done = compacted_files.get(name, [])
        compacted_bytes = sum(f.size for f in done)
        compacted_rows = sum(f.rows for f in done)
        compacted_file = one_row_file_bytes(name, table, compacted=True)
        measured[name] = {
            "rows": rows,
            "flush_files": len(files),
            "flush_bytes": flush_bytes,
            "flush_file": flush_file,
            "flush_row": flush_row,
            "flush_source": flush_source,
            "compacted_files": len(done),
            "compacted_rows": compacted_rows,
            "compacted_bytes": compacted_bytes,
            "compacted_file": compacted_file,
            "compacted_row": (compacted_bytes - len(done) * compacted_file) / compacted_rows,
            "compacted_source": "this run",
        }
    if day is not None:
        for name, better in day_archive(day).items():
            measured[name].update(better)
    return {"seed": run["seed"], "seconds": seconds, "datasets": measured}


def print_table(result: dict[str, Any]) -> None:
    seconds = result["seconds"]
    print(f"measured run: {seconds / 60:.1f} min, simulator seed {result['seed']}")
    print()
    headers = (
        "dataset",
        "flushed rows",
        "files",
        "bytes",
        "B/file",
        "B/row",
        "from",
        "compacted rows",
        "files",
        "bytes",
        "B/file",
        "B/row",
        "from",
    )
    rows = [
        (
            name,
            m["rows"],
            m["flush_files"],
            m["flush_bytes"],
            m["flush_file"],
            round(m["flush_row"], 2),
            m["flush_source"],
            m["compacted_rows"],
            m["compacted_files"],
            m["compacted_bytes"],
            m["compacted_file"],
            round(m["compacted_row"], 2),
            m["compacted_source"],
        )
        for name, m in result["datasets"].items()
    ]
    print(text_table(headers, rows))
    print()
    print("for the registry entries in collector/datasets.py:")
    for name, m in result["datasets"].items():
        print(
            f"    {name}: bytes=RowBytes({max(m['flush_row'], 0.01):.2f}, {m['flush_file']}, "
            f"{max(m['compacted_row'], 0.01):.2f}, {m['compacted_file']}),"
        )


# -- against the prediction -----------------------------------------------------------------


def predict(seed: int) -> Any:
    """What ``collector.plan.disk`` predicts for the shipped schedule on the simulator of
    ``seed`` (trade counts of the 24 hours before now, as ``plan --sim``)."""
    from collector.exchange import endpoints, instruments
    from collector.exchange.client import JexClient
    from collector.plan.disk import plan_disk
    from collector.plan.schedule import make_plan
    from collector.sim import SimExchange, SimServer

    async def ask(settings: config.Settings) -> Any:
        async with JexClient.from_settings(settings) as client:
            info = await client.get(endpoints.EXCHANGE_INFO)
            options = await client.get(endpoints.OPTION_INFO)
            _, listing = instruments.instruments(
                info.payload, received_at=info.received_at, options=options.payload
            )
            now = client.clock.now_ms()

            def names(job: config.JobSettings, market: str) -> list[str]:
                return [s for s in listing.active(market, now) if job.wants(s)]

            plan = make_plan(
                settings,
                lambda job, market: len(names(job, market)),
                has_api_key=True,
                weight_limit=1200,
            )
            return await plan_disk(settings, plan, client, names)

    with SimServer(SimExchange(seed=seed)) as server:
        settings = config.load(
            "schedules.yaml",
            environ={"JEX_API_KEY": "sim-demo-key"},
            overrides={"base_url": server.base_url},
        )
        return asyncio.run(ask(settings))


def print_comparison(result: dict[str, Any]) -> None:
    """The measured run extrapolated to a day next to the prediction from ``BYTES``."""

    disk = predict(result["seed"])
    scale = 86_400 / result["seconds"]
    jobs = {job.job: job for job in disk.jobs}
    rows = []
    totals = [0.0, 0.0, 0.0, 0.0]
    for name, m in result["datasets"].items():
        job = jobs[name]
        markets = job.compacted_files_per_day
        flushed = m["flush_bytes"] * scale
        compacted = m["rows"] * scale * m["compacted_row"] + markets * m["compacted_file"]
        rows.append(
            (
                name,
                round(m["rows"] * scale),
                round(job.rows_per_day),
                round(flushed / 1e6, 2),
                round(job.flush_bytes_per_day / 1e6, 2),
                round(compacted / 1e6, 2),
                round(job.compacted_bytes_per_day / 1e6, 2),
            )
        )
        for i, value in enumerate(
            (flushed, job.flush_bytes_per_day, compacted, job.compacted_bytes_per_day)
        ):
            totals[i] += value
    print()
    print(
        f"a day: the measured run x {scale:.1f} against collector.plan.disk ({disk.trade_source})"
    )
    headers = (
        "dataset", "rows/day", "predicted", "flush MB", "predicted", "compacted MB", "predicted",
    )  # fmt: skip
    rows.append(("total", "", "", *(round(t / 1e6, 1) for t in totals)))
    print(text_table(headers, rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="the measured run")
    parser.add_argument("--warmup", type=float, default=300.0, help="seconds before it")
    parser.add_argument("--seed", type=int, default=1, help="simulator seed")
    parser.add_argument("--keep", type=Path, default=None, help="collect into DIR and keep it")
    parser.add_argument("--analyze", type=Path, default=None, help="analyse a kept run")
    parser.add_argument(
        "--day-archive",
        type=Path,
        default=None,
        help="a make_archive.py --days 1 --scale 1 output: compacted trades, depth and klines "
        "from its whole days",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the numbers here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.ERROR)  # skipped runs, as the CLI does
    if args.analyze is not None:
        out = args.analyze
    else:
        out = args.keep or Path(tempfile.mkdtemp(prefix="bench-disk-"))
        out.mkdir(parents=True, exist_ok=True)
        collect(out, minutes=args.minutes, warmup=args.warmup, seed=args.seed)
    try:
        result = analyze(out, args.day_archive)
        print_table(result)
        print_comparison(result)
        if args.json is not None:
            args.json.write_text(json.dumps(result, indent=1) + "\n")
    finally:
        if args.analyze is None and args.keep is None:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    run_main(main)

"""The daemon stays lean (issue 17): what its process loads, and the pyarrow-only code that
replaced pyarrow's Acero grouping and DuckDB in it.

* A real ``jex-collector run --sim`` process never has pandas, matplotlib or DuckDB in
  ``sys.modules``, while it collects, flushes and has ``archive.duckdb`` rebuilt by a
  child process.
* ``collector.storage.groups`` answers what ``Table.group_by`` answered.
* ``collector.read.scan`` (where jobs resume, read with pyarrow) agrees with DuckDB on a
  simulator archive.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from collector import datasets
from collector.collect import lean
from collector.collect.daemon import Daemon
from collector.collect.views import ViewsRebuild
from collector.read import catalog, scan
from collector.sim import SimExchange, SimServer
from collector.storage import groups
from collector.storage.location import Archive
from collector.storage.writer import dedupe_on_key
from tests.conftest import fast_settings

ROOT = Path(__file__).resolve().parent.parent

PROBE = textwrap.dedent(
    """
    import json, sys, threading, time
    from pathlib import Path

    data = Path(sys.argv[1])

    def report():
        # Once the daemon flushed (trades' table has several commits) and the views
        # were rebuilt beside it, say what this process has loaded.
        deadline = time.time() + 60
        while time.time() < deadline:
            log = data / "trades" / "_delta_log"
            commits = list(log.glob("*.json")) if log.is_dir() else []
            if len(commits) >= 3 and (data / "archive.duckdb").exists():
                break
            time.sleep(0.2)
        loaded = sorted({m.split(".")[0] for m in sys.modules})
        print("LOADED " + json.dumps(loaded), flush=True)

    threading.Thread(target=report, daemon=True).start()
    from collector.cli import main

    sys.argv = ["jex-collector", "run", "--sim", "--config", sys.argv[2],
                "--data-dir", str(data), "--duration", "8", "--log-level", "warning"]
    main()
    """
)


def test_the_daemon_process_never_loads_pandas_matplotlib_or_duckdb(tmp_path: Path) -> None:
    config = tmp_path / "fast.yaml"
    config.write_text(
        "storage: {flush_every: 1s}\n"
        "jobs:\n"
        "  depth: {every: 1s, markets: [spot], symbols: all, limit: 5}\n"
        "  trades: {every: 1s, markets: [spot], symbols: all}\n"
        "  book_ticker: {every: 1s, markets: [spot]}\n"
    )
    data = tmp_path / "data"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(data), str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("LOADED ")]
    loaded = set(json.loads(line.removeprefix("LOADED ")))
    # The probe is not blind: what the daemon does need is there.
    assert {"collector", "pyarrow", "deltalake", "httpx", "apscheduler"} <= loaded
    assert not loaded & {"pandas", "matplotlib", "duckdb", "polars"}, sorted(loaded)
    # The views were rebuilt by a child process, and they work.
    with duckdb.connect(str(data / "archive.duckdb"), read_only=True) as connection:
        catalog.load_delta(connection)
        (count,) = connection.execute("SELECT count(*) FROM trades").fetchone() or (0,)
    assert count > 0


def test_keep_out_refuses_the_packages_and_their_submodules() -> None:
    finder = lean.KeepOut(("pandas",))
    with pytest.raises(ModuleNotFoundError, match="not loaded in a collector daemon"):
        finder.find_spec("pandas.core.frame")
    assert finder.find_spec("pandas_like") is None
    assert finder.find_spec("pyarrow") is None


def _random_table(rng: random.Random, rows: int) -> pa.Table:
    table = pa.table(
        {
            "market": [rng.choice(["spot", "option", None]) for _ in range(rows)],
            "symbol": [rng.choice(["BTCUSDT", "ETHUSDT"]) for _ in range(rows)],
            "id": [rng.choice([1, 2, 3, None]) for _ in range(rows)],
            "value": list(range(rows)),
        },
        schema=pa.schema(
            [
                ("market", pa.string()),
                ("symbol", pa.string()),
                ("id", pa.int64()),
                ("value", pa.int64()),
            ]
        ),
    )
    half = rows // 2
    return pa.concat_tables([table.slice(0, half), table.slice(half)])  # two chunks


def test_grouping_without_acero_answers_what_group_by_answered() -> None:
    rng = random.Random(17)
    key = ("market", "symbol", "id")
    for _ in range(200):
        table = _random_table(rng, rng.randint(0, 50))
        indexed = table.append_column("__row", pa.array(range(table.num_rows), pa.int64()))
        expected = indexed.group_by(list(key), use_threads=False).aggregate([("__row", "min")])
        assert groups.first_of_each(table, key).to_pylist() == sorted(
            expected.column("__row_min").to_pylist()
        )
        newest = groups.first_of_each(table, ("symbol",), order=[("value", "descending")])
        assert table.take(newest).column("value").to_pylist() == sorted(
            pc.max(table.filter(pc.equal(table["symbol"], s))["value"]).as_py()
            for s in sorted(set(table.column("symbol").to_pylist()))
        )
        # dedupe_on_key: the first of each complete key, every row with a null key column
        complete = [
            i for i, row in enumerate(table.to_pylist()) if None not in (row[k] for k in key)
        ]
        seen: set[tuple[object, ...]] = set()
        keep = []
        for i, row in enumerate(table.to_pylist()):
            values = tuple(row[k] for k in key)
            if i not in complete:
                keep.append(i)
            elif values not in seen:
                seen.add(values)
                keep.append(i)
        kept = table.take(pa.array(keep, pa.int64()))
        assert dedupe_on_key(table, key).to_pylist() == kept.to_pylist()


def test_the_cursors_read_with_pyarrow_equal_duckdbs(sim_archive: Path) -> None:
    checked = 0
    for spec in datasets.DATASETS.values():
        if spec.cursor is None or not catalog.has_files(sim_archive, spec.name):
            continue
        column, group = spec.cursor.column, spec.cursor.group
        is_time = spec.schema.field(column).type == datasets.TIMESTAMP
        value = f"epoch_ms(max({column}))" if is_time else f"max({column})"
        keys = ", ".join(group)
        rows = catalog.query(
            sim_archive,
            # Names from the dataset registry only.
            f"SELECT {keys}, {value} AS v FROM {spec.name} "
            f"WHERE {column} IS NOT NULL GROUP BY {keys}",
            derived_views=False,
            only=(spec.name,),
        ).to_pylist()
        expected = {tuple(row[g] for g in group): row["v"] for row in rows}
        assert scan.max_by_group(sim_archive, spec.name, column, group) == expected
        checked += bool(expected)
    assert checked >= 4  # trades, klines, funding, fund and liquidations have rows


def test_the_views_are_rebuilt_by_a_child_process_at_start(
    sim_archive: Path, sim_exchange: SimExchange, tmp_path: Path
) -> None:
    data = tmp_path / "archive"
    shutil.copytree(sim_archive, data)
    (data / catalog.DB_NAME).unlink(missing_ok=True)
    with SimServer(sim_exchange) as server:
        daemon = Daemon(fast_settings(server.base_url, data))
        asyncio.run(daemon.run(2, handle_signals=False))
    assert daemon.views.runs >= 1  # at start; the stop waited for it
    with duckdb.connect(str(data / catalog.DB_NAME), read_only=True) as connection:
        catalog.load_delta(connection)
        (count,) = connection.execute("SELECT count(*) FROM depth").fetchone() or (0,)
    assert count > 0


def test_a_failed_views_rebuild_is_a_warning_with_the_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rebuild = ViewsRebuild(Archive.of(tmp_path))  # no table here: `views` refuses it
    asyncio.run(rebuild._rebuild())
    (record,) = [r for r in caplog.records if "could not rebuild" in r.getMessage()]
    assert record.levelname == "WARNING"
    assert "exited 2" in record.getMessage() and str(tmp_path) in record.getMessage()

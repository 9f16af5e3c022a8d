"""The issue-5 benchmarks run end to end on a tiny archive, so that they do not rot.

Nothing here looks at a time: only that each script runs and reports the rows it was
given (the views and loaders benchmarks also check that both sides of each comparison
return the same rows, and fail otherwise), and that the reader race's Delta readers
never failed or read wrong rows.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from collector.storage import delta

ROOT = Path(__file__).resolve().parent.parent


def run(script: str, *args: str | Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *map(str, args)],
        check=True,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One day at 2% of the simulator's trade rates, depth for one symbol."""
    out = tmp_path_factory.mktemp("bench") / "archive"
    run(
        "make_archive.py",
        *("--days", "1", "--scale", "0.02", "--flushes", "3", "--out", out),
        *("--depth-symbols", "contract/ETHUSDT"),
    )
    return out


def test_make_archive_writes_the_same_rows_as_parquet_and_csv(archive: Path) -> None:
    manifest = json.loads((archive / "manifest.json").read_text())
    for dataset in ("trades", "depth", "klines"):
        table = delta.open_table(archive / "data", dataset)
        assert table is not None
        files = delta.files(table, dataset)  # the current version's, from the log
        parquet_rows = sum(file.rows for file in files)
        csv_rows = sum(
            len(path.read_text().splitlines()) - 1
            for path in (archive / "csv" / dataset).glob("*/*.csv")
        )
        zip_rows = 0
        for path in (archive / "zip" / dataset).glob("*/*.zip"):
            with zipfile.ZipFile(path) as zipped:
                (name,) = zipped.namelist()
                zip_rows += len(zipped.read(name).splitlines()) - 1
        assert parquet_rows == csv_rows == zip_rows == manifest["rows"][dataset] > 0
        # Compacted: one file per market and day (with 3 flushes there were 3).
        assert len(files) == len({file.partition for file in files})
    assert manifest["ideal_trades_rows"] == manifest["rows"]["trades"]


def test_storage_reports_every_dataset(archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "storage.json"
    run("storage.py", "--archive", archive, "--levers", "--lever-days", "1", "--json", out)
    result = json.loads(out.read_text())
    manifest = json.loads((archive / "manifest.json").read_text())
    for dataset in ("trades", "depth", "klines"):
        assert result["sizes"][dataset]["rows"] == manifest["rows"][dataset]
        assert result["sizes"][dataset]["zip_bytes"] > 0
        levers = result["levers"][dataset]["levers"]
        assert levers[-1]["lever"].endswith("(chosen)")


def test_views_and_one_file_agree(archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "views.json"
    run("views.py", "--archive", archive, "--repeat", "1", "--json", out)
    queries = json.loads(out.read_text())["queries"]
    assert set(queries) == {"vwap_month", "day_all_symbols", "hour_with_date", "hour_without_date"}
    assert all(query["rows"] > 0 for query in queries.values())
    assert all(query["views_vs_files"] > 0 for query in queries.values())


def test_loaders_read_the_same_rows(archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "loaders.json"
    run("loaders.py", "--archive", archive, "--repeat", "1", "--json", out)
    result = json.loads(out.read_text())
    manifest = json.loads((archive / "manifest.json").read_text())
    symbol_rows = manifest["rows_per_symbol"]["trades/spot/BTCUSDT"]
    assert "load_trades" in result["speed"]
    assert {r["rows"] for r in result["speed"].values()} == {symbol_rows}
    memory = result["memory"]
    assert memory["day"]["rows"] == memory["day_baseline"]["rows"] == manifest["rows"]["trades"]
    assert memory["month"]["rows"] == symbol_rows
    assert memory["day"]["result_bytes"] > 0


def test_reader_race_delta_readers_are_exact(tmp_path: Path) -> None:
    out = tmp_path / "race.json"
    run("reader_race.py", "--seconds", "3", "--vacuum-every", "5", "--json", out)
    result = json.loads(out.read_text())
    assert result["switches"] > 0
    assert result["rows_at_end"] == result["distinct_at_end"] == result["rows_added"]
    readers = result["readers"]
    assert set(readers) == {
        "duckdb delta_scan",
        "catalog.query",
        "deltalake",
        "polars scan_delta",
        "duckdb parquet glob",
    }
    for name in ("duckdb delta_scan", "catalog.query", "deltalake", "polars scan_delta"):
        assert readers[name]["reads"] > 0, name
        assert readers[name]["failed"] == readers[name]["wrong"] == 0, readers[name]


def test_object_storage_short_run_agrees_on_s3(tmp_path: Path) -> None:
    out = tmp_path / "object_storage.json"
    run("object_storage.py", "--short", "--json", out)
    result = json.loads(out.read_text())
    for flush in result["flush"].values():
        assert flush["local_best_s"] > 0 and flush["s3_best_s"] > 0
    assert result["flush"]["flush, every dataset"]["commits"] > 1
    assert result["flush"]["flush, trades only"]["files"] == 3  # one per market
    assert result["upload"]["data_files"] > 0 and result["upload"]["log_files"] > 0
    # Every side answered (and agreed with DuckDB local, or the script failed).
    assert set(result["vwap"]) == {"spot BTCUSDT", "all trades"}
    for query in result["vwap"].values():
        assert query["hours"] == 48
        assert set(query["sides"]) == {
            "DuckDB local",
            "DuckDB S3",
            "DuckDB S3, no file cache",
            "Dask local",
            "Dask S3",
        }


def test_daemon_short_run_measures_the_daemon_and_the_httpx_loop(tmp_path: Path) -> None:
    """bench/daemon.py for 18 s: three processes, the same requests on both sides."""
    out = tmp_path / "daemon.json"
    run(
        "daemon.py",
        *("--minutes", "0.3", "--sample-minute", "6", "--sample", "1", "--lag", "0.5"),
        *("--out", tmp_path / "work", "--json", out),
    )
    result = json.loads(out.read_text())
    daemon, reference = result["daemon"], result["reference"]
    assert result["returncode"] == 0
    assert daemon["requests"] > 20 and set(daemon["status"]) == {"200"}  # no 429, no ban
    assert daemon["rows"] > 0 and daemon["cpu_s"] > 0 and daemon["peak_rss_mb"] > 0
    assert daemon["heavy_modules_mapped"] == []  # no pandas, no matplotlib in its memory
    # The loop replayed what the daemon sent (less what its last half second sent).
    assert 0.8 * daemon["requests"] <= reference["requests"] <= daemon["requests"]
    assert reference["cpu_ms_per_request"] > 0
    assert len(result["minutes"]) >= 2

"""DuckDB views: every dataset has one, empty or not, with its documented columns, over
the dataset's Delta table; ``archive.duckdb`` opens in a plain DuckDB with the ``delta``
extension."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from collector import datasets
from collector.errors import ConfigError
from collector.read import catalog
from collector.storage import compaction, delta
from collector.storage.writer import ArchiveWriter

T0 = 1_764_000_000_000  # 2025-11-24T16:00:00Z


def fund_rows(ids: list[int], symbol: str = "BTCUSDT") -> pa.Table:
    return pa.table(
        {
            "market": ["contract"] * len(ids),
            "symbol": [symbol] * len(ids),
            "id": ids,
            "time": [T0 + i * 60_000 for i in ids],
            "insurance_fund": [1e6 + i for i in ids],
        },
        schema=datasets.get("protection_fund").schema,
    )


def recent_trades(market: str, prices: list[float], time_ms: int = T0) -> pa.Table:
    """Trades without an id (the recent-trades endpoint), all at the same time: only the
    order they were written in tells them apart."""
    n = len(prices)
    return pa.table(
        {
            "market": [market] * n,
            "symbol": ["BTCUSDT"] * n,
            "trade_id": pa.nulls(n, pa.int64()),
            "time": [time_ms] * n,
            "price": prices,
            "qty": [1.0] * n,
            "is_buyer_maker": pa.nulls(n, pa.bool_()),
            "received_at": [time_ms + 5] * n,
        },
        schema=datasets.get("trades").schema,
    )


def open_archive_db(path: Path) -> duckdb.DuckDBPyConnection:
    """``archive.duckdb`` as a user opens it: plain DuckDB, then the ``delta`` extension
    from the pip package duckdb-extension-delta (what ``LOAD delta`` does once installed)."""
    shipped = catalog.extension_file("delta")
    assert shipped is not None, "duckdb-extension-delta is a dependency"
    connection = duckdb.connect(str(path), read_only=True)
    connection.execute(f"LOAD '{shipped}'")
    return connection


def test_every_dataset_has_a_view_with_its_columns_even_when_empty(tmp_path: Path) -> None:
    path = catalog.write_views(tmp_path)
    with duckdb.connect(str(path), read_only=True) as connection:
        for name, spec in datasets.DATASETS.items():
            cursor = connection.execute(f"SELECT * FROM {name}")
            assert [d[0] for d in cursor.description] == [*spec.column_names, "date"]
            assert cursor.fetchall() == []


def test_views_read_the_files_with_market_and_date_columns(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path)
    writer.add("protection_fund", fund_rows([1, 2, 3]))
    writer.flush()
    path = catalog.write_views(tmp_path)
    with open_archive_db(path) as connection:
        connection.execute("SET TimeZone = 'UTC'")
        rows = connection.execute(
            "SELECT market, symbol, id, time, date FROM protection_fund ORDER BY id"
        ).fetchall()
    assert [r[2] for r in rows] == [1, 2, 3]
    assert rows[0][0] == "contract" and rows[0][1] == "BTCUSDT"
    assert rows[0][3] == dt.datetime(2025, 11, 24, 16, 1, tzinfo=dt.UTC)
    assert rows[0][4] == dt.date(2025, 11, 24)


def test_views_see_files_written_after_they_were_created(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path)
    writer.add("protection_fund", fund_rows([1]))
    writer.flush()
    path = catalog.write_views(tmp_path)
    writer.add("protection_fund", fund_rows([2]))
    writer.flush()
    with open_archive_db(path) as connection:
        assert connection.execute("SELECT count(*) FROM protection_fund").fetchone() == (2,)


def test_rewriting_views_does_not_disturb_an_open_reader(tmp_path: Path) -> None:
    path = catalog.write_views(tmp_path)
    with open_archive_db(path) as reader:
        writer = ArchiveWriter(tmp_path)
        writer.add("protection_fund", fund_rows([1]))
        writer.flush()
        catalog.write_views(tmp_path)  # must not fail on the reader's lock
        assert reader.execute("SELECT count(*) FROM trades").fetchone() == (0,)
    with open_archive_db(path) as fresh:
        assert fresh.execute("SELECT count(*) FROM protection_fund").fetchone() == (1,)


def test_max_by_group_is_where_jobs_resume(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path)
    writer.add("protection_fund", fund_rows([1, 5, 3]))
    writer.add("protection_fund", fund_rows([9], symbol="ETHUSDT"))
    writer.flush()
    found = catalog.max_by_group(tmp_path, "protection_fund", "id", ("market", "symbol"))
    assert found == {("contract", "BTCUSDT"): 5, ("contract", "ETHUSDT"): 9}
    times = catalog.max_by_group(tmp_path, "protection_fund", "time", ("symbol",))
    assert times == {("BTCUSDT",): T0 + 5 * 60_000, ("ETHUSDT",): T0 + 9 * 60_000}
    assert catalog.max_by_group(tmp_path, "trades", "trade_id", ("symbol",)) == {}
    with pytest.raises(ValueError, match="no column"):
        catalog.max_by_group(tmp_path, "trades", "id; DROP TABLE x", ("symbol",))


def test_a_data_dir_with_a_quote_and_a_space_in_its_name_is_read(tmp_path: Path) -> None:
    odd = tmp_path / "it's data"
    writer = ArchiveWriter(odd)
    writer.add("protection_fund", fund_rows([1]))
    writer.add("trades", recent_trades("spot", [1.0, 2.0]))
    writer.flush()
    assert catalog.query(odd, "SELECT count(*) AS n FROM protection_fund")["n"].to_pylist() == [1]
    newest = catalog.last_recent_trades(odd, 1)
    assert newest == {("spot", "BTCUSDT"): [(T0, 2.0, 1.0)]}


def test_query_command_prints_table_csv_and_json_and_fails_clearly(tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from collector.cli import main

    writer = ArchiveWriter(tmp_path)
    writer.add("protection_fund", fund_rows([1, 2]))
    writer.flush()
    runner = CliRunner()
    sql = "SELECT symbol, id, time FROM protection_fund ORDER BY id"
    table = runner.invoke(main, ["query", sql, "--data-dir", str(tmp_path)])
    assert table.exit_code == 0 and "BTCUSDT" in table.output and "2 row(s)" in table.output
    csv_out = runner.invoke(main, ["query", sql, "--data-dir", str(tmp_path), "--format", "csv"])
    assert csv_out.output.splitlines() == [
        "symbol,id,time",
        "BTCUSDT,1,2025-11-24T16:01:00+00:00",
        "BTCUSDT,2,2025-11-24T16:02:00+00:00",
    ]
    json_out = runner.invoke(main, ["query", sql, "--data-dir", str(tmp_path), "--format", "json"])
    assert [json.loads(line)["id"] for line in json_out.output.splitlines()] == [1, 2]
    bad = runner.invoke(main, ["query", "SELECT nope FROM trades", "--data-dir", str(tmp_path)])
    assert bad.exit_code == 1 and "query failed" in bad.output and "nope" in bad.output


@pytest.mark.parametrize(
    "path", ["relative/dir/*.parquet", "/data/x\n; DROP VIEW trades; --", "/data/\x00x"]
)
def test_paths_reach_view_ddl_only_absolute_and_without_control_characters(path: str) -> None:
    with pytest.raises(ValueError, match="path"):
        catalog.path_literal(path)


def test_a_quote_in_a_path_is_doubled_not_executed() -> None:
    assert catalog.path_literal("/data/it's/*.parquet") == "'/data/it''s/*.parquet'"


def test_a_view_rebuild_removes_the_temporary_file_of_a_killed_rebuild(tmp_path: Path) -> None:
    dead = tmp_path / f".{catalog.DB_NAME}.999999999.tmp"  # no such pid
    dead.write_bytes(b"half a database")
    alive = tmp_path / f".{catalog.DB_NAME}.1.tmp"  # pid 1 is always alive
    alive.write_bytes(b"being written")
    catalog.write_views(tmp_path)
    assert not dead.exists() and alive.exists()


def test_views_over_tables_have_the_registry_types_of_the_empty_views(tmp_path: Path) -> None:
    """A table read by delta_scan (microsecond TIMESTAMPTZ, Delta's own types) gives the
    same columns and types as the typed empty view of a dataset without a table."""
    with catalog.connect(tmp_path / "none") as connection:
        expected = {
            name: connection.execute(f"DESCRIBE {name}").fetchall() for name in datasets.DATASETS
        }
    for name in datasets.DATASETS:
        delta.ensure_table(tmp_path / "tables", name)
    with catalog.connect(tmp_path / "tables") as connection:
        for name in datasets.DATASETS:
            assert "delta_scan" in catalog.source_sql(tmp_path / "tables", name)
            described = connection.execute(f"DESCRIBE {name}").fetchall()
            assert [row[:2] for row in described] == [row[:2] for row in expected[name]], name
            assert connection.execute(f"SELECT count(*) FROM {name}").fetchone() == (0,)


def test_has_files_is_a_table_with_a_data_file(tmp_path: Path) -> None:
    assert not catalog.has_files(tmp_path, "protection_fund")  # no table
    delta.ensure_table(tmp_path, "protection_fund")
    assert not catalog.has_files(tmp_path, "protection_fund")  # a table, no file yet
    writer = ArchiveWriter(tmp_path)
    writer.add("protection_fund", fund_rows([1]))
    writer.flush()
    assert catalog.has_files(tmp_path, "protection_fund")
    assert not catalog.has_files(tmp_path, "trades")


def test_views_read_the_latest_version_after_a_compaction(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path)
    for ids in ([1, 2], [3], [2, 4]):  # id 2 twice: compaction keeps one
        writer.add("protection_fund", fund_rows(ids))
        writer.flush()
    sql = "SELECT count(*) AS n, count(DISTINCT id) AS ids FROM protection_fund"
    assert catalog.query(tmp_path, sql).to_pylist() == [{"n": 5, "ids": 4}]
    report = compaction.compact_archive(tmp_path)
    assert report.partitions == 1 and not report.errors
    table = delta.open_table(tmp_path, "protection_fund")
    assert table is not None and len(table.file_uris()) == 1
    assert catalog.query(tmp_path, sql).to_pylist() == [{"n": 4, "ids": 4}]


def test_last_recent_trades_keep_the_order_they_were_written_in(tmp_path: Path) -> None:
    """Rows of the same time are told apart by file name (creation time) and row number,
    also once compaction merged the files: its output sorts where its newest input did,
    before a file flushed after it."""
    stamps = iter(range(T0, T0 + 1_000_000, 1_000))
    writer = ArchiveWriter(tmp_path, clock_ms=lambda: next(stamps))
    for spot, contract in (([1.0, 2.0, 3.0], [10.0]), ([4.0, 5.0], [11.0, 12.0])):
        writer.add("trades", recent_trades("spot", spot))
        writer.add("trades", recent_trades("contract", contract))
        writer.flush()

    def newest(n: int) -> dict[tuple[str, str], list[float]]:
        found = catalog.last_recent_trades(tmp_path, n)
        assert {t for rows in found.values() for t, _, _ in rows} == {T0}
        return {key: [price for _, price, _ in rows] for key, rows in found.items()}

    expected = {
        ("spot", "BTCUSDT"): [2.0, 3.0, 4.0, 5.0],
        ("contract", "BTCUSDT"): [10.0, 11.0, 12.0],
    }
    assert newest(4) == expected
    assert compaction.compact_archive(tmp_path).partitions == 2
    table = delta.open_table(tmp_path, "trades")
    assert table is not None and len(table.file_uris()) == 2  # one per market
    assert newest(4) == expected
    writer.add("trades", recent_trades("spot", [6.0]))
    writer.flush()
    assert newest(3)[("spot", "BTCUSDT")] == [4.0, 5.0, 6.0]
    assert newest(1) == {("spot", "BTCUSDT"): [6.0], ("contract", "BTCUSDT"): [12.0]}


def test_last_recent_trades_of_an_archive_without_trades_is_empty(tmp_path: Path) -> None:
    assert catalog.last_recent_trades(tmp_path, 5) == {}
    delta.ensure_table(tmp_path, "trades")
    assert catalog.last_recent_trades(tmp_path, 5) == {}


def test_a_missing_extension_says_how_to_install_it() -> None:
    with duckdb.connect() as connection, pytest.raises(ConfigError) as caught:
        catalog.load_extension(connection, "no_such_extension")
    message = str(caught.value)
    assert "pip install duckdb-extension-no_such_extension" in message
    assert "INSTALL no_such_extension; LOAD no_such_extension;" in message


def test_the_delta_extension_loads_from_the_pip_package_without_a_download() -> None:
    shipped = catalog.extension_file("delta")
    assert shipped is not None and shipped.is_file()
    assert f"v{duckdb.__version__}" in shipped.parts
    with duckdb.connect() as connection:
        connection.execute("SET autoinstall_known_extensions = false")  # no network
        catalog.load_delta(connection)
        catalog.load_delta(connection)  # twice is fine
        loaded = connection.execute(
            "SELECT loaded FROM duckdb_extensions() WHERE extension_name = 'delta'"
        ).fetchone()
    assert loaded == (True,)
    with duckdb.connect() as connection, pytest.raises(ValueError, match="extension name"):
        catalog.load_extension(connection, "delta; DROP TABLE x")


# -- an archive folder that cannot be written -----------------------------------------------


def test_views_and_run_on_an_unwritable_folder_fail_in_one_line(tmp_path: Path) -> None:
    """A folder that cannot be made (here a file stands where a folder of the path
    belongs; a read-only disk or another owner fail the same way): a clear error naming
    the path, no traceback."""
    from click.testing import CliRunner

    from collector.cli import main

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    data_dir = blocker / "archive"
    runner = CliRunner()
    views = runner.invoke(main, ["views", "--data-dir", str(data_dir)])
    assert views.exit_code == 2, views.output  # no archive there to write views of
    assert views.output.startswith(f"error: no archive at {data_dir}")
    assert len(views.output.strip().splitlines()) == 1
    archive = tmp_path / "archive"
    writer = ArchiveWriter(archive)
    writer.add("protection_fund", fund_rows([1]))
    writer.flush()
    out = data_dir / catalog.DB_NAME
    views = runner.invoke(main, ["views", "--data-dir", str(archive), "--out", str(out)])
    assert views.exit_code == 1, views.output
    assert views.output.startswith(f"error: cannot write the views to {out}")
    assert len(views.output.strip().splitlines()) == 1 and "--out" in views.output
    config = tmp_path / "schedules.yaml"
    config.write_text("jobs: {}\n")
    run = runner.invoke(
        main,
        ["run", "--config", str(config), "--data-dir", str(data_dir),
         "--base-url", "http://127.0.0.1:9", "--duration", "1"],
    )  # fmt: skip
    assert run.exit_code == 1, run.output
    errors = [line for line in run.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(data_dir) in errors[0] and "writable" in errors[0]
    assert "Traceback" not in run.output

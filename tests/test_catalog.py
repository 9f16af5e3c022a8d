"""DuckDB views: every dataset has one, empty or not, with its documented columns."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from collector import catalog, datasets
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
    with duckdb.connect(str(path), read_only=True) as connection:
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
    with duckdb.connect(str(path), read_only=True) as connection:
        assert connection.execute("SELECT count(*) FROM protection_fund").fetchone() == (2,)


def test_rewriting_views_does_not_disturb_an_open_reader(tmp_path: Path) -> None:
    path = catalog.write_views(tmp_path)
    with duckdb.connect(str(path), read_only=True) as reader:
        writer = ArchiveWriter(tmp_path)
        writer.add("protection_fund", fund_rows([1]))
        writer.flush()
        catalog.write_views(tmp_path)  # must not fail on the reader's lock
        assert reader.execute("SELECT count(*) FROM trades").fetchone() == (0,)
    with duckdb.connect(str(path), read_only=True) as fresh:
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


def test_a_data_dir_with_a_quote_in_its_name_is_quoted(tmp_path: Path) -> None:
    odd = tmp_path / "it's data"
    writer = ArchiveWriter(odd)
    writer.add("protection_fund", fund_rows([1]))
    writer.flush()
    assert catalog.query(odd, "SELECT count(*) AS n FROM protection_fund")["n"].to_pylist() == [1]


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

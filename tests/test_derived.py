"""Derived views from SQL files: names, validation, install order, errors naming the file."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest

from collector.check import verify
from collector.errors import ConfigError
from collector.read import catalog, derived, sqlfiles


def write(directory: Path, name: str, body: str, title: str = "a view") -> Path:
    path = directory / name
    path.write_text(f"-- title: {title}\n{body}\n")
    return path


def test_the_shipped_views_are_found_and_valid() -> None:
    names = [view.name for view in derived.load()]
    assert {"depth_top", "bars_1m", "funding_annualized", "basis"} <= set(names)


def test_views_install_dependencies_first_then_by_name(tmp_path: Path) -> None:
    write(tmp_path, "a_top.sql", "SELECT n * 2 AS n FROM z_base")
    write(tmp_path, "m_mid.sql", "SELECT n + 1 AS n FROM a_top -- reads a_top")
    write(tmp_path, "z_base.sql", "SELECT 1 AS n;")
    write(tmp_path, "b_free.sql", "SELECT 7 AS n")
    views = derived.load(tmp_path)
    assert [v.name for v in views] == ["b_free", "z_base", "a_top", "m_mid"]
    connection = duckdb.connect()
    derived.install(connection, views)
    assert connection.execute("SELECT n FROM m_mid").fetchall() == [(3,)]
    comment = connection.execute(
        "SELECT comment FROM duckdb_views() WHERE view_name = 'm_mid'"
    ).fetchone()
    assert comment == ("a view",)


def test_a_cycle_is_an_error_naming_the_files(tmp_path: Path) -> None:
    write(tmp_path, "one.sql", "SELECT * FROM two")
    write(tmp_path, "two.sql", "SELECT * FROM one")
    with pytest.raises(ConfigError, match=r"cycle: .*one\.sql.*two\.sql"):
        derived.load(tmp_path)


@pytest.mark.parametrize(
    ("name", "body", "message"),
    [
        ("Bad-Name.sql", "SELECT 1", "lower-case SQL name"),
        ("1st.sql", "SELECT 1", "lower-case SQL name"),
        ("trades.sql", "SELECT 1", "is a dataset's view"),
        ("drop_it.sql", "DROP VIEW trades", "exactly one SELECT"),
        ("two.sql", "SELECT 1; SELECT 2", "exactly one SELECT"),
        ("whole.sql", "CREATE VIEW whole AS SELECT 1", "exactly one SELECT"),
        ("broken.sql", "SELEC 1", "not valid SQL"),
    ],
)
def test_bad_view_files_are_refused_with_the_file_named(
    tmp_path: Path, name: str, body: str, message: str
) -> None:
    path = write(tmp_path, name, body)
    with pytest.raises(ConfigError, match=message) as caught:
        derived.load(tmp_path)
    assert str(path) in str(caught.value)


def test_a_view_needs_a_title_and_takes_no_parameters(tmp_path: Path) -> None:
    (tmp_path / "untitled.sql").write_text("-- what it is\nSELECT 1\n")
    with pytest.raises(ConfigError, match=r"no `-- title: \.\.\.` line"):
        derived.load(tmp_path)
    (tmp_path / "untitled.sql").unlink()
    write(tmp_path, "param.sql", "-- param: n = 1\nSELECT $n")
    with pytest.raises(ConfigError, match="cannot take parameters"):
        derived.load(tmp_path)


def test_a_view_that_fails_to_create_names_its_file(tmp_path: Path) -> None:
    path = write(tmp_path, "wrong_column.sql", "SELECT no_such_column FROM trades")
    connection = catalog.connect(tmp_path / "empty-archive")
    with pytest.raises(ConfigError, match="wrong_column") as caught:
        derived.install(connection, derived.load(tmp_path))
    assert str(path) in str(caught.value)


def test_an_io_error_while_installing_is_the_archives_not_the_view_files(tmp_path: Path) -> None:
    """Data that cannot be read while a view is bound (a table's files gone, a disk error)
    stays a DuckDB IOException about the archive; it is not blamed on the SQL file as a
    ConfigError."""
    write(tmp_path, "gone.sql", f"SELECT * FROM read_parquet('{tmp_path}/gone/*.parquet')")
    with pytest.raises(duckdb.IOException):
        derived.install(duckdb.connect(), derived.load(tmp_path))


def test_derived_views_work_on_an_empty_archive(tmp_path: Path) -> None:
    with catalog.connect(tmp_path) as connection:
        for view in derived.load():
            assert connection.execute(f"SELECT * FROM {view.name}").fetchall() == []


def test_param_lines_are_parsed_with_defaults_and_descriptions(tmp_path: Path) -> None:
    path = tmp_path / "q.sql"
    path.write_text(
        "-- title: a query\n"
        "-- question: anything\n"
        "-- param: symbol = BTCUSDT   # the symbol\n"
        "-- param: empty =\n"
        "-- param: start\n"
        "SELECT $symbol, $empty, $start\n"
    )
    parsed = sqlfiles.read(path)
    assert [(p.name, p.default, p.description) for p in parsed.params] == [
        ("symbol", "BTCUSDT", "the symbol"),
        ("empty", "", ""),
        ("start", None, ""),
    ]
    assert parsed.bind({"start": "x"}) == {"symbol": "BTCUSDT", "empty": "", "start": "x"}
    with pytest.raises(ConfigError, match="no value for parameter"):
        parsed.bind({})
    with pytest.raises(ConfigError, match="unknown parameter"):
        parsed.bind({"start": "x", "other": "y"})


def test_a_bad_param_line_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "q.sql"
    path.write_text("-- title: t\n-- param: Symbol = X\nSELECT 1\n")
    with pytest.raises(ConfigError, match="bad parameter line"):
        sqlfiles.read(path)


def test_a_broken_view_file_takes_neither_the_dataset_views_nor_verify_away(
    sim_archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(sim_archive, data_dir, symlinks=True)
    views = tmp_path / "views"
    views.mkdir()
    (views / "a_good.sql").write_text("-- title: fine\nSELECT count(*) AS n FROM trades\n")
    (views / "b_broken.sql").write_text("-- title: broken\nSELECT no_such_column FROM trades\n")
    monkeypatch.setattr(derived, "views_dir", lambda: views)

    with pytest.raises(ConfigError, match="b_broken"):
        catalog.write_views(data_dir)
    with duckdb.connect(str(data_dir / catalog.DB_NAME), read_only=True) as connection:
        catalog.load_delta(connection)  # the dataset views read Delta tables
        trades = connection.execute("SELECT count(*) FROM trades").fetchone()
        good = connection.execute("SELECT n FROM a_good").fetchone()
    assert trades is not None and good is not None and good[0] == trades[0] > 0
    findings = verify.verify(data_dir)
    assert findings and not [f for f in findings if f.duplicates]  # verify ran

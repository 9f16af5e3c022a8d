"""The SQL of queries/: every cookbook file and derived view runs against a
simulator-filled archive and returns rows; the derived views agree with independent
computations; ``jex-collector query --file --param`` binds parameters."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from collector.cli import main
from collector.read import catalog, derived, sqlfiles

QUERIES = sqlfiles.queries_dir()
COOKBOOK = sorted(QUERIES.glob("*.sql"))
VIEWS = sorted((QUERIES / "views").glob("*.sql"))


@pytest.fixture(scope="module")
def archive(sim_archive: Path) -> duckdb.DuckDBPyConnection:
    return catalog.connect(sim_archive)


def test_the_cookbook_has_at_least_eight_queries() -> None:
    assert len(COOKBOOK) >= 8, [p.name for p in COOKBOOK]


@pytest.mark.parametrize("path", COOKBOOK, ids=lambda p: p.name)
def test_every_cookbook_query_returns_rows_with_its_defaults(
    path: Path, archive: duckdb.DuckDBPyConnection
) -> None:
    sql_file = sqlfiles.read(path)
    header = "\n".join(sqlfiles.header_lines(sql_file.text))
    assert "-- question:" in header and "-- read:" in header, (
        "say what it answers and how to read it"
    )
    assert sqlfiles.used_params(sql_file.text) == set(sql_file.param_names), (
        "declared and used parameters differ"
    )
    rows = archive.execute(sql_file.text, sql_file.bind({}) or None).fetchall()
    assert rows, f"{path.name} returned no rows"


@pytest.mark.parametrize("path", VIEWS, ids=lambda p: p.name)
def test_every_derived_view_returns_rows(path: Path, archive: duckdb.DuckDBPyConnection) -> None:
    rows = archive.execute(f"SELECT * FROM {path.stem} LIMIT 5").fetchall()
    assert rows, f"view {path.stem} is empty"


def test_depth_top_is_the_level_zero_rows_and_the_top_five_sums(
    archive: duckdb.DuckDBPyConnection,
) -> None:
    mismatches = archive.execute(
        """
        SELECT count(*) FROM depth_top AS t
        JOIN (
            SELECT market, symbol, received_at,
                   max(price) FILTER (WHERE side = 'bid' AND level = 0) AS bid,
                   max(price) FILTER (WHERE side = 'ask' AND level = 0) AS ask,
                   sum(qty) FILTER (WHERE side = 'bid' AND level <= 4) AS bid5,
                   sum(qty) FILTER (WHERE side = 'ask' AND level <= 4) AS ask5
            FROM depth GROUP BY ALL
        ) AS d USING (market, symbol, received_at)
        WHERE t.best_bid IS DISTINCT FROM d.bid OR t.best_ask IS DISTINCT FROM d.ask
           OR abs(t.imbalance - (d.bid5 - d.ask5) / (d.bid5 + d.ask5)) > 1e-12
           OR abs(t.mid - (d.bid + d.ask) / 2) > 1e-9
           OR abs(t.spread_bps - (d.ask - d.bid) / ((d.ask + d.bid) / 2) * 1e4) > 1e-9
        """
    ).fetchone()
    snapshots = archive.execute(
        "SELECT count(*), count(DISTINCT (market, symbol, received_at)) FROM depth_top"
    ).fetchone()
    assert snapshots is not None and snapshots[0] == snapshots[1] > 0
    assert mismatches == (0,)
    best = archive.execute("SELECT min(spread) FROM depth_top").fetchone()
    assert best is not None and best[0] > 0, "a crossed or empty spread in the simulator"


def test_bars_1m_add_up_to_the_trades(archive: duckdb.DuckDBPyConnection) -> None:
    by_bars = archive.execute(
        "SELECT market, symbol, sum(volume), sum(trade_count), sum(quote_volume) "
        "FROM bars_1m GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    by_trades = archive.execute(
        "SELECT market, symbol, sum(qty), count(*), sum(price * qty) "
        "FROM trades GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    assert [r[:2] for r in by_bars] == [r[:2] for r in by_trades]
    for bar, trade in zip(by_bars, by_trades, strict=True):
        assert bar[2] == pytest.approx(trade[2], rel=1e-12)
        assert bar[3] == trade[3]
        assert bar[4] == pytest.approx(trade[4], rel=1e-12)


def test_bars_1m_open_and_close_are_the_first_and_last_trade_of_the_minute(
    archive: duckdb.DuckDBPyConnection,
) -> None:
    bar = archive.execute(
        "SELECT market, symbol, minute, open, close, high, low, vwap FROM bars_1m "
        "WHERE market = 'spot' AND symbol = 'BTCUSDT' ORDER BY trade_count DESC LIMIT 1"
    ).fetchone()
    assert bar is not None
    trades = archive.execute(
        "SELECT price, qty FROM trades WHERE market = $market AND symbol = $symbol "
        "AND time >= $minute AND time < $minute + INTERVAL 1 MINUTE ORDER BY time, trade_id",
        {"market": bar[0], "symbol": bar[1], "minute": bar[2]},
    ).fetchall()
    prices = [p for p, _ in trades]
    assert (bar[3], bar[4], bar[5], bar[6]) == (prices[0], prices[-1], max(prices), min(prices))
    assert bar[7] == pytest.approx(sum(p * q for p, q in trades) / sum(q for _, q in trades))


def test_bars_1m_minutes_are_utc_whatever_the_session_time_zone(sim_archive: Path) -> None:
    with catalog.connect(sim_archive) as connection:
        utc = connection.execute("SELECT min(minute) FROM bars_1m").fetchall()
        connection.execute("SET TimeZone = 'Asia/Kolkata'")  # UTC+05:30
        kolkata = connection.execute("SELECT min(minute) FROM bars_1m").fetchall()
    assert utc == kolkata


def test_funding_annualized_uses_the_event_spacing(archive: duckdb.DuckDBPyConnection) -> None:
    rows = archive.execute(
        "SELECT interval_ms, funding_rate, annualized_rate, funding_rate_day "
        "FROM funding_annualized"
    ).fetchall()
    assert rows
    # The simulator funds every 10 minutes, and its daily figure is rate * 144.
    assert {r[0] for r in rows} == {600_000}
    for _, rate, annualized, per_day in rows:
        assert annualized == pytest.approx(rate * 365 * 144)
        assert annualized == pytest.approx(per_day * 365, rel=1e-6, abs=1e-9)


def test_funding_annualized_is_not_fooled_by_a_hole_in_the_archive() -> None:
    connection = duckdb.connect()
    connection.execute(
        "CREATE VIEW funding_rate AS SELECT * FROM (VALUES "
        "('contract', 'BTCUSDT', 1, TIMESTAMPTZ '2026-11-24 00:00:00+00', 0.0001, 0.0144),"
        "('contract', 'BTCUSDT', 2, TIMESTAMPTZ '2026-11-24 00:10:00+00', 0.0001, 0.0144),"
        "('contract', 'BTCUSDT', 5, TIMESTAMPTZ '2026-11-24 00:40:00+00', 0.0001, 0.0144)) "
        "AS t(market, symbol, id, time, funding_rate, funding_rate_day), "
        "(SELECT DATE '2026-11-24' AS date)"
    )
    views = [v for v in derived.load() if v.name == "funding_annualized"]
    derived.install(connection, views)
    intervals = connection.execute(
        "SELECT id, interval_ms FROM funding_annualized ORDER BY id"
    ).fetchall()
    assert intervals == [(1, 600_000), (2, 600_000), (5, 600_000)]


def test_basis_is_mark_minus_index_in_bps(archive: duckdb.DuckDBPyConnection) -> None:
    rows = archive.execute(
        "SELECT b.basis, b.basis_bps, i.mark_price, i.index_price FROM basis AS b "
        "JOIN indices_price AS i USING (market, symbol, received_at)"
    ).fetchall()
    assert rows
    for basis, bps, mark, index in rows:
        assert basis == pytest.approx(mark - index)
        assert bps == pytest.approx((mark - index) / index * 10_000)
    # The simulator's contracts trade 10 to 50 bps above spot.
    assert all(0 < bps < 60 for _, bps, _, _ in rows)


# -- the command line -------------------------------------------------------------------


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_query_file_binds_parameters(sim_archive: Path) -> None:
    status, output = run_cli(
        "query", "--data-dir", str(sim_archive), "--format", "json",
        "--file", str(QUERIES / "hourly_vwap.sql"),
        "--param", "symbol=ETHUSDT", "--param", "days=2",
    )  # fmt: skip
    assert status == 0, output
    rows = [json.loads(line) for line in output.splitlines()]
    expected = catalog.query(
        sim_archive,
        "SELECT sum(qty) AS volume FROM trades WHERE market = 'spot' AND symbol = 'ETHUSDT'",
    ).to_pylist()[0]["volume"]
    assert rows and sum(r["volume"] for r in rows) == pytest.approx(expected)


def test_an_injection_attempt_is_a_value_not_sql(sim_archive: Path) -> None:
    status, output = run_cli(
        "query", "--data-dir", str(sim_archive), "--format", "json",
        "--file", str(QUERIES / "hourly_vwap.sql"), "--param", "symbol=x' OR 1=1 --",
    )  # fmt: skip
    assert status == 0, output
    assert output == ""  # no symbol has that name: no rows, and nothing else ran
    status, output = run_cli(
        "query", "--data-dir", str(sim_archive), "--format", "json",
        "SELECT count(*) AS n FROM trades WHERE symbol = $symbol",
        "--param", "symbol=x' OR 1=1 --",
    )  # fmt: skip
    assert status == 0, output
    assert json.loads(output) == {"n": 0}


def test_an_unknown_parameter_is_refused_with_the_files_parameters(sim_archive: Path) -> None:
    status, output = run_cli(
        "query", "--data-dir", str(sim_archive),
        "--file", str(QUERIES / "hourly_vwap.sql"), "--param", "symbl=BTCUSDT",
    )  # fmt: skip
    assert status == 2
    assert "unknown parameter(s) symbl" in output
    assert "market (default 'spot'" in output and "symbol (default 'BTCUSDT'" in output


def test_a_required_parameter_without_value_is_refused(tmp_path: Path, sim_archive: Path) -> None:
    path = tmp_path / "since.sql"
    path.write_text(
        "-- title: trades since\n-- param: start   # a UTC time\n"
        "SELECT count(*) FROM trades WHERE time >= $start::TIMESTAMPTZ\n"
    )
    status, output = run_cli("query", "--data-dir", str(sim_archive), "--file", str(path))
    assert status == 2
    assert "no value for parameter(s) start" in output and "start (required: a UTC time)" in output
    status, output = run_cli(
        "query", "--data-dir", str(sim_archive), "--file", str(path),
        "--format", "csv", "--param", "start=2000-01-01",
    )  # fmt: skip
    assert status == 0 and int(output.splitlines()[1]) > 0


def test_query_needs_sql_or_a_file(sim_archive: Path) -> None:
    status, output = run_cli("query", "--data-dir", str(sim_archive))
    assert status == 2 and "either SQL text or --file" in output


def test_views_command_writes_the_derived_views_into_archive_duckdb(
    sim_archive: Path, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(sim_archive, data_dir, symlinks=True)
    status, output = run_cli("views", "--data-dir", str(data_dir))
    assert status == 0, output
    with duckdb.connect(str(data_dir / catalog.DB_NAME), read_only=True) as connection:
        catalog.load_delta(connection)  # the dataset views read Delta tables
        snapshots = connection.execute("SELECT count(*) FROM depth_top").fetchone()
        names = {
            row[0]
            for row in connection.execute(
                "SELECT view_name FROM duckdb_views() WHERE NOT internal"
            ).fetchall()
        }
    assert snapshots is not None and snapshots[0] > 0
    assert {p.stem for p in VIEWS} <= names


def test_every_sql_file_is_in_the_docs() -> None:
    page = (QUERIES.parent / "docs" / "querying.md").read_text()
    section = page.split("## SQL: derived views and cookbook", 1)[1].split("\n## ", 1)[0]
    for path in COOKBOOK:
        assert f"| `{path.name}` |" in section, path.name
    for path in VIEWS:
        assert f"| `{path.stem}` |" in section, path.stem


# -- query is read-only on the archive --------------------------------------------------


@pytest.mark.parametrize("path", COOKBOOK, ids=lambda p: p.name)
def test_every_cookbook_query_gives_the_same_rows_on_the_read_only_connection(
    path: Path, archive: duckdb.DuckDBPyConnection, sim_archive: Path
) -> None:
    sql_file = sqlfiles.read(path)
    params = sql_file.bind({}) or None
    expected = archive.execute(sql_file.text, params).fetchall()
    with catalog.connect_read_only(sim_archive) as locked:
        rows = locked.execute(sql_file.text, params).fetchall()
    assert rows and _rounded(rows) == _rounded(expected)


def _rounded(rows: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    """Rows with floats to 9 significant digits: sums in another order differ in the last."""
    return [tuple(float(f"{v:.9g}") if isinstance(v, float) else v for v in row) for row in rows]


def _outside_parquet(tmp_path: Path) -> Path:
    path = tmp_path / "outside.parquet"
    with duckdb.connect() as connection:
        connection.execute(f"COPY (SELECT 42 AS answer) TO '{path}' (FORMAT parquet)")
    return path


@pytest.mark.parametrize(
    "kind", ["copy_to", "copy_into_archive", "read_text", "attach", "install", "read_parquet"]
)
def test_query_refuses_to_touch_files_outside_the_views(
    kind: str, sim_archive: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cr3t-token\n")
    written = tmp_path / "out.csv"
    in_archive = sim_archive / "leak.csv"
    sql = {
        "copy_to": f"COPY (SELECT * FROM trades LIMIT 5) TO '{written}'",
        "copy_into_archive": f"COPY (SELECT 1 AS one) TO '{in_archive}'",
        "read_text": f"SELECT content FROM read_text('{secret}')",
        "attach": f"ATTACH '{tmp_path / 'other.duckdb'}' AS other",
        "install": "INSTALL spatial",
        "read_parquet": f"SELECT * FROM read_parquet('{_outside_parquet(tmp_path)}')",
    }[kind]
    status, output = run_cli("query", "--data-dir", str(sim_archive), "--format", "csv", sql)
    assert status == 1, output
    assert "query refused" in output and "--unsafe-allow-files" in output
    assert "s3cr3t" not in output and "42" not in output.split("query refused")[0]
    assert not written.exists() and not in_archive.exists()
    assert not (tmp_path / "other.duckdb").exists()
    assert "Traceback" not in output


def test_query_cannot_unlock_its_settings(sim_archive: Path) -> None:
    status, output = run_cli(
        "query", "--data-dir", str(sim_archive), "SET enable_external_access = true"
    )
    assert status == 1 and "locked" in output


def test_unsafe_allow_files_lets_trusted_sql_write_a_file(
    sim_archive: Path, tmp_path: Path
) -> None:
    written = tmp_path / "out.csv"
    sql = f"COPY (SELECT symbol FROM trades LIMIT 3) TO '{written}'"
    status, output = run_cli("query", "--data-dir", str(sim_archive), "--unsafe-allow-files", sql)
    assert status == 0, output
    assert written.read_text().startswith("symbol")


def test_the_read_only_connection_leaves_the_shared_database_open(sim_archive: Path) -> None:
    """The locks are database-wide: the daemon's and loaders' connections must not get them."""
    catalog.connect_read_only(sim_archive).close()
    with catalog.connect(sim_archive, derived_views=False) as shared:
        assert shared.execute("SELECT current_setting('enable_external_access')").fetchone() == (
            True,
        )


def test_query_tables_show_control_characters_and_markup_escaped(sim_archive: Path) -> None:
    """Issue 14, case 8: a value with an ESC sequence (say, text the exchange sent) does
    not reach the terminal raw, and brackets in a value are not read as rich markup."""
    result = CliRunner().invoke(
        main,
        [
            "query",
            "--data-dir",
            str(sim_archive),
            "SELECT chr(27) || '[2J' || 'x' AS v, '[bold]y[/bold]' AS w, count(*) AS n FROM trades",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output
    assert r"\x1b[2Jx" in result.output and "[bold]y[/bold]" in result.output

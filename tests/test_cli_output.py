"""What the command line prints (issue 16): a data dir without an archive is an error
for every command that reads one; tables are never cut outside a terminal, floats are
rounded in tables and exact in CSV and JSON; ``query --list`` shows the cookbook."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from collector.cli import main, render
from collector.read import sqlfiles

ANSI = re.compile(r"\x1b\[[0-9;]*m")

READING_COMMANDS = {
    "query": ["query", "SELECT 1"],
    "report": ["report"],
    "verify": ["verify"],
    "compact": ["compact"],
    "views": ["views"],
    "status": ["status"],
}


def run_program(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The program itself, its standard output a pipe (not a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "collector", *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env={**os.environ, **(env or {})},
        check=False,
    )


# -- 1. no archive --------------------------------------------------------------------------


@pytest.mark.parametrize("place", ["missing", "empty"])
@pytest.mark.parametrize("command", sorted(READING_COMMANDS))
def test_every_reading_command_exits_2_without_an_archive(
    command: str, place: str, tmp_path: Path
) -> None:
    directory = tmp_path / "archive"
    if place == "empty":
        directory.mkdir()
        (directory / "notes.txt").write_text("not a table\n")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    args = [*READING_COMMANDS[command], "--data-dir", str(directory)]
    if command == "report":
        args += ["--out", str(tmp_path / "report.html")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"error: no archive at {directory}: "), lines[0]
    reason = "does not exist" if place == "missing" else "holds no dataset table"
    assert reason in lines[0] and "jex-collector run --sim" in lines[0]
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing was created


def test_the_program_exits_2_on_a_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    result = run_program("query", "--data-dir", str(missing), "select * from trades")
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""  # no "0 row(s)"
    assert result.stderr.startswith(f"error: no archive at {missing}: the folder does not exist")


def test_a_folder_with_one_table_is_an_archive(sim_archive: Path) -> None:
    result = CliRunner().invoke(
        main, ["query", "SELECT count(*) AS n FROM trades", "--data-dir", str(sim_archive)]
    )
    assert result.exit_code == 0, result.output
    assert "1 row(s)" in result.output


# -- 2. tables outside a terminal -----------------------------------------------------------

LONG_NAME = "a_column_name_much_longer_than_any_terminal_would_leave_room_for_it"


def test_a_query_table_in_a_pipe_is_not_cut(sim_archive: Path) -> None:
    """FORCE_COLOR (set by many CI runners) makes rich call a pipe a terminal: the width
    must still be unlimited."""
    sql = f"SELECT repeat('x', 300) AS {LONG_NAME}, * FROM trades ORDER BY trade_id LIMIT 3"
    result = run_program(
        "query", sql, "--data-dir", str(sim_archive), env={"FORCE_COLOR": "1", "COLUMNS": "80"}
    )
    assert result.returncode == 0, result.stderr
    text = ANSI.sub("", result.stdout)
    assert "…" not in text
    assert LONG_NAME in text and "x" * 300 in text
    assert "received_at" in text and "is_buyer_maker" in text
    table = [line for line in text.splitlines() if line[:1] in "┏┃┡│└"]
    assert len(table) == 3 + 4 and len({len(line) for line in table}) == 1  # one width
    assert len(table[0]) > 300
    assert text.rstrip().endswith("3 row(s)")


def test_verify_and_status_tables_are_not_cut_outside_a_terminal(sim_archive: Path) -> None:
    runner = CliRunner()  # its standard output is not a terminal
    verified = runner.invoke(main, ["verify", "--all", "--data-dir", str(sim_archive)])
    assert verified.exit_code in (0, 1), verified.output
    assert "…" not in verified.output and "first holes" in verified.output
    assert max(len(line) for line in verified.output.splitlines()) > 120
    status = runner.invoke(main, ["status", "--data-dir", str(sim_archive)])
    assert status.exit_code in (0, 1), status.output
    table = [line for line in status.output.splitlines() if line.startswith("trades ")]
    assert table and all("…" not in line for line in table)
    assert "quarantined" in status.output


def test_floats_are_rounded_in_tables_and_exact_in_csv_and_json(sim_archive: Path) -> None:
    sql = "SELECT 0.37999999999988177::DOUBLE AS ratio, 1::DOUBLE / 3 AS third, 2 AS n"
    runner = CliRunner()
    base = ["query", sql, "--data-dir", str(sim_archive)]
    table = runner.invoke(main, base)
    assert table.exit_code == 0, table.output
    assert "0.38 " in table.output and "0.3333333333 " in table.output
    assert "0.37999" not in table.output and "0.33333333333" not in table.output
    as_csv = runner.invoke(main, [*base, "--format", "csv"])
    assert as_csv.output.splitlines() == ["ratio,third,n", f"0.37999999999988177,{1 / 3!r},2"]
    as_json = runner.invoke(main, [*base, "--format", "json"])
    assert json.loads(as_json.output) == {"ratio": 0.37999999999988177, "third": 1 / 3, "n": 2}


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        (0.37999999999988177, "0.38"),
        (1 / 3, "0.3333333333"),
        (2.0, "2.0"),
        (63396.7, "63396.7"),
        (123456789012.5, "123456789000.0"),
        (1e-9, "1e-09"),
        (float("nan"), "nan"),
        (float("-inf"), "-inf"),
        (7, "7"),
        (None, ""),
        ("text", "text"),
    ],
)
def test_table_cells(value: object, cell: str) -> None:
    assert render.shown(value) == cell


# -- 3. query --list ------------------------------------------------------------------------


def test_query_list_shows_the_cookbook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no archive, no config here: --list needs neither
    result = CliRunner().invoke(main, ["query", "--list"])
    assert result.exit_code == 0, result.output
    files = sqlfiles.cookbook()
    assert len(files) >= 8
    assert [f.path.name for f in files] == sorted(
        p.name for p in sqlfiles.queries_dir().glob("*.sql")
    )
    lines = result.output.splitlines()
    for file in files:
        assert f"{file.path.name}: {file.title}" in lines
        assert file.question and f"  {file.question}" in lines
        for param in file.params:
            shown = f"--param {param.name}={param.default}"
            assert any(line.strip().startswith(shown) for line in lines), (file.path, shown)
    hourly = lines.index("hourly_vwap.sql: Hourly VWAP and volume")
    assert lines[hourly + 2].split() == [
        "--param",
        "market=spot",
        "spot,",
        "option",
        "or",
        "contract",
    ]
    assert lines[-1].startswith(f"{len(files)} file(s) in ")
    assert not any(tmp_path.iterdir())


def test_query_list_takes_no_sql(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["query", "--list", "SELECT 1"])
    assert result.exit_code == 2
    assert result.output == "error: --list takes no SQL, --file or --param\n"

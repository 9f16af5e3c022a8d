"""The docs' examples against the real thing: the tables the docs show are what the
commands print now (so their numbers are measured, not remembered), and the commands a
reader is told to try run on a simulator archive."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from collector.cli import main

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def shown_after(page: str, command: str) -> list[str]:
    """The lines a page shows after ``$ command`` in a code block, to the block's end."""
    text = (DOCS / page).read_text()
    block = re.search(rf"```\n\$ {re.escape(command)}\n(.*?)```", text, flags=re.DOTALL)
    assert block, f"{page} shows no `$ {command}`"
    return block.group(1).splitlines()


def table(lines: list[str], first: str) -> dict[str, list[str]]:
    """Rows of the table whose header starts with ``first``: job name -> its cells."""
    start = next(i for i, line in enumerate(lines) if line.startswith(first))
    rows = {}
    for line in lines[start + 2 :]:
        cells = line.split()
        if not cells or cells[0] in ("budget:", "flush", "fits", "free"):
            break
        rows[cells[0]] = cells[1:]
    return rows


def plan_output(tmp_path: Path) -> list[str]:
    result = CliRunner().invoke(main, ["plan", "--sim", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def test_the_weight_plan_in_the_docs_is_what_plan_prints(tmp_path: Path) -> None:
    shown = shown_after("rate-limits.md", "jex-collector plan --sim")
    printed = plan_output(tmp_path)
    assert table(shown, "job ") == table(printed, "job ")
    budget = next(line for line in printed if line.startswith("budget:"))
    assert budget in shown


def test_the_disk_plan_in_the_docs_is_what_plan_prints(tmp_path: Path) -> None:
    """Every row but trades is exact; trades come from the simulator's last 24 hours of
    hourly klines, which move with the clock (within a tenth)."""
    shown = table(
        shown_after("operations.md", "jex-collector plan --sim --data-dir /var/lib/jex-collector"),
        "job       ",
    )
    printed = table(plan_output(tmp_path), "job                  rows/day")
    assert set(shown) == set(printed)
    for job in shown:
        if job in ("trades", "total"):
            got, want = (float(t[job][0].replace(",", "")) for t in (printed, shown))
            assert abs(got - want) <= want / 10, (job, got, want)
        else:
            assert printed[job] == shown[job], job


def test_the_commands_the_docs_tell_a_reader_to_try_run(sim_archive: Path) -> None:
    """The query of the troubleshooting page, status and the cookbook list, as shown,
    on a simulator archive."""
    text = "".join(p.read_text() for p in DOCS.glob("*.md")) + (ROOT / "README.md").read_text()
    sql = "SELECT market, symbol, count(*) FROM trades GROUP BY ALL ORDER BY ALL"
    for args, shown in (
        (["query", sql], f'jex-collector query "{sql}"'),
        (["status"], "jex-collector status"),
        (["query", "--list"], "query --list"),
    ):
        assert shown in text, shown
        result = CliRunner().invoke(main, [*args, "--data-dir", str(sim_archive)])
        # status exits 1 for a daemon that is not collecting (this archive's stopped)
        assert result.exit_code == (1 if args == ["status"] else 0), (args, result.output)
        assert result.output.strip(), args

"""The docs say what the code does."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from collector import datasets
from collector.cli import main

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
DOCS = ROOT / "docs"


def test_docs_datasets_md_is_generated_from_the_schemas() -> None:
    assert (ROOT / "docs" / "datasets.md").read_text() == datasets.markdown(), (
        "docs/datasets.md is stale: run `jex-collector schema > docs/datasets.md`"
    )


def test_every_cli_command_is_in_the_readme() -> None:
    for name in main.list_commands(None):  # type: ignore[arg-type]
        assert f"jex-collector {name}" in README, name


def test_the_coverage_cookbook_file_is_generated_from_the_registry() -> None:
    from collector.datasets.docs import coverage_sql

    assert (ROOT / "queries" / "coverage_per_day.sql").read_text() == coverage_sql(), (
        'queries/coverage_per_day.sql is stale: run `.venv/bin/python -c "from '
        "collector.datasets.docs import coverage_sql; print(coverage_sql(), end='')\" > "
        "queries/coverage_per_day.sql`"
    )


def test_every_dataset_is_in_the_readme() -> None:
    for name in datasets.DATASETS:
        assert f"| `{name}` |" in README, name


def test_the_quick_start_is_two_make_commands_that_exist() -> None:
    quick_start = README.split("## Quick start", 1)[1].split("##", 1)[0]
    commands = re.findall(r"^make (\w+)", quick_start, flags=re.MULTILINE)
    assert commands == ["run", "test"]
    makefile = (ROOT / "Makefile").read_text()
    for target in commands:
        assert re.search(rf"^{target}:", makefile, flags=re.MULTILINE), target
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_schema_command_prints_the_docs() -> None:
    result = CliRunner().invoke(main, ["schema"])
    assert result.exit_code == 0
    assert result.output == datasets.markdown()


def test_make_run_installs_what_running_needs_and_make_test_adds_the_dev_tools() -> None:
    def commands(target: str) -> str:
        return subprocess.run(
            ["make", "-n", "-B", target], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout

    run = commands("run")
    assert "pip install --quiet -e .\n" in run and "[dev]" not in run
    assert 'pip install --quiet -e ".[dev]"' in commands("test")


def test_the_readme_is_short_and_links_to_every_docs_page() -> None:
    assert len(README.splitlines()) <= 260
    for section in ("## Quick start", "## Research in five minutes", "## What is collected"):
        assert f"\n{section}\n" in README, section
    for page in sorted(DOCS.glob("*.md")):
        if page.name != "index.md":
            assert f"](docs/{page.name})" in README, page.name


def test_the_readmes_links_lead_somewhere() -> None:
    """mkdocs checks the pages' links (below); the README is outside the site, so here."""
    from markdown.extensions.toc import slugify

    links = re.findall(r"\]\(([^)\s]+)\)", README)
    assert links
    for link in links:
        if re.match(r"[a-z]+://", link):
            continue
        path, _, anchor = link.partition("#")
        target = ROOT / path if path else ROOT / "README.md"
        assert target.exists(), link
        if anchor:
            headings = re.findall(r"^#+ (.+)$", target.read_text(), flags=re.MULTILINE)
            assert anchor in {slugify(h, "-") for h in headings}, link


def test_the_docs_site_builds_strictly(tmp_path: Path) -> None:
    """Strict: a broken link or anchor, or a page missing from the nav, fails the build."""
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "index.html").exists()
    assert (tmp_path / "troubleshooting" / "index.html").exists()


def readme_blocks(language: str) -> list[str]:
    section = README.split("## Research in five minutes", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.DOTALL)


def test_the_readme_research_examples_run_on_a_simulator_archive(
    sim_archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The five-minute research section, as written, against an archive the daemon filled
    from the simulator: the Python blocks run in one namespace, the SQL lines through the
    command line; each query returns rows."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").symlink_to(sim_archive, target_is_directory=True)
    python = readme_blocks("python")
    assert len(python) == 2
    namespace: dict[str, Any] = {}
    for block in python:
        exec(compile(block, "README.md", "exec"), namespace)
    assert (tmp_path / "btcusdt_crossover.png").stat().st_size > 0
    assert len(namespace["bars"]) > 0 and len(namespace["spreads"]) > 0
    queries = [
        shlex.split(line)[2]
        for line in readme_blocks("sh")[0].splitlines()
        if line.startswith(".venv/bin/jex-collector query ")
    ]
    assert len(queries) == 3
    for sql in queries:
        result = CliRunner().invoke(main, ["query", "--format", "csv", sql])
        assert result.exit_code == 0, (sql, result.output)
        assert len(result.output.strip().splitlines()) > 1, sql  # a header and rows

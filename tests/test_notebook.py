"""examples/research.ipynb runs on a simulator archive and is committed without outputs."""

from __future__ import annotations

import base64
import re
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "research.ipynb"

#: Run after the notebook's own cells, in its kernel: the interpreter it runs in, and what
#: the backtest left behind.
CHECK = """\
import math, sys
print(sys.executable)
assert "BTCUSDT" in set(net.index), net
assert math.isfinite(pnl) and net["net"].notna().all(), net
"""


def code_outputs(nb: nbformat.NotebookNode) -> list[list[nbformat.NotebookNode]]:
    return [cell.outputs for cell in nb.cells if cell.cell_type == "code"]


def text(outputs: list[nbformat.NotebookNode]) -> str:
    parts = []
    for output in outputs:
        if output.output_type == "stream":
            parts.append(output.text)
        elif "data" in output:
            parts.append(output.data.get("text/plain", ""))
    return "\n".join(parts)


def test_the_research_notebook_runs_on_a_simulator_archive(
    sim_archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every cell runs (an error raises CellExecutionError, with the cell and traceback),
    the kernel reading the archive from ``JEX_DATA_DIR`` (it inherits this environment).

    ``python3`` is ipykernel's own spec, installed in the venv with it: its ``python``
    command is started as this process's ``sys.executable``, which the last cell checks
    (a ``python3`` spec of the user's, found first, would fail here)."""
    monkeypatch.setenv("JEX_DATA_DIR", str(sim_archive))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(CHECK))
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=120,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()

    *cells, pnl_cell, plot_cell, sql_cell, check_cell = code_outputs(nb)
    assert text(check_cell).strip() == sys.executable
    for outputs in [*cells, pnl_cell, plot_cell, sql_cell]:
        stderr = [o.text for o in outputs if o.output_type == "stream" and o.name == "stderr"]
        assert not stderr, stderr  # no warnings either

    symbols = re.search(
        r"crossover return, equal weight over (\d+) symbols: [+-]\d+\.\d{3}%", text(pnl_cell)
    )
    assert symbols and int(symbols[1]) >= 1, text(pnl_cell)
    assert "BTCUSDT" in text(pnl_cell)

    images = [o.data["image/png"] for o in plot_cell if "data" in o and "image/png" in o.data]
    assert len(images) == 1
    assert base64.b64decode(images[0]).startswith(b"\x89PNG\r\n\x1a\n")

    table = text(sql_cell)
    assert "spread_bps" in table and "net" in table and "BTCUSDT" in table, table


def test_the_research_notebook_is_committed_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, cell.source

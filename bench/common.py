"""Helpers shared by the issue-5 benchmarks (make_archive, storage, views, loaders)."""

from __future__ import annotations

import json
import logging
import os
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

T = TypeVar("T")

#: Generated data stays out of the repository (and is large: about 5 GB).
DEFAULT_ARCHIVE = Path("/tmp/bench-archive")  # noqa: S108


def timed(run: Callable[[], T], repeat: int) -> tuple[float, float, T]:
    """Run ``run`` ``repeat`` times; (best seconds, median seconds, last result)."""
    times: list[float] = []
    result: T | None = None
    for _ in range(max(1, repeat)):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    assert result is not None
    return min(times), statistics.median(times), result


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table, numbers right-aligned."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]

    def line(values: Sequence[str], numeric: Sequence[bool]) -> str:
        return "  ".join(
            v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric, strict=True)
        ).rstrip()

    numeric = [isinstance(v, int | float) for v in rows[0]] if rows else [False] * len(headers)
    out = [line(list(headers), numeric), line(["-" * w for w in widths], numeric)]
    out += [line(r, numeric) for r in cells]
    return "\n".join(out)


def _cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.1f}"
    return str(value)


def write_json(path: Path | None, payload: dict[str, Any]) -> None:
    if path is not None:
        path.write_text(json.dumps(payload, indent=1, default=str) + "\n")


def machine() -> dict[str, Any]:
    """Cores, memory and library versions, for the record."""
    import os
    import platform

    import duckdb
    import pandas
    import pyarrow

    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(pages / 2**30, 1),
        "python": platform.python_version(),
        "pyarrow": pyarrow.__version__,
        "duckdb": duckdb.__version__,
        "pandas": pandas.__version__,
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
    }


def run_main(main: Callable[[], None]) -> NoReturn:
    """Run a script's ``main`` and end the process without the interpreter's teardown,
    as ``jex-collector`` does (``collector.cli._exit_now``): deltalake and pyarrow can
    abort there (SIGABRT) after all the work is done and printed."""
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, int | None):
            print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)

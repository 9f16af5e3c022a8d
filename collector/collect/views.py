"""The daemon's ``archive.duckdb``, rebuilt by a child process.

The views file is a DuckDB database: writing it loads DuckDB, its ``delta`` extension and
the pandas DuckDB imports, about 80 MB that would stay in a daemon's memory for good for a
file rewritten a few times a run. So ``jex-collector views`` does it, in a child process
that exits when done. The daemon asks for a rebuild at start (when the archive holds a
table: the views hold absolute paths, and the archive may have moved or the collector
changed) and when a dataset gets its first file (a flush); at stop it waits for a rebuild
that runs or was asked for. Requests made while one runs are served by one more run.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

from collector.storage.location import Archive

log = logging.getLogger(__name__)

#: The views file, in the archive folder (:data:`collector.read.catalog.DB_NAME`).
DB_NAME = "archive.duckdb"
#: How long a stopping daemon waits for a rebuild, in seconds.
STOP_WAIT_S = 60.0


class ViewsRebuild:
    """Rebuilds ``<archive>/archive.duckdb`` in a child process, one at a time."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self.runs = 0  # children started (for tests and logs)

    @property
    def path(self) -> Path:
        return Path(self.archive.uri) / DB_NAME

    def request(self) -> None:
        """Rebuild soon: now, or once more after the rebuild that is running."""
        if self.archive.remote:
            return  # a DuckDB file cannot live on an object store: `jex-collector views --out`
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._rebuild())

    async def finish(self) -> None:
        """Wait for the rebuild that runs and the one asked for after it (at stop)."""
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), STOP_WAIT_S)
        except TimeoutError:
            log.warning("%s: the views are still being rebuilt; left to finish alone", self.path)

    async def _rebuild(self) -> None:
        while True:
            self._again = False
            await self._run_child()
            if not self._again:
                return

    async def _run_child(self) -> None:
        self.runs += 1
        command = [sys.executable, "-m", "collector", "views", "--data-dir", self.archive.uri]
        try:
            child = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            _, stderr = await child.communicate()
        except OSError as exc:
            log.warning("could not rebuild %s: %s", self.path, exc)
            return
        if child.returncode != 0:
            lines = stderr.decode("utf-8", "replace").strip().splitlines() or ["(no output)"]
            log.warning(
                "could not rebuild %s (jex-collector views exited %s): %s",
                self.path,
                child.returncode,
                lines[-1][:500],
            )

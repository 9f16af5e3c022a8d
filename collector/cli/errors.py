"""How the command line ends: the one table of the exceptions each command expects, with
their exit codes and messages, and the program's own end.

Exit codes: 0 fine, 1 a failure, 2 a usage or configuration error, 130 Ctrl-C. A command
wraps the calls that may fail in ``with exits(*RULES, **context)`` (or decorates itself
with it): the first rule whose exception types match prints ``error: <message>`` and
exits with its code; anything else propagates (a bug: its traceback, exit 1).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NoReturn

import click

from collector.cli.interrupt import by_ctrl_c
from collector.errors import CollectorError, ConfigError, LegacyArchiveError


def fail(message: str, status: int) -> NoReturn:
    """Print ``error: message`` on standard error and exit with ``status``."""
    click.echo(f"error: {message}", err=True)
    sys.exit(status)


def first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def os_reason(exc: BaseException) -> str:
    """The reason of a failed file operation without its Python dress."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return first_line(exc)


@dataclass(frozen=True)
class Exit:
    """Exceptions of ``errors`` (for which ``when`` holds) end the command with ``status``
    and ``message``, a format string with the fields ``exc``, ``reason`` (of a failed
    file operation), ``first_line``, ``bare`` (the text without quotes), ``file`` (the
    exception's file name, else the context's ``where``) and the context's own."""

    errors: tuple[type[BaseException], ...]
    status: int
    message: str = "{exc}"
    when: Callable[[BaseException], bool] | None = None

    def matches(self, exc: BaseException) -> bool:
        return isinstance(exc, self.errors) and (self.when is None or self.when(exc))

    def text(self, exc: BaseException, context: dict[str, Any]) -> str:
        fields = {
            "file": getattr(exc, "filename", None) or context.get("where"),
            **context,
            "exc": exc,
            "reason": os_reason(exc),
            "first_line": first_line(exc),
            "bare": str(exc).strip("'\""),
        }
        return self.message.format(**fields)


class exits(contextlib.ContextDecorator):  # lower case: it reads as a statement
    """Turn the exceptions of ``rules`` raised inside into their message and exit code."""

    def __init__(self, *rules: Exit, **context: Any) -> None:
        self.rules = rules
        self.context = context

    def __enter__(self) -> exits:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None or isinstance(exc, SystemExit):
            return
        for rule in self.rules:
            if rule.matches(exc):
                fail(rule.text(exc, self.context), rule.status)


class NoArchiveError(CollectorError):
    """A command that reads the archive was pointed at a place that holds none."""

    def __init__(self, directory: str, reason: str) -> None:
        super().__init__(f"{directory}: {reason}")
        self.directory = directory
        self.reason = reason


# -- the table ------------------------------------------------------------------------------

CONFIG = Exit((ConfigError,), 2)
FAILURE = Exit((CollectorError,), 1)

SETTINGS = (CONFIG,)
DATA_DIR = (Exit((ConfigError,), 2, "--data-dir: {exc}"),)
LEGACY = (Exit((LegacyArchiveError,), 2),)
# Before the generic rules: a reading command on a folder without a table.
NO_ARCHIVE = (
    Exit(
        (NoArchiveError,),
        2,
        "no archive at {exc.directory}: {exc.reason}; create one with "
        "`jex-collector run --sim` (simulated data) or `jex-collector run`, or point "
        "--data-dir (storage.uri) at an archive",
    ),
)
TIME = (
    Exit(
        (ValueError,),
        2,
        "{option} {value!r}: expected a date (2026-11-24), a UTC datetime "
        "(2026-11-24T08:00) or milliseconds since the epoch",
    ),
)

# Ctrl-C before the daemon's own handler was installed (its first second): nothing was
# collected yet, so there is nothing to flush.
RUN_STARTING = (
    Exit(
        (BaseException,),
        130,
        "interrupted (Ctrl-C) before the daemon began collecting; nothing was written",
        when=by_ctrl_c,
    ),
)
RUN = (
    CONFIG,
    FAILURE,
    # The archive or the state dir cannot be written (read-only, wrong owner, a file
    # where a folder belongs): the daemon cannot do anything useful.
    Exit(
        (OSError,),
        1,
        "cannot write {file}: {reason}. The collector writes its archive (--data-dir, "
        "storage.uri) and its state dir (--state-dir): make them writable by this user, "
        "or choose other folders",
    ),
)
PLAN = (Exit((CollectorError,), 1, "cannot read the exchange's instruments and limits: {exc}"),)
FAULT = (
    Exit((ValueError,), 2, "--fault {item!r}: expected KIND=PROBABILITY, e.g. error_500=0.05"),
)
FAULTS = (Exit((ValueError, TypeError), 2, "--fault: {exc}"),)
BACKFILL = (CONFIG, FAILURE)

REPAIR = (Exit((CollectorError,), 1, "repair stopped: {exc}"),)
COMPACT = (Exit((OSError, CollectorError), 1, "compaction of {directory} failed: {exc}"),)
STATUS = (Exit((CollectorError,), 1, "cannot read the archive's state at {directory}: {exc}"),)
MIGRATE = (CONFIG, FAILURE)

SQL_FILE = (CONFIG,)
REPORT = (
    Exit((LookupError, ValueError), 2, "{bare}"),
    FAILURE,
    Exit((OSError,), 1, "the report could not be written to {out}: {exc}"),
)


def views_rules() -> tuple[Exit, ...]:
    """``views``: its rules name DuckDB's errors, imported on first use."""
    import duckdb

    return (
        CONFIG,  # a queries/views file that does not install
        Exit(
            (OSError, duckdb.IOException, duckdb.PermissionException),
            1,
            "cannot write the views to {where}: {reason}. The folder must be writable by "
            "this user (a read-only archive: write them elsewhere with --out)",
        ),
    )


def query_rules() -> tuple[Exit, ...]:
    """``query``: its rules name DuckDB's errors, imported on first use."""
    import duckdb

    return (
        CONFIG,
        Exit(
            (duckdb.PermissionException,),
            1,
            "query refused: {first_line}. `query` reads the archive's views only; SQL that "
            "reads or writes other files, attaches databases or installs extensions needs "
            "--unsafe-allow-files (only for SQL you trust)",
        ),
        Exit((duckdb.Error, CollectorError), 1, "query failed: {exc}"),
    )


# -- the program's end ----------------------------------------------------------------------


def end_program(run: Callable[[], object]) -> NoReturn:
    """Run the command line as a program and end the process with its exit code: a
    ``SystemExit``'s, 130 for a Ctrl-C, 1 and the traceback for a bug."""
    try:
        run()
        code = 0
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except KeyboardInterrupt:
        click.echo("interrupted (Ctrl-C)", err=True)
        code = 130
    except Exception:  # a bug: the traceback, as Python would print it
        traceback.print_exc()
        code = 1
    _exit_now(code)


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    click.echo(str(code), err=True)  # sys.exit("message") prints it and exits 1
    return 1


def _exit_now(code: int) -> NoReturn:
    """Flush everything, then end the process without the interpreter's finalization.

    deltalake (delta-rs) and pyarrow keep native thread pools that are torn down while
    the interpreter finalizes; the two race there and the process sometimes aborts with
    "terminate called without an active exception" (SIGABRT, exit 134) after its work
    is done (delta-rs issue 2184, arrow issue 34314). ``os._exit`` skips finalization,
    so what is not flushed here would be lost: standard streams and log handlers are.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (| head): the output is lost
            code = code or 1
    logging.shutdown()
    os._exit(code)

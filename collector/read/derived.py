"""Derived views: one ``queries/views/<name>.sql`` file each, installed next to the
dataset views (in ``archive.duckdb`` and in :func:`collector.read.catalog.connect`).

A file holds one bare SELECT (or WITH ... SELECT) under a header comment with a
``-- title:`` line (see :mod:`collector.read.sqlfiles`); the installer wraps it in
``CREATE OR REPLACE VIEW <name> AS`` and comments the view with the title. The
view is named after the file stem, which must match ``^[a-z][a-z0-9_]*$`` and not
be a dataset's name. A view may select from another derived view: views are
installed dependencies first, otherwise in name order, so the order never depends
on the file system. A file that cannot be installed is a ConfigError naming it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import duckdb

from collector import datasets
from collector.errors import ConfigError
from collector.read import sqlfiles

NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class DerivedView:
    name: str
    path: Path
    title: str
    select: str
    depends_on: tuple[str, ...]


def views_dir() -> Path:
    return sqlfiles.queries_dir() / "views"


def load(directory: Path | None = None) -> list[DerivedView]:
    """Every ``*.sql`` file of ``directory`` (default ``queries/views``), validated, in
    install order."""
    directory = views_dir() if directory is None else directory
    paths = sorted(directory.glob("*.sql"))
    names = [path.stem for path in paths]
    found = {}
    for path in paths:
        view = _read(path, names)
        found[view.name] = view
    return _ordered(found)


def install(
    connection: duckdb.DuckDBPyConnection,
    views: list[DerivedView] | None = None,
    *,
    temporary: bool = False,
) -> None:
    """Create (or replace) every derived view on ``connection``, which must already have
    the dataset views (``temporary``: as TEMP views, seen by this connection only).

    Creating a view binds it, which reads the logs of the dataset tables it selects from:
    an I/O error there (a damaged table, a disk error) is the archive's, not the SQL
    file's, and passes through unchanged rather than as a ConfigError naming the file.
    """
    for view in load() if views is None else views:
        try:
            # The name is checked against NAME; the SELECT is the project's own file.
            kind = "TEMP VIEW" if temporary else "VIEW"
            connection.execute(f"CREATE OR REPLACE {kind} {view.name} AS\n{view.select}\n")
            connection.execute(f"COMMENT ON VIEW {view.name} IS {_sql_string(view.title)}")
        except duckdb.IOException:
            raise
        except duckdb.Error as exc:
            raise ConfigError(
                f"cannot create the derived view {view.name!r}: {exc}", source=str(view.path)
            ) from exc


def _read(path: Path, names: list[str]) -> DerivedView:
    name = path.stem
    if not NAME.match(name):
        raise ConfigError(
            f"a derived view's file name must be a lower-case SQL name "
            f"(letters, digits, _; ^[a-z][a-z0-9_]*$), not {name!r}",
            source=str(path),
        )
    if name in datasets.DATASETS:
        raise ConfigError(
            f"{name!r} is a dataset's view; name the derived view something else",
            source=str(path),
        )
    sql_file = sqlfiles.read(path)
    if sql_file.params:
        raise ConfigError("a view cannot take parameters", source=str(path))
    try:
        statements = duckdb.extract_statements(sql_file.text)
    except duckdb.Error as exc:
        raise ConfigError(f"not valid SQL: {exc}", source=str(path)) from exc
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        raise ConfigError(
            "expected exactly one SELECT statement (the installer adds CREATE VIEW)",
            source=str(path),
        )
    select = sql_file.text.strip()
    select = select.removesuffix(";")
    code = sqlfiles.without_comments(select)
    depends_on = tuple(
        other for other in names if other != name and re.search(rf"\b{other}\b", code)
    )
    return DerivedView(name, path, sql_file.title, select, depends_on)


def _ordered(views: dict[str, DerivedView]) -> list[DerivedView]:
    """Dependencies first, then name order; a cycle is an error naming its files."""
    done: list[DerivedView] = []
    placed: set[str] = set()
    waiting = sorted(views)
    while waiting:
        ready = [n for n in waiting if all(d in placed for d in views[n].depends_on)]
        if not ready:
            files = ", ".join(str(views[n].path) for n in waiting)
            raise ConfigError(f"derived views depend on each other in a cycle: {files}")
        for name in ready:
            done.append(views[name])
            placed.add(name)
        waiting = [n for n in waiting if n not in placed]
    return done


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"

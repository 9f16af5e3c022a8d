"""SQL files of ``queries/``: where they are, and their header comments.

Every file starts with a block of ``--`` comment lines; lines of the form
``-- key: value`` are fields. ``title`` names what the file computes, and each
``param`` line declares a DuckDB named parameter (``$name`` in the SQL)::

    -- title: Hourly VWAP and volume
    -- param: symbol = BTCUSDT   # the spot symbol
    -- param: start               # no default: the caller must give one

Cookbook files also have ``question`` (what the query answers) and ``read`` (how to
read its result) lines, for people; a test checks they are there.

Values are always bound (``connection.execute(sql, params)``), never pasted into
the text. They are strings (the command line has nothing else); the SQL casts
them (``$days::INTEGER``, ``$start::TIMESTAMPTZ``).

The files live in ``queries/`` at the root of the repository, where people read
and add them. ``collector/queries`` is a symlink to it: an editable install (``pip
install -e .``, which ``make`` does) reads the repository's files through it, and a
built wheel holds copies (``package-data`` in pyproject.toml), so the package finds
its SQL at the same place either way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import collector
from collector.errors import ConfigError

#: ``-- key: value`` in the header.
_FIELD = re.compile(r"^--\s*([a-z_]+)\s*:\s*(.*?)\s*$")
#: ``name``, ``name = default``, each optionally followed by ``# description``.
_PARAM = re.compile(r"^([a-z_][a-z0-9_]*)\s*(?:=\s*([^#]*?))?\s*(?:#\s*(.*))?$")


def queries_dir() -> Path:
    """The SQL folder (``queries/`` of the repository, through the ``collector/queries``
    symlink, or the wheel's copy); a ConfigError saying what to do when it is missing."""
    path = Path(collector.__file__).resolve().parent / "queries"
    if not path.is_dir():
        raise ConfigError(
            "the SQL folder does not exist: jex-collector reads its derived views and "
            "cookbook from collector/queries (a symlink to queries/ in a clone, copies in "
            "a wheel); reinstall from a clone with `pip install -e .` (as `make` does)",
            source=str(path),
        )
    return path.resolve()


@dataclass(frozen=True)
class Param:
    name: str
    default: str | None
    description: str = ""


@dataclass(frozen=True)
class SqlFile:
    """A SQL file with its header fields parsed."""

    path: Path
    text: str
    title: str
    params: tuple[Param, ...] = field(default=())
    question: str = ""

    @property
    def param_names(self) -> list[str]:
        return [p.name for p in self.params]

    def bind(self, given: dict[str, str]) -> dict[str, str]:
        """The parameters to bind: ``given`` over the declared defaults.

        A name the file does not declare, or a declared one with neither a value nor a
        default, is a ConfigError that lists the file's parameters.
        """
        unknown = sorted(set(given) - set(self.param_names))
        missing = [p.name for p in self.params if p.default is None and p.name not in given]
        if unknown or missing:
            problem = (
                f"unknown parameter(s) {', '.join(unknown)}"
                if unknown
                else f"no value for parameter(s) {', '.join(missing)}"
            )
            raise ConfigError(f"{problem}; {self.describe_params()}", source=str(self.path))
        values = {p.name: p.default for p in self.params if p.default is not None}
        values.update(given)
        return {name: value for name, value in values.items() if value is not None}

    def describe_params(self) -> str:
        if not self.params:
            return "the file takes no parameters"
        parts = []
        for p in self.params:
            default = "required" if p.default is None else f"default {p.default!r}"
            parts.append(f"{p.name} ({default}{': ' + p.description if p.description else ''})")
        return "its parameters are: " + "; ".join(parts)


def header_lines(text: str) -> list[str]:
    """The leading ``--`` comment lines (blank lines before and inside are skipped)."""
    lines = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("--"):
            break
        lines.append(stripped)
    return lines


def read(path: Path) -> SqlFile:
    """Read and parse a SQL file's header; a ConfigError names the file and the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc}", source=str(path)) from exc
    title = question = ""
    params: list[Param] = []
    for line in header_lines(text):
        match = _FIELD.match(line)
        if match is None:
            continue
        key, value = match.groups()
        if key == "title":
            title = value
        elif key == "question":
            question = value
        elif key == "param":
            param = _PARAM.match(value)
            if param is None:
                raise ConfigError(
                    f"bad parameter line {line!r}: expected `-- param: name [= default] "
                    "[# description]` with a lower-case name",
                    source=str(path),
                )
            name, default, description = param.groups()
            if name in (p.name for p in params):
                raise ConfigError(f"parameter {name!r} declared twice", source=str(path))
            params.append(Param(name, default, description or ""))
    if not title:
        raise ConfigError("the header has no `-- title: ...` line", source=str(path))
    return SqlFile(path, text, title, tuple(params), question)


def cookbook() -> list[SqlFile]:
    """The cookbook: the SQL files directly in the SQL folder (not its ``views/``), by
    name, their headers parsed."""
    return [read(path) for path in sorted(queries_dir().glob("*.sql"))]


def without_comments(text: str) -> str:
    """The SQL with ``--`` comments removed (for finding names; strings are not parsed,
    which is fine for the project's own files)."""
    return re.sub(r"--[^\n]*", "", text)


def used_params(text: str) -> set[str]:
    """The ``$name`` parameters the SQL uses."""
    return set(re.findall(r"\$([a-z_][a-z0-9_]*)", without_comments(text)))

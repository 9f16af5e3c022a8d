"""What every DuckDB connection on the archive is set up with, for :mod:`collector.read.catalog`.

* its extensions: ``delta`` (:func:`load_delta`) and ``httpfs``, from DuckDB's extension
  folder or the pip packages ``duckdb-extension-<name>`` (:func:`load_extension`);
* SQL text: literals of registry text and of paths (:func:`sql_string`,
  :func:`path_literal`), the DuckDB type of each column type (:data:`DUCKDB_TYPES`), and
  where a dataset's table is (:func:`table_path`);
* for an ``s3://`` archive, the ``httpfs`` extension and a temporary S3 secret made from
  the standard AWS environment variables (:func:`use_object_store`).

:mod:`collector.read.catalog` re-exports the public names.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pyarrow as pa

from collector import datasets
from collector.errors import ConfigError
from collector.storage import location
from collector.storage.location import Archive

if TYPE_CHECKING:
    import duckdb

#: The DuckDB type of each column type of the dataset registry.
DUCKDB_TYPES: dict[pa.DataType, str] = {
    pa.string(): "VARCHAR",
    pa.float64(): "DOUBLE",
    pa.int64(): "BIGINT",
    pa.int16(): "SMALLINT",
    pa.bool_(): "BOOLEAN",
    datasets.TIMESTAMP: "TIMESTAMPTZ",
}


def extension_file(name: str) -> Path | None:
    """The DuckDB extension ``name`` shipped by the pip package ``duckdb-extension-<name>``
    for the installed DuckDB version, or None when that package (or that version's
    binary) is not installed."""
    import duckdb

    spec = importlib.util.find_spec(f"duckdb_extension_{name}")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
        if path.is_file():
            return path
    return None


def load_extension(connection: duckdb.DuckDBPyConnection, name: str) -> None:
    """Load the DuckDB extension ``name`` (``delta``, ``httpfs``) into ``connection``.

    Tried in order: already loaded; installed in DuckDB's extension folder (``INSTALL``);
    the binary of the pip package ``duckdb-extension-<name>`` (a dependency of ours, so
    no download is needed). Only when neither is there, a plain ``LOAD``, which DuckDB
    may satisfy by downloading it. A ConfigError says how to install it when all fail.
    """
    import duckdb

    if not name.isidentifier() or not name.islower():
        raise ValueError(f"not a DuckDB extension name: {name!r}")
    state = connection.execute(
        "SELECT loaded, installed FROM duckdb_extensions() WHERE extension_name = $name",
        {"name": name},
    ).fetchone()
    if state is not None and state[0]:
        return
    shipped = extension_file(name)
    targets = [name] if state is not None and state[1] else []
    if shipped is not None:
        targets.append(path_literal(shipped))
    failure: duckdb.Error | None = None
    for target in targets or [name]:
        try:
            connection.execute(f"LOAD {target}")
        except duckdb.Error as exc:
            failure = exc
            continue
        return
    raise ConfigError(
        f"DuckDB (version {duckdb.__version__}) cannot load its {name!r} extension, "
        f"which the archive's views need: {failure}. Install it with "
        f"`pip install duckdb-extension-{name}=={duckdb.__version__}` (a dependency of "
        f"jex-collector), or once in DuckDB with `INSTALL {name}; LOAD {name};`",
        source=f"duckdb extension {name}",
    ) from failure


def load_delta(connection: duckdb.DuckDBPyConnection) -> None:
    """Load DuckDB's ``delta`` extension (``delta_scan``) into ``connection``."""
    load_extension(connection, "delta")


def sql_string(value: str) -> str:
    """A SQL string literal of text from the dataset registry (view comments)."""
    return "'" + value.replace("'", "''") + "'"


def path_literal(path: str | Path) -> str:
    """The one way a path enters SQL text: validated, then quoted.

    View DDL cannot take bound parameters, so a table's location is written into the
    view. Only an absolute path or an ``s3://`` URI (checked by
    :class:`~collector.storage.location.Archive`) without control characters is
    accepted; quotes are doubled, which is all a DuckDB string literal needs.
    """
    text = str(path)
    if any(ord(char) < 32 or ord(char) == 127 for char in text):
        raise ValueError(f"a path with control characters cannot be used in SQL: {text!r}")
    if location.is_remote(text):
        Archive.of(text)  # bucket and prefix checked
    elif not text.startswith("/"):
        raise ValueError(f"expected an absolute path in SQL, got {text!r}")
    return sql_string(text)


def table_path(data_dir: str | Path | Archive, dataset: str) -> str:
    """Where ``dataset``'s Delta table is in the archive ``data_dir``: an absolute folder,
    or an ``s3://`` URI."""
    return Archive.of(data_dir).table_uri(dataset)


#: The environment variables an S3 secret is made from.
AWS_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
)


def aws_environment() -> tuple[str, ...]:
    """The AWS_* settings an S3 secret is made from (:func:`use_object_store`)."""
    return tuple(os.environ.get(name, "") for name in AWS_VARIABLES)


def use_object_store(connection: duckdb.DuckDBPyConnection) -> None:
    """Let ``connection``'s database read ``s3://`` tables: the ``httpfs`` extension and a
    temporary secret (kept in memory, never in a database file, redacted in
    ``duckdb_secrets()``) made from the standard AWS environment variables: the key and
    secret (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``),
    the region, and the endpoint from ``AWS_ENDPOINT_URL`` (path-style requests, TLS as
    its scheme says). DuckDB's ``delta`` extension reads no environment variable itself,
    and the ``credential_chain`` provider needs DuckDB's ``aws`` extension, which is not
    on the package registry."""
    load_extension(connection, "httpfs")
    options = ["TYPE s3"]
    for option, variable in (
        ("KEY_ID", "AWS_ACCESS_KEY_ID"),
        ("SECRET", "AWS_SECRET_ACCESS_KEY"),
        ("SESSION_TOKEN", "AWS_SESSION_TOKEN"),
    ):
        value = os.environ.get(variable)
        if value:
            options.append(f"{option} {sql_string(value)}")
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        parts = urlsplit(endpoint)
        host = parts.netloc or parts.path
        if not host or any(ch in host for ch in "'\\ \t\n"):
            raise ConfigError(
                f"AWS_ENDPOINT_URL is not an http(s) URL: {endpoint!r}",
                source="environment",
            )
        options += [
            f"ENDPOINT {sql_string(host)}",
            "URL_STYLE 'path'",
            f"USE_SSL {'false' if parts.scheme == 'http' else 'true'}",
        ]
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        options.append(f"REGION {sql_string(region)}")
    connection.execute(f"CREATE OR REPLACE TEMPORARY SECRET jex_s3 ({', '.join(options)})")

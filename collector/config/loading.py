"""Reading the settings: ``schedules.yaml`` (YAML, loaded safely), the environment's
secrets and the command line's overrides, validated into :class:`Settings`; every
problem a :class:`ConfigError` naming the file and the key."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from collector.config.models import Settings
from collector.config.storage_uri import _CREDENTIAL_KEY, AWS_ENVIRONMENT
from collector.errors import ConfigError


def _format_location(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item.startswith(("literal[", "tuple[", "function-")):
            continue  # pydantic's names for the branches of a union, not keys of the file
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def _refuse_credentials(node: object, where: str, source: str) -> None:
    """A ConfigError for a key under ``storage`` that looks like an endpoint or a
    credential, however deep: they come only from the environment."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            path = f"{where}.{key}"
            if isinstance(key, str) and _CREDENTIAL_KEY.search(key):
                raise ConfigError(
                    "endpoint and credentials are not read from files; set the environment "
                    f"variables {AWS_ENVIRONMENT}",
                    source=source,
                    key=path,
                )
            _refuse_credentials(value, path, source)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            _refuse_credentials(item, f"{where}[{index}]", source)


def _section(data: Mapping[str, Any], name: str, source: str) -> dict[str, Any]:
    section = data.get(name)
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"expected a mapping, got {section!r}", source=source, key=name)
    return dict(section)


def from_mapping(
    raw: Mapping[str, Any],
    *,
    source: str,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Validate a parsed YAML mapping plus the environment and CLI overrides.

    Overrides (None values are ignored): ``base_url``; ``data_dir`` or ``uri`` (the
    archive, ``storage.uri``); ``state_dir`` (``storage.state_dir``); ``shard`` (return
    the settings of that shard, :meth:`Settings.for_shard`).
    """
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {key: value for key, value in raw.items()}
    exchange = _section(data, "exchange", source)
    storage = _section(data, "storage", source)
    _refuse_credentials(storage, "storage", source)
    if "uri" in storage and "data_dir" in storage:
        raise ConfigError(
            "give uri or data_dir (its older name), not both", source=source, key="storage"
        )
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    if "uri" in given and "data_dir" in given:
        raise ConfigError("give data_dir or uri, not both", source="command line")
    shard: str | None = None
    for key, value in given.items():
        if key == "base_url":
            exchange["base_url"] = value
        elif key in ("data_dir", "uri"):
            storage.pop("data_dir", None)
            storage["uri"] = os.fspath(value) if isinstance(value, os.PathLike) else value
        elif key == "state_dir":
            storage["state_dir"] = os.fspath(value) if isinstance(value, os.PathLike) else value
        elif key == "shard":
            shard = str(value)
        else:
            raise ConfigError(f"unknown override {key!r}", source="command line")
    data["exchange"] = exchange
    data["storage"] = storage
    for field, variable in (("api_key", "JEX_API_KEY"), ("api_secret", "JEX_API_SECRET")):
        if field in data:
            raise ConfigError(
                f"secrets are not read from files; set the environment variable {variable}",
                source=source,
                key=field,
            )
        if environ.get(variable):
            data[field] = environ[variable]
    data["source"] = source
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = _format_location(error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key (check the spelling against schedules.yaml's comments)"
        more = f" (and {len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
        raise ConfigError(message + more, source=source, key=key) from None
    return settings if shard is None else settings.for_shard(shard)


def load(
    path: str | Path = "schedules.yaml",
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read and validate ``path`` (YAML, loaded safely)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            "file not found; pass --config PATH or run from the repository root",
            source=str(path),
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror}", source=str(path)) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}not valid YAML: {problem}", source=str(path)) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("expected a mapping with exchange, storage and jobs", source=str(path))
    if "jobs" not in raw:
        raise ConfigError("missing the jobs section", source=str(path), key="jobs")
    return from_mapping(raw, source=str(path), environ=environ, overrides=overrides)

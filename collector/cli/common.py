"""What the commands share: the settings, the archive they work on, logging."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from collector import config
from collector.cli import errors
from collector.cli.errors import exits, fail


def setup_logging(
    level: str, log_format: str = "text", settings: config.Settings | None = None
) -> None:
    """Log to standard error; the settings' API key and secret are redacted from every line."""
    from collector import logs

    secrets = (settings.api_key, settings.api_secret) if settings is not None else ()
    logs.setup(level, log_format, secrets=[s.get_secret_value() for s in secrets if s])


def settings(config_path: Path, **overrides: Any) -> config.Settings:
    with exits(*errors.SETTINGS):
        return config.load(config_path, overrides=overrides)


def data_dir(config_path: Path, data_dir: str | None) -> str:
    """The archive the command works on (a local path or an ``s3://`` URI, checked); an
    archive in the layout before Delta Lake is refused with the command that converts it."""
    from collector.storage.location import Archive

    if data_dir is not None:
        directory = data_dir
    elif not config_path.exists():
        directory = "data"
    else:
        directory = str(settings(config_path).storage.data_dir)
    with exits(*errors.DATA_DIR):
        Archive.of(directory)
    refuse_legacy(directory)
    return directory


def require_archive(directory: str) -> None:
    """Exit 1 naming the place when ``directory`` holds no archive."""
    from collector import datasets
    from collector.storage import delta
    from collector.storage.location import Archive

    archive = Archive.of(directory)
    if archive.remote:
        found = any(delta.is_table(archive.uri, name) for name in datasets.DATASETS)
    else:
        found = archive.path.is_dir()
    if not found:
        fail(f"no archive at {directory} (check --data-dir or storage.uri)", 1)


def refuse_legacy(directory: str | Path) -> None:
    from collector.storage import legacy

    with exits(*errors.LEGACY):
        legacy.refuse_legacy(directory)


def quiet_damaged_log() -> None:
    """The command names damaged files itself, once each: the reads' log line would
    say it again."""
    logging.getLogger("collector.read.catalog").setLevel(logging.ERROR)

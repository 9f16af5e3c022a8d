"""What the commands share: the settings, the archive they work on, logging."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from collector import config
from collector.cli import errors
from collector.cli.errors import exits


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


def archive_dir(config_path: Path, given: str | None) -> str:
    """:func:`data_dir` for a command that reads the archive: exit 2 when it holds none."""
    directory = data_dir(config_path, given)
    require_archive(directory)
    return directory


def require_archive(directory: str, *, daemon_state: bool = False) -> None:
    """Exit 2 naming the place, and how to make an archive, when ``directory`` does not
    exist or holds no dataset's table (``<dir>/<dataset>/_delta_log``); with
    ``daemon_state``, a daemon's state file there (a daemon started, nothing flushed
    yet) makes it an archive too."""
    with exits(*errors.NO_ARCHIVE):
        if not holds_a_table(directory) and not (daemon_state and holds_a_state(directory)):
            raise errors.NoArchiveError(directory, _missing(directory))


def holds_a_table(directory: str) -> bool:
    """Whether any dataset's Delta table exists in the archive at ``directory``."""
    from collector import datasets
    from collector.storage import delta
    from collector.storage.location import Archive

    archive = Archive.of(directory)
    if archive.remote:
        return any(delta.is_table(archive.uri, name) for name in datasets.DATASETS)
    return any((archive.path / name / "_delta_log").is_dir() for name in datasets.DATASETS)


def holds_a_state(directory: str) -> bool:
    """Whether a daemon's state file is in the local archive at ``directory``."""
    from collector.ops import runstate_files
    from collector.storage.location import Archive

    archive = Archive.of(directory)
    if archive.remote:
        return False
    states = archive.path / runstate_files.STATE_DIR
    legacy = archive.path / runstate_files.LEGACY_STATE_FILE
    return legacy.is_file() or (states.is_dir() and any(states.glob("*.json")))


def _missing(directory: str) -> str:
    from collector.storage.location import Archive

    archive = Archive.of(directory)
    if archive.remote:
        return "no dataset table under that URI"
    if not archive.path.exists():
        return "the folder does not exist"
    if not archive.path.is_dir():
        return "it is not a folder"
    return "the folder holds no dataset table"


def refuse_legacy(directory: str | Path) -> None:
    from collector.storage import legacy

    with exits(*errors.LEGACY):
        legacy.refuse_legacy(directory)


def quiet_damaged_log() -> None:
    """The command names damaged files itself, once each: the reads' log line would
    say it again."""
    logging.getLogger("collector.read.catalog").setLevel(logging.ERROR)

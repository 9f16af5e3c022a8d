"""The archive layout before Delta Lake, read-only: what ``jex-collector migrate`` converts.

Releases before Delta Lake kept each dataset as plain folders of Parquet files::

    trades/market=spot/date=2026-01-05/part-....parquet            (a plain folder), or
    trades/market=spot/date=2026-01-05 -> .date=2026-01-05.g2      (a symlink to the
    trades/market=spot/.date=2026-01-05.g2/part-....parquet         current generation)
    trades/market=spot/.date=2026-01-05.g1/...                      (retired: not data)
    trades/market=spot/.date=2026-01-05.lock                        (a lock: not data)

A partition's rows are the finished files (``*.parquet``, not hidden) of its
``date=D`` entry, through the symlink when it is one; hidden names (retired
generations, locks, temporary ``.part-*.tmp`` files and links) are never read. The
files hold every column of the dataset, ``market`` included; ``date`` is only in the
path. Nothing here writes: the old archive stays as it was.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from collector import datasets
from collector.errors import LegacyArchiveError
from collector.storage import delta, layout, location

_DATE_ENTRY = re.compile(r"^date=\d{4}-\d{2}-\d{2}$")


def is_data_file(name: str) -> bool:
    """A finished data file: ``*.parquet`` and not hidden (temporary files are hidden)."""
    return name.endswith(layout.PARQUET_SUFFIX) and not name.startswith(".")


def is_legacy_dataset(data_dir: str | Path, dataset: str) -> bool:
    """Whether ``<data_dir>/<dataset>`` has ``market=*/date=*`` entries and no Delta log."""
    folder = Path(data_dir) / dataset
    if (folder / delta.LOG_DIR).exists():
        return False
    for market_dir in _entries(folder, lambda name: name.startswith("market=")):
        if _entries(market_dir, _DATE_ENTRY.match, follow=False):
            return True
    return False


def legacy_datasets(data_dir: str | Path) -> list[str]:
    """The datasets of ``data_dir`` kept in the layout before Delta Lake, in registry order."""
    return [name for name in datasets.DATASETS if is_legacy_dataset(data_dir, name)]


def is_legacy_archive(data_dir: str | Path) -> bool:
    """Whether any dataset of ``data_dir`` is in the layout before Delta Lake."""
    return any(is_legacy_dataset(data_dir, name) for name in datasets.DATASETS)


def migrate_command(data_dir: str | Path) -> str:
    """The command that converts ``data_dir`` (into a sibling ``<name>-delta`` folder)."""
    source = str(data_dir).rstrip("/") or "/"
    return f"jex-collector migrate --from {source} --to {source}-delta"


def refuse_legacy(data_dir: str | Path) -> None:
    """Raise :class:`LegacyArchiveError` (one line naming the command to run) when
    ``data_dir`` holds an archive in the layout before Delta Lake.

    The daemon, ``query`` and the loaders call this first: a Delta reader would see
    none of the old files, and a Delta writer would put new tables next to them.
    """
    if location.is_remote(data_dir):
        return  # the layout before Delta Lake never left a local disk
    if is_legacy_archive(data_dir):
        raise LegacyArchiveError(
            f"{data_dir} holds the archive in the layout before Delta Lake; convert it "
            f"with: {migrate_command(data_dir)}",
            data_dir=str(data_dir),
        )


def list_partitions(data_dir: str | Path, dataset: str) -> list[layout.Partition]:
    """Every partition of ``dataset`` (a ``date=D`` folder or symlink), sorted.

    Entries whose market is not one of :data:`collector.datasets.MARKETS` are left out
    (see :func:`unknown_entries`). A symlink whose target is gone is listed: reading
    it fails, and the caller reports that partition.
    """
    found = []
    for market_dir in _entries(Path(data_dir) / dataset, lambda n: n.startswith("market=")):
        for entry in _entries(market_dir, _DATE_ENTRY.match, follow=False):
            try:
                found.append(
                    layout.Partition.from_path(f"{dataset}/{market_dir.name}/{entry.name}")
                )
            except ValueError:
                continue
    return sorted(found)


def unknown_entries(data_dir: str | Path, dataset: str) -> list[Path]:
    """``market=*/date=*`` entries :func:`list_partitions` cannot name (unknown markets)."""
    known = {partition_dir(data_dir, p) for p in list_partitions(data_dir, dataset)}
    return [
        entry
        for market_dir in _entries(Path(data_dir) / dataset, lambda n: n.startswith("market="))
        for entry in _entries(market_dir, _DATE_ENTRY.match, follow=False)
        if entry not in known
    ]


def partition_dir(data_dir: str | Path, partition: layout.Partition) -> Path:
    """The partition's ``date=D`` entry (a folder, or a symlink to its generation)."""
    return Path(data_dir) / partition.path


def data_files(data_dir: str | Path, partition: layout.Partition) -> list[Path]:
    """The partition's visible data files, in creation order (names start with the time).

    Raises FileNotFoundError when the ``date=D`` entry or its symlink's target is gone.
    """
    directory = partition_dir(data_dir, partition)
    with os.scandir(directory) as entries:  # follows the symlink to the generation
        names = [e.name for e in entries if is_data_file(e.name) and e.is_file()]
    return [directory / name for name in sorted(names)]


def _entries(
    directory: Path, wanted: Callable[[str], object], *, follow: bool = True
) -> list[Path]:
    """Sub-entries of ``directory`` whose name ``wanted`` accepts: folders (or, with
    ``follow=False``, also symlinks, dangling or not). Missing directory: none."""
    try:
        with os.scandir(directory) as entries:
            return sorted(
                Path(e.path)
                for e in entries
                if wanted(e.name) and (e.is_dir() or (not follow and e.is_symlink()))
            )
    except (FileNotFoundError, NotADirectoryError):
        return []

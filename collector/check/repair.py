"""``verify --repair``: backfill the holes verify found and remove duplicate rows.

Duplicates are removed partition by partition by compaction
(:func:`collector.storage.compaction.compact_partition`): the partition's rows are
de-duplicated on the dataset's key (keeping the first), written as new files, and one
Delta commit replaces exactly the files that were read with them, so a reader sees
either the old rows or the de-duplicated ones, never both and never neither. A crash
leaves the old rows (duplicates, never a loss), which the next repair removes. Files
the daemon commits to the partition meanwhile are not among those replaced, and stay.

Damaged data files (:func:`set_aside`, found by :mod:`collector.storage.footers`) are removed
from their table by one Delta commit each, their bytes kept as evidence under
``_quarantine/damaged/``; verify then runs again, and the holes their removal opened
are fetched again like any other, where the exchange still has them (snapshots, and
rows older than the exchange keeps, are lost with the file).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from collector import datasets
from collector.check.verify import Finding, verify
from collector.collect.backfill import Backfill
from collector.config import KLINE_INTERVALS, Settings
from collector.errors import StorageError
from collector.read import catalog
from collector.storage import compaction, delta, footers
from collector.storage.files import QUARANTINE_DIR
from collector.storage.location import Archive
from collector.storage.writer import ArchiveWriter

#: Where damaged data files are kept after being set aside (relative to the archive).
DAMAGED_DIR = f"{QUARANTINE_DIR}/damaged"


@dataclass
class RepairResult:
    rows_added: dict[str, int] = field(default_factory=dict)
    duplicates_removed: dict[str, int] = field(default_factory=dict)
    files_replaced: int = 0
    skipped: list[str] = field(default_factory=list)
    set_aside: list[str] = field(default_factory=list)  # "<damaged file> -> <kept at>"

    def lines(self) -> list[str]:
        """What the repair did, one line each (``verify --repair`` prints them)."""
        return (
            [f"repair: set aside the damaged file {line}" for line in self.set_aside]
            + [
                f"repair: removed {removed} duplicate row(s) from {dataset}"
                for dataset, removed in sorted(self.duplicates_removed.items())
            ]
            + [
                f"repair: added {added} missing row(s) to {dataset}"
                for dataset, added in sorted(self.rows_added.items())
            ]
            + [f"repair: skipped {note}" for note in self.skipped]
        )


@dataclass
class Checked:
    """What ``verify`` found: every group's findings, and the damaged files left out."""

    findings: list[Finding]
    damaged: list[footers.DamagedFile]

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if not f.ok]

    @property
    def ok(self) -> bool:
        return not self.problems and not self.damaged


def check(data_dir: str | Path) -> Checked:
    """Verify every dataset and name the damaged files (left out of the checks)."""
    return Checked(verify(data_dir), list(catalog.damaged_files(data_dir)))


async def repair_then_check(settings: Settings, checked: Checked) -> tuple[RepairResult, Checked]:
    """``verify --repair``: repair what ``checked`` found (set damaged files aside, remove
    duplicates, fill holes from the exchange), then check again."""
    result = await repair(settings, checked.findings, checked.damaged)
    return result, check(settings.storage.data_dir)


def set_aside(
    data_dir: str | Path | Archive, damaged: Sequence[footers.DamagedFile], report: RepairResult
) -> None:
    """Remove each damaged file from its table (one commit each: a reader sees the table
    with it or without it) after copying what is left of its bytes to
    ``_quarantine/damaged/<dataset>/<partition path>``."""
    archive = Archive.of(data_dir)
    for file in damaged:
        table = delta.open_table(archive.uri, file.dataset)
        current = [] if table is None else delta.files(table, file.dataset)
        match = [f for f in current if f.path == file.path]
        if table is None or not match:
            continue  # already gone (compacted, or set aside by another repair)
        kept = f"{DAMAGED_DIR}/{file.dataset}/{file.path}"
        source = archive.fs_path(file.dataset, file.path)
        try:
            with archive.filesystem().open_input_stream(source) as stream:
                evidence = bytes(stream.read())
        except OSError:
            evidence = b""  # the log names it but it is gone: nothing to keep
        try:
            archive.write_bytes(kept, evidence)
            delta.commit(
                table,
                file.dataset,
                [],
                [delta.remove_action(match[0])],
                metadata={"jex.set_aside": file.reason},
            )
        except (OSError, StorageError) as exc:
            report.skipped.append(f"{file.name}: could not be set aside ({exc})")
            continue
        # The file itself stays until vacuum deletes it, like any file a commit removed.
        report.set_aside.append(f"{file.name} -> {archive.uri}/{kept}")
    footers.forget_damaged(archive, damaged)


def remove_duplicates(data_dir: str | Path, dataset: str, report: RepairResult) -> None:
    """Rewrite every partition of ``dataset`` that holds duplicate keys.

    Raises :class:`StorageError` (:class:`collector.storage.delta.ConflictError`) when a
    concurrent compaction replaced a partition's files first; run the repair again.
    """
    table = delta.open_table(Archive.of(data_dir).uri, dataset)
    if table is None:
        return
    for partition in delta.list_partitions(table, dataset):
        result = compaction.compact_partition(data_dir, partition, only_with_duplicates=True)
        if not result.compacted:
            continue
        removed = result.duplicates_removed
        report.duplicates_removed[dataset] = report.duplicates_removed.get(dataset, 0) + removed
        report.files_replaced += result.files_before


async def fill_holes(filler: Backfill, findings: list[Finding], report: RepairResult) -> None:
    for finding in findings:
        if finding.holes <= 0 or not finding.hole_ranges or finding.first is None:
            continue
        before = filler.result.rows
        spec = datasets.get(finding.dataset)
        start, end = _ms(finding.first), _ms(finding.last) + 1
        if spec.per_interval and finding.interval in KLINE_INTERVALS:
            # verify lists only the first few runs: ask for every missing one in the span.
            end = _ms(finding.last) + KLINE_INTERVALS[finding.interval]
        elif spec.keyless_endpoint is not None and not filler.client.has_api_key:
            report.skipped.append(
                f"{finding.dataset} {finding.market} {finding.symbol}: needs JEX_API_KEY "
                f"(the {spec.keyless_endpoint.name} endpoint cannot fill holes)"
            )
            continue
        await filler.fill(
            finding.dataset, finding.market, finding.symbol, finding.interval, start, end
        )
        added = filler.result.rows - before
        report.rows_added[finding.dataset] = report.rows_added.get(finding.dataset, 0) + added


def _ms(iso: str | None) -> int:
    assert iso is not None
    return int(dt.datetime.fromisoformat(iso).timestamp() * 1000)


async def repair(
    settings: Settings,
    findings: list[Finding],
    damaged: Sequence[footers.DamagedFile] = (),
) -> RepairResult:
    """Set ``damaged`` files aside (then check again: their removal may open holes),
    remove duplicates, and fetch the holes from the exchange."""
    from collector.exchange.client import JexClient

    report = RepairResult()
    data_dir = settings.storage.data_dir
    if damaged:
        set_aside(data_dir, damaged, report)
        findings = verify(data_dir)
    for dataset in sorted({f.dataset for f in findings if f.duplicates > 0}):
        remove_duplicates(data_dir, dataset, report)
    holes = [f for f in findings if f.holes > 0]
    if not holes:
        return report
    async with JexClient.from_settings(settings) as client:
        await client.sync_clock()
        filler = Backfill(client, ArchiveWriter(data_dir), data_dir)
        try:
            await fill_holes(filler, holes, report)
        finally:
            filler.flush()
        report.skipped += filler.result.skipped
    return report

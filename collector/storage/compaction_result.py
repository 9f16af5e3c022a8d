"""What compaction reports: per partition (:class:`PartitionResult`), per dataset and
market (:class:`GroupResult`) and per pass (:class:`CompactionResult`, with its one-line
summary). :mod:`collector.storage.compaction` fills them and re-exports them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from collector.storage import layout


@dataclass
class PartitionResult:
    """What compaction did to one partition (all zero changes when it was skipped)."""

    partition: layout.Partition
    compacted: bool
    files_before: int
    files_after: int
    rows_before: int = 0
    rows_after: int = 0
    bytes_before: int = 0
    bytes_after: int = 0

    @property
    def duplicates_removed(self) -> int:
        return self.rows_before - self.rows_after


@dataclass
class GroupResult:
    """Totals over the partitions of one dataset and market that compaction looked at:
    ``partitions`` were rewritten, ``unchanged`` already were compact (their files and
    rows count on both sides)."""

    dataset: str
    market: str
    partitions: int = 0
    unchanged: int = 0
    files_before: int = 0
    files_after: int = 0
    rows_before: int = 0
    rows_after: int = 0
    duplicates_removed: int = 0
    bytes_before: int = 0
    bytes_after: int = 0

    def add(self, result: PartitionResult) -> None:
        if result.compacted:
            self.partitions += 1
        else:
            self.unchanged += 1
        self.files_before += result.files_before
        self.files_after += result.files_after
        self.rows_before += result.rows_before
        self.rows_after += result.rows_after
        self.duplicates_removed += result.duplicates_removed
        self.bytes_before += result.bytes_before
        self.bytes_after += result.bytes_after

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CompactionResult:
    groups: dict[tuple[str, str], GroupResult] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    #: Files deleted by vacuum (replaced ones past the retention, uncommitted ones).
    removed: int = 0

    def group(self, dataset: str, market: str) -> GroupResult:
        return self.groups.setdefault((dataset, market), GroupResult(dataset, market))

    @property
    def files_before(self) -> int:
        return sum(g.files_before for g in self.groups.values())

    @property
    def files_after(self) -> int:
        return sum(g.files_after for g in self.groups.values())

    @property
    def partitions(self) -> int:
        return sum(g.partitions for g in self.groups.values())

    def summary(self) -> str:
        """One line: partitions compacted, files before and after, duplicates, failures."""
        duplicates = sum(g.duplicates_removed for g in self.groups.values())
        text = (
            f"{self.partitions} partition(s) compacted, files {self.files_before} -> "
            f"{self.files_after}, {duplicates} duplicate row(s) removed, "
            f"{self.removed} old file(s) vacuumed"
        )
        if self.errors:
            text += f", {len(self.errors)} partition(s) failed"
        return text

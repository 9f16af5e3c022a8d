"""The plan as people and scripts read it: ``jex-collector plan`` and the daemon's start-up log.

Text: the weight table of :func:`format_plan` (per job, requests and weight per round and
minute against the budget, the notes and what to change), then the disk table of
:func:`format_disk` (rows and bytes per day, free space). JSON: :func:`plan_as_dict`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from collector.plan.disk import DiskPlan
from collector.plan.schedule import Plan, duration_text


def format_plan_and_disk(plan: Plan, disk: DiskPlan | None) -> str:
    """The weight table, then (when known) the disk table."""
    return format_plan(plan) + ("" if disk is None else "\n\n" + format_disk(disk))


def plan_as_dict(plan: Plan, disk: DiskPlan | None) -> dict[str, Any]:
    """Everything :func:`format_plan_and_disk` says, for ``--json``."""
    payload = plan_dict(plan)
    payload["disk"] = None if disk is None else disk.as_dict()
    return payload


def plan_dict(plan: Plan) -> dict[str, Any]:
    """The weight plan: limits, per job cost, suggestions and notes."""
    return {
        "fits": plan.fits,
        "weight_limit": plan.weight_limit,
        "weight_fraction": plan.fraction,
        "allowed_weight_per_minute": plan.allowed,
        "wanted_weight_per_minute": round(plan.wanted_weight_per_minute, 1),
        "planned_weight_per_minute": round(plan.weight_per_minute, 1),
        "raw_limit": plan.raw_limit,
        "raw_interval_ms": plan.raw_interval_ms,
        "usage": round(plan.usage, 3),
        "jobs": [
            {
                "job": load.job,
                "markets": list(load.markets),
                "symbols": load.symbols,
                "every_s": load.every,
                "requests_per_round": load.requests,
                "weight_per_round": load.weight,
                "weight_per_minute": round(load.wanted_weight_per_minute, 1),
                "planned_every_s": load.planned_every,
                "planned_weight_per_minute": round(load.weight_per_minute, 1),
            }
            for load in plan.loads
        ],
        "suggestions": [suggestion.as_dict() for suggestion in plan.suggestions],
        "fit_weight_fraction": plan.fit_fraction,
        "notes": plan.notes,
    }


def format_plan(plan: Plan) -> str:
    """The plan as a plain-text table (for the log and ``jex-collector plan``)."""
    header = (
        "job",
        "markets",
        "symbols",
        "every",
        "req/round",
        "weight/round",
        "weight/min",
        "planned every",
        "planned weight/min",
    )
    rows = [
        (
            load.job,
            ",".join(load.markets) if load.job != "instruments" else "all",
            str(load.symbols),
            duration_text(load.every),
            str(load.requests),
            str(load.weight),
            f"{load.wanted_weight_per_minute:.0f}",
            duration_text(load.planned_every) + ("" if load.stretch == 1.0 else " *"),
            f"{load.weight_per_minute:.0f}",
        )
        for load in sorted(plan.loads, key=lambda load: -load.wanted_weight_per_minute)
    ]
    rows.append(
        (
            "total",
            "",
            "",
            "",
            "",
            "",
            f"{plan.wanted_weight_per_minute:.0f}",
            "",
            f"{plan.weight_per_minute:.0f}",
        )
    )
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if i < 2 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in (header, *rows)
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    raw = plan.raw_allowed_per_minute
    lines.append(
        f"budget: {plan.allowed} weight/min ({plan.fraction:g} x exchange limit "
        f"{plan.weight_limit})"
        + (
            f", {raw:.0f} requests/min ({plan.fraction:g} x {plan.raw_limit} per "
            f"{plan.raw_interval_ms // 60_000} min); planned {plan.requests_per_minute:.0f}"
            " requests/min"
            if raw is not None
            else ""
        )
    )
    lines.append("fits" if plan.fits else "does not fit: intervals marked * are stretched")
    lines.extend(f"- {note}" for note in plan.notes)
    return "\n".join(lines)


def format_disk(disk: DiskPlan) -> str:
    """Rows and megabytes per day per job, the total, and how long the free space lasts."""
    header = ("job", "rows/day", "flush files/day", "flush MB/day", "compacted MB/day")
    rows = [
        (
            job.job,
            f"{job.rows_per_day:,.0f}",
            f"{job.flush_files_per_day:,.0f}",
            _mb(job.flush_bytes_per_day),
            _mb(job.compacted_bytes_per_day),
        )
        for job in disk.jobs
    ]
    rows.append(
        (
            "total",
            f"{sum(job.rows_per_day for job in disk.jobs):,.0f}",
            f"{sum(job.flush_files_per_day for job in disk.jobs):,.0f}",
            _mb(disk.flush_bytes_per_day),
            _mb(disk.compacted_bytes_per_day),
        )
    )
    lines = [
        "disk per day: rows x bytes per row and per file measured by bench/disk.py; "
        f"trades: {disk.trade_source}",
        *_columns(header, rows),
        "flush MB/day is written, not held: the daemon merges today's flush files as they "
        "pile up (replaced files are kept an hour); the archive grows by the compacted "
        "size a day",
    ]
    days = disk.days_until_full
    if disk.free_bytes is not None:
        lines.append(
            f"free at {disk.data_dir}: {disk.free_bytes / 1e9:,.1f} GB"
            + (
                ""
                if days is None
                else f", full in {days:,.0f} days at the compacted rate "
                f"({_mb(disk.compacted_bytes_per_day)} MB a day)"
            )
        )
    lines.extend(f"- {note}" for note in disk.notes)
    return "\n".join(lines)


def _mb(value: float) -> str:
    return f"{value / 1e6:,.1f}"


def _columns(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    """Rows under a header and a rule; the first column left-aligned, the others right."""
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in (header, *rows)
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines

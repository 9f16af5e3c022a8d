"""The terminal view of ``jex-collector status`` (:mod:`collector.status`): a line about
the daemon, one table row per dataset and market (about 115 columns), the jobs' last
errors, the quarantine, and the verdict."""

from __future__ import annotations

import datetime as dt
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from collector.quarantine import DIR_NAME as QUARANTINE_DIR
from collector.status import JobStatus, Report, age_s, cut, duration, symbols_of


def render(report: Report) -> list[Any]:
    """The report for a terminal: rich renderables to print one after the other."""
    daemon = report.daemon
    head = f"daemon: {daemon.message}"
    if daemon.version:
        head += f", version {daemon.version}"
    if daemon.state in ("running", "starting", "stuck"):
        head += f", heartbeat {duration(daemon.heartbeat_age_s)} ago"
    lines: list[Any] = [Text(head)]
    if report.pause:
        lines.append(
            Text(f"exchange pause: HTTP {report.pause['status']} until {report.pause['until']}")
        )
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, collapse_padding=True)
    for name, justify in _COLUMNS:
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    now = report.generated_at
    for dataset, market in report.rows():
        group = report.groups.get((dataset, market))
        job = report.job_for(dataset, market)
        record = job.record if job is not None else None
        cells = [
            dataset,
            market,
            str(symbols) if (symbols := symbols_of(dataset, record)) is not None else "",
            _count(group.rows_today) if group else "0",
            _count(group.rows_total) if group else "0",
            _short_date(group.first_ms) if group else "",
            duration(report.lag_s(group)) if group and group.last_ms is not None else "",
            str(group.files) if group else "0",
            _size(group.bytes) if group else "0",
            _ago(record.last_success_at if record else None, now, _no_success(job)),
            _ago(record.last_failure_at if record else None, now, ""),
            str(report.quarantine.by_group[(dataset, market)] or ""),
        ]
        style = "red" if job is not None and job.overdue else None
        table.add_row(*(Text(cell) for cell in cells), style=style)
    lines.append(table)
    failed = [j for j in report.jobs if j.record.last_error and j.record.last_failure_at]
    if failed:
        lines.append(Text("last errors (newest first; --json has them whole):"))
        for job in sorted(failed, key=lambda j: j.record.last_failure_at or "", reverse=True):
            record = job.record
            errors = record.last_failure_errors
            what = f"{record.last_failure_outcome or 'failed'} run"
            error = cut(record.last_error or "")
            lines.append(
                Text(
                    f"  {job.job} {job.market} {duration(age_s(record.last_failure_at, now))} "
                    f"ago ({what}, {errors} error{'s' if errors != 1 else ''}): {error}"
                )
            )
    quarantine = report.quarantine
    if quarantine.last_hour:
        endpoints_seen = ", ".join(f"{k} {v}" for k, v in sorted(quarantine.by_endpoint.items()))
        lines.append(
            Text(
                f"quarantined in the last hour: {quarantine.last_hour} ({endpoints_seen}) "
                f"in {report.data_dir / QUARANTINE_DIR}"
            )
        )
    if report.healthy:
        lines.append(Text("healthy", style="green"))
    else:
        lines.append(Text("NOT HEALTHY:", style="bold red"))
        lines.extend(Text(f"- {problem}") for problem in report.problems)
    return lines


_COLUMNS = (
    ("dataset", "left"),
    ("market", "left"),
    ("sym", "right"),
    ("today", "right"),
    ("rows", "right"),
    ("first", "left"),
    ("lag", "right"),
    ("files", "right"),
    ("size", "right"),
    ("ok ago", "right"),
    ("failed ago", "right"),
    ("quarantined", "right"),
)


def _count(n: int) -> str:
    """``12,345``, ``123k``, ``1.23M``, ``12.3M``, ``1.23G``: at most six characters."""
    if n < 100_000:
        return f"{n:,}"
    if n < 1_000_000:
        return f"{n / 1e3:.0f}k"
    if n < 999_500_000:
        return f"{n / 1e6:.3g}M"
    return f"{n / 1e9:.3g}G"


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _short_date(ms: int | None) -> str:
    if ms is None:
        return ""
    value = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms)
    return f"{value:%Y-%m-%d}"


def _ago(value: str | None, now: dt.datetime, missing: str) -> str:
    seconds = age_s(value, now)
    return missing if seconds is None else duration(seconds)


def _no_success(job: JobStatus | None) -> str:
    if job is None:
        return ""
    return "running" if job.running_since else "never"

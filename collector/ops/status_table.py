"""The terminal view of ``jex-collector status`` (:mod:`collector.ops.status`): a line about
the daemon, one table row per dataset and market (about 115 columns), the jobs' last
errors, the quarantine, and the verdict. With several daemons (shards), a line and a
table per daemon (the rows of its jobs), then the rows with files that none of them
fills.

Every text goes through :func:`printable` on its way to the terminal: error texts come
from the exchange, and host names, versions, job names and errors from state files that
any host writing the archive may have written, so none of them may carry a control
character (an escape sequence could rewrite the screen or hide a line).
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from collector.ops.status import (
    DaemonStatus,
    JobStatus,
    Overview,
    age_s,
    cut,
    duration,
    symbols_of,
)
from collector.storage.files import QUARANTINE_DIR

#: Unicode categories never shown as they are: controls (C0, DEL, C1), format characters
#: (bidirectional overrides, zero-width ones), line and paragraph separators, surrogates.
_HIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def printable(text: str) -> str:
    """``text`` with every control or format character shown as an escape (``\\x1b``,
    ``\\u202e``), so it reaches a terminal as visible characters only."""
    if text.isprintable():
        return text
    return "".join(
        char if unicodedata.category(char) not in _HIDDEN else _escape(char) for char in text
    )


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _text(value: str, style: str | None = None) -> Text:
    return Text(printable(value), style=style or "")


def render(report: Overview) -> list[Any]:
    """The report for a terminal: rich renderables to print one after the other."""
    lines: list[Any] = []
    pause = report.pause
    pause_line = (
        _text(f"exchange pause: HTTP {pause['status']} until {pause['until']}") if pause else None
    )
    single = report.daemon
    if single is not None:
        lines.append(_text(_head(report, single)))
        if pause_line is not None:
            lines.append(pause_line)
        lines.append(_table(report, report.rows(), shard=None))
    else:
        if pause_line is not None:
            lines.append(pause_line)
        for daemon in report.daemons:
            lines.append(_text(_head(report, daemon)))
            rows = report.rows(daemon.shard) if daemon.shard else []
            if rows:
                lines.append(_table(report, rows, shard=daemon.shard))
        unclaimed = report.unclaimed_rows()
        if unclaimed:
            lines.append(_text("archived, filled by none of these daemons:"))
            lines.append(_table(report, unclaimed, shard=""))
    now = report.generated_at
    failed = [j for j in report.jobs if j.record.last_error and j.record.last_failure_at]
    if failed:
        lines.append(_text("last errors (newest first; --json has them whole):"))
        for job in sorted(failed, key=lambda j: j.record.last_failure_at or "", reverse=True):
            record = job.record
            errors = record.last_failure_errors
            what = f"{record.last_failure_outcome or 'failed'} run"
            error = cut(record.last_error or "")
            lines.append(
                _text(
                    f"  {report.label(job)}{job.job} {job.market} "
                    f"{duration(age_s(record.last_failure_at, now))} "
                    f"ago ({what}, {errors} error{'s' if errors != 1 else ''}): {error}"
                )
            )
    quarantine = report.quarantine
    if quarantine.last_hour:
        endpoints_seen = ", ".join(f"{k} {v}" for k, v in sorted(quarantine.by_endpoint.items()))
        lines.append(
            _text(
                f"quarantined in the last hour: {quarantine.last_hour} ({endpoints_seen}) "
                f"in {report.data_dir}/{QUARANTINE_DIR}"
            )
        )
    verdict = report.verdict
    if verdict == "healthy":
        lines.append(_text("healthy", style="green"))
    else:
        # Still "NOT HEALTHY" (and exit 1): a stopped daemon collects nothing, which
        # monitoring must hear; the words say it was a clean stop, not a death.
        head = (
            "NOT HEALTHY (not collecting: stopped cleanly):"
            if verdict == "stopped"
            else "NOT HEALTHY:"
        )
        lines.append(_text(head, style="bold yellow" if verdict == "stopped" else "bold red"))
        lines.extend(_text(f"- {problem}") for problem in report.problems)
    return lines


def _head(report: Overview, daemon: DaemonStatus) -> str:
    """``daemon: running (pid 14035 on vm, up 1m19s), version 0.1.0, heartbeat 100ms ago``;
    ``daemon spot: ...`` when lines name their daemon; for a daemon judged by its
    heartbeat alone, ``(on host vm: judged by its heartbeat only, no lock checked)``."""
    name = f" {daemon.shard or '?'}" if report.labelled else ""
    head = f"daemon{name}: {daemon.message}"
    if daemon.version:
        head += f", version {daemon.version}"
    if daemon.state in ("running", "starting", "stuck"):
        head += f", heartbeat {duration(daemon.heartbeat_age_s)} ago"
    if daemon.liveness == "heartbeat" and daemon.state != "stopped":
        head += f" (on host {daemon.host}: judged by its heartbeat only, no lock checked)"
    return head


def _table(report: Overview, rows: list[tuple[str, str]], *, shard: str | None) -> Table:
    """One row per (dataset, market) of ``rows``; the job columns from daemon ``shard``'s
    job (every daemon's together for None, none for ``""``)."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, collapse_padding=True)
    for name, justify in _COLUMNS:
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    now = report.generated_at
    for dataset, market in rows:
        group = report.groups.get((dataset, market))
        job = report.job_for(dataset, market, shard) if shard != "" else None
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
        table.add_row(*(_text(cell) for cell in cells), style=style)
    return table


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

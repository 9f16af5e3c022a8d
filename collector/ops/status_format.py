"""Times, durations and error texts as ``jex-collector status`` shows them: shared by the
verdicts (:mod:`collector.ops.status_daemons`), the report and the table."""

from __future__ import annotations

import datetime as dt

from collector.ops import runstate

#: Error texts in the table view are cut to this many characters (``--json`` has all).
ERROR_DISPLAY_CHARS = 160


def epoch_ms(value: dt.datetime) -> int:
    return (value - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(milliseconds=1)


def iso_ms(ms: int | None) -> str | None:
    if ms is None:
        return None
    return runstate.iso(dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms))


def duration(seconds: float | None) -> str:
    """``850ms``, ``4.2s``, ``42s``, ``4m12s``, ``5m``, ``2h05m``, ``3d02h``."""
    if seconds is None:
        return "?"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms" if seconds > 0 else "0s"
    whole = int(seconds)
    if whole < 60:
        return f"{seconds:.0f}s" if seconds >= 10 or seconds == whole else f"{seconds:.1f}s"
    if whole < 3600:
        minutes, rest = divmod(whole, 60)
        return f"{minutes}m{rest:02d}s" if rest else f"{minutes}m"
    if whole < 86_400:
        hours, rest = divmod(whole, 3600)
        return f"{hours}h{rest // 60:02d}m" if rest >= 60 else f"{hours}h"
    days, rest = divmod(whole, 86_400)
    return f"{days}d{rest // 3600:02d}h" if rest >= 3600 else f"{days}d"


def cut(error: str) -> str:
    """An error text cut for the terminal (``--json`` has it whole)."""
    return error if len(error) <= ERROR_DISPLAY_CHARS else error[: ERROR_DISPLAY_CHARS - 3] + "..."


def age_s(value: str | None, now: dt.datetime) -> float | None:
    """Seconds from the ISO time ``value`` to ``now`` (None when there is no time)."""
    then = runstate.parse_iso(value)
    return None if then is None else (now - then).total_seconds()


def _since(value: str | None, now: dt.datetime) -> str:
    return duration(age_s(value, now))


def when(value: str | None, now: dt.datetime) -> str:
    """``2026-11-24 03:10:05 UTC (4m12s ago)``."""
    then = runstate.parse_iso(value)
    if then is None:
        return "?"
    return f"{then:%Y-%m-%d %H:%M:%S} UTC ({duration((now - then).total_seconds())} ago)"

"""Time units in milliseconds, and the wall clock in milliseconds.

Times are integer milliseconds since the epoch (UTC) throughout the collector: the
exchange's unit. Every module takes the units and the clock from here.
"""

from __future__ import annotations

import time

SECOND_MS = 1_000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
WEEK_MS = 7 * DAY_MS


def wall_clock_ms() -> int:
    """The local wall clock, in whole milliseconds since the epoch."""
    return time.time_ns() // 1_000_000

"""The exchange clock: local time plus the offset measured from ``/api/v1/time``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from collector.exchange.response import snippet
from collector.units import DAY_MS, HOUR_MS
from collector.units import wall_clock_ms as wall_clock_ms

#: A ``serverTime`` further than this from the local clock is refused (and the offset
#: measured before is kept): one of the two clocks is wrong, and trusting the exchange's
#: would date every row and partition by it.
MAX_CLOCK_OFFSET_MS = DAY_MS


class ExchangeClock:
    """Exchange time from the local clock plus a measured offset."""

    def __init__(self, local_ms: Callable[[], int] = wall_clock_ms) -> None:
        self.local_ms = local_ms
        self.offset_ms = 0
        self.synced = False

    def now_ms(self) -> int:
        return self.local_ms() + self.offset_ms

    @staticmethod
    def offset_of(sent_local: int, server_time: int, received_local: int) -> int:
        """Offset from one round trip: the server read its clock at about the midpoint."""
        return server_time - (sent_local + received_local) // 2

    def update(self, sent_local: int, server_time: int, received_local: int) -> None:
        self.offset_ms = self.offset_of(sent_local, server_time, received_local)
        self.synced = True

    def update_from(self, payload: Any, body: bytes, sent_local: int, received_local: int) -> None:
        """:meth:`update` from a ``/api/v1/time`` response (``payload``, decoded from
        ``body``) to a request sent and answered at these local times.

        A ``serverTime`` that is not an integer (a boolean is not), or that is more than
        :data:`MAX_CLOCK_OFFSET_MS` from the local clock, raises ValueError and keeps the
        offset measured before."""
        server_time = payload.get("serverTime") if isinstance(payload, dict) else None
        if type(server_time) is not int:  # not isinstance: True is an int to Python
            raise ValueError(f"time: expected {{'serverTime': <ms>}}, got {snippet(body)}")
        offset = self.offset_of(sent_local, server_time, received_local)
        if abs(offset) > MAX_CLOCK_OFFSET_MS:
            raise ValueError(
                f"time: the exchange's serverTime {server_time} ({iso(server_time)}) is "
                f"{offset / HOUR_MS:+.1f} h from the local clock, more than the "
                f"{MAX_CLOCK_OFFSET_MS / HOUR_MS:.0f} h allowed: refused, keeping the "
                f"offset {self.offset_ms:+d} ms (check the local clock and NTP)"
            )
        self.update(sent_local, server_time, received_local)


def iso(ms: int) -> str:
    """``ms`` since the epoch as an ISO 8601 UTC time, for messages (never raises)."""
    try:
        return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat(timespec="seconds")
    except (ValueError, OverflowError, OSError):  # beyond the year 9999, or before 1
        return f"{ms} ms since the epoch"

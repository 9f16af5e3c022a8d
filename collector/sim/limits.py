"""The simulator's per-IP rate limiter, as JEX does it. Pure: time is passed in.

The API does not say which kind of window JEX counts weight in, so the limiter keeps
either (``window``):

* ``"fixed"`` (the default): weight is counted in windows aligned to the clock minute,
  raw requests in windows aligned to five minutes; a count starts again from 0 when its
  window ends.
* ``"rolling"``: weight is counted over the last ``window_ms`` (raw requests over the
  last ``raw_window_ms``); each request's weight leaves the count ``window_ms`` after it
  was admitted.

``X-MBX-USED-WEIGHT-1M`` reports the count of that kind. A request that does not fit
gets 429 with the seconds until it would fit (the fixed window's end; for a rolling one,
until enough of the oldest weight has left the count); a request that arrives before
that has passed, or while banned, gets 418: the first ban lasts 2 minutes and each next
one doubles, up to 3 days.

Per client the limiter also counts what it admitted (requests, weight, and weight per
clock minute for the last hour), so a benchmark can read what the exchange counted.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from collector.units import DAY_MS, HOUR_MS, MINUTE_MS

BAN_FIRST_MS = 2 * MINUTE_MS
BAN_MAX_MS = 3 * DAY_MS

WindowKind = Literal["fixed", "rolling"]
WINDOW_KINDS: tuple[WindowKind, ...] = ("fixed", "rolling")
#: How far back ``weight_per_minute`` goes.
HISTORY_MS = HOUR_MS


@dataclass
class Verdict:
    status: int  # 200 (go ahead), 429 or 418
    used_weight: int
    retry_after_s: int = 0


@dataclass
class Window:
    """One count (weight, or raw requests) over a window of either kind."""

    kind: WindowKind
    length_ms: int
    total: int = 0
    #: fixed: the current window's start.
    start: int = -1
    #: rolling: [admitted at, amount], oldest first (one entry per millisecond).
    entries: deque[list[int]] = field(default_factory=deque)

    def count(self, now_ms: int) -> int:
        """The count at ``now_ms`` (what has left the window is dropped)."""
        if self.kind == "fixed":
            start = now_ms - now_ms % self.length_ms
            if start != self.start:
                self.start, self.total = start, 0
        else:
            entries = self.entries
            while entries and entries[0][0] <= now_ms - self.length_ms:
                self.total -= entries.popleft()[1]
        return self.total

    def add(self, amount: int, now_ms: int) -> None:
        self.total += amount
        if self.kind == "rolling":
            if self.entries and self.entries[-1][0] == now_ms:
                self.entries[-1][1] += amount
            else:
                self.entries.append([now_ms, amount])

    def ms_until_room(self, amount: int, limit: int, now_ms: int) -> int:
        """How long until ``amount`` more fits under ``limit`` (after :meth:`count`)."""
        if self.kind == "fixed":
            return self.start + self.length_ms - now_ms
        left = self.total
        for admitted_at, entry in self.entries:
            left -= entry
            if left + amount <= limit:
                return admitted_at + self.length_ms - now_ms
        return self.length_ms  # more than the limit alone: never fits; say a window


@dataclass
class _Client:
    weight: Window
    raw: Window
    penalty_until: int = 0
    banned_until: int = 0
    bans: int = 0
    too_many: int = 0  # 429s sent
    requests: int = 0  # admitted, ever
    admitted_weight: int = 0  # ever
    #: Admitted weight per clock minute (the minute's start), the last hour of them.
    per_minute: dict[int, int] = field(default_factory=dict)

    def admitted(self, weight: int, now_ms: int) -> None:
        self.weight.add(weight, now_ms)
        self.raw.add(1, now_ms)
        self.requests += 1
        self.admitted_weight += weight
        minute = now_ms - now_ms % MINUTE_MS
        if minute not in self.per_minute:
            # Minutes arrive in order: the oldest are first in the dict.
            for old in [m for m in self.per_minute if m <= minute - HISTORY_MS]:
                del self.per_minute[old]
        self.per_minute[minute] = self.per_minute.get(minute, 0) + weight


@dataclass
class RateLimiter:
    weight_limit: int = 1200
    raw_limit: int = 5000
    window_ms: int = MINUTE_MS
    raw_window_ms: int = 5 * MINUTE_MS
    #: ``"fixed"`` (clock-aligned windows) or ``"rolling"`` (the last ``window_ms``).
    window: WindowKind = "fixed"
    clients: dict[str, _Client] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.window not in WINDOW_KINDS:
            raise ValueError(f"window must be one of {WINDOW_KINDS}, not {self.window!r}")

    def _client(self, ip: str) -> _Client:
        client = self.clients.get(ip)
        if client is None:
            client = self.clients[ip] = _Client(
                Window(self.window, self.window_ms), Window(self.window, self.raw_window_ms)
            )
        return client

    def admit(self, ip: str, weight: int, now_ms: int) -> Verdict:
        client = self._client(ip)
        used = client.weight.count(now_ms)
        raw = client.raw.count(now_ms)
        if client.banned_until > now_ms:
            return Verdict(418, used, _seconds(client.banned_until - now_ms))
        if client.penalty_until > now_ms:
            # Kept sending after a 429: ban, escalating.
            duration = min(BAN_FIRST_MS * 2**client.bans, BAN_MAX_MS)
            client.bans += 1
            client.banned_until = now_ms + duration
            client.penalty_until = 0
            return Verdict(418, used, _seconds(duration))
        if used + weight > self.weight_limit:
            wait = client.weight.ms_until_room(weight, self.weight_limit, now_ms)
            return self._too_many(client, used, now_ms + wait, now_ms)
        if raw + 1 > self.raw_limit:
            wait = client.raw.ms_until_room(1, self.raw_limit, now_ms)
            return self._too_many(client, used, now_ms + wait, now_ms)
        client.admitted(weight, now_ms)
        return Verdict(200, used + weight)

    @staticmethod
    def _too_many(client: _Client, used: int, until: int, now_ms: int) -> Verdict:
        client.penalty_until = until
        client.too_many += 1
        return Verdict(429, used, _seconds(until - now_ms))

    def state(self, now_ms: int) -> dict[str, dict[str, Any]]:
        """Per client: the weight counted now, bans, 429s, and what was admitted."""
        return {
            ip: {
                "used_weight": c.weight.count(now_ms),
                "banned_for_ms": max(0, c.banned_until - now_ms),
                "bans": c.bans,
                "429s": c.too_many,
                "requests": c.requests,
                "weight": c.admitted_weight,
                "weight_per_minute": {
                    str(minute): weight
                    for minute, weight in c.per_minute.items()
                    if minute > now_ms - HISTORY_MS
                },
            }
            for ip, c in self.clients.items()
        }


def _seconds(ms: int) -> int:
    return max(1, -(-ms // 1000))

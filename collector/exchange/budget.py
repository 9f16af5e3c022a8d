"""The request budget: pure bookkeeping, no I/O, time passed in.

JEX counts request weight per IP in fixed one-minute windows (reported in
``X-MBX-USED-WEIGHT-1M``) and raw requests in five-minute windows; both limits
are announced in ``exchangeInfo`` ``rateLimits``. The budget allows itself
``limit * fraction`` of each and tells the caller how long to wait before a
request fits. Four rules, each against a way collectors get banned:

* **Fixed windows like the exchange's**: the weight and the raw-request count of
  the current window never exceed the allowance.
* **The exchange's count wins**: when ``X-MBX-USED-WEIGHT-1M`` says more weight
  was used than we counted (another process on the same IP), we take its figure.
* **Pacing**: weight also flows through a token bucket refilled at the allowance
  per minute and holding at most ``burst_s`` seconds of it, so a minute's
  weight is spread over the minute instead of fired in its first second. The
  bucket starts at ``start_fill`` of its capacity: that is the start-up ramp
  (the burst of every job firing at once is the classic way to get banned).
* **Backing off after a 429**: :meth:`penalize` lowers the allowance to
  ``penalty_factor`` of itself for ``penalty_ms`` and empties the bucket.

And one rule of priority: **snapshots first**. A snapshot missed (a depth or a
ticker) is lost for good; history (trades, klines, funding and fund pages) is
fetched later from its cursor. ``snapshot_reserve`` is the weight per window that
history requests (``reserve(..., history=True)``) leave for snapshots; the daemon sets
it to what its snapshot jobs need (at most :data:`MAX_SNAPSHOT_SHARE` of the
allowance, so history always advances). The pacing bucket is shared; the client's
queue (turns.py) gives it to a waiting snapshot before any waiting history request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from collector.units import MINUTE_MS

WINDOW_MS = MINUTE_MS
RAW_WINDOW_MS = 5 * MINUTE_MS
#: The largest share of the allowance kept for snapshots: history keeps the rest.
MAX_SNAPSHOT_SHARE = 0.75

WaitReason = Literal["", "window", "raw", "pace", "paused"]


@dataclass
class WeightBudget:
    limit: int = 1200
    fraction: float = 0.8
    window_ms: int = WINDOW_MS
    #: Raw requests per ``raw_window_ms`` (``None``: not announced, not limited).
    raw_limit: int | None = None
    raw_window_ms: int = RAW_WINDOW_MS
    #: Bucket capacity in seconds of allowance; ``window_ms / 1000`` turns pacing off.
    burst_s: float = 15.0
    #: Share of the bucket that is full at start.
    start_fill: float = 0.1
    penalty_factor: float = 0.5
    penalty_ms: int = 5 * MINUTE_MS
    #: Weight per window history requests leave for snapshot requests (see the module).
    snapshot_reserve: int = 0

    used: int = 0
    window_start: int = field(default=-1)
    raw_used: int = 0
    raw_window_start: int = field(default=-1)
    penalty_until: int = 0
    #: Why the last :meth:`reserve` said wait (for log lines).
    last_wait: WaitReason = ""
    _tokens: float | None = field(default=None, repr=False)
    _tokens_at: int = field(default=0, repr=False)

    # -- allowances ------------------------------------------------------------------------

    def allowed_at(self, now_ms: int) -> int:
        """Weight we allow ourselves per window at ``now_ms`` (at least 1)."""
        factor = self.penalty_factor if now_ms < self.penalty_until else 1.0
        return max(1, math.floor(self.limit * self.fraction * factor))

    @property
    def allowed(self) -> int:
        """Weight per window without a penalty in force."""
        return max(1, math.floor(self.limit * self.fraction))

    @property
    def raw_allowed(self) -> int | None:
        if self.raw_limit is None:
            return None
        return max(1, math.floor(self.raw_limit * self.fraction))

    def _capacity(self, allowed: int) -> float:
        return allowed * min(1.0, self.burst_s * 1000 / self.window_ms)

    # -- bookkeeping -----------------------------------------------------------------------

    def _roll(self, now_ms: int) -> None:
        start = now_ms - now_ms % self.window_ms
        if start != self.window_start:
            self.window_start = start
            self.used = 0
        raw_start = now_ms - now_ms % self.raw_window_ms
        if raw_start != self.raw_window_start:
            self.raw_window_start = raw_start
            self.raw_used = 0

    def _refill(self, now_ms: int, allowed: int) -> float:
        capacity = self._capacity(allowed)
        if self._tokens is None:
            self._tokens = capacity * self.start_fill
        else:
            elapsed = max(0, now_ms - self._tokens_at)
            self._tokens = min(capacity, self._tokens + elapsed * allowed / self.window_ms)
        self._tokens_at = now_ms
        return capacity

    def kept_for_snapshots(self, allowed: int) -> int:
        """The weight of a window of ``allowed`` that history requests leave alone."""
        return min(self.snapshot_reserve, math.floor(allowed * MAX_SNAPSHOT_SHARE))

    def reserve(self, weight: int, now_ms: int, *, history: bool = False) -> int:
        """Reserve one request of ``weight`` now and return 0, or return the ms to wait
        (nothing reserved; :attr:`last_wait` says which rule held it back).

        ``history``: a request whose data can be fetched later (a page of a series); it
        leaves :attr:`snapshot_reserve` of the window to snapshots.
        A request heavier than the whole allowance is let through at the start of an
        empty window, or it could never be sent.
        """
        self._roll(now_ms)
        allowed = self.allowed_at(now_ms)
        capacity = self._refill(now_ms, allowed)
        assert self._tokens is not None
        kept = self.kept_for_snapshots(allowed) if history else 0
        waits: list[tuple[int, WaitReason]] = []
        if not (self.used + weight <= allowed - kept or (self.used == 0 and weight > allowed)):
            waits.append((self.window_start + self.window_ms - now_ms, "window"))
        raw_allowed = self.raw_allowed
        if raw_allowed is not None and self.raw_used + 1 > raw_allowed:
            waits.append((self.raw_window_start + self.raw_window_ms - now_ms, "raw"))
        needed = min(float(weight), capacity)
        if self._tokens < needed:
            rate = allowed / self.window_ms
            waits.append((max(1, math.ceil((needed - self._tokens) / rate)), "pace"))
        if waits:
            wait, self.last_wait = max(waits)
            return wait
        self.used += weight
        self.raw_used += 1
        self._tokens -= weight  # may go below zero for a request above the capacity
        self.last_wait = ""
        return 0

    def observe(self, used_weight: int, now_ms: int) -> None:
        """Take the exchange's count for the current window when it exceeds ours."""
        self._roll(now_ms)
        self.used = max(self.used, used_weight)

    def penalize(self, now_ms: int) -> None:
        """After a 429: a lower allowance for a while, and no saved-up burst."""
        self.penalty_until = now_ms + self.penalty_ms
        self._tokens = 0.0
        self._tokens_at = now_ms

    def set_limit(self, limit: int) -> None:
        if limit > 0:
            self.limit = limit

    def set_raw_limit(self, limit: int | None, window_ms: int | None) -> None:
        if limit and limit > 0:
            self.raw_limit = limit
            if window_ms and window_ms > 0:
                self.raw_window_ms = window_ms

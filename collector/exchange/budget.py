"""The request-weight budget: pure bookkeeping, no I/O, time passed in.

JEX counts weight per IP in fixed one-minute windows and reports the count in
``X-MBX-USED-WEIGHT-1M``. The budget keeps a local count for the current
window, trusts the header when it is higher (another process on the same IP
spends weight too), and tells the caller how long to wait before a request of
a given weight fits under ``limit * fraction``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

WINDOW_MS = 60_000


@dataclass
class WeightBudget:
    limit: int = 1200
    fraction: float = 0.8
    window_ms: int = WINDOW_MS
    used: int = 0
    window_start: int = field(default=-1)

    @property
    def allowed(self) -> int:
        """Weight we allow ourselves per window (at least 1 so progress is possible)."""
        return max(1, math.floor(self.limit * self.fraction))

    def _roll(self, now_ms: int) -> None:
        start = now_ms - now_ms % self.window_ms
        if start != self.window_start:
            self.window_start = start
            self.used = 0

    def reserve(self, weight: int, now_ms: int) -> int:
        """Reserve ``weight`` now and return 0, or return the ms to wait (nothing reserved).

        A request heavier than the whole allowance is let through at the start
        of an empty window, or it could never be sent.
        """
        self._roll(now_ms)
        if self.used + weight <= self.allowed or (self.used == 0 and weight > self.allowed):
            self.used += weight
            return 0
        return self.window_start + self.window_ms - now_ms

    def observe(self, used_weight: int, now_ms: int) -> None:
        """Take the exchange's count for the current window when it exceeds ours."""
        self._roll(now_ms)
        self.used = max(self.used, used_weight)

    def set_limit(self, limit: int) -> None:
        if limit > 0:
            self.limit = limit

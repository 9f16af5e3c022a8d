"""The simulator's per-IP rate limiter, as JEX does it. Pure: time is passed in.

Weight is counted in fixed windows aligned to the minute (raw requests in
five-minute windows). A request that does not fit gets 429 with the seconds
until the window resets; a request that arrives before that has passed, or
while banned, gets 418: the first ban lasts 2 minutes and each next one
doubles, up to 3 days.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from collector.units import DAY_MS, MINUTE_MS

BAN_FIRST_MS = 2 * MINUTE_MS
BAN_MAX_MS = 3 * DAY_MS


@dataclass
class Verdict:
    status: int  # 200 (go ahead), 429 or 418
    used_weight: int
    retry_after_s: int = 0


@dataclass
class _Client:
    window: int = -1
    used: int = 0
    raw_window: int = -1
    raw: int = 0
    penalty_until: int = 0
    banned_until: int = 0
    bans: int = 0
    too_many: int = 0  # 429s sent


@dataclass
class RateLimiter:
    weight_limit: int = 1200
    raw_limit: int = 5000
    window_ms: int = MINUTE_MS
    raw_window_ms: int = 5 * MINUTE_MS
    clients: dict[str, _Client] = field(default_factory=dict)

    def admit(self, ip: str, weight: int, now_ms: int) -> Verdict:
        client = self.clients.setdefault(ip, _Client())
        window = now_ms - now_ms % self.window_ms
        if window != client.window:
            client.window, client.used = window, 0
        raw_window = now_ms - now_ms % self.raw_window_ms
        if raw_window != client.raw_window:
            client.raw_window, client.raw = raw_window, 0
        if client.banned_until > now_ms:
            return Verdict(418, client.used, _seconds(client.banned_until - now_ms))
        if client.penalty_until > now_ms:
            # Kept sending after a 429: ban, escalating.
            duration = min(BAN_FIRST_MS * 2**client.bans, BAN_MAX_MS)
            client.bans += 1
            client.banned_until = now_ms + duration
            client.penalty_until = 0
            return Verdict(418, client.used, _seconds(duration))
        if client.used + weight > self.weight_limit:
            client.penalty_until = window + self.window_ms
            client.too_many += 1
            return Verdict(429, client.used, _seconds(client.penalty_until - now_ms))
        if client.raw + 1 > self.raw_limit:
            client.penalty_until = raw_window + self.raw_window_ms
            client.too_many += 1
            return Verdict(429, client.used, _seconds(client.penalty_until - now_ms))
        client.used += weight
        client.raw += 1
        return Verdict(200, client.used)

    def state(self, now_ms: int) -> dict[str, dict[str, int]]:
        return {
            ip: {
                "used_weight": c.used if c.window == now_ms - now_ms % self.window_ms else 0,
                "banned_for_ms": max(0, c.banned_until - now_ms),
                "bans": c.bans,
                "429s": c.too_many,
            }
            for ip, c in self.clients.items()
        }


def _seconds(ms: int) -> int:
    return max(1, -(-ms // 1000))

"""The request budget: pure bookkeeping, no I/O, time passed in.

JEX counts request weight per IP over one minute (reported in ``X-MBX-USED-WEIGHT-1M``)
and raw requests over five minutes; both limits are announced in ``exchangeInfo``
``rateLimits``. The API does not say whether a window is the fixed clock minute or the
last 60 seconds, so the budget is right under both. It allows itself ``limit *
fraction`` of each and tells the caller how long to wait before a request fits. Four
rules, each against a way collectors get banned:

* **A rolling window, a little longer than the exchange's**: the weight counted in the
  last ``window_ms + margin_ms`` never exceeds the allowance (raw requests: the last
  ``raw_window_ms + margin_ms``). Whatever the exchange counts in a clock minute, or in
  any 60 seconds, was reserved within such a span (the margin covers our clock's error
  and a request's time in flight), so neither kind of window goes over. A request that
  does not fit waits until enough of the oldest weight has left the span, not for the
  next clock minute: the weight flows at the allowance whichever kind the exchange keeps.
* **The exchange's count wins**: what ``X-MBX-USED-WEIGHT-1M`` holds beyond our own
  weight is others' (another process on the same IP), and others are taken to go on
  spending as much per window: their level from the last count read is added to our
  weight for a span after it (not only until their weight leaves the window: a span
  emptied while we sent nothing, and so read nothing, must not hand us their share).
  Which of our weight the exchange holds depends on its kind of window, which its
  counts show (:meth:`WeightBudget._read_kind`): a fixed window's count falls at each
  minute's start, or stays below our own weight of half a minute ago. After two minutes
  in a row with such a sign, the count is compared with our weight of this clock minute,
  and a new minute is expected to bring others' weight of the one before (a fixed count
  starts from 0 each minute, but they go on), until a count falls within a minute,
  which only a rolling window does.
* **Pacing**: weight also flows through a token bucket refilled at the allowance
  per minute and holding at most ``burst_s`` seconds of it, so a minute's
  weight is spread over the minute instead of fired in its first second. The
  bucket starts at ``start_fill`` of its capacity: that is the start-up ramp
  (the burst of every job firing at once is the classic way to get banned).
* **Backing off after a 429**: :meth:`WeightBudget.penalize` lowers the allowance to
  ``penalty_factor`` of itself for ``penalty_ms`` and empties the bucket.

And one rule of priority: **snapshots first**. A snapshot missed (a depth or a
ticker) is lost for good; history (trades, klines, funding and fund pages) is
fetched later from its cursor. ``snapshot_reserve`` is the weight per window kept for
snapshots; the daemon sets it to what its snapshot jobs need (at most
:data:`MAX_SNAPSHOT_SHARE` of the allowance, so history always advances). History
requests (``reserve(..., history=True)``) leave room in the span for the part of the
reserve the snapshots have not used in it. The pacing bucket is shared; the client's
queue (turns.py) gives it to a waiting snapshot before any waiting history request.

The bookkeeping is cheap: one entry per millisecond with reservations, dropped from the
front as it leaves the span (amortized O(1) a request); only a request that has to wait
looks further, as far as the weight it needs, and our weight of half a minute ago is
summed at most once a second.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from collector.units import MINUTE_MS, SECOND_MS

WINDOW_MS = MINUTE_MS
RAW_WINDOW_MS = 5 * MINUTE_MS
#: How much longer than the exchange's window a reservation is counted: our estimate of
#: the exchange's clock is off by some ms, and a request arrives after it was reserved.
MARGIN_MS = SECOND_MS
#: How near a minute's start the counts are read for a sign of a fixed window.
SIGN_MS = 10 * SECOND_MS
#: How long a fixed window is believed without a sign (or a count falling in a minute).
FIXED_BELIEF_MS = 30 * MINUTE_MS
#: The largest share of the allowance kept for snapshots: history keeps the rest.
MAX_SNAPSHOT_SHARE = 0.75

WaitReason = Literal["", "window", "raw", "pace", "paused"]


class _Span:
    """Amounts reserved over the last ``length_ms``: [reserved at, amount], oldest first."""

    __slots__ = ("entries", "length_ms", "total")

    def __init__(self, length_ms: int) -> None:
        self.length_ms = length_ms
        self.total = 0
        self.entries: deque[list[int]] = deque()

    def count(self, now_ms: int) -> int:
        entries = self.entries
        while entries and entries[0][0] <= now_ms - self.length_ms:
            self.total -= entries.popleft()[1]
        return self.total

    def add(self, amount: int, now_ms: int) -> None:
        self.total += amount
        entries = self.entries
        if entries and entries[-1][0] == now_ms:
            entries[-1][1] += amount
        else:
            entries.append([now_ms, amount])

    def ms_until(self, room: int, now_ms: int) -> int:
        """How long until the count is at most ``room`` (after :meth:`count`): until
        enough of the oldest entries have left. A negative ``room``: a whole span."""
        if self.total <= room:
            return 0
        if room < 0:
            return self.length_ms
        left = self.total
        for reserved_at, amount in self.entries:
            left -= amount
            if left <= room:
                return max(1, reserved_at + self.length_ms - now_ms)
        return self.length_ms  # not reached: the entries add up to the total

    def between(self, first_ms: int, last_ms: int) -> int:
        """The amount reserved from ``first_ms`` to ``last_ms``."""
        amount = 0
        for reserved_at, entry in self.entries:
            if reserved_at > last_ms:
                break
            if reserved_at >= first_ms:
                amount += entry
        return amount


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
    #: Weight per window kept for snapshot requests (see the module).
    snapshot_reserve: int = 0
    #: How much longer than the exchange's windows reservations are counted.
    margin_ms: int = MARGIN_MS

    #: The weight counted at the last call: ours in the span, and others' level.
    used: int = 0
    #: Raw requests in the raw span at the last call.
    raw_used: int = 0
    #: The start of the clock window (minute) of the last call: for once-a-window logs.
    window_start: int = field(default=-1)
    #: Until when the exchange is taken to count weight per clock minute (see the module).
    fixed_until: int = 0
    #: Others' weight per window at the last count read, assumed to go on until
    #: ``others_level_until``.
    others_level: int = 0
    others_level_until: int = 0
    penalty_until: int = 0
    #: Why the last :meth:`reserve` said wait (for log lines).
    last_wait: WaitReason = ""
    _tokens: float | None = field(default=None, repr=False)
    _tokens_at: int = field(default=0, repr=False)
    #: Our weight; our snapshots' weight; our raw requests.
    _own: _Span = field(init=False, repr=False)
    _snapshots: _Span = field(init=False, repr=False)
    _requests: _Span = field(init=False, repr=False)
    #: This clock minute's weight: ours, and the most of others' read (as a fixed
    #: window counts it); what a minute is expected to bring them (:meth:`_new_minute`).
    _own_this_minute: int = field(default=0, repr=False)
    _others_this_minute: int = field(default=0, repr=False)
    _others_expected: int = field(default=0, repr=False)
    #: For :meth:`_read_kind`: the minute of the last sign of a fixed window, the last
    #: count read (outside a minute's first ``margin_ms``) and when, the highest count
    #: read this minute, and when our weight of half a minute ago was last summed.
    _fixed_sign_minute: int = field(default=-1, repr=False)
    _header: int = field(default=0, repr=False)
    _header_at: int = field(default=-MINUTE_MS, repr=False)
    _minute_high: int = field(default=0, repr=False)
    _summed_at: int = field(default=-SECOND_MS, repr=False)

    def __post_init__(self) -> None:
        span = self.window_ms + self.margin_ms
        self._own, self._snapshots = _Span(span), _Span(span)
        self._requests = _Span(self.raw_window_ms + self.margin_ms)

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

    def kept_for_snapshots(self, allowed: int) -> int:
        """The weight of a window of ``allowed`` kept for snapshot requests."""
        return min(self.snapshot_reserve, math.floor(allowed * MAX_SNAPSHOT_SHARE))

    # -- reserving -------------------------------------------------------------------------

    def reserve(self, weight: int, now_ms: int, *, history: bool = False) -> int:
        """Reserve one request of ``weight`` now and return 0, or return the ms to wait
        (nothing reserved; :attr:`last_wait` says which rule held it back).

        ``history``: a request whose data can be fetched later (a page of a series); it
        leaves the part of :attr:`snapshot_reserve` the snapshots have not used.
        A request heavier than the whole allowance is let through when nothing is
        counted, or it could never be sent.
        """
        self._count(now_ms)
        allowed = self.allowed_at(now_ms)
        capacity = self._refill(now_ms, allowed)
        assert self._tokens is not None
        kept = 0
        if history:
            kept = max(0, self.kept_for_snapshots(allowed) - self._snapshots.total)
        waits: list[tuple[int, WaitReason]] = []
        if weight > allowed:
            if self.used > 0:
                waits.append((self._ms_until_room(0, now_ms), "window"))
        elif self.used + weight > allowed - kept:
            # At least this long: a snapshot's weight leaving the span adds to ``kept``.
            waits.append((self._ms_until_room(allowed - kept - weight, now_ms), "window"))
        raw_allowed = self.raw_allowed
        if raw_allowed is not None and self.raw_used + 1 > raw_allowed:
            waits.append((self._requests.ms_until(raw_allowed - 1, now_ms), "raw"))
        needed = min(float(weight), capacity)
        if self._tokens < needed:
            rate = allowed / self.window_ms
            waits.append((max(1, math.ceil((needed - self._tokens) / rate)), "pace"))
        if waits:
            wait, self.last_wait = max(waits)
            return wait
        self._own.add(weight, now_ms)
        if not history:
            self._snapshots.add(weight, now_ms)
        self._requests.add(1, now_ms)
        self._own_this_minute += weight
        self.used += weight
        self.raw_used += 1
        self._tokens -= weight  # may go below zero for a request above the capacity
        self.last_wait = ""
        return 0

    def _count(self, now_ms: int) -> None:
        start = now_ms - now_ms % self.window_ms
        if start != self.window_start:
            self._new_minute(start, now_ms)
        self.used = self._own.count(now_ms)
        self._snapshots.count(now_ms)
        if now_ms < self.others_level_until:
            self.used += self.others_level
        self.raw_used = self._requests.count(now_ms)

    def _new_minute(self, start: int, now_ms: int) -> None:
        """A new clock minute. Under a fixed window others are expected to spend in it
        what they were seen to spend in the one before: its count starts from 0, but
        they go on."""
        expected = 0
        if now_ms < self.fixed_until and start == self.window_start + self.window_ms:
            expected = self._others_this_minute
            if expected > self.others_level or now_ms >= self.others_level_until:
                self.others_level = expected
                self.others_level_until = now_ms + self._own.length_ms
        self._others_expected = expected
        self.window_start = start
        self._own_this_minute = self._others_this_minute = self._minute_high = 0

    def _ms_until_room(self, room: int, now_ms: int) -> int:
        """How long until the weight counted is at most ``room`` (after :meth:`_count`):
        until enough of our oldest has left the span, beside others' level, or until
        their level lapses."""
        if now_ms >= self.others_level_until:
            return self._own.ms_until(room, now_ms)
        lapsed = self.others_level_until - now_ms
        if room < self.others_level:
            return lapsed
        return min(self._own.ms_until(room - self.others_level, now_ms), lapsed)

    def _refill(self, now_ms: int, allowed: int) -> float:
        capacity = self._capacity(allowed)
        if self._tokens is None:
            self._tokens = capacity * self.start_fill
        else:
            elapsed = max(0, now_ms - self._tokens_at)
            self._tokens = min(capacity, self._tokens + elapsed * allowed / self.window_ms)
        self._tokens_at = now_ms
        return capacity

    # -- the exchange's count --------------------------------------------------------------

    def observe(self, used_weight: int, now_ms: int) -> None:
        """Read the exchange's count ``used_weight`` (``X-MBX-USED-WEIGHT-1M``) at
        ``now_ms``: what it holds beyond our weight is others' (see the module)."""
        self._count(now_ms)
        fixed = now_ms < self.fixed_until
        if now_ms - self.window_start >= self.margin_ms:
            this_minute = used_weight - self._own_this_minute
            self._others_this_minute = max(self._others_this_minute, this_minute)
            self._read_kind(used_weight, now_ms)
            fixed = now_ms < self.fixed_until
        elif fixed:
            return  # a count of this minute or of the one before: no telling
        if fixed:
            level = max(used_weight - self._own_this_minute, self._others_expected)
        else:
            level = used_weight - self._own.total
        self.others_level = max(0, level)
        self.others_level_until = now_ms + self._own.length_ms
        self.used = self._own.total + self.others_level

    def _read_kind(self, used_weight: int, now_ms: int) -> None:
        """Update :attr:`fixed_until` from the count ``used_weight`` read at least
        ``margin_ms`` into the minute. Signs of a fixed window:

        * the count fell to less than half across the minute's start (both counts read
          within :data:`SIGN_MS` of it, the first at least a quarter of the allowance):
          others go on spending, so a rolling count seldom falls that fast;
        * the count is clearly below our own weight of 30 to 59 seconds ago, which a
          rolling window would hold whenever it answered in the last 29 seconds (summed
          once a second; the slack is for requests that never reached the exchange).

        Believed from the second minute in a row with a sign (one alone may be weight
        lost in a network outage), for :data:`FIXED_BELIEF_MS` after the last; no longer
        once a count falls within a minute by more than a burst's reordering could
        explain, which a fixed count never does.
        """
        into = now_ms - self.window_start
        fell_across = (
            self._header_at < self.window_start
            and into <= SIGN_MS
            and self.window_start - self._header_at <= SIGN_MS
            and self._header >= self.allowed // 4
            and used_weight < self._header // 2
        )
        fell_within = used_weight < self._minute_high - self.allowed // 4
        self._header, self._header_at = used_weight, now_ms
        self._minute_high = max(self._minute_high, used_weight)
        if fell_within:
            self.fixed_until = 0
            self._fixed_sign_minute = -1
            return
        if not (fell_across or self._below_our_weight(used_weight, now_ms)):
            return
        if self._fixed_sign_minute == self.window_start - self.window_ms or (
            now_ms < self.fixed_until
        ):
            self.fixed_until = now_ms + FIXED_BELIEF_MS
        self._fixed_sign_minute = self.window_start

    def _below_our_weight(self, used_weight: int, now_ms: int) -> bool:
        if now_ms - self._summed_at < SECOND_MS:
            return False
        self._summed_at = now_ms
        surely_held = self._own.between(
            now_ms - self.window_ms + self.margin_ms, now_ms - self.window_ms // 2
        )
        return used_weight + self.allowed // 10 < surely_held

    # -- after a 429, and the limits announced ---------------------------------------------

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
                self._requests.length_ms = window_ms + self.margin_ms

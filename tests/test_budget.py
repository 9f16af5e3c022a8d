"""The weight budget against the simulator's rate limiter, on a simulated clock.

The budget does not know whether the exchange counts weight per clock minute or over the
last 60 seconds (the API does not say). These runs offer more weight than the budget
allows, for several minutes, against a limiter of each kind, and check what a user cares
about: no 429, ever, and at least 90% of the allowance used in every clock minute as the
exchange counted it. Pure: no sockets, no sleeps; events run in time order.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

import pytest

from collector.exchange.budget import WeightBudget
from collector.exchange.gate import WINDOW_GUARD_MS
from collector.sim.limits import RateLimiter, WindowKind
from collector.units import MINUTE_MS, SECOND_MS

IP = "127.0.0.1"
LIMIT = 1200
RAW_LIMIT = 5000
FRACTION = 0.8
ALLOWED = int(LIMIT * FRACTION)  # 960
#: A Monday, on a minute boundary.
EPOCH_MS = 1_764_003_600_000
#: One way, client to exchange.
LATENCY_MS = 50


class Budget(Protocol):
    """What the harness needs of a budget (an older WeightBudget fits it too)."""

    @property
    def last_wait(self) -> str: ...
    def reserve(self, weight: int, now_ms: int, *, history: bool = False) -> int: ...
    def observe(self, used_weight: int, now_ms: int) -> None: ...


def daemon_budget() -> WeightBudget:
    """The budget as the daemon runs it after reading exchangeInfo: paced, ramping up."""
    return WeightBudget(limit=LIMIT, fraction=FRACTION, raw_limit=RAW_LIMIT)


@dataclass
class Run:
    """What the exchange (and our side) saw in one simulated run."""

    limiter: RateLimiter
    start_ms: int
    end_ms: int
    statuses: Counter[int] = field(default_factory=Counter)
    #: Our own admitted weight per clock minute (the limiter counts the whole IP).
    own_per_minute: Counter[int] = field(default_factory=Counter)
    #: The highest X-MBX-USED-WEIGHT-1M the exchange sent us.
    max_header: int = 0
    #: ms from a snapshot falling due to its reservation.
    snapshot_delays: list[int] = field(default_factory=list)
    #: Why reservations waited, by whether the request was a snapshot.
    waits: Counter[tuple[bool, str]] = field(default_factory=Counter)

    def per_minute(self) -> dict[int, int]:
        """The weight the exchange counted for the IP in each full clock minute of the run
        but the first one (the start-up ramp's)."""
        counted = self.limiter.state(self.end_ms)[IP]["weight_per_minute"]
        first = self.start_ms - self.start_ms % MINUTE_MS + MINUTE_MS
        if first - self.start_ms < MINUTE_MS:  # the minute started in is not a full one
            first += MINUTE_MS
        return {
            minute: counted.get(str(minute), 0)
            for minute in range(first, self.end_ms - MINUTE_MS + 1, MINUTE_MS)
        }


@dataclass
class _Process:
    """One process on the IP asking its budget as fast as it lets requests go."""

    budget: Budget
    clock_error_ms: int
    rng: random.Random
    turn: int = 0
    weight: int = 0


def drive(
    budget: Budget,
    window: WindowKind,
    *,
    phase_ms: int = 0,
    minutes: int = 7,
    clock_error_ms: int = 0,
    latency_ms: int = LATENCY_MS,
    foreign: tuple[int, int, int] | None = None,
    neighbour: tuple[int, Budget] | None = None,
    snapshots: tuple[int, int] | None = None,
    seed: int = 1,
) -> Run:
    """Offer requests of weight 1-5 as fast as ``budget`` lets them go, against a limiter
    counting in ``window``, from ``phase_ms`` past a minute boundary for ``minutes``.

    ``clock_error_ms``: how far the budget's idea of the exchange's clock is ahead;
    ``latency_ms``: one way, client to exchange.
    ``foreign``: (from ms into the run, weight, every ms): another process on the same IP,
    sending without a budget. ``neighbour``: (from ms into the run, its budget): another
    process on the IP with a budget of its own, offering as much as ours (a backfill
    beside the daemon). ``snapshots``: (weight, every ms): our snapshot requests fall
    due at that rate and go first; the rest of ours are history (pages of 5).
    Waits for the window or raw requests get the gate's guard, as in the client.
    """
    limiter = RateLimiter(LIMIT, RAW_LIMIT, window=window)
    start = EPOCH_MS + phase_ms
    run = Run(limiter, start, start + minutes * MINUTE_MS)
    events: list[tuple[int, int, str, int, Any]] = []
    order = itertools.count()

    def at(time_ms: int, kind: str, who: int = 0, payload: Any = None) -> None:
        heapq.heappush(events, (time_ms, next(order), kind, who, payload))

    def next_weight(process: _Process) -> int:
        return 5 if snapshots and process is ours else process.rng.randint(1, 5)

    ours = _Process(budget, clock_error_ms, random.Random(seed))
    processes = [ours]
    at(start, "try", 0, 0)
    if neighbour is not None:
        processes.append(_Process(neighbour[1], 0, random.Random(seed + 1)))
        at(start + neighbour[0], "try", 1, 0)
    for process in processes:
        process.weight = next_weight(process)
    if foreign is not None:
        at(start + foreign[0], "foreign")
    due: list[int] = []
    if snapshots is not None:
        at(start, "due")
    while events and events[0][0] < run.end_ms:
        now, _, kind, who, payload = heapq.heappop(events)
        process = processes[who]
        if kind == "due":
            assert snapshots is not None
            due.append(now)
            ours.turn += 1  # a snapshot takes the first place in the queue
            at(now, "try", 0, ours.turn)
            at(now + snapshots[1], "due")
        elif kind == "try" and payload == process.turn:
            snapshot = bool(due) and process is ours
            wanted = snapshots[0] if snapshots and snapshot else process.weight
            budget_now = now + process.clock_error_ms
            wait = process.budget.reserve(wanted, budget_now, history=not snapshot)
            if wait == 0:
                at(now + latency_ms, "arrive", who, wanted)
                if snapshot:
                    run.snapshot_delays.append(now - due.pop(0))
                else:
                    process.weight = next_weight(process)
                at(now, "try", who, process.turn)
            else:
                reason = process.budget.last_wait
                if process is ours:
                    run.waits[snapshot, reason] += 1
                guard = WINDOW_GUARD_MS if reason in ("window", "raw") else 0
                at(now + wait + guard, "try", who, process.turn)
        elif kind == "arrive":
            verdict = limiter.admit(IP, payload, now)
            if process is ours:
                run.statuses[verdict.status] += 1
                if verdict.status == 200:
                    run.own_per_minute[now - now % MINUTE_MS] += payload
                run.max_header = max(run.max_header, verdict.used_weight)
            at(now + latency_ms, "respond", who, verdict.used_weight)
        elif kind == "respond":
            process.budget.observe(payload, now + process.clock_error_ms)
        elif kind == "foreign":
            assert foreign is not None
            limiter.admit(IP, foreign[1], now)
            at(now + foreign[2], "foreign")
    return run


PHASES_MS = [0, 1, 20_000, 59_500]


@pytest.mark.parametrize("clock_error_ms", [-400, 0, 400])
@pytest.mark.parametrize("phase_ms", PHASES_MS)
@pytest.mark.parametrize("window", ["fixed", "rolling"])
def test_the_budget_uses_nine_tenths_of_its_allowance_every_minute_without_a_429(
    window: WindowKind, phase_ms: int, clock_error_ms: int
) -> None:
    run = drive(daemon_budget(), window, phase_ms=phase_ms, clock_error_ms=clock_error_ms)
    assert set(run.statuses) == {200}
    minutes = run.per_minute()
    assert len(minutes) >= 5
    assert all(weight >= 0.9 * ALLOWED for weight in minutes.values()), minutes
    # Within our own allowance too, as the exchange counts it, in either kind of window.
    assert run.max_header <= ALLOWED
    assert all(weight <= ALLOWED for weight in minutes.values()), minutes


@pytest.mark.parametrize("window", ["fixed", "rolling"])
def test_weight_another_process_spends_on_the_ip_slows_us_down_without_a_429(
    window: WindowKind,
) -> None:
    """From the third minute, another process on the IP sends 6 weight a second without
    a budget (360 a minute: ours at the full allowance would take the IP over the
    exchange's 1,200). The header shows it, and ours makes room."""
    run = drive(daemon_budget(), window, phase_ms=30_000, foreign=(150_000, 6, SECOND_MS))
    assert run.limiter.state(run.end_ms)[IP]["429s"] == 0  # theirs included
    assert set(run.statuses) == {200}
    shared = {m: w for m, w in run.per_minute().items() if m >= run.start_ms + 4 * MINUTE_MS}
    assert len(shared) >= 2
    for minute, weight in shared.items():
        # Ours gave way to theirs, and together they still used the allowance.
        assert run.own_per_minute[minute] <= ALLOWED - 360 // 2, (minute, run.own_per_minute)
        assert weight >= 0.9 * ALLOWED, (minute, weight)


@pytest.mark.parametrize("phase_ms", [0, 30_000])
@pytest.mark.parametrize("window", ["fixed", "rolling"])
def test_two_budgets_on_one_ip_make_room_for_each_other_without_a_429(
    window: WindowKind, phase_ms: int
) -> None:
    """A backfill beside the daemon: two processes, each with its own budget and as much
    demand, read each other's weight in the header. Neither gets a 429; together they
    use most of one allowance (racing each other, less evenly than one budget alone)."""
    for neighbour_from in (0, 150_000):
        neighbour = (neighbour_from, daemon_budget())
        run = drive(daemon_budget(), window, phase_ms=phase_ms, neighbour=neighbour, minutes=8)
        assert run.limiter.state(run.end_ms)[IP]["429s"] == 0
        shared = [w for m, w in run.per_minute().items() if m >= run.start_ms + 4 * MINUTE_MS]
        assert all(0.75 * ALLOWED <= weight < LIMIT for weight in shared), shared


@pytest.mark.parametrize("window", ["fixed", "rolling"])
def test_the_budget_reads_the_kind_of_window_from_the_counts(window: WindowKind) -> None:
    """Under a fixed window the header is compared with our weight of this clock minute,
    under a rolling one with our weight in the span: the counts show which."""
    budget = daemon_budget()
    run = drive(budget, window, minutes=4)
    assert (budget.fixed_until > run.end_ms) == (window == "fixed")


@pytest.mark.parametrize("window", ["fixed", "rolling"])
def test_history_leaves_the_snapshot_reserve_and_snapshots_never_wait_for_the_window(
    window: WindowKind,
) -> None:
    """Snapshots of 3 weight fall due every second (180 a minute, 200 kept for them);
    history pages of 5 fill the rest."""
    budget = daemon_budget()
    budget.snapshot_reserve = 200
    run = drive(budget, window, phase_ms=10_000, snapshots=(3, SECOND_MS))
    assert set(run.statuses) == {200}
    assert not [reason for (snapshot, reason) in run.waits if snapshot and reason == "window"]
    assert run.waits[False, "window"] > 0  # history did run into the window
    # Snapshots wait at most for the pacing bucket: none is a second late.
    assert max(run.snapshot_delays) < SECOND_MS
    assert len(run.snapshot_delays) >= 7 * 60 - 2
    minutes = run.per_minute()
    assert all(weight >= 0.9 * ALLOWED for weight in minutes.values()), minutes


# -- the budget's rules, one at a time ---------------------------------------------------------


def unpaced(limit: int, **options: Any) -> WeightBudget:
    return WeightBudget(limit=limit, fraction=1.0, burst_s=60, start_fill=1.0, **options)


def test_a_full_window_waits_until_the_oldest_weight_has_left_it() -> None:
    budget = unpaced(10)
    now = EPOCH_MS + 15_000
    assert budget.reserve(4, now) == 0
    assert budget.reserve(6, now + 10_000) == 0
    # Full: the first 4 leave 61 s (the window and the margin) after they were reserved,
    # not at the next clock minute.
    assert budget.reserve(3, now + 20_000) == 41_000
    assert budget.last_wait == "window"
    assert budget.reserve(3, now + 61_000) == 0
    # 5 more need the second reservation gone too.
    assert budget.reserve(5, now + 61_000) == 10_000


def test_the_exchanges_count_beyond_ours_is_anothers_for_a_span() -> None:
    budget = unpaced(100)
    now = EPOCH_MS + 10_000
    assert budget.reserve(10, now) == 0
    budget.observe(10, now + 100)  # only ours
    assert budget.used == 10
    budget.observe(70, now + 200)  # 60 someone else's
    assert budget.used == 70
    budget.observe(70, now + 300)  # the same 60: not counted twice
    assert budget.used == 70
    # Theirs are taken to go on for a span after the last count read (61 s).
    assert budget.reserve(41, now + 400) == 60_900
    assert budget.reserve(30, now + 400) == 0
    assert budget.used == 100
    budget.observe(40, now + 500)  # they stopped: the count holds only ours
    assert budget.used == 40
    assert budget.reserve(60, now + 600) == 0


def test_a_request_heavier_than_the_allowance_goes_alone_into_an_empty_window() -> None:
    budget = unpaced(10)
    assert budget.reserve(1, EPOCH_MS) == 0
    assert budget.reserve(40, EPOCH_MS) == 61_000
    assert budget.reserve(40, EPOCH_MS + 61_000) == 0


def test_raw_requests_leave_their_window_one_by_one() -> None:
    budget = unpaced(10_000, raw_limit=3)
    for second in range(3):
        assert budget.reserve(1, EPOCH_MS + second * 1_000) == 0
    assert budget.reserve(1, EPOCH_MS + 10_000) == 291_000
    assert budget.last_wait == "raw"
    assert budget.reserve(1, EPOCH_MS + 301_000) == 0
    assert budget.reserve(1, EPOCH_MS + 301_000) == 1_000


def test_the_bookkeeping_holds_one_entry_per_millisecond_and_drops_the_old() -> None:
    budget = unpaced(1_000_000)
    for i in range(10_000):
        assert budget.reserve(1, EPOCH_MS + i // 10) == 0  # ten requests a millisecond
    assert len(budget._own.entries) == 1_000
    assert budget.reserve(1, EPOCH_MS + 10 * MINUTE_MS) == 0
    assert budget.used == 1 and len(budget._own.entries) == 1

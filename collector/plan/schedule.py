"""What a schedule costs in request weight, and how to make it fit. Pure: no I/O.

The daemon computes a :class:`Plan` at start (and ``jex-collector plan`` prints it):
per job, the requests and weight of one round for the symbols the exchange lists
now, times rounds per minute, against the budget (the exchange's announced limits
times ``exchange.weight_fraction``).

When the schedule does not fit, intervals are stretched, with a priority: the
datasets whose completeness comes from paging by id or time (trades with an API
key, klines, funding rate, protection fund, and the instrument list that feeds
every job) keep their intervals; snapshots (depth and the tickers), which can only
lose frequency, are stretched first, up to :data:`MAX_SNAPSHOT_STRETCH` times.
Only when that is not enough are the paging jobs stretched too, never more than
the snapshots; they page, so a longer interval delays their rows without losing
any (except trades without an API key, which lose what happens between polls:
the plan says so).

Stretching is the daemon's way out; the plan also says what an operator could change
instead (:class:`Suggestion`): for the heaviest jobs, the interval (or the number of
symbols) at which that job alone makes the schedule fit, and a note when a schedule
fits with little room left. What the schedule costs in disk is :mod:`collector.plan.disk`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from collector import datasets
from collector.config import JobSettings, Settings

#: Share of the budget the steady schedule may plan for; the rest absorbs catch-up
#: pages, first-start backfills, clock syncs and symbols listed later.
HEADROOM = 0.95
#: Snapshots are stretched at most this much before the paging jobs give way.
MAX_SNAPSHOT_STRETCH = 10.0
#: A schedule using more than this share of what it may plan for gets a note.
CLOSE_TO_FULL = 0.8
#: Suggestions name at most this many jobs.
MAX_SUGGESTIONS = 3
#: Datasets complete by paging (by id or time) whatever their interval.
PAGING_JOBS = frozenset(d.name for d in datasets.DATASETS.values() if d.paging)


@dataclass(frozen=True)
class JobLoad:
    """One job's cost: a round over its markets and symbols, and how often it runs."""

    job: str
    markets: tuple[str, ...]
    symbols: int
    every: float
    requests: int  # per round
    weight: int  # per round
    paging: bool
    stretch: float = 1.0

    @property
    def planned_every(self) -> float:
        return stretched_interval(self.every, self.stretch)

    @property
    def weight_per_minute(self) -> float:
        return self.weight * 60 / self.planned_every

    @property
    def requests_per_minute(self) -> float:
        return self.requests * 60 / self.planned_every

    @property
    def wanted_weight_per_minute(self) -> float:
        return self.weight * 60 / self.every


@dataclass(frozen=True)
class Suggestion:
    """A change to one job that alone makes the schedule fit without stretching: a longer
    interval, or (for jobs that cost the same per symbol) fewer symbols. With ``together``,
    the interval is one of a set that fits only when all of them are applied."""

    job: str
    every: float
    fit_every: float
    symbols: int
    fit_symbols: int | None = None
    together: bool = False

    def text(self) -> str:
        change = f"every {duration_text(self.every)} -> {duration_text(self.fit_every)}"
        if self.fit_symbols is not None:
            change += f", or {self.symbols} -> {self.fit_symbols} symbols"
        return f"{self.job}: {change}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "every_s": self.every,
            "suggested_every_s": self.fit_every,
            "symbols": self.symbols,
            "suggested_symbols": self.fit_symbols,
            "together": self.together,
            "text": self.text(),
        }


@dataclass
class Plan:
    loads: list[JobLoad]
    weight_limit: int
    fraction: float
    raw_limit: int | None = None
    raw_interval_ms: int = 300_000
    notes: list[str] = field(default_factory=list)
    #: What the schedule may plan for per minute: weight, and raw requests (None: no limit).
    targets: tuple[float, float | None] = (math.inf, None)
    suggestions: list[Suggestion] = field(default_factory=list)
    #: The weight fraction at which the schedule would fit as written (None: none does).
    fit_fraction: float | None = None

    @property
    def allowed(self) -> int:
        return max(1, math.floor(self.weight_limit * self.fraction))

    @property
    def raw_allowed_per_minute(self) -> float | None:
        if self.raw_limit is None:
            return None
        return self.raw_limit * self.fraction * 60_000 / self.raw_interval_ms

    @property
    def wanted_weight_per_minute(self) -> float:
        return sum(load.wanted_weight_per_minute for load in self.loads)

    @property
    def weight_per_minute(self) -> float:
        return sum(load.weight_per_minute for load in self.loads)

    @property
    def requests_per_minute(self) -> float:
        return sum(load.requests_per_minute for load in self.loads)

    @property
    def fits(self) -> bool:
        """Whether the schedule as written fits the budget (with its headroom)."""
        return all(load.stretch == 1.0 for load in self.loads)

    @property
    def usage(self) -> float:
        """The schedule as written over what it may plan for (the tighter resource)."""
        weight_target, raw_target = self.targets
        shares = [self.wanted_weight_per_minute / max(weight_target, 1e-9)]
        if raw_target is not None:
            wanted_requests = sum(_rates(load)[1] for load in self.loads)
            shares.append(wanted_requests / max(raw_target, 1e-9))
        return max(shares)

    def intervals(self) -> dict[str, float]:
        """Every job's interval after stretching."""
        return {load.job: load.planned_every for load in self.loads}


def stretched_interval(every: float, factor: float) -> float:
    """``every * factor`` rounded up to a tenth of a second (whole seconds above 10 s)."""
    if factor <= 1.0:
        return every
    value = every * factor
    return float(math.ceil(value)) if value >= 10 else math.ceil(value * 10) / 10


def job_load(
    name: str, job: JobSettings, symbols: Callable[[JobSettings, str], int], has_api_key: bool
) -> JobLoad:
    """The requests and weight of one round of job ``name`` (its registry entry says how
    a round asks the exchange)."""
    dataset = datasets.get(name)
    endpoint = dataset.endpoints[0]
    if dataset.keyless_endpoint is not None and not has_api_key:
        endpoint = dataset.keyless_endpoint
    requests = weight = count = 0
    if dataset.request == "per_round":
        # One round asks for every symbol at once: the lists, or contractInfo.
        requests = len(dataset.endpoints)
        weight = sum(e.weight for e in dataset.endpoints)
        count = sum(symbols(job, market) for market in job.markets)
    else:
        for market in job.markets:
            n = symbols(job, market)
            count += n
            if dataset.request == "all_symbols_if_cheaper":
                r, w = endpoint.round_cost(n)
            else:
                r = n * (len(job.intervals) if dataset.per_interval else 1)
                w = r * endpoint.weight
            requests += r
            weight += w
    paging = dataset.paging and (dataset.keyless_endpoint is None or has_api_key)
    return JobLoad(name, tuple(job.markets), count, job.every, requests, weight, paging)


def make_plan(
    settings: Settings,
    symbols: Callable[[JobSettings, str], int],
    *,
    has_api_key: bool,
    weight_limit: int,
    raw_limit: int | None = None,
    raw_interval_ms: int | None = None,
) -> Plan:
    """The cost of ``settings``' enabled jobs and, when over budget, the stretch factors."""
    jobs = settings.enabled_jobs()
    # A dataset whose every endpoint needs the API key is not collected without one.
    keyless = [n for n in jobs if not has_api_key and datasets.get(n).needs_api_key]
    loads = [
        job_load(name, job, symbols, has_api_key)
        for name, job in jobs.items()
        if name not in keyless
    ]
    plan = Plan(
        loads,
        weight_limit,
        settings.exchange.weight_fraction,
        raw_limit,
        raw_interval_ms or 300_000,
    )
    background = 60 / settings.exchange.clock_sync_every  # /api/v1/time, weight 1
    targets = [plan.allowed * HEADROOM - background]
    raw_per_minute = plan.raw_allowed_per_minute
    if raw_per_minute is not None:
        targets.append(raw_per_minute * HEADROOM - background)
    paging = [_rates(load) for load in loads if load.paging]
    snapshots = [_rates(load) for load in loads if not load.paging]
    keep = [sum(rate[i] for rate in paging) for i in range(len(targets))]
    spare = [sum(rate[i] for rate in snapshots) for i in range(len(targets))]
    paging_factor, snapshot_factor = _solve(keep, spare, targets)
    plan.loads = [
        _with_stretch(load, paging_factor if load.paging else snapshot_factor) for load in loads
    ]
    plan.targets = (targets[0], targets[1] if len(targets) > 1 else None)
    _explain(plan, paging_factor, snapshot_factor, has_api_key)
    if keyless:
        plan.notes.append(
            f"{', '.join(keyless)}: not collected without an API key (set JEX_API_KEY)"
        )
    if not plan.fits:
        plan.suggestions = suggest(plan)
        plan.fit_fraction = _fit_fraction(plan, background)
        plan.notes.extend(_advice(plan))
    elif plan.usage > CLOSE_TO_FULL:
        plan.notes.append(_close_note(plan))
    return plan


def _rates(load: JobLoad) -> tuple[float, float]:
    return load.wanted_weight_per_minute, load.requests * 60 / load.every


def _with_stretch(load: JobLoad, factor: float) -> JobLoad:
    if factor <= 1.0 or load.weight == 0:
        return load
    return JobLoad(
        load.job,
        load.markets,
        load.symbols,
        load.every,
        load.requests,
        load.weight,
        load.paging,
        factor,
    )


def _solve(keep: list[float], spare: list[float], targets: list[float]) -> tuple[float, float]:
    """Stretch factors (paging, snapshots) so that keep/fp + spare/fs <= target for each
    resource (weight, raw requests), stretching snapshots first."""
    if all(k + s <= t for k, s, t in zip(keep, spare, targets, strict=True)):
        return 1.0, 1.0
    snapshot = max(
        (s / (t - k) if t > k else math.inf) if s > 0 else 1.0
        for k, s, t in zip(keep, spare, targets, strict=True)
    )
    if snapshot <= MAX_SNAPSHOT_STRETCH and all(k <= t for k, t in zip(keep, targets, strict=True)):
        return 1.0, max(1.0, snapshot)
    left = [t - s / MAX_SNAPSHOT_STRETCH for s, t in zip(spare, targets, strict=True)]
    if all(value > 0 for value in left):
        paging = max(k / value for k, value in zip(keep, left, strict=True))
        if paging <= MAX_SNAPSHOT_STRETCH:
            return max(1.0, paging), MAX_SNAPSHOT_STRETCH
    # A budget this small: everything alike, so paging jobs never fall behind snapshots.
    factor = max((k + s) / max(t, 1e-9) for k, s, t in zip(keep, spare, targets, strict=True))
    return factor, factor


def _explain(plan: Plan, paging: float, snapshot: float, has_api_key: bool) -> None:
    if plan.fits:
        return
    wanted = plan.wanted_weight_per_minute
    plan.notes.append(
        f"the schedule needs {wanted:.0f} weight per minute; the budget is {plan.allowed} "
        f"({plan.fraction:g} of the exchange's {plan.weight_limit}), planned to "
        f"{HEADROOM:.0%} of it"
    )
    raw = plan.raw_allowed_per_minute
    if raw is not None and sum(_rates(load)[1] for load in plan.loads) > raw * HEADROOM:
        plan.notes.append(
            f"it also sends {sum(_rates(load)[1] for load in plan.loads):.0f} requests per "
            f"minute; the raw-request budget is {raw:.0f} per minute"
        )
    if snapshot > 1.0:
        plan.notes.append(
            f"snapshot jobs (depth, tickers) are stretched x{snapshot:.2f}; paging jobs "
            + ("keep their intervals" if paging <= 1.0 else f"are stretched x{paging:.2f}")
        )
    keyless = [load for load in plan.loads if datasets.get(load.job).keyless_endpoint]
    if paging > 1.0 and not has_api_key and keyless:
        plan.notes.append(
            "trades without an API key read only the last 60 trades per poll: a longer "
            "interval can lose trades on busy symbols (set JEX_API_KEY)"
        )


# -- what to change ---------------------------------------------------------------------------

#: Intervals suggestions round up to: values people write in schedules.yaml.
_NICE_SECONDS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 45)
_NICE_MINUTES = (1, 1.5, 2, 3, 4, 5, 10, 15, 20, 30, 60)
_NICE_INTERVALS = tuple(float(s) for s in _NICE_SECONDS) + tuple(60.0 * m for m in _NICE_MINUTES)
#: Jobs whose weight and requests grow in proportion to their symbols (no all-symbols form).
_PER_SYMBOL_JOBS = frozenset(
    d.name for d in datasets.DATASETS.values() if d.request == "per_symbol"
)


def nice_interval(seconds: float) -> float:
    """The smallest interval people would write that is at least ``seconds``."""
    if seconds < 1:
        return math.ceil(seconds * 10) / 10
    for value in _NICE_INTERVALS:
        if value >= seconds - 1e-9:
            return value
    return float(math.ceil(seconds / 3600) * 3600)


def suggest(plan: Plan) -> list[Suggestion]:
    """Changes that make ``plan`` fit as written (without stretching), heaviest jobs first.

    Each suggestion alone fits; when no single job can give enough, the heaviest jobs
    are lengthened together (``together``) and only the whole set fits."""
    targets = [t for t in plan.targets if t is not None]
    wanted = [sum(_rates(load)[i] for load in plan.loads) for i in range(len(targets))]
    excess = [w - t for w, t in zip(wanted, targets, strict=True)]
    if any(t <= 0 for t in targets):
        return []  # not even an empty schedule fits: only a larger budget helps
    heaviest = sorted(
        (load for load in plan.loads if load.weight),
        key=lambda load: -load.wanted_weight_per_minute,
    )
    alone: list[Suggestion] = []
    for load in heaviest:
        rates = _rates(load)
        if all(e <= 0 or r > e for r, e in zip(rates, excess, strict=False)):
            alone.append(_alone(load, rates, excess))
            if len(alone) == MAX_SUGGESTIONS:
                break
    if alone:
        return alone
    # No job alone: lengthen the heaviest ones by one factor, taking enough of them that
    # the factor stays moderate (their rates at least 1.5 times the excess).
    chosen: list[JobLoad] = []
    for load in heaviest:
        chosen.append(load)
        sums = [sum(_rates(c)[i] for c in chosen) for i in range(len(targets))]
        if all(e <= 0 or s >= 1.5 * e for s, e in zip(sums, excess, strict=True)):
            break
    sums = [sum(_rates(c)[i] for c in chosen) for i in range(len(targets))]
    if any(e > 0 and s <= e for s, e in zip(sums, excess, strict=True)):
        return []
    factor = max(s / (s - e) for s, e in zip(sums, excess, strict=True) if e > 0)
    return [
        Suggestion(
            load.job, load.every, nice_interval(load.every * factor), load.symbols, together=True
        )
        for load in chosen
    ]


def _alone(load: JobLoad, rates: tuple[float, float], excess: list[float]) -> Suggestion:
    costs = (load.weight, load.requests)
    needed = max(costs[i] * 60 / (rates[i] - e) for i, e in enumerate(excess) if e > 0 and costs[i])
    fit_symbols = None
    if load.job in _PER_SYMBOL_JOBS and load.symbols > 1:
        keep = min((rates[i] - e) / rates[i] for i, e in enumerate(excess) if e > 0)
        fewer = math.floor(load.symbols * keep + 1e-9)
        fit_symbols = fewer if 1 <= fewer < load.symbols else None
    # A hair over, so that float rounding never lands the result a hair short.
    fit_every = nice_interval(needed * (1 + 1e-9))
    return Suggestion(load.job, load.every, fit_every, load.symbols, fit_symbols)


def _fit_fraction(plan: Plan, background: float) -> float | None:
    """The smallest ``exchange.weight_fraction`` (in hundredths) at which the schedule fits
    as written, or None when even 1 is not enough."""
    requests = sum(_rates(load)[1] for load in plan.loads)
    raw_per_minute = (
        plan.raw_limit * 60_000 / plan.raw_interval_ms if plan.raw_limit is not None else None
    )

    def fits(fraction: float) -> bool:
        allowed = max(1, math.floor(plan.weight_limit * fraction))
        if plan.wanted_weight_per_minute > allowed * HEADROOM - background:
            return False
        return (
            raw_per_minute is None or requests <= raw_per_minute * fraction * HEADROOM - background
        )

    start = math.ceil(plan.fraction * 100)
    return next((n / 100 for n in range(start, 101) if fits(n / 100)), None)


def _advice(plan: Plan) -> list[str]:
    lines: list[str] = []
    alone = [s for s in plan.suggestions if not s.together]
    if alone:
        lines.append(
            "to fit without stretching, any one of: "
            + "; ".join(s.text() for s in alone)
            + "; or disable jobs you do not need"
        )
    elif plan.suggestions:
        lines.append(
            "to fit without stretching, all of: "
            + "; ".join(s.text() for s in plan.suggestions)
            + "; or poll fewer symbols (jobs.<job>.symbols)"
        )
    else:
        lines.append("the budget is too small for any schedule: check the exchange's weight limit")
    if plan.fit_fraction is not None:
        lines.append(
            f"or raise exchange.weight_fraction from {plan.fraction:g} to "
            f"{plan.fit_fraction:g} (less room for other processes on this IP)"
        )
    return lines


def _close_note(plan: Plan) -> str:
    """How close a fitting schedule is, and how many more symbols it has room for."""
    weight_target = plan.targets[0]
    per_symbol = sum(
        load.weight / load.symbols * 60 / load.every
        for load in plan.loads
        if load.job in _PER_SYMBOL_JOBS and load.symbols
    )
    room = ""
    if per_symbol > 0:
        more = max(0, math.floor((weight_target - plan.wanted_weight_per_minute) / per_symbol))
        room = f"; room for about {more} more symbol(s) polled by every per-symbol job"
    return (
        f"close to the limit: the schedule takes {plan.usage:.0%} of what it may plan for "
        f"({HEADROOM:.0%} of the budget){room}. New listings (options are listed weekly) "
        "can push it over; the daemon would then stretch the intervals"
    )


def duration_text(value: float) -> str:
    """Seconds as written in schedules.yaml: ``10s``, ``5m``."""
    if value >= 60 and value % 60 == 0:
        return f"{value / 60:g}m"
    return f"{value:g}s"

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
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from collector.config import JobSettings, Settings
from collector.exchange import endpoints
from collector.exchange.endpoints import Endpoint

#: Share of the budget the steady schedule may plan for; the rest absorbs catch-up
#: pages, first-start backfills, clock syncs and symbols listed later.
HEADROOM = 0.9
#: Snapshots are stretched at most this much before the paging jobs give way.
MAX_SNAPSHOT_STRETCH = 10.0
#: Datasets complete by paging (by id or time) whatever their interval.
PAGING_JOBS = frozenset({"trades", "klines", "funding_rate", "protection_fund", "instruments"})

_PER_SYMBOL: dict[str, Endpoint] = {
    "depth": endpoints.DEPTH,
    "avg_price": endpoints.AVG_PRICE,
    "funding_rate": endpoints.HISTORY_RATE,
    "protection_fund": endpoints.PROTECTION_FUND,
}
_CHEAPER_FORM: dict[str, Endpoint] = {
    "ticker_24hr": endpoints.TICKER_24HR,
    "ticker_price": endpoints.TICKER_PRICE,
    "book_ticker": endpoints.BOOK_TICKER,
    "indices_price": endpoints.INDICES_PRICE,
}


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


@dataclass
class Plan:
    loads: list[JobLoad]
    weight_limit: int
    fraction: float
    raw_limit: int | None = None
    raw_interval_ms: int = 300_000
    notes: list[str] = field(default_factory=list)

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
    """The requests and weight of one round of job ``name``."""
    requests = weight = count = 0
    if name in ("instruments", "contract_info"):
        # One request for every symbol: the lists (exchangeInfo + optionInfo) or contractInfo.
        group = (
            (endpoints.EXCHANGE_INFO, endpoints.OPTION_INFO)
            if name == "instruments"
            else (endpoints.CONTRACT_INFO,)
        )
        requests, weight = len(group), sum(endpoint.weight for endpoint in group)
        count = sum(symbols(job, market) for market in job.markets)
    else:
        for market in job.markets:
            n = symbols(job, market)
            count += n
            if name in _CHEAPER_FORM:
                r, w = _CHEAPER_FORM[name].round_cost(n)
            elif name == "trades":
                endpoint = endpoints.HISTORICAL_TRADES if has_api_key else endpoints.TRADES
                r, w = n, n * endpoint.weight
            elif name == "klines":
                r = n * len(job.intervals)
                w = r * endpoints.KLINES.weight
            else:
                r, w = n, n * _PER_SYMBOL[name].weight
            requests += r
            weight += w
    paging = name in PAGING_JOBS and (name != "trades" or has_api_key)
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
    loads = [
        job_load(name, job, symbols, has_api_key) for name, job in settings.enabled_jobs().items()
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
    _explain(plan, paging_factor, snapshot_factor, has_api_key)
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
    if paging > 1.0 and not has_api_key and any(load.job == "trades" for load in plan.loads):
        plan.notes.append(
            "trades without an API key read only the last 60 trades per poll: a longer "
            "interval can lose trades on busy symbols (set JEX_API_KEY)"
        )
    plan.notes.append(
        "to fit without stretching: poll fewer symbols (jobs.<job>.symbols), lengthen "
        "`every` of the heaviest jobs above, or disable jobs you do not need"
    )


def format_plan(plan: Plan) -> str:
    """The plan as a plain-text table (for the log and ``jex-collector plan``)."""
    header = (
        "job",
        "markets",
        "symbols",
        "every",
        "req/round",
        "weight/round",
        "weight/min",
        "planned every",
        "planned weight/min",
    )
    rows = [
        (
            load.job,
            ",".join(load.markets) if load.job != "instruments" else "all",
            str(load.symbols),
            _seconds(load.every),
            str(load.requests),
            str(load.weight),
            f"{load.wanted_weight_per_minute:.0f}",
            _seconds(load.planned_every) + ("" if load.stretch == 1.0 else " *"),
            f"{load.weight_per_minute:.0f}",
        )
        for load in sorted(plan.loads, key=lambda load: -load.wanted_weight_per_minute)
    ]
    rows.append(
        (
            "total",
            "",
            "",
            "",
            "",
            "",
            f"{plan.wanted_weight_per_minute:.0f}",
            "",
            f"{plan.weight_per_minute:.0f}",
        )
    )
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if i < 2 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in (header, *rows)
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    raw = plan.raw_allowed_per_minute
    lines.append(
        f"budget: {plan.allowed} weight/min ({plan.fraction:g} x exchange limit "
        f"{plan.weight_limit})"
        + (
            f", {raw:.0f} requests/min ({plan.fraction:g} x {plan.raw_limit} per "
            f"{plan.raw_interval_ms // 60_000} min); planned {plan.requests_per_minute:.0f}"
            " requests/min"
            if raw is not None
            else ""
        )
    )
    lines.append("fits" if plan.fits else "does not fit: intervals marked * are stretched")
    lines.extend(f"- {note}" for note in plan.notes)
    return "\n".join(lines)


def _seconds(value: float) -> str:
    if value >= 60 and value % 60 == 0:
        return f"{value / 60:g}m"
    return f"{value:g}s"

"""Waiting for the exchange to let a request go: while it has told us to pause, and until
the request fits the budget (:mod:`collector.exchange.budget`), in turns
(:mod:`collector.exchange.turns`): snapshots before history, first come, first served
within each."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from collector import datasets
from collector.errors import RateLimitError
from collector.exchange.budget import WeightBudget
from collector.exchange.clock import ExchangeClock
from collector.exchange.turns import HISTORY, SNAPSHOT, Turns

#: The client's logger: these lines are the client's, as they were before this module
#: was split from it (a logging configuration that names the client still covers them).
log = logging.getLogger("collector.exchange.client")

#: Waits shorter than this are slept through; longer ones fail the request at once
#: (the job's round is skipped) rather than holding a job for minutes or days.
MAX_INLINE_WAIT_S = 30.0


#: Endpoints whose data the jobs page through from a cursor (the registry's paged
#: datasets): what a request misses now is fetched later. They yield the budget to the
#: snapshot endpoints (budget.py).
HISTORY_ENDPOINTS = frozenset(
    endpoint.name
    for spec in datasets.DATASETS.values()
    if spec.kind in ("id_paged", "time_paged")
    for endpoint in spec.endpoints
)
#: How far past the next weight window a waiting request is sent.
WINDOW_GUARD_MS = 500


class Gate:
    """Where the client's requests wait for their turn at ``budget``.

    ``paused_until`` says until when (local monotonic seconds) the exchange told us to
    send nothing; ``sleep`` is the client's, so that a test's clock drives the waits."""

    def __init__(
        self,
        budget: WeightBudget,
        clock: ExchangeClock,
        *,
        paused_until: Callable[[], float],
        monotonic: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self.budget = budget
        self.clock = clock
        self._paused_until = paused_until
        self._monotonic = monotonic
        self._sleep = sleep
        self._turns = Turns()
        self._budget_logged_window = -1

    async def wait_until_allowed(self, weight: int, context: dict[str, Any]) -> None:
        """Wait until the budget lets a request of ``weight`` go, and reserve it.

        Requests take turns (turns.py): snapshots before history (:data:`HISTORY_ENDPOINTS`,
        which also leave the budget's ``snapshot_reserve`` of each window to snapshots),
        first come, first served within each. Only the first in the queue asks the budget
        and waits what it says, pacing and window waits alike."""
        history = context["endpoint"] in HISTORY_ENDPOINTS
        async with self._turns.queue(HISTORY if history else SNAPSHOT) as turn:
            while True:
                wait_s: float | None = None
                if turn.first:
                    wait_s = self._wait_or_reserve(weight, context, history)
                    if wait_s <= 0:
                        return
                await turn.wait(wait_s, self._sleep)

    def _wait_or_reserve(self, weight: int, context: dict[str, Any], history: bool) -> float:
        """0 after reserving the request, else the seconds to wait (logged once a window)."""
        paused_until = self._paused_until()
        pause = paused_until - self._monotonic()
        if pause > MAX_INLINE_WAIT_S:
            raise RateLimitError(
                f"the exchange asked us to pause; sending nothing for {pause:.0f}s more",
                retry_at=paused_until,
                **context,
            )
        if pause > 0:
            return pause
        now = self.clock.now_ms()
        wait_ms = self.budget.reserve(weight, now, history=history)
        if wait_ms <= 0:
            return 0.0
        if self.budget.last_wait == "pace":
            # Pacing waits are short and normal: the minute's weight is spread out.
            return wait_ms / 1000
        if self.budget.window_start != self._budget_logged_window and not history:
            self._budget_logged_window = self.budget.window_start
            raw = self.budget.last_wait == "raw"
            log.info(
                "%s budget reached (%d of %d %s, exchange limit %d): requests wait "
                "%.0fs for the oldest to leave the window",
                "raw-request" if raw else "weight",
                self.budget.raw_used if raw else self.budget.used,
                (self.budget.raw_allowed or 0) if raw else self.budget.allowed_at(now),
                "in the last five minutes" if raw else "in the last minute",
                (self.budget.raw_limit or 0) if raw else self.budget.limit,
                wait_ms / 1000,
            )
        # Wait a little past the boundary: our estimate of the exchange clock is off
        # by a few ms, and a burst that lands just before the exchange's window
        # rolls over counts against the full old one.
        return (wait_ms + WINDOW_GUARD_MS) / 1000

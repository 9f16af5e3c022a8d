"""Whose turn it is at the request budget: snapshots before history, and first come,
first served within each.

A snapshot missed (a depth or a ticker) is lost for good; a page of history is fetched
later from its cursor. So requests queue for the budget in two classes: a snapshot
request goes before every history request waiting, even one that queued earlier and is
waiting for the pacing bucket or the next window. Within a class the order is arrival,
so no request is sent to the back of the queue again and again.

Only the first request in the queue asks the budget (and waits what it says); the others
wait until the first changes: when it is sent, cancelled, or a request of a higher class
arrives and takes its place. The sleep is the client's, so a test's clock drives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

#: The two classes, in the order they are served.
SNAPSHOT: Final = 0
HISTORY: Final = 1


class Turn:
    """One request's place in the queue."""

    def __init__(self, turns: Turns, key: tuple[int, int]) -> None:
        self._turns = turns
        self.key = key

    @property
    def first(self) -> bool:
        return self._turns.first == self.key

    async def wait(self, seconds: float | None, sleep: Callable[[float], Awaitable[None]]) -> None:
        """Wait ``seconds`` (``None``: no limit), or less if the first in the queue changes."""
        changed = self._turns.changed
        if seconds is None:
            await changed.wait()
            return
        sleeper = asyncio.ensure_future(sleep(seconds))
        watcher = asyncio.ensure_future(changed.wait())
        try:
            await asyncio.wait({sleeper, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, watcher):
                task.cancel()
            # Collect the cancelled tasks, so none is left pending or logged as never
            # retrieved; a cancellation of this wait itself still propagates.
            await asyncio.gather(sleeper, watcher, return_exceptions=True)


class Turns:
    """The queue of requests waiting for the budget (see the module)."""

    def __init__(self) -> None:
        self._queue: list[tuple[int, int]] = []
        self._arrivals = itertools.count()
        #: Set (and replaced) whenever the first in the queue changes.
        self.changed = asyncio.Event()

    @property
    def first(self) -> tuple[int, int] | None:
        return self._queue[0] if self._queue else None

    def __len__(self) -> int:
        return len(self._queue)

    @contextlib.asynccontextmanager
    async def queue(self, priority: int) -> AsyncIterator[Turn]:
        """Join the queue in class ``priority``; leave it on exit (sent or cancelled)."""
        key = (priority, next(self._arrivals))
        before = self.first
        heapq.heappush(self._queue, key)
        if self.first != before:
            self._notify()
        try:
            yield Turn(self, key)
        finally:
            was_first = self.first == key
            self._queue.remove(key)
            heapq.heapify(self._queue)
            if was_first:
                self._notify()

    def _notify(self) -> None:
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()

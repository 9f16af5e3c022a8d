"""How far a page may move a cursor when some of its records could not be read. Pure.

Trades, funding rates, the protection fund and klines are paged by a cursor (the
largest id or open time archived). If a page's parser set a record aside and the
cursor moved past it anyway, the next round would start after it and the record
would be lost for good. So a page is kept only below its first unreadable
record, the round stops there, and the next round asks again from that place
(the fault is usually gone by then). A record the exchange serves broken every
time would stop the series for ever, so after :data:`UNREADABLE_ROUNDS` rounds in
a row stuck at the same place it is given up: the cursor steps over it alone.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

#: Rounds in a row stuck at one unreadable record before it is skipped.
UNREADABLE_ROUNDS = 5


def first_unread(
    keys: Sequence[int],
    rejected_keys: Sequence[int | None],
    after: int | None,
    step: int = 1,
) -> int | None:
    """The first key of a page that cannot be vouched for, or None if nothing is missing.

    Rows with a smaller key are complete; rows from it on must be fetched again.

    ``keys``: the keys read from the page, sorted and unique (all greater than
    ``after``). ``rejected_keys``: the key of each record set aside, None where even
    the key could not be read. ``after``: the cursor the page was asked from (None on
    first contact: the page's own first key is the start). ``step``: the distance of
    consecutive keys (1 for ids, the interval for klines). A record whose key could
    not be read is somewhere in the page: the first gap in ``after + step``,
    ``after + 2 * step``, ... is the earliest place it can be.
    """
    relevant = [k for k in rejected_keys if k is None or after is None or k > after]
    known = [k for k in relevant if k is not None]
    bound = min(known) if known else None
    if len(known) < len(relevant):
        expected = after + step if after is not None else (keys[0] if keys else None)
        if expected is not None:
            for key in keys:
                if key != expected:
                    break
                expected += step
            bound = expected if bound is None else min(bound, expected)
    return bound


def last_unread_below(
    keys: Sequence[int], rejected_keys: Sequence[int | None], before: int, step: int = 1
) -> int | None:
    """:func:`first_unread` for a page read backwards from ``before`` (exclusive): rows
    with a larger key than the result are complete."""
    bound = first_unread(
        [-k for k in reversed(keys)],
        [None if k is None else -k for k in rejected_keys],
        -before,
        step,
    )
    return None if bound is None else -bound


@dataclass
class Stalls:
    """Rounds in a row in which a cursor could not move past an unreadable record."""

    rounds: dict[Hashable, tuple[int, int]] = field(default_factory=dict)

    def stuck(self, key: Hashable, cursor: int) -> int:
        """Count one more round stuck at ``cursor``; return how many in a row."""
        last, count = self.rounds.get(key, (cursor, 0))
        count = count + 1 if last == cursor else 1
        self.rounds[key] = (cursor, count)
        return count

    def moved(self, key: Hashable) -> None:
        self.rounds.pop(key, None)

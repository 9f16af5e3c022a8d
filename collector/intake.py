"""From a response to rows: parse, and report what could not be read.

The jobs pass every response through :func:`parse`. A payload a parser cannot
read at all raises :class:`PayloadError`; records a parser set aside are logged;
both go to the quarantine (:mod:`collector.quarantine`) with the raw body. An
undocumented field is logged once per (endpoint, field) and otherwise ignored.

For paged series, :func:`cut_at_unreadable` keeps a cursor from moving past a
record that was set aside (the rule is in :mod:`collector.paging`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from collector import paging
from collector.errors import PayloadError
from collector.exchange import parsers
from collector.exchange.client import Response
from collector.exchange.parsers import Parsed

if TYPE_CHECKING:
    from collector.jobs import Cursor, JobContext

log = logging.getLogger(__name__)

#: Undocumented (endpoint, field) pairs noted in the log at most: an exchange that
#: invents new names all the time must not fill it.
MAX_UNKNOWN_FIELDS = 100

P = ParamSpec("P")
T = TypeVar("T")


def parse(
    ctx: JobContext,
    response: Response,
    parser: Callable[Concatenate[Any, P], T],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """``parser(response.payload, *args)``; what cannot be read goes to the quarantine.

    A payload the parser cannot read at all raises :class:`PayloadError` (also for a
    parser's KeyError or ValueError: whatever the exchange sends is a payload
    problem, never a crash). For a :class:`Parsed` result, records set aside and
    undocumented fields are reported (:func:`report`).
    """
    try:
        result = parser(response.payload, *args, **kwargs)
    except (PayloadError, KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        error = exc
        if not isinstance(exc, PayloadError):
            error = PayloadError(
                f"payload not of the documented shape ({type(exc).__name__}: {exc})",
                endpoint=response.endpoint,
                market=response.market,
                symbol=response.params.get("symbol"),
            )
        if ctx.quarantine is not None:
            ctx.quarantine.wrong_shape(response, str(error))
        raise error from None
    if isinstance(result, Parsed):
        report(ctx, response, result)
    return result


def report(ctx: JobContext, response: Response, parsed: Parsed) -> None:
    """Log and quarantine the records set aside; log each new undocumented field once."""
    if parsed.rejected:
        record, reason = parsed.rejected[0]
        where = " ".join(
            part
            for part in (response.endpoint, response.market, response.params.get("symbol"))
            if part
        )
        log.warning(
            "%s: %d record(s) could not be read and were set aside; first: %s (%.200r)",
            where,
            len(parsed.rejected),
            reason,
            record,
        )
        if ctx.quarantine is not None:
            ctx.quarantine.rejected(response, parsed.rejected)
    seen = ctx.state.unknown_fields
    for endpoint, name in sorted(parsed.unknown_fields - seen):
        if len(seen) >= MAX_UNKNOWN_FIELDS:
            break
        seen.add((endpoint, name))
        log.warning("exchange sent an undocumented field %r in %s; ignored", name, endpoint)
        if len(seen) == MAX_UNKNOWN_FIELDS:
            log.warning("%d undocumented fields noted; no more are logged", len(seen))


def id_of(record: Any) -> int | None:
    """The id of a trade, funding or fund record set aside, if that much is readable."""
    try:
        return parsers.integer(record["id"])
    except (KeyError, TypeError, ValueError, IndexError):
        return None


def open_time_of(record: Any) -> int | None:
    """The open time of a kline set aside, if that much is readable."""
    try:
        return parsers.millis(record[0]) if isinstance(record, list) else None
    except (TypeError, ValueError, IndexError):
        return None


def cut_at_unreadable(
    ctx: JobContext,
    parsed: Parsed,
    key: Cursor,
    cursor: int | None,
    column: str,
    key_of: Callable[[Any], int | None],
    step: int = 1,
) -> bool:
    """Keep only the rows below the page's first unreadable record; True if the page was
    cut, and the round must stop so that the next one asks again from there.

    ``parsed.table`` holds rows with keys (``column``) above ``cursor``, sorted. After
    :data:`paging.UNREADABLE_ROUNDS` rounds stuck at one record, the cursor steps over
    that record alone (it is logged and in the quarantine).
    """
    if not parsed.rejected:
        return False
    values = pc.cast(parsed.table[column], pa.int64())
    bound = paging.first_unread(
        values.to_pylist(), [key_of(record) for record, _ in parsed.rejected], cursor, step
    )
    if bound is None:
        return False
    parsed.table = parsed.table.filter(pc.less(values, bound))
    if parsed.rows or cursor is None:
        return True
    if ctx.state.stalls.stuck(key, cursor) >= paging.UNREADABLE_ROUNDS:
        ctx.state.stalls.moved(key)
        ctx.state.cursors[key] = bound
        log.error(
            "%s: the record at %d could not be read in %d rounds in a row; skipped it "
            "(its responses are in the quarantine)",
            " ".join(key),
            bound,
            paging.UNREADABLE_ROUNDS,
        )
    return True

"""From a response to rows: parse, and note what could not be read.

Every response goes through :func:`parse`: the daemon's jobs, a backfill and the plan's
requests alike (outside the jobs with an :class:`~collector.collect.context.Intake`). A
payload a parser cannot
read at all raises :class:`PayloadError`; records a parser set aside are logged;
both go to the quarantine (:mod:`collector.collect.quarantine`) with the raw body. An
undocumented field is logged once per (endpoint, field) and otherwise ignored.

For paged series, :func:`cut_at_unreadable` keeps a cursor from moving past a
record that was set aside (the rule is in :mod:`collector.collect.paging`), and
:func:`set_aside_outliers` keeps one from jumping further than the page itself
proves: a record whose id lies far outside the page's run (:func:`page_run`) is set
aside like an unreadable one, and the page's other records are kept.

Every record set aside, whatever the reason, goes the same way (:func:`set_aside`):
one warning line and a ``rejected_records`` file in the quarantine.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from collector.collect import paging
from collector.errors import PayloadError
from collector.exchange import parsers
from collector.exchange.client import Response
from collector.exchange.parsers import Parsed

if TYPE_CHECKING:
    from collector.collect.context import Cursor, Intake, JobContext

log = logging.getLogger(__name__)

#: Undocumented (endpoint, field) pairs noted in the log at most: an exchange that
#: invents new names all the time must not fill it.
MAX_UNKNOWN_FIELDS = 100
#: Records in a run that starts further than the allowed gap beyond the cursor needed
#: to believe it (an exchange whose ids jumped); fewer are set aside as outliers.
MIN_RUN_AFTER_JUMP = 3

P = ParamSpec("P")
T = TypeVar("T")


def parse(
    ctx: JobContext | Intake,
    response: Response,
    parser: Callable[Concatenate[Any, P], T],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """``parser(response.payload, *args, **kwargs)`` (the parsers take the payload and
    keywords: ``market``, ``symbol``, ``received_at``, ...); what cannot be read goes to
    the quarantine.

    A payload the parser cannot read at all raises :class:`PayloadError` (also for a
    parser's KeyError or ValueError: whatever the exchange sends is a payload
    problem, never a crash). For a :class:`Parsed` result, records set aside and
    undocumented fields are reported (:func:`note_problems`).
    """
    try:
        result = parser(response.payload, *args, **kwargs)
    except (
        PayloadError,
        KeyError,
        TypeError,
        ValueError,
        IndexError,
        AttributeError,
        OverflowError,
    ) as exc:
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
        note_problems(ctx, response, result)
    return result


def note_problems(ctx: JobContext | Intake, response: Response, parsed: Parsed) -> None:
    """Log and quarantine the records set aside; log each new undocumented field once."""
    set_aside(ctx, response, parsed.rejected)
    seen = ctx.state.unknown_fields
    for endpoint, name in sorted(parsed.unknown_fields - seen):
        if len(seen) >= MAX_UNKNOWN_FIELDS:
            break
        seen.add((endpoint, name))
        log.warning("exchange sent an undocumented field %r in %s; ignored", name, endpoint)
        if len(seen) == MAX_UNKNOWN_FIELDS:
            log.warning("%d undocumented fields noted; no more are logged", len(seen))


def set_aside(
    ctx: JobContext | Intake, response: Response, rejected: list[tuple[Any, str]]
) -> None:
    """The one path of a record set aside: a warning line (the count and the first reason)
    and the records with their reasons in the quarantine, next to the raw body."""
    if not rejected:
        return
    record, reason = rejected[0]
    where = " ".join(
        part for part in (response.endpoint, response.market, response.params.get("symbol")) if part
    )
    log.warning(
        "%s: %d record(s) could not be read and were set aside; first: %s (%.200r)",
        where,
        len(rejected),
        reason,
        record,
    )
    if ctx.quarantine is not None:
        ctx.quarantine.rejected(response, rejected)


def id_of(record: Any) -> int | None:
    """The id of a trade, funding or fund record set aside, if that much is readable (it may
    be outside int64: :func:`set_aside_outliers` takes such records out of the cut)."""
    try:
        return parsers.integer(record["id"])
    except (KeyError, TypeError, ValueError, IndexError):
        return None


def page_run(keys: Sequence[int], after: int | None, max_gap: int) -> tuple[int, int] | None:
    """The range of a page's keys that the page itself vouches for; None if none.

    ``keys``: sorted, unique, all above ``after`` (the cursor the page was asked from; None
    on first contact). The keys split into runs wherever two neighbours lie more than
    ``max_gap`` apart. With a cursor, the run is the first one, if it starts within
    ``max_gap`` of the cursor or holds :data:`MIN_RUN_AFTER_JUMP` keys or more (ids that
    really jumped come many at a time; one record alone far away proves nothing). On first
    contact it is the longest run (the lowest of equals). Keys outside it are outliers.
    """
    if not keys:
        return None
    runs: list[list[int]] = [[keys[0]]]
    for key in keys[1:]:
        if key - runs[-1][-1] > max_gap:
            runs.append([key])
        else:
            runs[-1].append(key)
    if after is None:
        chosen = max(runs, key=len)
    else:
        chosen = runs[0]
        if chosen[0] - after > max_gap and len(chosen) < MIN_RUN_AFTER_JUMP:
            return None
    return chosen[0], chosen[-1]


def set_aside_outliers(
    ctx: JobContext,
    response: Response,
    parsed: Parsed,
    column: str,
    after: int | None,
    max_gap: int,
    *,
    backwards: bool = False,
) -> tuple[int, int] | None:
    """Set aside the rows of ``parsed`` whose ``column`` (an id) lies outside the page's run
    (:func:`page_run`); return the run, (low, high), or None.

    Rows outside the run go to :attr:`Parsed.outside` with their raw records and reasons
    and through :func:`set_aside`. Records the parser set aside whose id is outside the
    run, or outside int64, move from :attr:`Parsed.rejected` to :attr:`Parsed.outside`
    too (they are already in the quarantine): they belong nowhere in the series, so
    :func:`cut_at_unreadable` must not stop the page at them. ``backwards``: the page was
    asked below ``after`` (a backfill), the run is the one that ends next to it.
    """
    sign = -1 if backwards else 1
    ids = pc.cast(parsed.table[column], pa.int64()).to_pylist()
    readable = {sign * key for key in ids}
    rejected_keys = [id_of(record) for record, _ in parsed.rejected]
    members = set(readable)
    for key in rejected_keys:
        if key is None or not 0 <= key <= parsers.INT64_MAX:
            continue
        if after is None or sign * key > sign * after:
            members.add(sign * key)
    run = page_run(sorted(members), None if after is None else sign * after, max_gap)
    if run is not None and backwards:
        run = (-run[1], -run[0])

    def outside(key: int) -> bool:
        return run is None or not run[0] <= key <= run[1]

    keep, moved = [], []
    for (record, reason), key in zip(parsed.rejected, rejected_keys, strict=True):
        junk = key is not None and (
            not 0 <= key <= parsers.INT64_MAX
            or ((after is None or sign * key > sign * after) and outside(key))
        )
        if junk:
            moved.append((record, reason))
        else:
            keep.append((record, reason))
    parsed.rejected = keep
    parsed.outside.extend(moved)
    far = sorted({key for key in ids if outside(key)})
    if not far:
        return run
    shown = "none" if run is None else f"{run[0]}..{run[1]}"
    asked = (
        "first contact" if after is None else f"asked {'below' if backwards else 'after'} {after}"
    )
    reason = (
        f"{column} lies outside the page's run ({shown}, {asked}, "
        f"largest gap allowed {max_gap}); set aside"
    )
    raw: dict[int, Any] = {}
    far_set = set(far)
    if isinstance(response.payload, list):
        for record in response.payload:
            key = id_of(record)
            if key is not None and key not in raw and key in far_set:
                raw[key] = record
    records = [(raw.get(key, {column: key}), f"{reason}: {key}") for key in far]
    parsed.table = parsed.table.filter(pc.invert(pc.is_in(parsed.table[column], pa.array(far))))
    parsed.outside.extend(records)
    set_aside(ctx, response, records)
    return run


#: The key of a record set aside whose key is readable but lies nowhere the series can be
#: (a time before 2017 or past the exchange clock): :func:`cut_at_unreadable` ignores it.
NOWHERE = -1


def open_time_of(record: Any, received_at: int | None = None) -> int | None:
    """The open time of a kline set aside, if that much is readable; :data:`NOWHERE` for an
    open time outside the window of :func:`collector.exchange.parsers.record_time`."""
    try:
        if not isinstance(record, list):
            return None
        parsers.millis(record[0])
    except (TypeError, ValueError, IndexError):
        return None
    try:
        return parsers.record_time(record[0], received_at)
    except ValueError:
        return NOWHERE


def time_of(record: Any, *, field: str, received_at: int | None = None) -> int | None:
    """The time in ``field`` of a record set aside, if that much is readable;
    :data:`NOWHERE` for a time outside :func:`collector.exchange.parsers.record_time`'s
    window."""
    try:
        parsers.millis(record[field])
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    try:
        return parsers.record_time(record[field], received_at)
    except ValueError:
        return NOWHERE


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
    keys = [key_of(record) for record, _ in parsed.rejected]
    # A key the archive cannot hold is no place in the series (see set_aside_outliers).
    keys = [k for k in keys if k is None or 0 <= k <= parsers.INT64_MAX]
    if not keys:
        return False
    values = pc.cast(parsed.table[column], pa.int64())
    bound = paging.first_unread(values.to_pylist(), keys, cursor, step)
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

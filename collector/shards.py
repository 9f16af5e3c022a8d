"""Shards: several collectors appending to one archive, each collecting its own share.

A shard's share is a set of (job, market, symbol) triples; no triple may belong to two
shards, or both would write the same rows. Symbols are chosen by fnmatch glob patterns
(``BTC*``, ``*USDT``, ``BTC?[0-9]*``), so deciding whether two shares meet needs to know
whether two patterns can match a common string. :func:`common_match` decides it exactly
and returns the shortest such string, which makes an error message concrete: *shards spot
and spot2 both collect trades for spot symbols matching BTC\\* and \\*USDT (e.g. BTCUSDT)*.

Pure logic: :mod:`collector.config` validates the ``shards:`` section with
:func:`check_shards`, which raises ValueError naming the shards and what overlaps.
"""

from __future__ import annotations

import bisect
import fnmatch
import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, Protocol

from collector import datasets

#: One past the largest code point: a Python string can hold any of them.
_END = 0x110000

#: Characters an example string prefers, so that it reads like a symbol.
_PREFERRED = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyz_-."

Symbols = Literal["all"] | tuple[str, ...]


@dataclass(frozen=True)
class CharSet:
    """The characters one position of a pattern accepts: sorted, disjoint, non-adjacent
    half-open code point intervals ``[start, stop)``."""

    intervals: tuple[tuple[int, int], ...]

    def __and__(self, other: CharSet) -> CharSet:
        merged: list[tuple[int, int]] = []
        i = j = 0
        a, b = self.intervals, other.intervals
        while i < len(a) and j < len(b):
            start, stop = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
            if start < stop:
                merged.append((start, stop))
            if a[i][1] < b[j][1]:
                i += 1
            else:
                j += 1
        return CharSet(tuple(merged))

    def __contains__(self, char: str) -> bool:
        code = ord(char)
        index = bisect.bisect_right(self.intervals, (code, _END)) - 1
        return index >= 0 and self.intervals[index][0] <= code < self.intervals[index][1]

    def __bool__(self) -> bool:
        return bool(self.intervals)

    def example(self) -> str:
        """A member that reads well: a letter or digit when there is one."""
        for char in _PREFERRED:
            if char in self:
                return char
        for start, stop in self.intervals:
            printable = max(start, 0x21)
            if printable < min(stop, 0x7F):
                return chr(printable)
        return chr(self.intervals[0][0])


ANY = CharSet(((0, _END),))

#: A pattern is a sequence of tokens: ``STAR`` (zero or more characters) or a CharSet
#: (exactly one character).
STAR: Literal["*"] = "*"
Token = CharSet | Literal["*"]


@lru_cache(maxsize=1024)
def parse(pattern: str) -> tuple[Token, ...]:
    """``pattern`` as tokens, with :func:`fnmatch.fnmatchcase`'s meaning.

    Where a bracket expression ends is found with fnmatch's own rule (a ``]`` right
    after ``[`` or ``[!`` belongs to the set; a ``[`` that is never closed is a literal);
    what the expression accepts is asked of fnmatch itself, so ranges, empty ranges and
    literal ``-``, ``^`` or ``\\`` mean exactly what they mean to fnmatch.
    """
    tokens: list[Token] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        i += 1
        if char == "*":
            if not tokens or tokens[-1] != STAR:
                tokens.append(STAR)
        elif char == "?":
            tokens.append(ANY)
        elif char == "[":
            j = i
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                tokens.append(_literal("["))
            else:
                tokens.append(_bracket(pattern[i - 1 : j + 1]))
                i = j + 1
        else:
            tokens.append(_literal(char))
    return tuple(tokens)


def _literal(char: str) -> CharSet:
    return CharSet(((ord(char), ord(char) + 1),))


def _bracket(expression: str) -> CharSet:
    """The characters a bracket expression such as ``[!a-c]`` accepts.

    Membership can change only at a character written in the expression or just after
    one, so asking fnmatch at those points (and at 0) gives the exact intervals.
    """
    matcher = re.compile(fnmatch.translate(expression))
    points = sorted({0} | {p for c in expression for p in (ord(c), ord(c) + 1) if p < _END})
    intervals: list[tuple[int, int]] = []
    for index, start in enumerate(points):
        stop = points[index + 1] if index + 1 < len(points) else _END
        if matcher.match(chr(start)):
            if intervals and intervals[-1][1] == start:
                intervals[-1] = (intervals[-1][0], stop)
            else:
                intervals.append((start, stop))
    return CharSet(tuple(intervals))


def common_match(*patterns: str) -> str | None:
    """The shortest string that every fnmatch pattern matches, or None when there is none.

    Exact, not a heuristic: a breadth-first search over the tuples of positions in the
    patterns. A pattern at a ``*`` may step past it without consuming; or one character
    is consumed by every pattern at once, where a pattern at ``*`` stays and any other
    must accept the character, which is taken from the intersection of what they accept.
    Every way to a tuple of positions steps past the same stars, so breadth-first order
    is order of length, and the first string found is a shortest one. Each tuple is
    visited once: the cost is bounded by the product of the patterns' lengths.
    Case-sensitive, as :func:`fnmatch.fnmatchcase`.
    """
    parsed = [parse(pattern) for pattern in patterns]
    start = tuple(0 for _ in parsed)
    previous: dict[tuple[int, ...], tuple[tuple[int, ...], str] | None] = {start: None}
    queue: deque[tuple[int, ...]] = deque([start])
    while queue:
        state = queue.popleft()
        if all(at == len(tokens) for at, tokens in zip(state, parsed, strict=True)):
            return _spell(previous, state)
        moves: list[tuple[tuple[int, ...], str]] = [
            ((*state[:k], at + 1, *state[k + 1 :]), "")
            for k, (at, tokens) in enumerate(zip(state, parsed, strict=True))
            if at < len(tokens) and tokens[at] == STAR
        ]
        accepted, following = ANY, []
        for at, tokens in zip(state, parsed, strict=True):
            if at == len(tokens):
                accepted = CharSet(())
                break
            token = tokens[at]
            if isinstance(token, CharSet):
                accepted &= token
                following.append(at + 1)
            else:
                following.append(at)
        if accepted and tuple(following) != state:
            moves.append((tuple(following), accepted.example()))
        for after, char in moves:
            if after not in previous:
                previous[after] = (state, char)
                queue.append(after)
    return None


def _spell(
    previous: dict[tuple[int, ...], tuple[tuple[int, ...], str] | None], state: tuple[int, ...]
) -> str:
    chars: list[str] = []
    step = previous[state]
    while step is not None:
        state, char = step
        chars.append(char)
        step = previous[state]
    return "".join(reversed(chars))


def literal(text: str) -> str:
    """A pattern that matches ``text`` and nothing else (fnmatch has no escape character,
    so ``*``, ``?`` and ``[`` go in brackets)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


# -- who collects what ---------------------------------------------------------------------


@dataclass(frozen=True)
class Share:
    """What one shard collects of one job."""

    shard: str
    job: str
    markets: tuple[str, ...]
    #: The shard's symbol patterns (``all``: every symbol).
    symbols: Symbols


@dataclass(frozen=True)
class Overlap:
    """Two shards that would both collect ``job`` on ``market`` for some symbols."""

    first: str
    second: str
    job: str
    market: str
    #: The two shards' patterns that meet (None: ``all``); both None with ``example``
    #: None for a job that archives whole markets.
    first_pattern: str | None
    second_pattern: str | None
    example: str | None

    def describe(self) -> str:
        who = f"{self.first} and {self.second} both collect {self.job} for"
        if self.example is None:
            return f"{who} {self.market} ({self.job} archives every symbol of a market)"
        patterns = [p for p in (self.first_pattern, self.second_pattern) if p is not None]
        if not patterns:
            return f"{who} all {self.market} symbols"
        matching = " and ".join(dict.fromkeys(patterns))
        return f"{who} {self.market} symbols matching {matching} (e.g. {self.example})"


def overlaps(
    shares: Sequence[Share],
    job_symbols: dict[str, Symbols],
    whole_market_jobs: Iterable[str] = (),
) -> list[Overlap]:
    """Every pair of shares that meet: same job, a common market, and (for a job that
    polls symbol by symbol) a non-empty symbol that both shards' patterns and the job's
    own ``symbols`` select. ``shares`` are in the order the file lists the shards."""
    whole = set(whole_market_jobs)
    found: list[Overlap] = []
    for index, first in enumerate(shares):
        for second in shares[index + 1 :]:
            if first.job != second.job or first.shard == second.shard:
                continue
            for market in (m for m in first.markets if m in second.markets):
                if first.job in whole:
                    found.append(
                        Overlap(first.shard, second.shard, first.job, market, None, None, None)
                    )
                    continue
                meeting = _meeting(first.symbols, second.symbols, job_symbols[first.job])
                if meeting is not None:
                    found.append(Overlap(first.shard, second.shard, first.job, market, *meeting))
    return found


def _meeting(
    first: Symbols, second: Symbols, job: Symbols
) -> tuple[str | None, str | None, str] | None:
    """The first pair of patterns (None for ``all``) that select a common symbol, and the
    shortest such symbol; None when the two shares of symbols are disjoint."""
    for a in (None,) if first == "all" else first:
        for b in (None,) if second == "all" else second:
            for j in ("*",) if job == "all" else job:
                # "?*": a symbol is never empty.
                example = common_match(a or "*", b or "*", j, "?*")
                if example is not None:
                    return a, b, example
    return None


# -- the rules of the shards section -------------------------------------------------------

#: A shard's name becomes a file name (``_state/daemons/<name>.json``) and a ``--shard``
#: value, so: lowercase letters, digits, '-' and '_', starting with a letter or digit.
SHARD_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")


class JobLike(Protocol):
    """What the rules read of a job's settings (:class:`collector.config.JobSettings`)."""

    @property
    def markets(self) -> tuple[str, ...]: ...
    @property
    def symbols(self) -> Symbols: ...
    @property
    def enabled(self) -> bool: ...


class ShardLike(Protocol):
    """What the rules read of a shard's settings (:class:`collector.config.ShardSettings`)."""

    @property
    def markets(self) -> tuple[str, ...]: ...
    @property
    def jobs(self) -> Literal["all"] | tuple[str, ...]: ...
    @property
    def symbols(self) -> Symbols: ...
    @property
    def compact(self) -> bool: ...


def markets_of(job_name: str, job: JobLike, shard: ShardLike) -> tuple[str, ...]:
    """The markets of ``job`` that ``shard`` collects (none when it does not run the job)."""
    if shard.jobs != "all" and job_name not in shard.jobs:
        return ()
    return tuple(m for m in job.markets if m in shard.markets)


def check_shards(
    shards: Mapping[str, ShardLike],
    jobs: Mapping[str, JobLike],
    whole_market_jobs: Iterable[str] = (),
) -> list[tuple[str, str]]:
    """Check the ``shards`` section against ``jobs``; a ValueError names the first broken
    rule. Returns the (job, market) pairs of enabled jobs that no shard collects (empty
    without shards): not an error, but worth a warning.

    The rules: a shard name fits :data:`SHARD_NAME` and is not ``all``; a shard's jobs
    exist under ``jobs`` and each runs on one of the shard's markets at least; a shard
    collects something; at most one shard says ``compact: true``; and no two shards
    collect the same job, market and symbol (:func:`overlaps`; only enabled jobs count).
    """
    for name, shard in shards.items():
        if name == "all" or not SHARD_NAME.fullmatch(name):
            raise ValueError(
                f"shards.{name}: a shard name is 1 to 40 lowercase letters, digits, '-' or "
                "'_', starting with a letter or digit, and not 'all' (it becomes a file name)"
            )
        for job in () if shard.jobs == "all" else shard.jobs:
            if job not in datasets.DATASETS:
                raise ValueError(
                    f"shards.{name}.jobs: unknown job {job}; jobs are named after datasets: "
                    f"{', '.join(datasets.DATASETS)}"
                )
            if job not in jobs:
                raise ValueError(f"shards.{name}.jobs: {job} has no entry under jobs")
            if not markets_of(job, jobs[job], shard):
                raise ValueError(
                    f"shards.{name}.jobs: {job} runs on {', '.join(jobs[job].markets)}, and "
                    f"the shard collects {', '.join(shard.markets)} only"
                )
        if not any(markets_of(job_name, job, shard) for job_name, job in jobs.items()):
            raise ValueError(f"shards.{name}: collects nothing: no job runs on its markets")
    compacting = [name for name, shard in shards.items() if shard.compact]
    if len(compacting) > 1:
        raise ValueError(
            f"shards: {' and '.join(compacting)} say compact: true; exactly one shard "
            "compacts the archive"
        )
    enabled = {name: job for name, job in jobs.items() if job.enabled}
    shares = [
        Share(name, job_name, markets, shard.symbols)
        for name, shard in shards.items()
        for job_name, job in enabled.items()
        if (markets := markets_of(job_name, job, shard))
    ]
    found = overlaps(
        shares, {name: job.symbols for name, job in enabled.items()}, whole_market_jobs
    )
    if found:
        more = f" (and {len(found) - 1} more overlap(s))" if len(found) > 1 else ""
        raise ValueError(
            f"shards: {found[0].describe()}; each job, market and symbol belongs to one shard{more}"
        )
    if not shards:
        return []
    return [
        (job_name, market)
        for job_name, job in enabled.items()
        for market in job.markets
        if not any(market in markets_of(job_name, job, shard) for shard in shards.values())
    ]

"""Fault switches for the simulator: the ways a real exchange misbehaves.

Each switch is a probability per ``/api/v1`` request (the ``/_sim`` admin paths
are exempt), drawn from a generator seeded by ``seed``, so the same sequence of
requests meets the same faults. At most one fault hits a request; the kinds are
drawn in the order of :data:`KINDS`.

Transport and status faults:

- ``error_500``: HTTP 500 with an HTML body.
- ``unavailable_503``: HTTP 503 with an empty body.
- ``truncated_json``: HTTP 200 with the JSON cut in half.
- ``slow``: the response is delayed by ``slow_seconds``.
- ``connection_reset``: the connection is dropped without any response (the
  client sees a transport error). Needs a socket server (``SimServer``,
  ``jex-collector sim``); under ``httpx.ASGITransport`` it raises
  ``ConnectionResetError`` into the caller.

Payload faults (valid JSON, wrong content; see :mod:`collector.sim.mutations`):

- ``unknown_field``: every object of the response gains an undocumented field.
- ``missing_field``: one record of a list (or the object itself) loses a field;
  a kline array is cut short.
- ``number_for_string``: decimal and id strings are sent as JSON numbers.
- ``empty_list``: a list response comes back empty.
- ``duplicate_trades``: ``trades``/``historicalTrades`` pages repeat some trades,
  in shuffled order.
- ``unknown_symbol``: list-form tickers (and ``contractInfo``) gain a record for
  a well-formed symbol that is not listed.
- ``bad_symbol``: one record's ``symbol`` becomes a hostile value (a path, SQL,
  a trailing newline, lower case, a number...).

A payload fault that does not apply to a response (``duplicate_trades`` on
``depth``, say) leaves it unchanged.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from typing import Any

KINDS = (
    "error_500",
    "unavailable_503",
    "truncated_json",
    "slow",
    "connection_reset",
    "unknown_field",
    "missing_field",
    "number_for_string",
    "empty_list",
    "duplicate_trades",
    "unknown_symbol",
    "bad_symbol",
)


@dataclass
class Faults:
    error_500: float = 0.0
    unavailable_503: float = 0.0
    truncated_json: float = 0.0
    slow: float = 0.0
    connection_reset: float = 0.0
    unknown_field: float = 0.0
    missing_field: float = 0.0
    number_for_string: float = 0.0
    empty_list: float = 0.0
    duplicate_trades: float = 0.0
    unknown_symbol: float = 0.0
    bad_symbol: float = 0.0
    slow_seconds: float = 15.0
    seed: int = 0
    _rng: random.Random = field(init=False, repr=False, compare=False)
    _injected: Counter[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in KINDS:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
        self._rng = random.Random(self.seed)
        self._injected = Counter()

    def draw(self) -> str | None:
        """The fault to inject into this request, if any."""
        for name in KINDS:
            probability = getattr(self, name)
            if probability and self._rng.random() < probability:
                self._injected[name] += 1
                return name
        return None

    def spawn_rng(self) -> random.Random:
        """A generator for one payload mutation, seeded from the fault sequence."""
        return random.Random(self._rng.getrandbits(64))

    @property
    def injected(self) -> dict[str, int]:
        """How many times each kind was drawn so far."""
        return dict(sorted(self._injected.items()))

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Faults:
        known = {f.name for f in fields(cls) if not f.name.startswith("_")}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown fault switch(es): {', '.join(sorted(unknown))}")
        return cls(**values)

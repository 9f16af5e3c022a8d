"""Fault switches for the simulator: the ways a real exchange misbehaves.

Each switch is a probability per market-data request, drawn from a seeded
generator so a test run is repeatable. More kinds can be added as fields.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, fields
from typing import Any

KINDS = ("error_500", "unavailable_503", "truncated_json", "slow")


@dataclass
class Faults:
    error_500: float = 0.0  # HTTP 500 with an HTML body
    unavailable_503: float = 0.0  # HTTP 503 with an empty body
    truncated_json: float = 0.0  # HTTP 200 with the JSON cut in half
    slow: float = 0.0  # the response is delayed by slow_seconds
    slow_seconds: float = 15.0
    seed: int = 0
    _rng: random.Random = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in KINDS:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
        self._rng = random.Random(self.seed)

    def draw(self) -> str | None:
        """The fault to inject into this request, if any."""
        for name in KINDS:
            probability = getattr(self, name)
            if probability and self._rng.random() < probability:
                return name
        return None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Faults:
        known = {f.name for f in fields(cls) if not f.name.startswith("_")}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown fault switch(es): {', '.join(sorted(unknown))}")
        return cls(**values)

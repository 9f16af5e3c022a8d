"""Durations (``10s``, ``5m``, ``1h``) and sizes (``16MiB``) as the settings write them:
parsed into seconds and bytes, and refused outside their bounds."""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BeforeValidator

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


#: Bounds of a duration: below a millisecond (the exchange's precision) or above a
#: millennium, a value is a typo; a timer cannot even be set beyond ``timedelta.max``.
MIN_DURATION = 0.001
MAX_DURATION = 1000 * 365.25 * 86400.0


def parse_duration(value: object) -> float:
    """Seconds from ``10``, ``2.5``, ``"500ms"``, ``"10s"``, ``"5m"``, ``"1h"`` or ``"1d"``.

    YAML's ``.nan`` and ``.inf``, numbers too large for a float (``1.0e+400``) and values
    outside [1 ms, 1000 years] are refused with a ValueError.
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 10s, 5m or 1h, got a boolean")
    try:
        if isinstance(value, int | float):
            seconds = float(value)
        elif isinstance(value, str) and (match := _DURATION.match(value)):
            seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        else:
            raise ValueError(f"expected a duration such as 10s, 5m or 1h, got {value!r}")
    except OverflowError:  # an int of hundreds of digits
        seconds = -math.inf if isinstance(value, int) and value < 0 else math.inf
    if math.isnan(seconds):
        raise ValueError("expected a duration such as 10s, 5m or 1h, got nan")
    if seconds <= 0:
        raise ValueError(f"a duration must be positive, got {_short(value)}")
    if math.isinf(seconds) or seconds > MAX_DURATION:
        raise ValueError(f"a duration must be finite and at most 1000 years, got {_short(value)}")
    if seconds < MIN_DURATION:
        raise ValueError(f"a duration must be at least 1ms, got {_short(value)}")
    return seconds


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} characters)"


Duration = Annotated[float, BeforeValidator(parse_duration)]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$")
_UNIT_BYTES = {
    None: 1,
    "B": 1,
    "KB": 1000,
    "KiB": 1024,
    "MB": 1000**2,
    "MiB": 1024**2,
    "GB": 1000**3,
    "GiB": 1024**3,
}
#: Bounds of a response size cap: below 1 KiB not even an error message fits; above
#: 1 GiB a single response could take the machine's memory.
MIN_SIZE = 1024
MAX_SIZE = 1024**3


def parse_size(value: object) -> int:
    """Bytes from ``1048576``, ``"512KiB"``, ``"16MiB"``, ``"1GiB"`` (or KB, MB, GB: powers
    of 1000); a ValueError for anything else or outside [1 KiB, 1 GiB]."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (match := _SIZE.match(value)):
        size = int(float(match.group(1)) * _UNIT_BYTES[match.group(2)])
    else:
        raise ValueError(f"expected a size such as 512KiB, 16MiB or 1GiB, got {_short(value)}")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"a size must be between 1KiB and 1GiB, got {_short(value)}")
    return size


Size = Annotated[int, BeforeValidator(parse_size)]

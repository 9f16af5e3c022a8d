"""JSON within bounds: a body nested deeper than :data:`MAX_JSON_DEPTH` is refused before
it is parsed."""

from __future__ import annotations

import json
import re
from typing import Any

#: JSON nested deeper than this is refused before it is parsed (the documented responses
#: are at most 4 deep; Python's parser would raise RecursionError at about 1000).
MAX_JSON_DEPTH = 64

#: A JSON string, escapes included (unrolled so that it never backtracks).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth_exceeds(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``body`` nests arrays and objects more than ``limit`` deep, found without
    parsing it (and without recursion): strings are cut out, then each pass removes the
    innermost pairs of brackets; what is left after ``limit`` passes is deeper."""
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    brackets = brackets.replace(b"{", b"[").replace(b"}", b"]")
    for _ in range(limit):
        shorter = brackets.replace(b"[]", b"")
        if len(shorter) == len(brackets):
            return False  # nothing nests further (unbalanced brackets: the parser says so)
        brackets = shorter
    return b"[]" in brackets


def parse_json(body: bytes) -> Any:
    """``body`` decoded as JSON; a ValueError for anything that is not JSON, JSON nested
    more than :data:`MAX_JSON_DEPTH` deep, or a number of more digits than Python converts.
    """
    if json_depth_exceeds(body):
        raise ValueError(f"nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        return json.loads(body)
    except RecursionError:  # not reached below MAX_JSON_DEPTH; kept as a last guard
        raise ValueError(f"nested more than {MAX_JSON_DEPTH} levels deep") from None

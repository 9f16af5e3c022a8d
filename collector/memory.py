"""Giving freed memory back to the system: a long-running daemon and a large load both
end up holding pages they no longer use."""

from __future__ import annotations

import functools
import mmap
import sys
from collections.abc import Callable
from typing import cast

import pyarrow as pa


@functools.cache
def malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, from the process's own symbols (None elsewhere: musl,
    macOS, Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        return cast(Callable[[int], int], ctypes.CDLL(None).malloc_trim)
    except (OSError, AttributeError):
        return None


def release_memory() -> None:
    """Hand back the free pages of the C library's heap (response bodies, Python objects
    above 512 bytes, Arrow's system pool; Arrow's own ``release_unused`` of that pool
    does not trim) and of Arrow's default pool, which keeps what was freed for reuse."""
    trim = malloc_trim()
    if trim is not None:
        trim(0)
    pa.default_memory_pool().release_unused()


def resident_bytes() -> int:
    """The process's resident memory, in bytes (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * mmap.PAGESIZE
    except OSError:
        return 0

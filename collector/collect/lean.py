"""What a daemon process never loads, and how its allocators give memory back.

pyarrow imports pandas the first time it turns Python values into an array (to check
whether they are pandas objects), when pandas is installed: about 50 MB of a daemon's
memory for nothing, since the daemon builds its tables from plain lists. The research
side of the package needs pandas and matplotlib; the daemon needs neither. The ``run``
command therefore keeps them out of its process: an import of either fails there, and
pyarrow goes on without pandas as it does where pandas is not installed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

#: Packages a daemon process does not load.
KEPT_OUT = ("pandas", "matplotlib")
#: deltalake's allocator (jemalloc, read from this variable when deltalake loads): one
#: arena instead of one per thread (8 on 2 cores), and freed pages returned after a
#: second instead of ten. Measured on 150 flushes of 5 tables (751 commits): 64 MB of
#: anonymous memory instead of 85-90, for about 6% more CPU in that commit-only loop.
JEMALLOC_CONF = ("_RJEM_MALLOC_CONF", "narenas:1,dirty_decay_ms:1000,muzzy_decay_ms:0")


class KeepOut:
    """A meta path finder that refuses the packages ``names`` (and their submodules)."""

    def __init__(self, names: Sequence[str] = KEPT_OUT) -> None:
        self.names = frozenset(names)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname.partition(".")[0] in self.names:
            raise ModuleNotFoundError(
                f"{fullname} is not loaded in a collector daemon (collector.collect.lean)",
                name=fullname,
            )
        return None


def keep_out(names: Sequence[str] = KEPT_OUT) -> list[str]:
    """Refuse ``names`` in this process from now on; return those already loaded (which
    stay: a caller that must not have them should say so)."""
    if not any(isinstance(finder, KeepOut) for finder in sys.meta_path):
        sys.meta_path.insert(0, KeepOut(names))
    return sorted(name for name in names if name in sys.modules)


def tune_allocators() -> None:
    """Set deltalake's jemalloc options (:data:`JEMALLOC_CONF`) unless the environment
    sets them. Before deltalake is imported, or it has no effect."""
    name, value = JEMALLOC_CONF
    os.environ.setdefault(name, value)

"""Whether an exception is a Ctrl-C. Standard library only: the command line asks it
while the rest of the program may still be loading."""

from __future__ import annotations


def by_ctrl_c(exc: BaseException | None) -> bool:
    """Whether ``exc`` is, or was caused by, a Ctrl-C (an extension module interrupted
    while it loads raises its own error from the KeyboardInterrupt)."""
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, KeyboardInterrupt):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False

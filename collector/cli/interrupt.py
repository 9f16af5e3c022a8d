"""Whether an exception is a Ctrl-C. Standard library only: the command line asks it
while the rest of the program may still be loading."""

from __future__ import annotations

import signal
from typing import Any


def by_ctrl_c(exc: BaseException | None) -> bool:
    """Whether ``exc`` is, or was caused by, a Ctrl-C (an extension module interrupted
    while it loads raises its own error from the KeyboardInterrupt)."""
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, KeyboardInterrupt):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


class LoadingGuard:
    """While the program loads: a Ctrl-C raises KeyboardInterrupt as usual and is also
    noted (:attr:`interrupted`), so a library that swallows the exception cannot hide it.
    Installed only over Python's own handler (never over an embedding program's);
    :meth:`release` puts that handler back."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.interrupted = False
        self._previous: Any = None
        if signal.getsignal(signum) is signal.default_int_handler:
            try:
                self._previous = signal.signal(signum, self._note)
            except ValueError:  # not the main thread: signals are not ours to handle
                self._previous = None

    def _note(self, signum: int, frame: Any) -> None:
        self.interrupted = True
        raise KeyboardInterrupt

    def release(self) -> None:
        if self._previous is not None:
            signal.signal(self.signum, self._previous)
            self._previous = None

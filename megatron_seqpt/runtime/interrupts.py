"""Interrupts raised from signal handlers that must not be lost.

Python runs a signal handler wherever the main thread is when the signal arrives. Where that is
a callback Python calls from C (the at-fork hooks of a fork by multiprocessing or by
megatron-core's checkpoint writer, a finalizer), an exception the handler raises is printed
("Exception ignored in ...") and dropped, and the interrupted work goes on. A handler therefore
raises through ``LatchedInterrupt``, which remembers the interrupt so the work can raise it again
at the points where it must not be missed (``raise_if_set``), and keeps Python's report of the
dropped one quiet.
"""

from __future__ import annotations

import sys
from typing import NoReturn, Optional


class LatchedInterrupt:
    """A KeyboardInterrupt raised once from a handler and again at every check after."""

    def __init__(self):
        # What the interrupt says ("signal 15"); None until it is raised.
        self.reason: Optional[str] = None
        self._previous_hook = sys.unraisablehook

    def __enter__(self) -> "LatchedInterrupt":
        self._previous_hook = sys.unraisablehook
        sys.unraisablehook = self._report_unraisable
        return self

    def __exit__(self, *exc) -> None:
        sys.unraisablehook = self._previous_hook

    def raise_(self, reason: str = "") -> NoReturn:
        """Call from a signal handler: record the interrupt and raise it."""
        self.reason = reason
        raise KeyboardInterrupt(reason)

    def raise_if_set(self) -> None:
        """Raise the interrupt again if one was raised (whether or not Python dropped it)."""
        if self.reason is not None:
            raise KeyboardInterrupt(self.reason)

    def _report_unraisable(self, unraisable: "sys.UnraisableHookArgs") -> None:
        """Python's report of an exception it dropped, silent for this interrupt (raised again
        at the next check; a traceback would only alarm the user)."""
        if not (self.reason is not None and isinstance(unraisable.exc_value, KeyboardInterrupt)):
            self._previous_hook(unraisable)

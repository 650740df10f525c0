"""Interrupts raised from signal handlers that must not be lost.

Python runs a signal handler wherever the main thread is when the signal arrives. Where that is
a callback Python calls from C (the at-fork hooks of a fork by multiprocessing or by
megatron-core's checkpoint writer, a finalizer), an exception the handler raises is printed
("Exception ignored in ...") and dropped, and the interrupted work goes on. A handler therefore
raises through ``LatchedInterrupt``, which remembers the interrupt so the work can raise it again
at the points where it must not be missed (``raise_if_set``), and keeps Python's report of the
dropped one quiet.

Python's handler also waits for the main thread to run bytecode: a signal that arrives while the
main thread is between the reads of a pipe that a buffered ``read`` makes, or about to start one,
is noted, and the next read, of a pipe with no data yet, then holds it for as long as no data
comes. Reads of a pipe are therefore made in a helper thread and waited for in short waits
(``waited_in_short_waits``).
"""

from __future__ import annotations

import contextlib
import queue
import signal
import sys
import threading
from typing import Iterator, NoReturn, Optional, TypeVar

T = TypeVar("T")

# How long an interrupt may wait to be handled while the main thread waits for a helper.
WAIT_SECONDS = 0.2
_END = object()


def waited_in_short_waits(items: Iterator[T], name: str) -> Iterator[T]:
    """``items``, produced one ahead by a daemon thread called ``name`` and waited for in waits
    of ``WAIT_SECONDS``, between which a pending interrupt is handled. Left early, the thread
    ends after the item it is producing (a read of a stalled pipe holds it until data comes)."""
    produced: queue.Queue = queue.Queue(maxsize=1)
    stopped = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                produced.put((True, item))
                if stopped.is_set():
                    return
            produced.put((True, _END))
        except BaseException as err:  # noqa: BLE001 - raised in the consumer
            produced.put((False, err))

    threading.Thread(target=produce, name=name, daemon=True).start()
    try:
        while True:
            try:
                succeeded, item = produced.get(timeout=WAIT_SECONDS)
            except queue.Empty:
                continue
            if not succeeded:
                raise item
            if item is _END:
                return
            yield item
    finally:
        stopped.set()
        try:  # free a producer waiting to hand over its next item
            produced.get_nowait()
        except queue.Empty:
            pass


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


@contextlib.contextmanager
def latched_interrupts() -> Iterator[LatchedInterrupt]:
    """Ctrl-C and SIGTERM (what schedulers send) raise KeyboardInterrupt through one
    ``LatchedInterrupt`` while the block runs, so that the work can clean up (SIGTERM's default
    ends the process at once) and raise it again at its checks. A process started in the
    background keeps ignoring Ctrl-C. Outside the main thread (where Python has no handlers)
    nothing is installed."""
    interrupt = LatchedInterrupt()
    if threading.current_thread() is not threading.main_thread():
        yield interrupt
        return
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(
                signum, lambda received, frame: interrupt.raise_(f"signal {received}"))
    try:
        with interrupt:
            yield interrupt
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

"""Stopping on request: SIGTERM or SIGUSR1 (SLURM pre-emption, time limit) or a first Ctrl-C
asks the run to checkpoint and exit cleanly; a second Ctrl-C aborts at once.

The handler only records the request; the loop acts on it between steps, after all ranks have
agreed (a signal may reach the ranks at different moments).

The second Ctrl-C raises KeyboardInterrupt from the handler, but Python runs a handler wherever
the main thread is, and where that is a callback it calls from C (the at-fork hooks of the
checkpoint writer's forks, a finalizer) it prints the exception and drops it. The abort is
therefore also recorded, and raised again where it must not be missed: before a checkpoint is
published and at the end of each step (``raise_if_aborted``); the dropped one is not printed.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType
from typing import Optional

import torch
import torch.distributed as dist

from megatron_seqpt.runtime.child_processes import stop_spawned_children
from megatron_seqpt.runtime.log import log

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class PreemptionHandler:
    def __init__(self):
        # The name of the first signal received ("SIGUSR1"), None before any.
        self.received: Optional[str] = None
        self.aborted = False
        self._previous = {}

    def __enter__(self) -> "PreemptionHandler":
        for sig in SIGNALS:
            # A process started in the background ignores Ctrl-C; keep it that way.
            if sig == signal.SIGINT and signal.getsignal(sig) is signal.SIG_IGN:
                continue
            self._previous[sig] = signal.signal(sig, self._record)
        self._previous_unraisable_hook = sys.unraisablehook
        sys.unraisablehook = self._report_unraisable
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        sys.unraisablehook = self._previous_unraisable_hook

    def _report_unraisable(self, unraisable: "sys.UnraisableHookArgs") -> None:
        """Python's report of an exception it dropped, silent for the abort's own (raised
        again later, without a traceback to alarm the user)."""
        if not (self.aborted and isinstance(unraisable.exc_value, KeyboardInterrupt)):
            self._previous_unraisable_hook(unraisable)

    def _record(self, signum: int, frame: Optional[FrameType]) -> None:
        if signum == signal.SIGINT and self.received is not None:
            # The second Ctrl-C: do not wait for the checkpoint. Its writer's helper may be
            # starting right now; ended here, before unwinding closes the pipes it reads.
            self.aborted = True
            stop_spawned_children()
            raise KeyboardInterrupt
        if self.received is None:
            self.received = signal.Signals(signum).name
            if signum == signal.SIGINT:
                log("Ctrl-C: saving a checkpoint after this step (Ctrl-C again to abort "
                    "without one)")

    def raise_if_aborted(self) -> None:
        """Raise the second Ctrl-C again, in case Python dropped it (module docstring)."""
        if self.aborted:
            raise KeyboardInterrupt

    def requested(self, device: torch.device) -> bool:
        """True on every rank if any rank received a signal (a collective: call on all)."""
        self.raise_if_aborted()
        flag = torch.tensor([1.0 if self.received is not None else 0.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

"""Stopping on request: SIGTERM or SIGUSR1 (SLURM pre-emption, time limit) or a first Ctrl-C
asks the run to checkpoint and exit cleanly; a second Ctrl-C aborts at once.

The handler only records the request; the loop acts on it between steps, after all ranks have
agreed (a signal may reach the ranks at different moments).

The second Ctrl-C's KeyboardInterrupt may be dropped by Python (in an at-fork hook of the
checkpoint writer's forks: ``runtime/interrupts.py``), so it is raised again before a checkpoint
is published and at the end of each step (``abort.raise_if_set``).
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Optional

import torch
import torch.distributed as dist

from megatron_seqpt.runtime.child_processes import stop_spawned_children
from megatron_seqpt.runtime.interrupts import LatchedInterrupt
from megatron_seqpt.runtime.log import log

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class PreemptionHandler:
    def __init__(self):
        # The name of the first signal received ("SIGUSR1"), None before any.
        self.received: Optional[str] = None
        self.abort = LatchedInterrupt()  # the second Ctrl-C
        self._previous = {}

    def __enter__(self) -> "PreemptionHandler":
        for sig in SIGNALS:
            # A process started in the background ignores Ctrl-C; keep it that way.
            if sig == signal.SIGINT and signal.getsignal(sig) is signal.SIG_IGN:
                continue
            self._previous[sig] = signal.signal(sig, self._record)
        self.abort.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self.abort.__exit__(*exc)

    def _record(self, signum: int, frame: Optional[FrameType]) -> None:
        if signum == signal.SIGINT and self.received is not None:
            # The second Ctrl-C: do not wait for the checkpoint. Its writer's helper may be
            # starting right now; ended here, before unwinding closes the pipes it reads.
            stop_spawned_children()
            self.abort.raise_()
        if self.received is None:
            self.received = signal.Signals(signum).name
            if signum == signal.SIGINT:
                log("Ctrl-C: saving a checkpoint after this step (Ctrl-C again to abort "
                    "without one)")

    def requested(self, device: torch.device) -> bool:
        """True on every rank if any rank received a signal (a collective: call on all)."""
        self.abort.raise_if_set()
        flag = torch.tensor([1.0 if self.received is not None else 0.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

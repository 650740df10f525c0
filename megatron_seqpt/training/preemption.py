"""SLURM pre-emption: SIGTERM or SIGUSR1 asks the run to checkpoint and exit cleanly.

The handler only records the request; the loop acts on it between steps, after all ranks have
agreed (a signal may reach the ranks at different moments).
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Optional

import torch
import torch.distributed as dist

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class PreemptionHandler:
    def __init__(self):
        self.received: Optional[int] = None
        self._previous = {}

    def __enter__(self) -> "PreemptionHandler":
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._record)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _record(self, signum: int, frame: Optional[FrameType]) -> None:
        self.received = signum

    def requested(self, device: torch.device) -> bool:
        """True on every rank if any rank received a signal (a collective: call on all)."""
        flag = torch.tensor([1.0 if self.received is not None else 0.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

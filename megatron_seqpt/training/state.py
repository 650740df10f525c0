"""What a run carries from step to step (checkpointed) and what it ends with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

Status = Literal["completed", "preempted", "diverged"]


@dataclass
class TrainState:
    step: int = 0
    consumed_samples: int = 0
    skipped_in_a_row: int = 0
    skipped_total: int = 0
    # Executed model FLOPs and training-step seconds since the run began (compute accounting).
    flops: float = 0.0
    train_seconds: float = 0.0


@dataclass
class RunResult:
    status: Status
    step: int
    valid_loss: Optional[float]
    checkpoint: Optional[Path]

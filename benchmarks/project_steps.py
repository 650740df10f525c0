"""The project's side of a throughput comparison: whole training steps as a run takes them
(the step, then its metrics line), so logging is part of the figure as it is of a run."""

from __future__ import annotations

import time


def timed_steps(trainer, steps: int) -> float:
    """Seconds of ``steps`` training steps of ``trainer``, each logged."""
    from megatron_seqpt.training.metrics import Window

    started = time.perf_counter()
    for _ in range(steps):
        window = Window()
        step_started = time.perf_counter()
        record = trainer.train_step()
        window.add(record["loss"], time.perf_counter() - step_started)
        trainer.log_train(record, window)
    return time.perf_counter() - started

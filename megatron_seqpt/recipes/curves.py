"""Validation curves of pre-training runs against executed compute: where a run first reaches
a loss, and the compute saving that follows from it.

A curve is the (executed FLOPs, validation loss) pairs a run records at each evaluation; in
between, the loss is taken as linear in FLOPs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from megatron_seqpt.training.metrics import read_metrics

Curve = list[tuple[float, float]]


def valid_curve(run_dir: Path) -> list[tuple[int, float, float]]:
    """(step, executed FLOPs so far, validation loss) at each evaluation of a run."""
    return [(r["step"], r.get("total_flops", 0.0), r["loss"])
            for r in read_metrics(Path(run_dir) / "metrics.jsonl") if r.get("split") == "valid"]


def flops_to_reach(curve: Sequence[tuple[float, float]], target: float) -> Optional[float]:
    """The FLOPs at which the curve first reaches ``target`` (loss at or below it),
    interpolated between the evaluations around the crossing; None when it never does."""
    previous = None
    for flops, loss in curve:
        if loss <= target:
            if previous is None or previous[1] == loss:
                return flops
            before_flops, before_loss = previous
            return before_flops + (before_loss - target) / (before_loss - loss) * (
                flops - before_flops)
        previous = (flops, loss)
    return None


def pair_saving(encoder: float, seq2seq: float, baseline_seq2seq: float) -> float:
    """1 - (encoder + seq2seq) / (encoder + baseline): the share of the pair's compute the
    recipe saves against training both models from scratch."""
    return 1.0 - (encoder + seq2seq) / (encoder + baseline_seq2seq)

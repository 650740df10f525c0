"""Losses of a global batch from the reports of megatron-core's schedules, summed over the
ranks that hold them, and the validation loss of a run."""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.distributed as dist
from megatron.core import parallel_state

LossTotals = dict[str, tuple[float, float]]


def global_losses(reports: list[dict], loss_keys: tuple[str, ...],
                  device: torch.device) -> LossTotals:
    """(loss sum, token count) per reported loss over the global batch, on every rank."""
    totals = torch.zeros(len(loss_keys), 2, device=device)
    for report in reports:
        for row, key in enumerate(loss_keys):
            if key in report:  # evaluation reports the model's loss only
                totals[row] += report[key].to(device).float()
    dist.all_reduce(totals, group=parallel_state.get_data_parallel_group())
    owner = (parallel_state.is_pipeline_last_stage()
             and parallel_state.get_tensor_model_parallel_rank() == 0
             and parallel_state.get_data_parallel_rank() == 0)
    if not owner:
        totals.zero_()
    dist.all_reduce(totals)
    return {key: (totals[row, 0].item(), totals[row, 1].item())
            for row, key in enumerate(loss_keys)}


def mean(total: tuple[float, float]) -> float:
    return total[0] / max(total[1], 1.0)


def validation_loss(chunks: list[torch.nn.Module], batches: int,
                    run_batch: Callable[[], LossTotals], loss_key: str) -> Optional[float]:
    """Mean loss per token over ``batches`` global batches (``run_batch`` runs one forward-only
    schedule over the validation stream), with the chunks in eval mode."""
    for chunk in chunks:
        chunk.eval()
    loss_sum = tokens = 0.0
    with torch.no_grad():
        for _ in range(batches):
            batch_sum, batch_tokens = run_batch()[loss_key]
            loss_sum += batch_sum
            tokens += batch_tokens
    for chunk in chunks:
        chunk.train()
    return loss_sum / max(tokens, 1.0)

"""The language-model loss computed only where it counts: the vocabulary projection (the
largest matmul of a small model) runs at the positions a loss mask selects (the predicted
tokens of MLM, the real target tokens of a padded decoder) instead of at every position."""

from __future__ import annotations

from typing import Callable

import torch


def loss_at_targets(model, hidden: torch.Tensor, labels: torch.Tensor, loss_mask: torch.Tensor,
                    head: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Per-token loss [b, s] (zero where ``loss_mask`` is 0) from ``hidden`` [s, b, h].

    ``head`` maps the selected states [n, 1, h] to (vocabulary-parallel) logits [n, 1, v];
    ``model.compute_language_model_loss`` is megatron-core's LanguageModule loss. The hidden
    states must be whole on every tensor-parallel rank (not under sequence parallelism, where
    each rank holds part of the sequence).
    """
    selected = loss_mask.transpose(0, 1).bool()  # [s, b], the layout of ``hidden``
    logits = head(hidden[selected].unsqueeze(1))  # [n, 1, v]
    targets = labels.transpose(0, 1)[selected].unsqueeze(0)  # [1, n]
    losses = model.compute_language_model_loss(targets, logits)[0]  # [n]
    full = losses.new_zeros(selected.shape)
    full[selected] = losses
    return full.transpose(0, 1)

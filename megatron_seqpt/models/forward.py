"""Forward steps for megatron-core's schedules: one micro-batch in, per-token loss out.

Losses are returned as (sum over loss tokens, number of loss tokens); with
``calculate_per_token_loss`` the schedule and finalize_model_grads divide by the global token
count, so the result does not depend on how the batch is split over micro-batches or ranks.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Iterator

import torch
from megatron.core.datasets.t5_dataset import T5MaskedWordPieceDataset

from megatron_seqpt.models.specs import LayerImpl

Batch = dict[str, torch.Tensor]


def masked_token_loss(loss_mask: torch.Tensor, output_tensor: torch.Tensor):
    """(loss sum, token count, report) as megatron-core's schedules expect."""
    mask = loss_mask.reshape(-1).float()
    loss_sum = (output_tensor.reshape(-1).float() * mask).sum()
    num_tokens = mask.sum().to(torch.int)
    # A copy for logging: the schedule may scale the returned loss in place.
    report = torch.stack([loss_sum.detach().clone(), mask.sum().detach()])
    return loss_sum, num_tokens, {"lm loss": report}


def _to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
            for k, v in batch.items()}


def t5_attention_masks(batch: Batch, impl: LayerImpl):
    """Encoder, decoder and cross-attention masks in the layout the layer spec expects."""
    return T5MaskedWordPieceDataset.config_attention_mask(
        batch["text_enc"], batch["text_dec"], batch["enc_mask"], batch["dec_mask"],
        use_local=impl.is_local)


def encoder_output(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Per-token MLM loss [b, s] on the last pipeline stage, hidden states elsewhere."""
    return model(batch["text"], batch["padding_mask"], lm_labels=batch["labels"],
                 loss_mask=batch["loss_mask"])


def t5_output(model: torch.nn.Module, batch: Batch, impl: LayerImpl) -> torch.Tensor:
    """Per-token decoder loss [b, s_dec]."""
    enc_mask, dec_mask, enc_dec_mask = t5_attention_masks(batch, impl)
    return model(batch["text_enc"], batch["text_dec"], enc_mask, dec_mask, enc_dec_mask,
                 lm_labels=batch["labels"])


def make_forward_step(kind: str, impl: LayerImpl, device: torch.device) -> Callable:
    """``forward_step(data_iterator, model)`` for megatron-core's get_forward_backward_func."""

    def forward_step(data_iterator: Iterator[Batch], model: torch.nn.Module):
        batch = _to_device(next(data_iterator), device)
        if kind == "encoder":
            output = encoder_output(model, batch)
        else:
            output = t5_output(model, batch, impl)
        return output, partial(masked_token_loss, batch["loss_mask"])

    return forward_step

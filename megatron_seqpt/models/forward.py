"""Forward steps for megatron-core's schedules: one micro-batch in, per-token loss out.

Losses are returned as (sum over loss tokens, number of loss tokens); with
``calculate_per_token_loss`` the schedule and finalize_model_grads divide by the global token
count, so the result does not depend on how the batch is split over micro-batches or ranks.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Iterator, Optional

import torch
from megatron.core.datasets.t5_dataset import T5MaskedWordPieceDataset
from megatron.core.transformer.module import Float16Module

from megatron_seqpt.models.encoder_masking import EncoderMasking
from megatron_seqpt.models.pipelined_t5 import PipelinedT5
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


def t5_attention_masks(batch: Batch, impl: LayerImpl, te_version: Optional[str] = None):
    """Encoder, decoder and cross-attention masks in the layout the layer spec expects.
    ``te_version``: build transformer-engine's layout for that version (default: the installed
    one).

    The batches' ``enc_mask``/``dec_mask`` hold 1 at real tokens; megatron-core's masks hold
    True where attention is masked out. The local layout is built from the tokens; the
    transformer-engine layout takes the given masks as they are, so they are inverted first.
    """
    return T5MaskedWordPieceDataset.config_attention_mask(
        batch["text_enc"], batch["text_dec"], batch["enc_mask"] < 0.5, batch["dec_mask"] < 0.5,
        use_local=impl.is_local, test_te_version=te_version)


def encoder_output(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Per-token MLM loss [b, s] on the last pipeline stage, hidden states elsewhere."""
    return model(batch["text"], batch["padding_mask"], lm_labels=batch["labels"],
                 loss_mask=batch["loss_mask"])


def _unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    while hasattr(model, "module"):
        model = model.module
    return model


def t5_output(model: torch.nn.Module, batch: Batch, impl: LayerImpl,
              encoder_frozen: bool = False):
    """Per-token decoder loss [b, s_dec]; for a batch with a masked encoder input
    (``encoder_mlm_*`` keys) also the encoder's per-token MLM loss [n].

    With the encoder (and what feeds it) frozen, the encoder runs under no_grad and only the
    decoder is recorded for backward: a frozen encoder costs its forward pass and nothing more.
    """
    masks = t5_attention_masks(batch, impl)
    encoder_mlm = "encoder_mlm_labels" in batch
    text_enc = batch["encoder_mlm_input"] if encoder_mlm else batch["text_enc"]
    inputs = (text_enc, batch["text_dec"], *masks)
    # The vocabulary projection runs at the real target positions only.
    targets = {"lm_labels": batch["labels"], "loss_mask": batch["loss_mask"]}
    if isinstance(_unwrapped(model), PipelinedT5):  # one stage: it handles the freeze itself
        return model(*inputs, **targets, encoder_frozen=encoder_frozen)
    if not encoder_frozen and not encoder_mlm:
        return model(*inputs, **targets)
    # Keep the encoder output in the model's precision for the decoder's cross-attention.
    half = {"fp32_output": False} if isinstance(getattr(model, "module", None),
                                                 Float16Module) else {}
    with torch.set_grad_enabled(not encoder_frozen):
        encoded = model(*inputs, output_encoder_hidden_only=True, **half)
    decoder_losses = model(*inputs, **targets, encoder_hidden_states=encoded)
    if not encoder_mlm:
        return decoder_losses
    mlm_losses = _unwrapped(model).encoder_mlm_loss(encoded, batch["encoder_mlm_labels"],
                                                    batch["encoder_mlm_predicted"])
    return decoder_losses, mlm_losses.float()


def seq2seq_with_encoder_mlm_loss(loss_mask: torch.Tensor, weight: float, outputs):
    """The seq2seq loss plus the encoder MLM loss, both sums over tokens, a masked encoder
    token weighing ``weight`` times a decoder token (the schedule divides the sum by the
    global decoder token count). Sums keep the objective the same for every micro-batch split
    and data-parallel layout; a per-micro-batch mean would weigh micro-batches unevenly."""
    decoder_losses, mlm_losses = outputs
    loss_sum, num_tokens, report = masked_token_loss(loss_mask, decoder_losses)
    mlm_sum, mlm_tokens = mlm_losses.sum(), float(mlm_losses.numel())
    total = loss_sum + weight * mlm_sum
    report["encoder mlm loss"] = torch.stack([mlm_sum.detach().clone(),
                                              mlm_sum.new_tensor(mlm_tokens)])
    return total, num_tokens, report


def make_forward_step(kind: str, impl: LayerImpl, device: torch.device,
                      encoder_frozen: Callable[[], bool] = lambda: False,
                      encoder_masking: Optional[EncoderMasking] = None,
                      encoder_mlm_weight: float = 0.0) -> Callable:
    """``forward_step(data_iterator, model)`` for megatron-core's get_forward_backward_func;
    ``encoder_frozen()`` is asked at every micro-batch (the freeze schedule moves)."""

    def forward_step(data_iterator: Iterator[Batch], model: torch.nn.Module):
        batch = _to_device(next(data_iterator), device)
        if kind == "encoder":
            return encoder_output(model, batch), partial(masked_token_loss, batch["loss_mask"])
        if encoder_masking is None or not model.training:  # evaluation: the seq2seq loss
            return t5_output(model, batch, impl, encoder_frozen()), \
                partial(masked_token_loss, batch["loss_mask"])
        masked, predicted = encoder_masking.apply(batch["text_enc"])
        batch.update(encoder_mlm_input=masked, encoder_mlm_labels=batch["text_enc"],
                     encoder_mlm_predicted=predicted)
        return t5_output(model, batch, impl, encoder_frozen()), \
            partial(seq2seq_with_encoder_mlm_loss, batch["loss_mask"], encoder_mlm_weight)

    return forward_step

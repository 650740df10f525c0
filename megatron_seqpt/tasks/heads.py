"""Task models on the pre-trained encoder: megatron-core's BertModel body (embeddings, encoder
layers, final norm; the same parameter names as the MLM encoder and the T5 encoder) with a
classification or tagging head in place of the MLM head.

The head is replicated on every tensor-parallel rank, as megatron-core's BERT pooler and binary
head are: it reads the full hidden states (gathered first under sequence parallelism, without
summing the gradient back, since every rank computes the same head), its weights start from a
fixed generator so that all ranks hold the same values, and its dropout draws from the default
generator, which tensor-parallel ranks share.
"""

from __future__ import annotations

from typing import Literal

import torch
from megatron.core import tensor_parallel
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.transformer_config import TransformerConfig
from megatron.core.transformer.utils import ensure_metadata_has_dp_cp_group

from megatron_seqpt.models.builder import MLMEncoder


class TaskHead(MegatronModule):
    """Logits per example (classification: pooled, dense + tanh, then the classifier) or per
    position (tagging: the classifier on every hidden state)."""

    def __init__(self, config: TransformerConfig, kind: Literal["classification", "tagging"],
                 num_labels: int, pooling: Literal["mean", "cls"], dropout: float, seed: int):
        super().__init__(config=config)
        self.kind = kind
        self.pooling = pooling
        h = config.hidden_size
        generator = torch.Generator().manual_seed(seed)
        self.dense = torch.nn.Linear(h, h, dtype=config.params_dtype) \
            if kind == "classification" else None
        self.dropout = torch.nn.Dropout(dropout)
        self.classifier = torch.nn.Linear(h, num_labels, dtype=config.params_dtype)
        with torch.no_grad():
            for linear in (self.dense, self.classifier):
                if linear is not None:
                    linear.weight.copy_(torch.randn(linear.weight.shape, generator=generator)
                                        * config.init_method_std)
                    linear.bias.zero_()

    def forward(self, hidden: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        """``hidden`` [s, b, h] (this rank's part of s under sequence parallelism),
        ``padding_mask`` [b, s] with 1 at tokens; logits [b, labels] or [b, s, labels]."""
        if self.config.sequence_parallel:
            hidden = tensor_parallel.gather_from_sequence_parallel_region(
                hidden, tensor_parallel_output_grad=False)
        if self.kind == "tagging":
            return self.classifier(self.dropout(hidden)).transpose(0, 1)
        if self.pooling == "cls":
            pooled = hidden[0]
        else:
            weights = padding_mask.transpose(0, 1).unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(0) / weights.sum(0).clamp(min=1.0)
        return self.classifier(self.dropout(torch.tanh(self.dense(pooled))))


class TaskEncoder(MLMEncoder):
    """The encoder body with a task head; ``forward`` returns the head's logits."""

    def __init__(self, *args, head: TaskHead, **kwargs):
        super().__init__(*args, add_binary_head=False, share_embeddings_and_output_weights=False,
                         **kwargs)
        # BertModel builds its MLM head with the body; a task model has none.
        del self.lm_head, self.output_layer
        self.task_head = head

    def sharded_state_dict(self, prefix: str = "", sharded_offsets: tuple = (),
                           metadata: dict | None = None) -> dict:
        # Without a vocabulary projection there is nothing to tie to the embeddings (the
        # language-model version expects one).
        return MegatronModule.sharded_state_dict(self, prefix, sharded_offsets,
                                                 ensure_metadata_has_dp_cp_group(metadata))

    def forward(self, input_ids: torch.Tensor, padding_mask: torch.Tensor,
                encoder_frozen: bool = False) -> torch.Tensor:
        # A frozen body (a probe) runs without autograd: only the head is trained.
        with torch.set_grad_enabled(torch.is_grad_enabled() and not encoder_frozen):
            hidden = self.encode(input_ids, padding_mask)
        return self.task_head(hidden, padding_mask)

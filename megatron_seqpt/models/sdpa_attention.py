"""Core attention through torch's scaled_dot_product_attention, for the local layer spec.

megatron-core's local DotProductAttention materialises the score matrix and runs softmax and
dropout as separate kernels; torch's SDPA uses a fused kernel (flash/memory-efficient on GPU,
a fused CPU kernel on CPU) for the same result. transformer-engine's spec has its own fused
attention and does not use this module.
"""

from __future__ import annotations

import contextlib
from typing import Optional

import torch
import torch.nn.functional as F
from megatron.core.tensor_parallel import get_cuda_rng_tracker
from megatron.core.transformer.dot_product_attention import DotProductAttention
from megatron.core.transformer.enums import AttnMaskType
from torch.nn.attention import SDPBackend, sdpa_kernel

# The value megatron-core's local attention gives masked scores (not -inf).
_MASKED_SCORE = -10000.0
# Measured on an H200 (torch 2.11, bf16): the cuDNN backend returns non-finite gradients when a
# query row has every key masked; the memory-efficient, flash and math backends do not.
_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


class SDPAttention(DotProductAttention):
    """Same interface, parameters and masks as megatron-core's DotProductAttention."""

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                attention_mask: Optional[torch.Tensor],
                attn_mask_type: Optional[AttnMaskType] = None,
                attention_bias: Optional[torch.Tensor] = None, packed_seq_params=None):
        if attention_bias is not None or packed_seq_params is not None:
            raise NotImplementedError("SDPA core attention takes no attention bias or packed "
                                      "sequences; use the transformer-engine spec")
        if self.training and self.attention_dropout.p > 0 and query.device.type == "cpu":
            # torch's CPU SDPA computes dropout as a separate Bernoulli pass anyway; megatron-core's
            # math path does the same with this model's faster CPU dropout (models/cpu_dropout.py).
            return super().forward(query, key, value, attention_mask, attn_mask_type)
        # [s, b, heads, d] -> [b, heads, s, d]
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))
        groups = self.num_attention_heads_per_partition // self.num_query_groups_per_partition
        if groups > 1:
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        mask, causal = None, (attn_mask_type or self.attn_mask_type) == AttnMaskType.causal
        if attention_mask is not None and not causal:
            # megatron-core's masks are [b, 1, sq, sk] booleans (True = masked) that also mask
            # padded queries. Sequences are right-padded and start with a real token, so row 0
            # is the key-padding mask; with it, every query (padded ones too) sees at least one
            # key, and real positions get exactly the same context.
            mask = attention_mask[:, :, :1, :].to(q.dtype) * _MASKED_SCORE
        # Causal self-attention over right-padded sequences: causality alone already keeps
        # padding out of every real position's context (and lets SDPA use flash attention).
        dropout = self.attention_dropout.p if self.training else 0.0
        # As megatron-core does: outside sequence parallelism each tensor-parallel rank holds
        # other heads and draws its own dropout mask from the model-parallel RNG stream.
        rng = contextlib.nullcontext() if self.config.sequence_parallel else \
            get_cuda_rng_tracker().fork()
        with rng, sdpa_kernel(_BACKENDS):
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout,
                                                     is_causal=causal, scale=self.softmax_scale)
        # [b, heads, sq, d] -> [sq, b, heads * d]
        b, heads, sq, d = context.shape
        return context.permute(2, 0, 1, 3).reshape(sq, b, heads * d)

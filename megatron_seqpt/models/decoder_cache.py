"""The decoder's key/value cache for generation: megatron-core's static inference context
keeps the self-attention's keys and values (by layer number); the cross-attention keeps its
own, projected from the encoder output once per generation. A decoder layer's cross-attention
has the layer number of its self-attention, so megatron-core's context cannot hold both."""

from __future__ import annotations

from typing import Optional

import torch
from megatron.core.inference.contexts.static_context import StaticInferenceContext
from megatron.core.transformer.attention import CrossAttention

from megatron_seqpt.models.sdpa_attention import SDPAttention


class DecoderInferenceContext(StaticInferenceContext):
    """megatron-core's static inference context (the decoder self-attention's keys and values,
    by layer number) plus a cache for the cross-attention's keys and values, which cannot live
    there: a decoder layer's cross-attention has the layer number of its self-attention."""

    def __init__(self, max_batch_size: int, max_sequence_length: int) -> None:
        super().__init__(max_batch_size, max_sequence_length)
        self.cross_key_value_memory_dict: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def select_rows(self, index: torch.Tensor, *, cross: bool) -> None:
        """Keep the batch rows ``index`` (in that order) of the self-attention cache and, with
        ``cross``, of the cross-attention cache: beams reordered, finished rows dropped.

        Self-attention rows are moved in place and only where they change, over the filled
        positions: later steps keep writing into megatron-core's buffers (rows past the kept
        ones stay behind unused), and beams that continue their own prefix cost nothing.
        """
        target = torch.arange(len(index), device=index.device)
        moved = index != target
        if moved.any():
            target, source, filled = target[moved], index[moved], self.sequence_len_offset
            for key, value in self.key_value_memory_dict.values():
                key[:filled, target] = key[:filled, source]
                value[:filled, target] = value[:filled, source]
        if cross:
            self.cross_key_value_memory_dict = {
                layer: (key.index_select(1, index), value.index_select(1, index))
                for layer, (key, value) in self.cross_key_value_memory_dict.items()}


def _heads_major(states: torch.Tensor) -> torch.Tensor:
    """[s, b, heads, d] with [b, heads, s, d] memory: the layout torch's attention kernels
    read fastest at every decoding step (keys and values laid out once per generation)."""
    return states.permute(1, 2, 0, 3).contiguous().permute(2, 0, 1, 3)


class CachedCrossAttention(CrossAttention):
    """megatron-core's CrossAttention that projects the encoder output to keys and values once
    per generation instead of at every decoding step.

    In training and without an inference context it computes exactly what CrossAttention does.
    With a DecoderInferenceContext in eval mode, the first call stores this layer's keys and
    values in the context and later calls project only the query. With any inference context
    it keeps out of megatron-core's self-attention cache (looked up by the layer number it
    shares with the self-attention) and keeps its padding mask at every step (megatron-core
    drops the mask once decoding is past the first step).
    """

    _cache: Optional[dict] = None

    def forward(self, hidden_states: torch.Tensor, attention_mask, key_value_states=None,
                inference_context=None, **kwargs):
        if isinstance(inference_context, DecoderInferenceContext) and not self.training:
            self._cache = inference_context.cross_key_value_memory_dict
        try:
            return super().forward(hidden_states, attention_mask, key_value_states,
                                   inference_context, **kwargs)
        finally:
            self._cache = None

    def get_query_key_value_tensors(self, hidden_states, key_value_states, output_gate=False,
                                    split_qkv=True):
        cached = None if self._cache is None else self._cache.get(self.layer_number)
        if cached is None:
            query, key, value = super().get_query_key_value_tensors(
                hidden_states, key_value_states, output_gate, split_qkv)
            if self._cache is not None:
                if isinstance(self.core_attention, SDPAttention):  # takes any strides
                    key, value = _heads_major(key), _heads_major(value)
                self._cache[self.layer_number] = (key, value)
            return query, key, value
        query, _ = self.linear_q(hidden_states)  # [sq, b, hp] -> [sq, b, np, hn]
        query = query.view(*query.shape[:-1], self.num_attention_heads_per_partition,
                           self.hidden_size_per_attention_head)
        return (query, *cached)

    def _adjust_key_value_for_inference(self, inference_context, query, key, value,
                                        rotary_pos_emb, *args, **kwargs):
        return query, key, value, rotary_pos_emb, self.attn_mask_type, None

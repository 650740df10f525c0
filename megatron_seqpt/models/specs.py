"""Layer specs: which megatron-core building blocks make up a layer on this machine.

transformer-engine's fused layers when it imports and a GPU is present; otherwise megatron-core's
local layers with apex's fused norm (GPU images without transformer-engine) or a torch norm.
The encoder spec is shared by the MLM encoder and the T5 encoder, so their parameters have the
same names and shapes and an encoder checkpoint loads into a T5 encoder as it is. The decoder's
cross-attention is megatron-core's with a key/value cache for generation (same parameters).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch
from megatron.core.fusions.fused_bias_dropout import get_bias_dropout_add
from megatron.core.inference.contexts.static_context import StaticInferenceContext
from megatron.core.tensor_parallel.layers import ColumnParallelLinear, RowParallelLinear
from megatron.core.transformer.attention import (
    CrossAttention,
    CrossAttentionSubmodules,
    SelfAttention,
    SelfAttentionSubmodules,
)
from megatron.core.transformer.dot_product_attention import DotProductAttention
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.identity_op import IdentityOp
from megatron.core.transformer.mlp import MLP, MLPSubmodules
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_block import TransformerBlockSubmodules
from megatron.core.transformer.transformer_config import TransformerConfig
from megatron.core.transformer.transformer_layer import (
    TransformerLayer,
    TransformerLayerSubmodules,
)

from megatron_seqpt.errors import UserError
from megatron_seqpt.models.sdpa_attention import SDPAttention
from megatron_seqpt.runtime.backend import Backend

# Local layers keep their norms as separate modules; checkpoints store them under the
# transformer-engine names (norm fused into the next linear), so either kind loads either.
_TE_STYLE_KEYS = {
    "input_layernorm.": "self_attention.linear_qkv.layer_norm_",
    "pre_mlp_layernorm.": "mlp.linear_fc1.layer_norm_",
}


class TorchNorm:
    """torch LayerNorm/RMSNorm built from a TransformerConfig, usable with sequence parallel.

    megatron-core's own torch-norm wrapper refuses sequence parallel. Marking the parameters
    ``sequence_parallel`` is what makes megatron-core's finalize_model_grads sum their
    gradients over the tensor-parallel group, as it does for apex's fused norm.
    """

    def __new__(cls, config: TransformerConfig, hidden_size: int, eps: float = 1e-5, **_):
        norm_cls = torch.nn.RMSNorm if config.normalization == "RMSNorm" else torch.nn.LayerNorm
        norm = norm_cls(hidden_size, eps=eps, dtype=config.params_dtype)
        for param in norm.parameters():
            param.sequence_parallel = config.sequence_parallel
        return norm


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


@dataclass(frozen=True)
class LayerImpl:
    """The chosen implementation; ``describe()`` goes into the run log."""

    kind: Literal["transformer_engine", "local"]
    norm: type
    attention: type = DotProductAttention

    @property
    def is_local(self) -> bool:
        return self.kind == "local"

    def describe(self) -> str:
        if not self.is_local:
            return ("layers=transformer-engine spec (fused norm+linear, TE attention), "
                    "norm=TENorm")
        return (f"layers=megatron-core local spec, norm={_name(self.norm)}, "
                f"attention={_name(self.attention)}")


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__name__}"


def choose_impl(requested: str, local_attention: str, backend: Backend) -> LayerImpl:
    """``requested`` is model.transformer_impl (auto, local or transformer_engine);
    ``local_attention`` model.local_attention (sdpa or megatron)."""
    if requested == "transformer_engine" and not backend.transformer_engine:
        raise UserError("model.transformer_impl is transformer_engine but transformer-engine "
                        "is not importable here (or no GPU is visible); use auto or local")
    if backend.transformer_engine and requested != "local":
        from megatron.core.extensions.transformer_engine import TENorm

        return LayerImpl("transformer_engine", TENorm)
    attention = SDPAttention if local_attention == "sdpa" else DotProductAttention
    if backend.apex:
        from megatron.core.fusions.fused_layer_norm import FusedLayerNorm

        return LayerImpl("local", FusedLayerNorm, attention)
    return LayerImpl("local", TorchNorm, attention)


def _local_layer(impl: LayerImpl, *, causal_self_attention: bool,
                 cross_attention: bool) -> ModuleSpec:
    norm = impl.norm
    self_attention = ModuleSpec(
        module=SelfAttention,
        params={"attn_mask_type": AttnMaskType.causal if causal_self_attention
                else AttnMaskType.padding},
        submodules=SelfAttentionSubmodules(
            linear_qkv=ColumnParallelLinear, core_attention=impl.attention,
            linear_proj=RowParallelLinear, q_layernorm=IdentityOp, k_layernorm=IdentityOp))
    extra = {}
    if cross_attention:
        extra = dict(
            pre_cross_attn_layernorm=norm,
            cross_attention=ModuleSpec(
                module=CachedCrossAttention,
                params={"attn_mask_type": AttnMaskType.padding},
                submodules=CrossAttentionSubmodules(
                    linear_q=ColumnParallelLinear, linear_kv=ColumnParallelLinear,
                    core_attention=impl.attention, linear_proj=RowParallelLinear)),
            cross_attn_bda=get_bias_dropout_add)
    return ModuleSpec(
        module=TransformerLayer,
        submodules=TransformerLayerSubmodules(
            input_layernorm=norm,
            self_attention=self_attention,
            self_attn_bda=get_bias_dropout_add,
            pre_mlp_layernorm=norm,
            mlp=ModuleSpec(module=MLP, submodules=MLPSubmodules(
                linear_fc1=ColumnParallelLinear, linear_fc2=RowParallelLinear)),
            mlp_bda=get_bias_dropout_add,
            sharded_state_dict_keys_map=dict(_TE_STYLE_KEYS),
            **extra))


def encoder_layer_spec(impl: LayerImpl) -> ModuleSpec:
    if impl.is_local:
        return _local_layer(impl, causal_self_attention=False, cross_attention=False)
    from megatron.core.models.T5.t5_spec import (
        encoder_model_with_transformer_engine_default_spec,
    )

    return encoder_model_with_transformer_engine_default_spec()


def decoder_layer_spec(impl: LayerImpl) -> ModuleSpec:
    if impl.is_local:
        return _local_layer(impl, causal_self_attention=True, cross_attention=True)
    from megatron.core.models.T5.t5_spec import (
        decoder_model_with_transformer_engine_default_spec,
    )

    spec = decoder_model_with_transformer_engine_default_spec()
    spec.submodules.cross_attention.module = CachedCrossAttention
    return spec


def block_spec(layer: ModuleSpec, num_layers: int, impl: LayerImpl) -> TransformerBlockSubmodules:
    """``num_layers`` layers (this pipeline stage's) and the final norm.

    Given explicitly because megatron-core's T5 block specs name transformer-engine's norm
    even for local layers, which leaves the model without a final norm when TE is absent.
    """
    return TransformerBlockSubmodules(layer_specs=[layer] * num_layers, layer_norm=impl.norm)

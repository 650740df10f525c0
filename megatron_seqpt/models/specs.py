"""Layer specs: which megatron-core building blocks make up a layer on this machine.

transformer-engine's fused layers when it imports and a GPU is present; otherwise megatron-core's
local layers with apex's fused norm (GPU images without transformer-engine) or a torch norm.
The encoder spec is shared by the MLM encoder and the T5 encoder, so their parameters have the
same names and shapes and an encoder checkpoint loads into a T5 encoder as it is. The decoder's
cross-attention is megatron-core's with a key/value cache for generation (same parameters).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from megatron.core.tensor_parallel.layers import ColumnParallelLinear, RowParallelLinear
from megatron.core.transformer.attention import (
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
from megatron_seqpt.models.cpu_dropout import bias_dropout_add
from megatron_seqpt.models.decoder_cache import CachedCrossAttention
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
            cross_attn_bda=bias_dropout_add)
    return ModuleSpec(
        module=TransformerLayer,
        submodules=TransformerLayerSubmodules(
            input_layernorm=norm,
            self_attention=self_attention,
            self_attn_bda=bias_dropout_add,
            pre_mlp_layernorm=norm,
            mlp=ModuleSpec(module=MLP, submodules=MLPSubmodules(
                linear_fc1=ColumnParallelLinear, linear_fc2=RowParallelLinear)),
            mlp_bda=bias_dropout_add,
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

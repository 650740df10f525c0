"""T5 over pipeline stages, on megatron-core's unchanged pipeline schedules.

megatron-core no longer pipelines encoder-decoder models. Here every stage passes one tensor
to the next, the encoder and decoder hidden states packed along the sequence axis,
[s_enc + s_dec, b, h]: stage 0 embeds both token streams; a stage runs its encoder layers on
the encoder part, its decoder layers on the decoder part with the encoder part (the finished
encoder output by then) as cross-attention context; the last stage projects the decoder part
onto the vocabulary and computes the loss. The word embeddings of the first and last stage are
tied and kept identical as megatron-core does for GPT (LanguageModule, finalize_model_grads).

Parameter and checkpoint names are T5Model's (megatron-core's TransformerBlock scheme with
global layer offsets), so checkpoints move between pipeline sizes and to T5Model at size 1.
While the encoder (and the embeddings) are frozen, encoder layers run without autograd and the
decoder takes no gradient through the encoder output: stages holding only frozen layers do
forward work only.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch
from megatron.core import parallel_state
from megatron.core.dist_checkpointing.utils import replace_prefix_for_sharding
from megatron.core.enums import ModelType
from megatron.core.models.common.embeddings.language_model_embedding import (
    LanguageModelEmbedding,
)
from megatron.core.models.common.language_module.language_module import LanguageModule
from megatron.core.models.T5.t5_model import T5LMHead, t5_position_ids
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.spec_utils import ModuleSpec, build_module
from megatron.core.transformer.transformer_config import TransformerConfig
from megatron.core.transformer.utils import sharded_state_dict_default

from megatron_seqpt.models.pipeline_split import StageLayers
from megatron_seqpt.models.target_loss import loss_at_targets


class StageBlock(MegatronModule):
    """A contiguous run of one stack's layers, and its final norm where the run ends the stack.

    Layers carry their global numbers; checkpoint keys and offsets are those megatron-core's
    TransformerBlock writes for the whole stack.
    """

    def __init__(self, config: TransformerConfig, layer_spec: ModuleSpec, layers: range,
                 total_layers: int, norm: type):
        # Layer numbers are global already: no pipeline offset on top of them.
        local = dataclasses.replace(config, pipeline_model_parallel_size=1)
        super().__init__(config=local)
        self.total_layers = total_layers
        self.layers = torch.nn.ModuleList(
            build_module(layer_spec, config=local, layer_number=number + 1) for number in layers)
        self.final_layernorm = None
        if layers.stop == total_layers:
            self.final_layernorm = build_module(norm, config=local, hidden_size=local.hidden_size,
                                                eps=local.layernorm_epsilon)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor,
                context: Optional[torch.Tensor] = None,
                context_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        for layer in self.layers:
            hidden, _ = layer(hidden_states=hidden, attention_mask=attention_mask,
                              context=context, context_mask=context_mask)
        if self.final_layernorm is not None:
            hidden = self.final_layernorm(hidden)
        return hidden

    def sharded_state_dict(self, prefix: str = "", sharded_offsets: tuple = (),
                           metadata: Optional[dict] = None) -> dict:
        state = {}
        for index, layer in enumerate(self.layers):
            local_prefix = f"{prefix}layers.{index}."
            layer_state = layer.sharded_state_dict(
                local_prefix, [(0, layer.layer_number - 1, self.total_layers)], metadata)
            replace_prefix_for_sharding(layer_state, local_prefix, f"{prefix}layers.")
            state.update(layer_state)
        if self.final_layernorm is not None:
            state.update(sharded_state_dict_default(
                self.final_layernorm, f"{prefix}final_layernorm.", sharded_offsets, metadata,
                tp_group=parallel_state.get_tensor_model_parallel_group()))
        return state


class PipelinedT5(LanguageModule):
    """One pipeline stage of a T5 model (see the module docstring)."""

    def __init__(self, config: TransformerConfig, encoder_config: TransformerConfig,
                 encoder_layer_spec: ModuleSpec, decoder_layer_spec: ModuleSpec, norm: type,
                 vocab_size: int, max_sequence_length: int, encoder_seq_length: int,
                 stage: StageLayers, pre_process: bool, post_process: bool):
        super().__init__(config=config)
        self.vocab_size = vocab_size
        self.pre_process, self.post_process = pre_process, post_process
        self.share_embeddings_and_output_weights = True
        self.parallel_output = True
        self.position_embedding_type = "learned_absolute"
        self.model_type = ModelType.encoder_or_decoder
        self.encoder_seq_length = encoder_seq_length
        self.input_tensor: Optional[torch.Tensor] = None
        if pre_process:
            self.embedding = LanguageModelEmbedding(
                config=config, vocab_size=vocab_size, max_sequence_length=max_sequence_length,
                position_embedding_type="learned_absolute")
            self.position_embeddings = self.embedding.position_embeddings  # as T5Model
        self.encoder = StageBlock(encoder_config, encoder_layer_spec, stage.encoder,
                                  encoder_config.num_layers, norm) if stage.encoder else None
        self.decoder = StageBlock(config, decoder_layer_spec, stage.decoder, config.num_layers,
                                  norm) if stage.decoder else None
        if post_process:
            self.lm_head = T5LMHead(config, True, vocab_size, pre_process, True)
            self.output_layer = self.lm_head.output_layer
        self.setup_embeddings_and_output_layer()

    def sharded_state_dict(self, prefix: str = "", sharded_offsets: tuple = (),
                           metadata: Optional[dict] = None) -> dict:
        state = super().sharded_state_dict(prefix, sharded_offsets, metadata)
        # The last stage's copy of the tied word embeddings is a parameter here (T5Model at one
        # stage has none): megatron-core maps "output_layer.weight" onto the embeddings' key;
        # its second name, under lm_head, must map the same way.
        tied = state.get(f"{prefix}output_layer.weight")
        if tied is not None:
            state[f"{prefix}lm_head.output_layer.weight"] = tied
        return state

    def set_input_tensor(self, input_tensor) -> None:
        """The packed hidden states received from the previous stage (megatron-core's hook)."""
        self.input_tensor = input_tensor[0] if isinstance(input_tensor, list) else input_tensor

    def forward(self, encoder_input_ids: torch.Tensor, decoder_input_ids: torch.Tensor,
                encoder_attn_mask: torch.Tensor, decoder_attn_mask: torch.Tensor,
                encoder_decoder_attn_mask: torch.Tensor,
                lm_labels: Optional[torch.Tensor] = None, encoder_frozen: bool = False,
                loss_mask: Optional[torch.Tensor] = None):
        """Per-token decoder loss [b, s_dec] on the last stage, packed states elsewhere; given
        ``loss_mask``, the vocabulary projection runs at the real target positions only."""
        if self.pre_process:
            encoded = self.embedding(input_ids=encoder_input_ids,
                                     position_ids=t5_position_ids(encoder_input_ids))
            decoded = self.embedding(input_ids=decoder_input_ids,
                                     position_ids=t5_position_ids(decoder_input_ids))
        else:
            encoded = self.input_tensor[:self.encoder_seq_length]
            decoded = self.input_tensor[self.encoder_seq_length:]
        if self.encoder is not None:
            with torch.set_grad_enabled(torch.is_grad_enabled() and not encoder_frozen):
                encoded = self.encoder(encoded, encoder_attn_mask)
        if encoder_frozen:
            encoded = encoded.detach()  # no gradient into a frozen encoder's output
        if self.decoder is not None:
            decoded = self.decoder(decoded, decoder_attn_mask, context=encoded,
                                   context_mask=encoder_decoder_attn_mask)
        if self.post_process:
            weight = self.shared_embedding_or_output_weight()
            if loss_mask is not None and not self.config.sequence_parallel:
                return loss_at_targets(self, decoded, lm_labels, loss_mask,
                                       lambda states: self.lm_head(states, weight))
            return self.compute_language_model_loss(lm_labels, self.lm_head(decoded, weight))
        packed = torch.cat([encoded, decoded], dim=0)
        if torch.is_grad_enabled() and not packed.requires_grad:
            # Nothing up to this stage trains; the schedule still runs this stage's backward,
            # which then ends at once.
            packed.requires_grad_()
        return packed

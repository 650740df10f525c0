"""Build the MLM encoder (megatron-core BertModel) or the T5 model (megatron-core T5Model).

Both use learned absolute positions, tied input/output embeddings and the same encoder layer
spec, so the encoder part of either is interchangeable with the other's.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
import torch.nn.functional as F
from megatron.core import tensor_parallel
from megatron.core.enums import ModelType
from megatron.core.models.bert import bert_lm_head
from megatron.core.models.bert.bert_model import BertModel
from megatron.core.models.T5.t5_model import T5Model
from megatron.core.transformer.enums import AttnBackend
from megatron.core.transformer.module import Float16Module
from megatron.core.transformer.transformer_block import get_num_layers_to_build
from megatron.core.transformer.transformer_config import TransformerConfig

from megatron_seqpt.config.schema import ModelConfig, ParallelConfig, StackConfig
from megatron_seqpt.models.cpu_dropout import use_cpu_dropout
from megatron_seqpt.models.pipeline_split import StageLayers
from megatron_seqpt.models.pipelined_t5 import PipelinedT5
from megatron_seqpt.models.specs import (
    LayerImpl,
    block_spec,
    decoder_layer_spec,
    encoder_layer_spec,
)
from megatron_seqpt.models.target_loss import loss_at_targets
from megatron_seqpt.runtime.backend import Backend

Precision = Literal["fp32", "bf16"]


def transformer_config(model: ModelConfig, stack: StackConfig, parallel: ParallelConfig,
                       precision: Precision, impl: LayerImpl,
                       backend: Backend) -> TransformerConfig:
    """megatron-core's TransformerConfig for one stack (encoder or decoder)."""
    bf16 = precision == "bf16"
    on_gpu = backend.cuda
    activation = {"gelu": F.gelu, "relu": F.relu, "swiglu": F.silu}[model.activation]
    return TransformerConfig(
        num_layers=stack.num_layers,
        hidden_size=model.hidden_size,
        ffn_hidden_size=stack.ffn_hidden_size,
        num_attention_heads=stack.num_attention_heads,
        hidden_dropout=model.hidden_dropout,
        attention_dropout=model.attention_dropout,
        init_method_std=model.init_method_std,
        normalization=model.normalization,
        activation_func=activation,
        gated_linear_unit=model.activation == "swiglu",
        tensor_model_parallel_size=parallel.tensor_model_parallel_size,
        pipeline_model_parallel_size=parallel.pipeline_model_parallel_size,
        sequence_parallel=parallel.sequence_parallel,
        bf16=bf16,
        params_dtype=torch.bfloat16 if bf16 else torch.float32,
        pipeline_dtype=torch.bfloat16 if bf16 else torch.float32,
        # Losses are summed per token and divided by the global token count, so that any
        # split into micro-batches and data-parallel ranks gives the same gradients.
        calculate_per_token_loss=True,
        use_cpu_initialization=not on_gpu,
        attention_backend=AttnBackend.local if impl.is_local else AttnBackend.auto,
        # Fusions that need CUDA kernels only where those exist. Not the bias-GELU fusion:
        # it computes the tanh approximation, while the MLM head (and the CPU) use the exact
        # GELU; one GELU keeps a GPU-trained model the same model on CPU and in an export.
        masked_softmax_fusion=backend.fused_softmax,
        bias_activation_fusion=on_gpu and model.activation == "swiglu",
        bias_dropout_fusion=on_gpu,
        gradient_accumulation_fusion=False,
        persist_layer_norm=False,
        cuda_graph_scope=[],
    )


class MLMEncoder(BertModel):
    """megatron-core's BertModel with the chosen norm everywhere, given a whole block spec.

    BertModel takes a layer spec and picks the final norm and its MLM head's norm by what is
    importable, which cannot carry sequence parallel on CPU; and it derives the attention-mask
    layout from the layer spec, which here is known from the implementation.
    """

    def __init__(self, *args, impl: LayerImpl, **kwargs):
        self._impl = impl
        default_head_norm = bert_lm_head.LNImpl
        bert_lm_head.LNImpl = impl.norm
        try:
            super().__init__(*args, **kwargs)
        finally:
            bert_lm_head.LNImpl = default_head_norm

    def _sanity_check_attention_and_get_attn_mask_dimension(self) -> str:
        return "b1ss" if self._impl.is_local else "b11s"

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The encoder's output hidden states [s, b, h] (after its final norm), no head."""
        post_process, self.post_process = self.post_process, False  # BertModel stops there
        try:
            return super().forward(input_ids, attention_mask)
        finally:
            self.post_process = post_process

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                lm_labels: Optional[torch.Tensor] = None,
                loss_mask: Optional[torch.Tensor] = None):
        """Per-token MLM loss [b, s] on the last pipeline stage (hidden states elsewhere).

        Given ``loss_mask``, the MLM head and the vocabulary projection run only at the
        predicted positions (about 15% of the tokens) instead of at every position: the same
        loss for a fraction of the model's largest matmul. Under sequence parallelism each rank
        holds part of the sequence, and BertModel's full-sequence path is used instead.
        """
        if loss_mask is None or lm_labels is None or not self.post_process \
                or self.config.sequence_parallel:
            output = super().forward(input_ids, attention_mask, lm_labels=lm_labels)
            return output[0] if isinstance(output, tuple) else output
        hidden = self.encode(input_ids, attention_mask)  # [s, b, h]
        weight = self.shared_embedding_or_output_weight()
        return loss_at_targets(self, hidden, lm_labels, loss_mask,
                               lambda states: self.output_layer(self.lm_head(states),
                                                                weight=weight)[0])


class SeqToSeqT5(T5Model):
    """megatron-core's T5Model whose decoder loss, given the decoder's loss mask, projects onto
    the vocabulary only at the real target positions: a padded decoder position costs its
    layers but not the vocabulary projection and softmax (the same loss; tested). Under
    sequence parallelism T5Model's full path is used (each rank holds part of the sequence)."""

    def forward(self, *inputs, lm_labels: Optional[torch.Tensor] = None,
                loss_mask: Optional[torch.Tensor] = None, **kwargs):
        if loss_mask is None or lm_labels is None or not self.post_process \
                or self.config.sequence_parallel or kwargs.get("output_encoder_hidden_only"):
            return super().forward(*inputs, lm_labels=lm_labels, **kwargs)
        post_process, self.post_process = self.post_process, False  # T5Model stops there
        try:
            hidden = super().forward(*inputs, **kwargs)  # [s, b, h], after the final norm
        finally:
            self.post_process = post_process
        weight = self.shared_embedding_or_output_weight()
        return loss_at_targets(self, hidden, lm_labels, loss_mask,
                               lambda states: self.lm_head(states, word_embeddings_weight=weight))


class T5WithEncoderMLM(SeqToSeqT5):
    """SeqToSeqT5 plus an MLM head on the encoder output (a BERT-style head whose
    vocabulary projection is tied to the shared word embeddings): the "masking during seq2seq
    training" variant, whose encoder also learns to predict masked tokens."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        config = self.encoder_config
        self.encoder_mlm_head = bert_lm_head.BertLMHead(config.hidden_size, config)
        self.encoder_mlm_output = tensor_parallel.ColumnParallelLinear(
            config.hidden_size, self.vocab_size, config=config, init_method=config.init_method,
            bias=True, skip_bias_add=False, gather_output=False,
            skip_weight_param_allocation=True)

    def encoder_mlm_loss(self, encoded: torch.Tensor, labels: torch.Tensor,
                         predicted: torch.Tensor) -> torch.Tensor:
        """Per-token loss [n] at the ``predicted`` positions ([b, s] bool) of ``encoded``."""
        positions = predicted.transpose(0, 1)  # [s, b], the layout of ``encoded``
        head = self.encoder_mlm_head(encoded[positions]).unsqueeze(1)  # [n, 1, h]
        logits, _ = self.encoder_mlm_output(head,
                                            weight=self.shared_embedding_or_output_weight())
        targets = labels.transpose(0, 1)[positions].unsqueeze(0)  # [1, n]
        return self.compute_language_model_loss(targets, logits)[0]


def build_model(model: ModelConfig, parallel: ParallelConfig, vocab_size: int,
                precision: Precision, impl: LayerImpl, backend: Backend, *,
                pre_process: bool = True, post_process: bool = True,
                stage: Optional[StageLayers] = None,
                encoder_seq_length: Optional[int] = None) -> torch.nn.Module:
    """This pipeline stage's part of the model, on the current device, not yet wrapped in
    DDP (in megatron-core's Float16Module for bf16). A pipelined T5 needs the stage's layers
    (models/pipeline_split.py) and the encoder sequence length (where the packed states
    split)."""
    encoder_config = transformer_config(model, model.encoder, parallel, precision, impl, backend)
    encoder_block = block_spec(encoder_layer_spec(impl),
                               get_num_layers_to_build(encoder_config), impl)
    common = dict(vocab_size=vocab_size, max_sequence_length=model.max_position_embeddings,
                  pre_process=pre_process, post_process=post_process, parallel_output=True,
                  share_embeddings_and_output_weights=True,
                  position_embedding_type="learned_absolute")
    if model.kind == "t5" and parallel.pipeline_model_parallel_size > 1:
        built = PipelinedT5(
            transformer_config(model, model.decoder, parallel, precision, impl, backend),
            encoder_config, encoder_layer_spec(impl), decoder_layer_spec(impl), impl.norm,
            vocab_size, model.max_position_embeddings, encoder_seq_length, stage,
            pre_process=pre_process, post_process=post_process)
    elif model.kind == "encoder":
        built = MLMEncoder(config=encoder_config, num_tokentypes=0,
                           transformer_layer_spec=encoder_block, add_binary_head=False,
                           impl=impl, **common)
    else:
        decoder_config = transformer_config(model, model.decoder, parallel, precision, impl,
                                            backend)
        decoder_block = block_spec(decoder_layer_spec(impl), model.decoder.num_layers, impl)
        t5_class = T5WithEncoderMLM if model.encoder_mlm_weight else SeqToSeqT5
        built = t5_class(config=decoder_config, encoder_config=encoder_config,
                        transformer_encoder_layer_spec=encoder_block,
                        transformer_decoder_layer_spec=decoder_block, **common)
    return place(built, encoder_config, precision, backend)


def place(built: torch.nn.Module, config: TransformerConfig, precision: Precision,
          backend: Backend) -> torch.nn.Module:
    """A built model on the current device, in megatron-core's Float16Module for bf16."""
    built.model_type = ModelType.encoder_or_decoder
    if backend.cuda:
        built.cuda(torch.cuda.current_device())
    else:
        use_cpu_dropout(built)
    if precision == "bf16":
        # megatron-core's half-precision wrapper: every parameter (also of layers that are
        # plain torch modules, like the MLM head's dense) in bf16, inputs cast on the first
        # pipeline stage and outputs back to fp32 on the last.
        built = Float16Module(config, built)
    return built


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


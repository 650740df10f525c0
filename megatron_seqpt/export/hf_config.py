"""Hugging Face model configs for the project's models, and the model settings back from them.

Only what both sides can express is exported: LayerNorm (MegatronBert and Blenderbot have no
RMSNorm), GELU or ReLU (no SwiGLU), learned absolute positions, one attention head size.
The LayerNorm epsilon is megatron-core's 1e-5 on both sides (HF's BERT default is 1e-12).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from megatron_seqpt.config.schema import ModelConfig, StackConfig
from megatron_seqpt.errors import UserError
from megatron_seqpt.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer

LAYERNORM_EPS = 1e-5  # megatron-core's TransformerConfig.layernorm_epsilon
HF_ACTIVATION = {"gelu": "gelu", "relu": "relu"}  # both exact (torch's erf GELU)
MLM_CLASS = "MegatronBertForMaskedLM"
CLASSIFIER_CLASS = "MegatronBertForSequenceClassification"
TAGGER_CLASS = "MegatronBertForTokenClassification"
SEQ2SEQ_CLASS = "BlenderbotForConditionalGeneration"
ENCODER_CLASSES = (MLM_CLASS, CLASSIFIER_CLASS, TAGGER_CLASS)


def check_exportable(model: ModelConfig, where: str) -> None:
    if model.normalization != "LayerNorm":
        raise UserError(f"{where}: model.normalization is {model.normalization}; the Hugging "
                        "Face classes with this layout (MegatronBert, Blenderbot) have "
                        "LayerNorm only, so this model cannot be exported exactly")
    if model.activation not in HF_ACTIVATION:
        raise UserError(f"{where}: model.activation is {model.activation}; MegatronBert and "
                        "Blenderbot have no gated MLP, so this model cannot be exported "
                        "exactly (gelu and relu can)")


def megatron_bert_config(model: ModelConfig, vocab_size: int, architecture: str,
                         labels: Optional[list[str]] = None):
    from transformers import MegatronBertConfig

    extra = {}
    if labels:
        extra = {"id2label": dict(enumerate(labels)),
                 "label2id": {label: i for i, label in enumerate(labels)}}
    return MegatronBertConfig(
        vocab_size=vocab_size, hidden_size=model.hidden_size,
        num_hidden_layers=model.encoder.num_layers,
        num_attention_heads=model.encoder.num_attention_heads,
        intermediate_size=model.encoder.ffn_hidden_size,
        hidden_act=HF_ACTIVATION[model.activation],
        hidden_dropout_prob=model.hidden_dropout,
        attention_probs_dropout_prob=model.attention_dropout,
        max_position_embeddings=model.max_position_embeddings,
        type_vocab_size=1, initializer_range=model.init_method_std,
        layer_norm_eps=LAYERNORM_EPS, pad_token_id=0, position_embedding_type="absolute",
        tie_word_embeddings=True, architectures=[architecture], **extra)


def blenderbot_config(model: ModelConfig, vocab_size: int, tokenizer: SentencePieceTokenizer):
    from transformers import BlenderbotConfig

    return BlenderbotConfig(
        vocab_size=vocab_size, d_model=model.hidden_size,
        encoder_layers=model.encoder.num_layers, decoder_layers=model.decoder.num_layers,
        encoder_attention_heads=model.encoder.num_attention_heads,
        decoder_attention_heads=model.decoder.num_attention_heads,
        encoder_ffn_dim=model.encoder.ffn_hidden_size,
        decoder_ffn_dim=model.decoder.ffn_hidden_size,
        activation_function=HF_ACTIVATION[model.activation],
        dropout=model.hidden_dropout, attention_dropout=model.attention_dropout,
        activation_dropout=0.0, max_position_embeddings=model.max_position_embeddings,
        init_std=model.init_method_std, scale_embedding=False,
        pad_token_id=tokenizer.pad, bos_token_id=tokenizer.bos, eos_token_id=tokenizer.eos,
        decoder_start_token_id=tokenizer.bos, forced_eos_token_id=None,
        encoder_no_repeat_ngram_size=0, tie_word_embeddings=True,
        architectures=[SEQ2SEQ_CLASS])


def generation_config(tokenizer: SentencePieceTokenizer, vocab_size: int,
                      max_new_tokens: int):
    """Greedy decoding as ``seqpt generate`` does it: from ``<s>``, stop at ``</s>``, never
    pad, the start token or the ids past the tokenizer's vocabulary (the model's is padded)."""
    from transformers import GenerationConfig

    return GenerationConfig(
        decoder_start_token_id=tokenizer.bos, bos_token_id=tokenizer.bos,
        eos_token_id=tokenizer.eos, pad_token_id=tokenizer.pad,
        suppress_tokens=[tokenizer.pad, tokenizer.bos,
                         *range(tokenizer.vocab_size, vocab_size)],
        max_new_tokens=max_new_tokens, num_beams=1, do_sample=False)


# ------------------------------------------------------------------------ import


def model_config_from_hf(config, where: str) -> ModelConfig:
    """The project's model settings of a MegatronBert or Blenderbot config; anything these
    models cannot compute is refused, naming the field."""
    architecture = (config.architectures or [None])[0]
    activation = {v: k for k, v in HF_ACTIVATION.items()}
    if config.model_type == "megatron-bert":
        _require(where, config, layer_norm_eps=LAYERNORM_EPS, position_embedding_type="absolute")
        if config.type_vocab_size != 1:
            raise UserError(f"{where}: type_vocab_size is {config.type_vocab_size}; the "
                            "project's encoder has no token types (1, all zeros)")
        act = _activation(where, config.hidden_act, activation)
        if architecture not in (None, MLM_CLASS):
            raise UserError(f"{where} is a {architecture}; import takes {MLM_CLASS} and "
                            f"{SEQ2SEQ_CLASS} (a fine-tuned head has no pre-training run to "
                            "continue: fine-tune the exported encoder here instead)")
        return ModelConfig(
            kind="encoder", hidden_size=config.hidden_size,
            encoder=StackConfig(config.num_hidden_layers, config.intermediate_size,
                                config.num_attention_heads),
            max_position_embeddings=config.max_position_embeddings,
            activation=act, hidden_dropout=config.hidden_dropout_prob,
            attention_dropout=config.attention_probs_dropout_prob,
            init_method_std=config.initializer_range)
    if config.model_type == "blenderbot":
        _require(where, config, scale_embedding=False)
        act = _activation(where, config.activation_function, activation)
        return ModelConfig(
            kind="t5", hidden_size=config.d_model,
            encoder=StackConfig(config.encoder_layers, config.encoder_ffn_dim,
                                config.encoder_attention_heads),
            decoder=StackConfig(config.decoder_layers, config.decoder_ffn_dim,
                                config.decoder_attention_heads),
            max_position_embeddings=config.max_position_embeddings, activation=act,
            hidden_dropout=config.dropout, attention_dropout=config.attention_dropout,
            init_method_std=config.init_std)
    raise UserError(f"{where} is a {config.model_type} model; import takes {MLM_CLASS} and "
                    f"{SEQ2SEQ_CLASS}")


def _require(where: str, config, **wanted) -> None:
    for name, value in wanted.items():
        if getattr(config, name, value) != value:
            raise UserError(f"{where}: {name} is {getattr(config, name)!r}; the project's "
                            f"model computes it as {value!r}, so it cannot hold this model")


def _activation(where: str, name: str, known: dict) -> str:
    if name not in known:
        raise UserError(f"{where}: activation {name!r} is not one of the project's "
                        f"({', '.join(known)})")
    return known[name]


def keep_runtime_settings(imported: ModelConfig, configured: ModelConfig) -> ModelConfig:
    """The imported shape with the run config's implementation choices (which layers and
    attention kernel run it)."""
    return dataclasses.replace(imported, transformer_impl=configured.transformer_impl,
                               local_attention=configured.local_attention)

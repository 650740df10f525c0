"""Parameter names and shapes of the project's models in Hugging Face's classes, both ways.

The project's encoder (megatron-core's pre-LayerNorm BertModel, and the task models on it) is
``MegatronBert*``; its T5 (learned absolute positions, pre-LayerNorm, biases, tied embeddings)
is ``BlenderbotForConditionalGeneration``, which has that layout. Only two kinds of change are
needed, both exact (views and copies, no arithmetic):

- megatron-core fuses the attention projections into one matrix, interleaved per head: rows
  ``[heads, 3, head_dim]`` for query/key/value (``[heads, 2, head_dim]`` for the cross-attention
  key/value); Hugging Face keeps one matrix per projection;
- tied or shared tensors have one copy here and several there (word embeddings, the LM head's
  weight and bias; the one position table of T5, which Blenderbot keeps per stack).
  MegatronBert also has a token-type table, which the project's encoder has not: it is
  exported as one zero row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from megatron_seqpt.errors import UserError

State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Fused:
    """One megatron-core tensor that is ``len(parts)`` Hugging Face tensors, interleaved per
    head along the output dimension."""

    source: str
    parts: tuple[str, ...]
    heads: int


@dataclass
class WeightMap:
    """Where every project tensor goes in the Hugging Face model, and back."""

    # project name -> Hugging Face names holding a copy of it (the first is the one read back)
    copies: dict[str, tuple[str, ...]] = field(default_factory=dict)
    fused: list[Fused] = field(default_factory=list)
    # Hugging Face tensors the project has no counterpart of: name -> factory of the value
    # they must hold (given the exported tensors), checked on import.
    constants: dict[str, Callable[[State], torch.Tensor]] = field(default_factory=dict)
    # project name -> Hugging Face shape where they differ ((V,) bias -> (1, V))
    reshaped: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def rename(self, source: str, *targets: str) -> None:
        self.copies[source] = targets

    def project_names(self) -> set[str]:
        return set(self.copies) | {f.source for f in self.fused}

    def to_hf(self, state: State) -> State:
        missing = sorted(self.project_names() - set(state))
        if missing:
            raise UserError(f"the model lacks {', '.join(missing[:5])}: it is not the "
                            "model this export expects")
        out: State = {}
        for source, targets in self.copies.items():
            tensor = state[source]
            if source in self.reshaped:
                tensor = tensor.reshape(self.reshaped[source])
            for target in targets:
                out[target] = tensor
        for fused in self.fused:
            for target, part in zip(fused.parts, _split(state[fused.source], fused)):
                out[target] = part
        for name, make in self.constants.items():
            out[name] = make(out)
        return out

    def from_hf(self, state: State, where: str) -> State:
        """The project's tensors from a Hugging Face state dict (``where`` names it in
        errors). Copies must agree and constants hold their value: otherwise the Hugging Face
        model computes something the project's cannot."""
        wanted = {t for targets in self.copies.values() for t in targets} \
            | {p for f in self.fused for p in f.parts}
        missing = sorted(wanted - set(state))
        if missing:
            raise UserError(f"{where} lacks {', '.join(missing[:5])}")
        out: State = {}
        for source, targets in self.copies.items():
            first = state[targets[0]]
            for other in targets[1:]:
                if not torch.equal(state[other], first):
                    raise UserError(f"{where}: {other} differs from {targets[0]}; the "
                                    "project's model has one tensor for both (tied), so it "
                                    "cannot hold this model")
            out[source] = first.reshape(-1) if source in self.reshaped else first
        for fused in self.fused:
            out[fused.source] = _merge([state[p] for p in fused.parts], fused)
        for name, make in self.constants.items():
            if name in state and not torch.equal(state[name], make(state)):
                raise UserError(f"{where}: {name} is not {_describe_constant(name)}; the "
                                "project's model has no such tensor, so it cannot hold this "
                                "model")
        return out


def _describe_constant(name: str) -> str:
    return "all zeros" if "token_type" in name else "its expected value"


def _split(tensor: torch.Tensor, fused: Fused) -> list[torch.Tensor]:
    n = len(fused.parts)
    rows = tensor.shape[0] // (fused.heads * n)
    grouped = tensor.reshape(fused.heads, n, rows, *tensor.shape[1:])
    return [grouped[:, i].reshape(fused.heads * rows, *tensor.shape[1:]).contiguous()
            for i in range(n)]


def _merge(parts: list[torch.Tensor], fused: Fused) -> torch.Tensor:
    rows = parts[0].shape[0] // fused.heads
    grouped = torch.stack([p.reshape(fused.heads, rows, *p.shape[1:]) for p in parts], dim=1)
    return grouped.reshape(-1, *parts[0].shape[1:]).contiguous()


def _linear(m: WeightMap, source: str, target: str) -> None:
    for suffix in ("weight", "bias"):
        m.rename(f"{source}.{suffix}", f"{target}.{suffix}")


def _fused_linear(m: WeightMap, source: str, targets: tuple[str, ...], heads: int) -> None:
    for suffix in ("weight", "bias"):
        m.fused.append(Fused(f"{source}.{suffix}", tuple(f"{t}.{suffix}" for t in targets),
                             heads))


# ------------------------------------------------------------------------ MegatronBert


def megatron_bert(num_layers: int, heads: int, head: str) -> WeightMap:
    """The encoder with ``head``: ``mlm`` (MegatronBertForMaskedLM), ``classification``
    (...ForSequenceClassification, the task head's dense layer as BERT's pooler) or
    ``tagging`` (...ForTokenClassification)."""
    m = WeightMap()
    word = "embedding.word_embeddings.weight"
    m.rename(word, "bert.embeddings.word_embeddings.weight",
             *(("cls.predictions.decoder.weight",) if head == "mlm" else ()))
    m.rename("embedding.position_embeddings.weight", "bert.embeddings.position_embeddings.weight")
    m.constants["bert.embeddings.token_type_embeddings.weight"] = \
        lambda out: torch.zeros_like(out["bert.embeddings.position_embeddings.weight"][:1])
    for i in range(num_layers):
        src, dst = f"encoder.layers.{i}", f"bert.encoder.layer.{i}"
        _linear(m, f"{src}.input_layernorm", f"{dst}.attention.ln")
        _fused_linear(m, f"{src}.self_attention.linear_qkv",
                      tuple(f"{dst}.attention.self.{p}" for p in ("query", "key", "value")),
                      heads)
        _linear(m, f"{src}.self_attention.linear_proj", f"{dst}.attention.output.dense")
        _linear(m, f"{src}.pre_mlp_layernorm", f"{dst}.ln")
        _linear(m, f"{src}.mlp.linear_fc1", f"{dst}.intermediate.dense")
        _linear(m, f"{src}.mlp.linear_fc2", f"{dst}.output.dense")
    _linear(m, "encoder.final_layernorm", "bert.encoder.ln")
    if head == "mlm":
        _linear(m, "lm_head.dense", "cls.predictions.transform.dense")
        _linear(m, "lm_head.layer_norm", "cls.predictions.transform.LayerNorm")
        m.rename("output_layer.bias", "cls.predictions.bias", "cls.predictions.decoder.bias")
    elif head == "classification":
        _linear(m, "task_head.dense", "bert.pooler.dense")
        _linear(m, "task_head.classifier", "classifier")
    else:
        _linear(m, "task_head.classifier", "classifier")
    return m


# ------------------------------------------------------------------------ Blenderbot


def blenderbot(encoder_layers: int, decoder_layers: int, encoder_heads: int,
               decoder_heads: int, vocab_size: int) -> WeightMap:
    """T5 as BlenderbotForConditionalGeneration."""
    m = WeightMap()
    m.rename("embedding.word_embeddings.weight", "model.shared.weight",
             "model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight",
             "lm_head.weight")
    m.rename("embedding.position_embeddings.weight", "model.encoder.embed_positions.weight",
             "model.decoder.embed_positions.weight")
    for stack, layers, heads in (("encoder", encoder_layers, encoder_heads),
                                 ("decoder", decoder_layers, decoder_heads)):
        for i in range(layers):
            src, dst = f"{stack}.layers.{i}", f"model.{stack}.layers.{i}"
            _linear(m, f"{src}.input_layernorm", f"{dst}.self_attn_layer_norm")
            _fused_linear(m, f"{src}.self_attention.linear_qkv",
                          tuple(f"{dst}.self_attn.{p}_proj" for p in "qkv"), heads)
            _linear(m, f"{src}.self_attention.linear_proj", f"{dst}.self_attn.out_proj")
            if stack == "decoder":
                _linear(m, f"{src}.pre_cross_attn_layernorm", f"{dst}.encoder_attn_layer_norm")
                _linear(m, f"{src}.cross_attention.linear_q", f"{dst}.encoder_attn.q_proj")
                _fused_linear(m, f"{src}.cross_attention.linear_kv",
                              tuple(f"{dst}.encoder_attn.{p}_proj" for p in "kv"), heads)
                _linear(m, f"{src}.cross_attention.linear_proj", f"{dst}.encoder_attn.out_proj")
            _linear(m, f"{src}.pre_mlp_layernorm", f"{dst}.final_layer_norm")
            _linear(m, f"{src}.mlp.linear_fc1", f"{dst}.fc1")
            _linear(m, f"{src}.mlp.linear_fc2", f"{dst}.fc2")
        _linear(m, f"{stack}.final_layernorm", f"model.{stack}.layer_norm")
    m.rename("output_layer.bias", "final_logits_bias")
    m.reshaped["output_layer.bias"] = (1, vocab_size)
    return m

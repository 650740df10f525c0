"""Encoder first, then seq2seq: a T5 model whose embeddings and encoder come from a trained MLM
encoder and whose decoder is new (the MLM head is left behind). The encoder and T5 share the
encoder layer spec, so the tensors load under their own names."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterable

import torch

from megatron_seqpt.config.schema import ModelConfig
from megatron_seqpt.errors import UserError
from megatron_seqpt.recipes.weights import load_parts
from megatron_seqpt.training import checkpoint as ckpt

FROM_ENCODER = ("embedding.", "encoder.")


def check_compatible(path: Path, t5_model: ModelConfig, vocab_size: int) -> None:
    """The encoder checkpoint must match the T5 encoder in every shape-deciding setting."""
    saved = ckpt.content_metadata(path)["model"]
    if saved["kind"] != "encoder":
        raise UserError(f"{path} holds a model.kind={saved['kind']} model, not an MLM encoder; "
                        "give the run or checkpoint directory of a model.kind=encoder run")
    wanted = ckpt.model_shape(dataclasses.replace(t5_model, kind="encoder"), vocab_size)
    diffs = [f"{'vocabulary size' if key == 'vocab_size' else 'model.' + key}: encoder "
             f"{saved.get(key)!r}, T5 config {value!r}"
             for key, value in wanted.items() if saved.get(key) != value]
    if diffs:
        raise UserError(f"the MLM encoder {path} does not fit this T5 config's encoder:\n  "
                        + "\n  ".join(diffs) + "\nmake the T5 config's hidden_size, encoder "
                        "stack, max_position_embeddings, normalization, activation and "
                        "tokenizer those of the encoder run (its config.yaml)")


def load_encoder(modules: Iterable[torch.nn.Module], path: Path, t5_model: ModelConfig,
                 vocab_size: int) -> int:
    """Load embeddings and encoder from the MLM encoder checkpoint into the T5 modules."""
    check_compatible(path, t5_model, vocab_size)
    return load_parts(modules, path, FROM_ENCODER)

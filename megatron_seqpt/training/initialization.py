"""Weights of a fresh run taken from another run's checkpoint: some module paths only (the
encoder of an MLM run for a warm-started T5, a pre-trained body for a task model).

Checkpoints hold megatron-core sharded tensors, so a part loads into any layout; names agree
across model kinds because the MLM encoder and the T5 encoder share the encoder layer spec.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterable

import torch

from megatron_seqpt.config.schema import ModelConfig
from megatron_seqpt.errors import UserError
from megatron_seqpt.training import checkpoint as ckpt

# What a T5 model takes from an MLM encoder: everything but the MLM head.
FROM_ENCODER = ("embedding.", "encoder.")


def load_parts(modules: Iterable[torch.nn.Module], path: Path, prefixes: tuple[str, ...]) -> int:
    """Load the tensors whose checkpoint keys lie under these module paths; others stay as
    they are. Matching the checkpoint key, not the module's name for it, reaches every copy of
    a tensor: the last pipeline stage's tied output projection is stored under the word
    embeddings' key. Every rank loads (the load is collective), even one with nothing to take.
    Returns how many tensors were loaded here."""
    loaded_count = 0
    for module in modules:
        template = {key: value for key, value in module.sharded_state_dict().items()
                    if getattr(value, "key", key).startswith(prefixes)}
        loaded = ckpt.load(path, template)
        missing = [key for key in template if key not in loaded]
        if missing:
            raise ckpt.CheckpointError(f"{path} lacks {', '.join(missing[:5])}")
        module.load_state_dict(loaded, strict=False)
        loaded_count += len(template)
    return loaded_count


def check_encoder_fits(path: Path, t5_model: ModelConfig, vocab_size: int) -> None:
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
    """Embeddings and encoder of the MLM encoder checkpoint into T5 modules (warm start)."""
    check_encoder_fits(path, t5_model, vocab_size)
    return load_parts(modules, path, FROM_ENCODER)

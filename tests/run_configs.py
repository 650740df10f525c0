"""Tiny run configs on the test session's prepared corpus (tests/prepared_data.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from megatron_seqpt.config import RunConfig, load_run_config
from tests.prepared_data import prepared_corpus

TINY = [
    "model.hidden_size=64", "model.max_position_embeddings=64",
    "model.encoder.num_layers=2", "model.encoder.ffn_hidden_size=128",
    "model.encoder.num_attention_heads=4",
    "model.decoder.num_layers=2", "model.decoder.ffn_hidden_size=128",
    "model.decoder.num_attention_heads=4",
    "data.seq_length=64", "data.decoder_seq_length=32",
    "train.global_batch_size=8", "train.micro_batch_size=2", "train.eval_steps=2",
    "optim.lr=2e-3", "optim.warmup_steps=2", "logging.log_interval=1",
    "logging.tensorboard=false",
]


def tiny_config(kind: str, cache_dir: Path, overrides: Sequence[str] = ()) -> RunConfig:
    """A tiny model of ``kind`` reading the prepared corpus; ``overrides`` win."""
    corpus = prepared_corpus()
    data = [f"data.tokenizer_model={corpus.tokenizer_model}", f"data.cache_dir={cache_dir}",
            "data.prefixes={" + ", ".join(f"{k}: {v}" for k, v in corpus.prefixes.items())
            + "}"]
    return load_run_config(None, [f"model.kind={kind}", *TINY, *data, *overrides])

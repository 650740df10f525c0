"""The conversions behind ``seqpt convert``: build the target model, take the weights from the
source checkpoint, write a weights-only checkpoint with its config."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Sequence

from megatron_seqpt.config import RunConfig, load_run_config
from megatron_seqpt.config.schema import ParallelConfig
from megatron_seqpt.models.builder import build_model
from megatron_seqpt.models.specs import choose_impl
from megatron_seqpt.files import check_new_output
from megatron_seqpt.recipes import extract
from megatron_seqpt.recipes.weights import save_weights
from megatron_seqpt.runtime import distributed
from megatron_seqpt.runtime.log import log
from megatron_seqpt.tasks.pretrained import run_config
from megatron_seqpt.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer
from megatron_seqpt.training import checkpoint as ckpt
from megatron_seqpt.training import initialization


def _build(config: RunConfig, vocab_size: int, precision: str):
    """The target model in a world of its own (conversions need no model parallelism)."""
    config = dataclasses.replace(config, parallel=ParallelConfig())
    ctx = distributed.initialize(config.parallel, config.model, config.train.seed)
    impl = choose_impl(config.model.transformer_impl, config.model.local_attention, ctx.backend)
    return [build_model(config.model, config.parallel, vocab_size, precision, impl,
                        ctx.backend)]


def _check_output(output: Path, force: bool) -> None:
    """Never take over a run: its config and ``latest`` pointer would be replaced."""
    check_new_output(output, force)
    if output.is_dir() and force:
        shutil.rmtree(output)


def _check_config_tokenizer(source: Path, meta: dict, config: RunConfig) -> None:
    """A target config naming a tokenizer must name the source's."""
    if not config.data.tokenizer_model:
        return
    ckpt.check_tokenizer(source, meta.get("tokenizer"),
                         SentencePieceTokenizer(config.data.tokenizer_model))


def warm_start(encoder: Path, config_path: str, overrides: Sequence[str], output: Path,
               force: bool = False) -> Path:
    _check_output(output, force)
    source = ckpt.resolve(encoder)
    meta = ckpt.content_metadata(source)
    config = load_run_config(config_path, overrides)
    _check_config_tokenizer(source, meta, config)
    config = dataclasses.replace(config, init=dataclasses.replace(config.init,
                                                                  from_encoder=None))
    vocab = meta["model"]["vocab_size"]
    modules = _build(config, vocab, meta.get("precision", "fp32"))
    try:
        count = initialization.load_encoder(modules, source, config.model, vocab)
        log(f"took {count} tensors (embeddings and encoder) from {source}; decoder is new")
        return save_weights(modules, output, config, meta,
                            ckpt.tokenizer_file_of(source))
    finally:
        distributed.shutdown()


def extract_encoder(seq2seq: Path, output: Path, head: extract.Head,
                    force: bool = False) -> Path:
    _check_output(output, force)
    source = ckpt.resolve(seq2seq)
    meta = extract.check_seq2seq(source)
    config = extract.encoder_config(run_config(source))
    vocab = meta["model"]["vocab_size"]
    modules = _build(config, vocab, meta.get("precision", "fp32"))
    try:
        extract.load_from_seq2seq(modules, source, head)
        log(f"took embeddings and encoder from {source}; MLM head: {head}")
        return save_weights(modules, output, config, meta,
                            ckpt.tokenizer_file_of(source))
    finally:
        distributed.shutdown()

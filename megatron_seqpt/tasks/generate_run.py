"""Text generation with a T5 run (pre-trained or fine-tuned): its checkpoint loaded into one
process, sources tokenized as in training, generated ids decoded to text."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, Sequence

from megatron_seqpt.config.schema import ParallelConfig
from megatron_seqpt.errors import UserError
from megatron_seqpt.models.builder import build_model
from megatron_seqpt.models.specs import choose_impl
from megatron_seqpt.runtime import distributed
from megatron_seqpt.tasks.generation import GenerationConfig, generate
from megatron_seqpt.tasks.pretrained import find_pretrained
from megatron_seqpt.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer
from megatron_seqpt.training import checkpoint as ckpt
from megatron_seqpt.training import run_state
from megatron_seqpt.training.loop import resolve_precision


def generate_from_run(run_dir: str | Path, sources: Sequence[str], config: GenerationConfig,
                      step: Optional[int] = None) -> list[str]:
    found = find_pretrained(run_dir, step)
    if found.kind != "t5":
        raise UserError(f"{found.checkpoint} holds a model.kind={found.kind} model; generation "
                        "needs a T5 run")
    run = dataclasses.replace(found.config, parallel=ParallelConfig())
    tokenizer = SentencePieceTokenizer(found.tokenizer_model)
    ids = [tokenizer.tokenize(text)[:run.data.seq_length] for text in sources]
    ctx = distributed.initialize(run.parallel, run.model, run.train.seed)
    try:
        impl = choose_impl(run.model.transformer_impl, run.model.local_attention, ctx.backend)
        precision = resolve_precision(run.train.precision, ctx.backend.bf16)
        model = build_model(run.model, run.parallel, found.meta["model"]["vocab_size"],
                            precision, impl, ctx.backend)
        loaded = ckpt.load(found.checkpoint, {"model": run_state.model_state([model])})
        model.load_state_dict(loaded["model"], strict=True)
        model.eval()
        generated = generate(model, ids, bos=tokenizer.bos, eos=tokenizer.eos,
                             pad=tokenizer.pad, config=config, vocab_size=tokenizer.vocab_size)
    finally:
        distributed.shutdown()
    return [tokenizer.detokenize(g) for g in generated]

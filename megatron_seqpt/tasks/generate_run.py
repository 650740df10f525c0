"""Text generation with a T5 run (pre-trained or fine-tuned): its checkpoint loaded into one
process, sources tokenized as in training, generated ids decoded to text."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from megatron_seqpt.errors import UserError
from megatron_seqpt.runtime import distributed
from megatron_seqpt.tasks.generation import GenerationConfig, generate
from megatron_seqpt.tasks.pretrained import find_pretrained
from megatron_seqpt.tasks.run_model import load_run


def generate_from_run(run_dir: str | Path, sources: Sequence[str], config: GenerationConfig,
                      step: Optional[int] = None) -> list[str]:
    found = find_pretrained(run_dir, step)
    if found.kind != "t5":
        raise UserError(f"{found.checkpoint} holds a model.kind={found.kind} model; generation "
                        "needs a T5 run")
    try:
        loaded = load_run(found)
        tokenizer = loaded.tokenizer
        ids = [tokenizer.tokenize(text)[:loaded.config.data.seq_length] for text in sources]
        generated = generate(loaded.model, ids, bos=tokenizer.bos, eos=tokenizer.eos,
                             pad=tokenizer.pad, config=config, vocab_size=tokenizer.vocab_size)
    finally:
        distributed.shutdown()
    return [tokenizer.detokenize(g) for g in generated]

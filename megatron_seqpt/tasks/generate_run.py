"""Text generation with a T5 run (pre-trained or fine-tuned): its checkpoint loaded whole into
each process (the ranks of a launch share the batches), sources tokenized as in training,
generated ids decoded to text."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

from megatron_seqpt.errors import UserError
from megatron_seqpt.runtime import distributed, launch_env
from megatron_seqpt.runtime.rank_share import from_first_rank
from megatron_seqpt.tasks.generation import GenerationConfig, generate
from megatron_seqpt.tasks.pretrained import find_pretrained
from megatron_seqpt.tasks.run_model import load_run


def generate_from_run(run_dir: str | Path, sources: Optional[Sequence[str]],
                      config: GenerationConfig, step: Optional[int] = None) -> list[str]:
    """The text generated for each source. Under a launch of several ranks every rank calls it
    and gets all of it; the sources are the first rank's (the others may pass None: stdin
    reaches one process of a launch)."""
    found = find_pretrained(run_dir, step)
    if found.kind != "t5":
        raise UserError(f"{found.checkpoint} holds a model.kind={found.kind} model; generation "
                        "needs a T5 run")
    try:
        loaded = load_run(found)
        sources = from_first_rank(sources)
        tokenizer = loaded.tokenizer
        ids = _cut(list(map(tokenizer.tokenize, sources)), loaded.config.data.seq_length)
        generated = generate(loaded.model, ids, bos=tokenizer.bos, eos=tokenizer.eos,
                             pad=tokenizer.pad, config=config, vocab_size=tokenizer.vocab_size)
    finally:
        distributed.shutdown()
    return [tokenizer.detokenize(g) for g in generated]


def _cut(sources: list[list[int]], seq_length: int) -> list[list[int]]:
    """Each source's first ``seq_length`` tokens, as fine-tuning read them; a note on stderr
    (stdout may carry the output) says how many were longer."""
    longer = [number for number, ids in enumerate(sources, 1) if len(ids) > seq_length]
    if longer and launch_env.detect().rank == 0:
        print(f"[seqpt] note: {len(longer)} of {len(sources)} sources are longer than the "
              f"{seq_length} tokens the model reads (data.seq_length) and were cut to their "
              f"first {seq_length} (first: source {longer[0]})", file=sys.stderr, flush=True)
    return [ids[:seq_length] for ids in sources]

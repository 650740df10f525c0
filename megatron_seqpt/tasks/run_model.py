"""A run's checkpoint loaded into its whole model in this process (one per rank of a launch, no
model parallelism): what scoring, generation and export start from. A checkpoint written under
any TP/PP/DP layout reshards to it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from megatron_seqpt.config import RunConfig
from megatron_seqpt.config.schema import ParallelConfig
from megatron_seqpt.models.builder import build_model
from megatron_seqpt.models.specs import choose_impl
from megatron_seqpt.runtime import distributed
from megatron_seqpt.tasks.config import FinetuneConfig
from megatron_seqpt.tasks.pretrained import PretrainedRun
from megatron_seqpt.tasks.workload import FinetuneWorkload
from megatron_seqpt.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer
from megatron_seqpt.training import checkpoint as ckpt
from megatron_seqpt.training import run_state
from megatron_seqpt.training.loop import resolve_precision


@dataclass
class LoadedRun:
    """A run's model in this process (in evaluation mode), with what describes it."""

    model: torch.nn.Module
    # The run's config with the layout it was loaded under (no model parallelism).
    config: RunConfig
    meta: dict
    checkpoint: Path
    tokenizer: SentencePieceTokenizer
    device: torch.device


def load_run(found: PretrainedRun, transformer_impl: Optional[str] = None,
             precision: Optional[str] = None) -> LoadedRun:
    """Build the run's model (a task model for a fine-tuned run) and load its checkpoint.
    ``transformer_impl`` and ``precision`` default to the run's settings as this machine
    resolves them. Starts the process group (one rank, or the launch's ranks as data-parallel
    replicas): the caller ends it (``distributed.shutdown()``) when done with the model."""
    config = dataclasses.replace(found.config, parallel=ParallelConfig())
    ctx = distributed.initialize(config.parallel, config.model, config.train.seed)
    impl = choose_impl(transformer_impl or config.model.transformer_impl,
                       config.model.local_attention, ctx.backend)
    precision = precision or resolve_precision(config.train.precision, ctx.backend.bf16)
    vocab_size = found.meta["model"]["vocab_size"]
    if isinstance(config, FinetuneConfig):
        modules = FinetuneWorkload(config).build_modules(ctx, vocab_size, precision, impl)
    else:
        modules = [build_model(config.model, config.parallel, vocab_size, precision, impl,
                               ctx.backend)]
    loaded = ckpt.load(found.checkpoint, {"model": run_state.model_state(modules)})
    modules[0].load_state_dict(loaded["model"], strict=True)
    modules[0].eval()
    return LoadedRun(modules[0], config, found.meta, found.checkpoint,
                     SentencePieceTokenizer(found.tokenizer_model), ctx.backend.device)

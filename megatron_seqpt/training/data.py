"""From the data config to this rank's batch streams: prepared data (tokenizer and indexed
datasets, built once and cached), blended samples, per-rank streams."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.distributed as dist
from megatron.core import parallel_state

from megatron_seqpt.config import RunConfig
from megatron_seqpt.data.prepare import prepare
from megatron_seqpt.data.samples import build_sample_datasets, check_t5_decoder_length
from megatron_seqpt.data.stream import BatchStream, MicroBatches
from megatron_seqpt.data.trimming import LENGTH_MULTIPLE, TrimmedSteps
from megatron_seqpt.errors import UserError
from megatron_seqpt.runtime.distributed import DistributedContext
from megatron_seqpt.runtime.log import log
from megatron_seqpt.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer
from megatron_seqpt.training.workload import RunData


def train_segments(planned: Optional[Sequence[int]], needed: int) -> list[int]:
    """Sample counts of the training data's parts: those a resumed run was planned with (its
    checkpoint's position points into their order), then the samples a raised
    ``train.steps`` needs beyond them."""
    segments = list(planned or [])
    if sum(segments) < needed:
        segments.append(needed - sum(segments))
    return segments


def _step_batches(config: RunConfig, ctx: DistributedContext,
                  stream: BatchStream) -> MicroBatches:
    """The stream as the schedule reads it: a step's micro-batches regrouped and trimmed
    (``data.trim_padding``), except under pipeline parallelism (fixed shapes between stages)."""
    if not config.data.trim_padding or ctx.pipeline_parallel > 1:
        return stream
    per_step = config.train.global_batch_size // (config.train.micro_batch_size * stream.dp_size)
    # Sequence parallelism splits the sequence over the tensor-parallel ranks.
    multiple = math.lcm(LENGTH_MULTIPLE, ctx.tensor_parallel) \
        if config.parallel.sequence_parallel else LENGTH_MULTIPLE
    return TrimmedSteps(stream, per_step, multiple)


def build_training_data(config: RunConfig, ctx: DistributedContext,
                        planned: Optional[Sequence[int]] = None) -> tuple[RunData, list[int]]:
    """This rank's streams, and the sample counts the training data was built from (for the
    checkpoints; ``planned``: those of the checkpoint being resumed)."""
    data, train = config.data, config.train
    if config.model.kind == "t5":
        check_t5_decoder_length(data)  # before the tokenizer and datasets are built
    # The main rank builds (or finds) the prepared data; the others then find it cached.
    if ctx.is_main:
        prepared = prepare(data)
    dist.barrier()
    if not ctx.is_main:
        prepared = prepare(data, progress=False)
    tokenizer = SentencePieceTokenizer(prepared.tokenizer_model)
    if config.model.vocab_size is not None and config.model.vocab_size != tokenizer.vocab_size:
        raise UserError(
            f"model.vocab_size is {config.model.vocab_size} but the tokenizer "
            f"{prepared.tokenizer_model} has {tokenizer.vocab_size} pieces; set "
            "model.vocab_size to null (take the tokenizer's) or use the matching tokenizer")
    eval_samples = train.eval_steps * train.global_batch_size
    segments = train_segments(planned, train.steps * train.global_batch_size)
    cache = Path(data.cache_dir).expanduser() / "samples"
    datasets = build_sample_datasets(config.model.kind, prepared.prefixes, tokenizer, data,
                                     (segments[0], eval_samples, 0), seed=train.seed,
                                     cache_dir=cache)
    log("languages (sampling weight): " + ", ".join(
        f"{lang} {weight:.3f}" for lang, weight in datasets.weights.items()))
    parts = [datasets.train]
    # A dataset built for a larger count would be shuffled otherwise; the extra samples are
    # drawn afresh (seed + part) instead of wrapping around to those already seen.
    for part, count in enumerate(segments[1:], 1):
        parts.append(build_sample_datasets(config.model.kind, prepared.prefixes, tokenizer,
                                           data, (count, 0, 0), seed=train.seed + part,
                                           cache_dir=cache).train)
    if len(parts) > 1:
        log(f"training data in {len(parts)} parts of {', '.join(map(str, segments))} samples: "
            "the order the run was planned with, then samples for the raised train.steps")
    rank = parallel_state.get_data_parallel_rank()
    size = parallel_state.get_data_parallel_world_size()
    workers = data.loader_workers if data.loader_workers is not None else \
        (2 if ctx.backend.cuda else 0)
    train_data = parts[0] if len(parts) == 1 else torch.utils.data.ConcatDataset(parts)
    stream = _step_batches(config, ctx, BatchStream(train_data, train.micro_batch_size, rank,
                                                    size, num_workers=workers))
    valid = None
    if datasets.valid is not None:
        valid = lambda: _step_batches(  # noqa: E731
            config, ctx, BatchStream(datasets.valid, train.micro_batch_size, rank, size))
    else:
        log(f"data.split '{data.split}' has no validation part: evaluation is skipped")
    return RunData(tokenizer, stream, valid, train.eval_steps), segments

"""From the data config to this rank's batch streams: prepared data (tokenizer and indexed
datasets, built once and cached), blended samples, per-rank streams."""

from __future__ import annotations

from pathlib import Path

import torch.distributed as dist
from megatron.core import parallel_state

from megatron_seqpt.config import RunConfig
from megatron_seqpt.data.prepare import prepare
from megatron_seqpt.data.samples import build_sample_datasets
from megatron_seqpt.data.stream import BatchStream
from megatron_seqpt.errors import UserError
from megatron_seqpt.runtime.distributed import DistributedContext
from megatron_seqpt.runtime.log import log
from megatron_seqpt.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer
from megatron_seqpt.training.workload import RunData


def build_training_data(config: RunConfig, ctx: DistributedContext) -> RunData:
    data, train = config.data, config.train
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
    datasets = build_sample_datasets(
        config.model.kind, prepared.prefixes, tokenizer, data,
        (train.steps * train.global_batch_size, eval_samples, 0), seed=train.seed,
        cache_dir=Path(data.cache_dir).expanduser() / "samples")
    log("languages (sampling weight): " + ", ".join(
        f"{lang} {weight:.3f}" for lang, weight in datasets.weights.items()))
    rank = parallel_state.get_data_parallel_rank()
    size = parallel_state.get_data_parallel_world_size()
    workers = data.loader_workers if data.loader_workers is not None else \
        (2 if ctx.backend.cuda else 0)
    stream = BatchStream(datasets.train, train.micro_batch_size, rank, size, num_workers=workers)
    valid = None
    if datasets.valid is not None:
        valid = lambda: BatchStream(datasets.valid, train.micro_batch_size, rank, size)  # noqa: E731
    else:
        log(f"data.split '{data.split}' has no validation part: evaluation is skipped")
    return RunData(tokenizer, stream, valid, train.eval_steps)

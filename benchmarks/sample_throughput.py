"""Samples per second the data pipeline makes, next to what a training step consumes.

Builds the default corpus' data (tokenizer and indexed datasets) in a temporary directory, then
reads MLM and span-corruption micro-batches through ``BatchStream`` in this process (megatron-core
makes the samples on the fly: truncation, masking, padding, collation). The peer is a training
step of the tiny CPU model: ``global_batch / step_seconds`` samples per second (defaults: 16
samples at 0.3 s for the encoder and 0.5 s for T5, as measured on a 2-core CPU). Data loading
should be at least 20x faster so that it stays far below the step time without worker processes.

    python benchmarks/sample_throughput.py [--samples 4000] [--workers 0]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from megatron_seqpt.config.schema import DataConfig, ParallelConfig
from megatron_seqpt.data.prepare import prepare
from megatron_seqpt.data.samples import build_sample_datasets
from megatron_seqpt.data.stream import BatchStream
from megatron_seqpt.runtime import distributed
from megatron_seqpt.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer

GOAL = 20.0


def measure(kind: str, prepared, tokenizer, data: DataConfig, samples: int,
            micro_batch_size: int, workers: int, cache: Path) -> tuple[float, float]:
    """(seconds to build megatron-core's indices, samples per second streamed)."""
    started = time.perf_counter()
    datasets = build_sample_datasets(kind, prepared.prefixes, tokenizer, data, (samples, 0, 0),
                                     seed=1234, cache_dir=cache)
    built = time.perf_counter() - started
    stream = BatchStream(datasets.train, micro_batch_size, num_workers=workers)
    next(stream)  # start-up (worker processes) is not throughput
    steps = samples // micro_batch_size - 1
    started = time.perf_counter()
    for _ in range(steps):
        next(stream)
    return built, steps * micro_batch_size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--micro-batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--global-batch", type=int, default=16)
    parser.add_argument("--encoder-step-s", type=float, default=0.3)
    parser.add_argument("--t5-step-s", type=float, default=0.5)
    args = parser.parse_args()
    from megatron_seqpt.runtime.allocator import reexec_with_tcmalloc

    reexec_with_tcmalloc()  # on the allocator seqpt runs on

    distributed.initialize(ParallelConfig())
    try:
        with tempfile.TemporaryDirectory(prefix="seqpt-bench-") as tmp:
            data = DataConfig(cache_dir=tmp)
            prepared = prepare(data, progress=False)
            tokenizer = SentencePieceTokenizer(prepared.tokenizer_model)
            print(f"default corpus: {len(prepared.prefixes)} languages, "
                  f"{sum(prepared.token_counts.values())} tokens, vocab {tokenizer.vocab_size}, "
                  f"seq {data.seq_length}/{data.decoder_seq_length}, "
                  f"micro-batch {args.micro_batch_size}, workers {args.workers}")
            print(f"{'samples':<16} {'index build s':>13} {'samples/s':>10} "
                  f"{'step needs/s':>12} {'ratio':>7}")
            ratios = []
            for kind, step_s in (("encoder", args.encoder_step_s), ("t5", args.t5_step_s)):
                built, rate = measure(kind, prepared, tokenizer, data, args.samples,
                                      args.micro_batch_size, args.workers, Path(tmp) / kind)
                needed = args.global_batch / step_s
                ratios.append(rate / needed)
                label = "MLM" if kind == "encoder" else "span corruption"
                print(f"{label:<16} {built:>13.2f} {rate:>10.0f} {needed:>12.1f} "
                      f"{rate / needed:>6.1f}x")
            verdict = "met" if min(ratios) >= GOAL else "NOT met"
            print(f"goal: data at least {GOAL:.0f}x faster than training: {verdict}")
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    main()

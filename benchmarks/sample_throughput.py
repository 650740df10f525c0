"""Samples per second the data pipeline makes, next to what a training step consumes.

For each model kind, a tiny CPU config's Trainer (``examples/configs/tiny_{encoder,t5}.yaml``)
builds the default corpus' data (tokenizer and indexed datasets) in a temporary directory; then
rounds alternate between reading MLM or span-corruption micro-batches through ``BatchStream``
in this process (megatron-core makes the samples on the fly: truncation, masking, padding,
collation) and timing that Trainer's whole steps (its own data included, as a run takes them).
The peer is the step: ``global_batch / step_seconds`` samples per second, measured in the same
run because the machine's speed drifts (by up to 2x within minutes on the 2-core development
machine) and the step's speed changes with the code. Data loading should be at least 20x faster
so that it stays far below the step time without worker processes (the CPU default).

    python benchmarks/sample_throughput.py [--samples 4000] [--rounds 3] [--workers 0]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from machine_limit import median_range

from megatron_seqpt.config import load_run_config
from megatron_seqpt.data.prepare import prepare
from megatron_seqpt.data.samples import build_sample_datasets
from megatron_seqpt.data.stream import BatchStream
from megatron_seqpt.runtime import distributed
from megatron_seqpt.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer
from megatron_seqpt.training.loop import Trainer

GOAL = 20.0
CONFIGS = Path(__file__).resolve().parents[1] / "examples" / "configs"


def samples_per_second(stream: BatchStream, batches: int) -> float:
    """Samples per second of the stream's next ``batches`` micro-batches."""
    started = time.perf_counter()
    for _ in range(batches):
        next(stream)
    return batches * stream.micro_batch_size / (time.perf_counter() - started)


def step_seconds(trainer: Trainer, steps: int) -> float:
    """Seconds per training step over ``steps`` steps."""
    started = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    return (time.perf_counter() - started) / steps


def bench_kind(kind: str, args, tmp: Path) -> tuple[list[float], list[float], float]:
    """(samples/s per round, samples/s a step consumes per round, index build seconds)."""
    config = load_run_config(str(CONFIGS / f"tiny_{kind}.yaml"), [
        f"data.cache_dir={tmp / 'cache'}", "train.steps=100000", "logging.tensorboard=false"])
    ctx = distributed.initialize(config.parallel, config.model, config.train.seed)
    try:
        trainer = Trainer(config, tmp / kind, ctx)
        data, batch = config.data, config.train.micro_batch_size
        prepared = prepare(data, progress=False)  # the Trainer's, from the cache
        tokenizer = SentencePieceTokenizer(prepared.tokenizer_model)
        started = time.perf_counter()
        datasets = build_sample_datasets(kind, prepared.prefixes, tokenizer, data,
                                         (args.samples, 0, 0), seed=1234,
                                         cache_dir=tmp / f"{kind}-samples")
        built = time.perf_counter() - started
        stream = BatchStream(datasets.train, batch, num_workers=args.workers)
        next(stream)  # start-up (worker processes) is not throughput
        step_seconds(trainer, args.warmup)
        per_round = (args.samples // batch - 1) // args.rounds
        rates, needs = [], []
        for _ in range(args.rounds):
            rates.append(samples_per_second(stream, per_round))
            needs.append(config.train.global_batch_size / step_seconds(trainer, args.steps))
        trainer.metrics.close()
        return rates, needs, built
    finally:
        distributed.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4000, help="samples read in all")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="training steps per round")
    parser.add_argument("--warmup", type=int, default=3, help="training steps before timing")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    args = parser.parse_args()
    from megatron_seqpt.runtime.allocator import reexec_with_tcmalloc

    reexec_with_tcmalloc()  # on the allocator seqpt runs on
    print(f"default corpus, tiny configs ({CONFIGS}), workers {args.workers}, "
          f"{args.rounds} rounds (median, range)")
    print(f"{'samples':<16} {'index build s':>13} {'samples/s':>18} {'step needs/s':>18} "
          f"{'ratio':>18}")
    ratios = []
    with tempfile.TemporaryDirectory(prefix="seqpt-bench-") as tmp:
        for kind in ("encoder", "t5"):
            rates, needs, built = bench_kind(kind, args, Path(tmp))
            per_round = [rate / need for rate, need in zip(rates, needs)]
            ratios.append(statistics.median(per_round))
            label = "MLM" if kind == "encoder" else "span corruption"
            print(f"{label:<16} {built:>13.2f} {median_range(rates, 0):>18} "
                  f"{median_range(needs, 1):>18} {median_range(per_round, 1):>18}")
    verdict = "met" if min(ratios) >= GOAL else "NOT met"
    print(f"goal: data at least {GOAL:.0f}x faster than training: {verdict}")


if __name__ == "__main__":
    main()

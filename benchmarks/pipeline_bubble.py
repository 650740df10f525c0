"""Pipeline bubble of T5 at pipeline sizes 1, 2 and 4, at a fixed global batch.

Each size runs the real training step (1F1B schedule over the packed encoder/decoder states) in
its own local processes. With p stages each doing 1/p of the work, an ideal pipeline would be p
times faster than one stage; the measured bubble is 1 - T_1 / (p x T_p), printed next to the
ideal (p - 1) / (m + p - 1) for m micro-batches. On a CPU, p processes share the cores: a size
above the core count measures oversubscription too (the script says so).

    python benchmarks/pipeline_bubble.py [--sizes 1 2 4] [--micro-batches 8] [--steps 4]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from megatron_seqpt.runtime.local_ranks import run_ranks


def _time_steps(size: int, overrides: list[str], cache: str, steps: int) -> float:
    """(In each rank.) Seconds per training step at pipeline size ``size``."""
    import torch

    from megatron_seqpt.config import load_run_config
    from megatron_seqpt.runtime import distributed
    from megatron_seqpt.training.loop import Trainer

    config = load_run_config(None, [f"parallel.pipeline_model_parallel_size={size}",
                                    f"data.cache_dir={cache}", "logging.tensorboard=false",
                                    "train.steps=100000", *overrides])
    ctx = distributed.initialize(config.parallel, config.model, config.train.seed)
    trainer = Trainer(config, Path(cache) / f"run-{size}", ctx)
    trainer.train_step()  # warm-up
    torch.distributed.barrier()
    started = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    torch.distributed.barrier()
    seconds = (time.perf_counter() - started) / steps
    trainer.metrics.close()
    distributed.shutdown()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--micro-batches", type=int, default=8)
    parser.add_argument("--micro-batch-size", type=int, default=2)
    parser.add_argument("--layers", type=int, default=4, help="encoder and decoder layers each")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    from megatron_seqpt.runtime.allocator import reexec_with_tcmalloc

    reexec_with_tcmalloc()  # on the allocator seqpt runs on
    m = args.micro_batches
    overrides = ["model.kind=t5", f"model.hidden_size={args.hidden}",
                 f"model.encoder.num_layers={args.layers}",
                 f"model.decoder.num_layers={args.layers}",
                 f"model.encoder.ffn_hidden_size={4 * args.hidden}",
                 f"model.decoder.ffn_hidden_size={4 * args.hidden}",
                 "data.seq_length=128", "data.decoder_seq_length=40",
                 f"train.micro_batch_size={args.micro_batch_size}",
                 f"train.global_batch_size={m * args.micro_batch_size}"]
    tokens = m * args.micro_batch_size * (128 + 40)
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="seqpt-bubble-") as cache:
        seconds = {p: run_ranks(_time_steps, p, p, overrides, cache, args.steps)[0]
                   for p in args.sizes}
    base = seconds.get(1)
    print(f"\nT5 h{args.hidden} {args.layers}+{args.layers} layers, seq 128/40, global batch "
          f"{m} micro-batches x {args.micro_batch_size}; {cores} CPU cores")
    print(f"{'stages':>6} {'step (ms)':>10} {'tokens/s':>10} {'bubble':>8} {'ideal':>8}")
    for p, t in seconds.items():
        bubble = f"{1 - base / (p * t):8.1%}" if base else "       -"
        note = "  (more processes than cores)" if p > cores else ""
        print(f"{p:>6} {t * 1000:10.1f} {tokens / t:10,.0f} {bubble} "
              f"{(p - 1) / (m + p - 1):8.1%}{note}")


if __name__ == "__main__":
    main()

"""Does a frozen encoder really save what the accounting says? Step time with embeddings and
encoder frozen over step time with everything trainable, next to the FLOP ratio
training/flops.py predicts, in the same run (rounds alternate so machine noise hits both).
Goal: the measured ratio within 15% of the predicted one.

    python benchmarks/freeze_speedup.py [--hidden 256 --layers 4 --steps 5 --rounds 4]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from megatron_seqpt.config import load_run_config
from megatron_seqpt.runtime import distributed
from megatron_seqpt.training.loop import Trainer

FREEZE = ["freeze.embeddings.frozen=true", "freeze.encoder.frozen=true"]


def time_steps(trainer: Trainer, steps: int) -> float:
    """Seconds per training step."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--dec-seq", type=int, default=40)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    from megatron_seqpt.runtime.allocator import reexec_with_tcmalloc

    reexec_with_tcmalloc()  # on the allocator seqpt runs on
    with tempfile.TemporaryDirectory(prefix="seqpt-freeze-") as tmp:
        settings = [
            "model.kind=t5", f"model.hidden_size={args.hidden}",
            f"model.encoder.num_layers={args.layers}", f"model.decoder.num_layers={args.layers}",
            f"model.encoder.ffn_hidden_size={4 * args.hidden}",
            f"model.decoder.ffn_hidden_size={4 * args.hidden}",
            f"data.seq_length={args.seq}", f"data.decoder_seq_length={args.dec_seq}",
            f"data.cache_dir={tmp}/cache", "train.steps=100000", "logging.tensorboard=false",
            *args.overrides]
        config = load_run_config(None, settings)
        ctx = distributed.initialize(config.parallel, config.model, config.train.seed)
        # Two runs of the same model side by side: one with embeddings and encoder frozen for
        # the whole run (the encoder then runs under no_grad), one with everything training.
        trainer = Trainer(config, Path(tmp) / "full", ctx)
        frozen_trainer = Trainer(load_run_config(None, settings + FREEZE), Path(tmp) / "frozen",
                                 ctx)
        for warm_up in (trainer, frozen_trainer):
            warm_up.train_step()
        full, frozen = [], []
        for _ in range(args.rounds):
            full.append(time_steps(trainer, args.steps))
            frozen.append(time_steps(frozen_trainer, args.steps))
        measured = statistics.median(frozen) / statistics.median(full)
        predicted = sum(frozen_trainer.workload.flops.step(frozen_trainer.trainable).values()) / \
            trainer.workload.flops.full_step()
        print(f"\nT5 h{args.hidden} L{args.layers}+{args.layers} seq {args.seq}/{args.dec_seq}, "
              f"global batch {config.train.global_batch_size}, {trainer.precision}, "
              f"{args.rounds} rounds of {args.steps} steps")
        print(f"  step, everything trainable : {statistics.median(full) * 1000:8.1f} ms  "
              f"(rounds: {', '.join(f'{t * 1000:.0f}' for t in full)})")
        print(f"  step, embeddings+encoder frozen: {statistics.median(frozen) * 1000:4.1f} ms  "
              f"(rounds: {', '.join(f'{t * 1000:.0f}' for t in frozen)})")
        print(f"  measured ratio {measured:.3f}, FLOP ratio {predicted:.3f}, "
              f"off by {abs(measured / predicted - 1):.1%} (goal: within 15%)")
        for done in (trainer, frozen_trainer):
            done.metrics.close()
        distributed.shutdown()


if __name__ == "__main__":
    main()

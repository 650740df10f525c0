"""Training throughput and model FLOPs utilisation of a config on this machine.

Runs the real training step (data streams, schedule, DDP, optimizer, logging) of a run config,
for example the base configs on a GPU in bf16, and prints tokens/s, MFU (the step's model FLOPs
per device, training/flops.py with everything trainable, over the step time and the device's
datasheet peak) and the machine-limit fraction of train_throughput.py: the same FLOP rate
against torch.matmul's, measured in this run on this device in the step's precision at the
step's own GEMM shapes (machine_limit.py; tensor-parallel size 1 shapes).
The default corpus supplies the text, so the vocabulary is the one it supports (about 6000).

    python benchmarks/mfu.py --config examples/configs/base_t5.yaml [--steps 20] \\
        [train.micro_batch_size=16 ...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from machine_limit import matmul_rate, transformer_gemms

from megatron_seqpt.config import load_run_config
from megatron_seqpt.runtime import distributed
from megatron_seqpt.training.flops import FlopModel
from megatron_seqpt.training.loop import Trainer

# Dense bf16 / fp32 peaks in FLOP/s.
PEAKS = {"H100": (989e12, 67e12), "H200": (989e12, 67e12), "A100": (312e12, 19.5e12)}


def peak_flops(bf16: bool) -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for key, (bf16_peak, fp32_peak) in PEAKS.items():
        if key in name:
            return bf16_peak if bf16 else fp32_peak
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    from megatron_seqpt.runtime.allocator import reexec_with_tcmalloc

    reexec_with_tcmalloc()  # on the allocator seqpt runs on
    with tempfile.TemporaryDirectory(prefix="seqpt-mfu-") as tmp:
        config = load_run_config(args.config, [
            "data.vocab_size=6000", f"data.cache_dir={tmp}/cache", "data.corpus=[]",
            "data.prefixes={}", "data.tokenizer_model=null", "train.steps=100000",
            "logging.tensorboard=false", *args.overrides])
        ctx = distributed.initialize(config.parallel, config.model, config.train.seed)
        trainer = Trainer(config, Path(tmp) / "run", ctx)
        for _ in range(args.warmup):
            trainer.train_step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(args.steps):
            trainer.train_step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        step_s = (time.perf_counter() - started) / args.steps
        flops = FlopModel.build(config.model, trainer.vocab_size, config.data.seq_length,
                                config.data.decoder_seq_length, config.train.global_batch_size,
                                config.data.masking_probability).full_step()
        tokens = config.train.global_batch_size * trainer.tokens_per_sample()
        bf16 = trainer.precision == "bf16"
        peak = peak_flops(bf16)
        per_device = flops / step_s / ctx.world_size
        rate = matmul_rate(step_gemms(config, trainer.vocab_size), device=ctx.backend.device,
                           dtype=torch.bfloat16 if bf16 else torch.float32)
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        print(f"\n{args.config} on {device} ({trainer.precision}, {ctx.describe()})")
        print(f"  step {step_s * 1000:.1f} ms, {tokens / step_s:,.0f} tokens/s, "
              f"{per_device / 1e12:.2f} TFLOP/s model FLOPs per device"
              + (f", MFU {per_device / peak:.1%} of {peak / 1e12:.0f} TFLOP/s" if peak else ""))
        print(f"  machine-limit fraction {per_device / rate:.2f} (torch.matmul at the step's "
              f"GEMM shapes: {rate / 1e12:.2f} TFLOP/s)")
        trainer.metrics.close()
        distributed.shutdown()


def step_gemms(config, vocab_size: int) -> list[tuple[int, int, int]]:
    """The GEMM shapes of one micro-batch of this config's model."""
    model, data = config.model, config.data
    return transformer_gemms(model.kind, config.train.micro_batch_size, data.seq_length,
                             data.decoder_seq_length, model.hidden_size,
                             model.encoder.ffn_hidden_size, model.encoder.num_layers, vocab_size,
                             model.decoder.ffn_hidden_size, model.decoder.num_layers)


if __name__ == "__main__":
    main()

"""megatron-core's DDP, optimizer and LR/weight-decay scheduler for the model chunks.

The same path runs on CPU (under the runtime's CPU compatibility layer, where megatron-core's
optimizer falls back to torch AdamW) and on GPU (apex/transformer-engine fused Adam, the
distributed optimizer when configured). Weight decay skips biases and norms: megatron-core
groups those with ``wd_mult=0`` and the scheduler applies the multiplier.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from megatron.core.distributed import (
    DistributedDataParallel,
    DistributedDataParallelConfig,
    finalize_model_grads,
)
from megatron.core.optimizer import (
    MegatronOptimizer,
    OptimizerConfig,
    get_megatron_optimizer,
    get_standard_config_overrides,
)
from megatron.core.optimizer.optimizer_config import ParamKey
from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler, ParamGroupOverride

from megatron_seqpt.config.schema import OptimConfig, ParallelConfig


@dataclass
class Optimization:
    """Everything that changes parameters: DDP-wrapped chunks, optimizer, scheduler."""

    chunks: list[DistributedDataParallel]
    optimizer: MegatronOptimizer
    scheduler: OptimizerParamScheduler


def wrap_ddp(modules: list[torch.nn.Module], parallel: ParallelConfig,
             on_gpu: bool) -> list[DistributedDataParallel]:
    """Wrap each chunk in megatron-core's DDP (gradient buffers, all-reduce/reduce-scatter)."""
    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True,
        overlap_grad_reduce=on_gpu,
        use_distributed_optimizer=parallel.use_distributed_optimizer,
        bucket_size=None if not on_gpu else 40_000_000)
    wrapped = [DistributedDataParallel(m.config, ddp_config, m) for m in modules]
    config = wrapped[0].config
    config.finalize_model_grads_func = finalize_model_grads
    config.no_sync_func = [w.no_sync for w in wrapped] if len(wrapped) > 1 else wrapped[0].no_sync
    if on_gpu:
        config.grad_sync_func = [w.start_grad_sync for w in wrapped] if len(wrapped) > 1 \
            else wrapped[0].start_grad_sync
    return wrapped


def build_optimization(modules: list[torch.nn.Module], optim: OptimConfig,
                       parallel: ParallelConfig, bf16: bool, total_steps: int, on_gpu: bool,
                       lr_mults: Optional[dict[str, float]] = None) -> Optimization:
    """``lr_mults`` maps parameter-name globs to a multiplier of the base LR schedule."""
    chunks = wrap_ddp(modules, parallel, on_gpu)
    config = OptimizerConfig(
        optimizer="adam", lr=optim.lr, min_lr=optim.min_lr, weight_decay=optim.weight_decay,
        adam_beta1=optim.adam_beta1, adam_beta2=optim.adam_beta2, adam_eps=optim.adam_eps,
        clip_grad=optim.clip_grad, bf16=bf16,
        params_dtype=torch.bfloat16 if bf16 else torch.float32,
        use_distributed_optimizer=parallel.use_distributed_optimizer)
    # Passing overrides replaces megatron-core's default grouping, so start from it.
    overrides = get_standard_config_overrides(config)
    overrides.update({
        ParamKey(name=glob): ParamGroupOverride(max_lr=optim.lr * mult,
                                                min_lr=optim.min_lr * mult)
        for glob, mult in (lr_mults or {}).items() if mult != 1.0})
    optimizer = get_megatron_optimizer(config, chunks, config_overrides=overrides)
    scheduler = OptimizerParamScheduler(
        optimizer, init_lr=0.0, max_lr=optim.lr, min_lr=optim.min_lr,
        lr_warmup_steps=min(optim.warmup_steps, total_steps - 1),
        lr_decay_steps=total_steps, lr_decay_style=optim.decay_style,
        start_wd=optim.weight_decay, end_wd=optim.weight_decay, wd_incr_steps=total_steps,
        wd_incr_style="constant",
        # On resume the config's schedule wins (raise train.steps to extend a run); only the
        # step count comes from the checkpoint.
        override_opt_param_scheduler=True, use_checkpoint_opt_param_scheduler=False)
    return Optimization(chunks, optimizer, scheduler)

"""megatron-core's DDP, optimizer and LR/weight-decay scheduler for the trainable parameters.

The same path runs on CPU (under the runtime's CPU compatibility layer, where megatron-core's
optimizer falls back to torch AdamW) and on GPU (apex/transformer-engine fused Adam, the
distributed optimizer when configured). Weight decay skips biases and norms: megatron-core
groups those with ``wd_mult=0`` and the scheduler applies the multiplier. Each freeze group's
parameters carry its LR multiplier and name, so the scheduler can warm a group up after it
unfreezes. Frozen parameters (``requires_grad=False``) are in neither DDP nor the optimizer.
"""

from __future__ import annotations

import gc
import math
from dataclasses import dataclass
from functools import partial
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
from megatron.core.optimizer import distrib_optimizer as mcore_distrib_optimizer
from megatron.core.optimizer.clip_grads import clip_grad_by_total_norm_fp32
from megatron.core.optimizer import optimizer as mcore_optimizer
from megatron.core.optimizer.optimizer_config import ParamKey, ParamWithNamePredicate
from megatron.core.optimizer_param_scheduler import (
    OptimizerParamScheduler,
    ParamGroupOverride,
)

from megatron_seqpt.config.schema import OptimConfig, ParallelConfig
from megatron_seqpt.training import freeze, optimizer_state, optimizer_transfer
from megatron_seqpt.training.freeze import FreezeSchedule, group_of

# megatron-core matches a checkpoint's param groups to the live ones by the keys in
# ``param_group_identifier_keys``. Groups here also differ by freeze group (their LR schedules
# do), so that key must be part of the match, or groups alike in the other keys take each
# other's max_lr, min_lr and freeze group on load. 0.16 offers no setting for it, and the
# distributed optimizer holds its own copy of the tuple (imported by name): extend both.
for _module in (mcore_optimizer, mcore_distrib_optimizer):
    if "freeze_group" not in _module.param_group_identifier_keys:
        _module.param_group_identifier_keys += ("freeze_group",)


class GroupScheduler(OptimizerParamScheduler):
    """megatron-core's warm-up/decay schedule, times each freeze group's own warm-up and the
    Adam start of a group that begins training mid-run.

    megatron-core keeps one Adam step count for all parameters, so a group unfrozen after u
    steps takes the run's count t with zero moments: Adam's bias correction, meant for k steps
    of history, is that of t, and its updates grow to (1 - b1^k) / sqrt(1 - b2^k) times the LR
    (6x at b2 = 0.999). Scaling the group's LR by the ratio of the corrections for k and for t
    gives exactly the update of an Adam started at the unfreeze (eps aside)."""

    def __init__(self, *args, freeze: FreezeSchedule, betas: tuple[float, float], **kwargs):
        self.freeze = freeze  # read by get_lr, which the base constructor already calls
        self.betas = betas
        super().__init__(*args, **kwargs)

    def get_lr(self, param_group: dict) -> float:
        lr = super().get_lr(param_group)
        group = param_group.get("freeze_group")
        if group is None:
            return lr
        return lr * self.freeze.lr_factor(group, self.num_steps) * self.adam_start(group)

    def adam_start(self, group: str) -> float:
        """LR factor for the group's next update (see the class docstring); 1.0 for a group
        that trained from the start."""
        start = self.freeze.plans[group].trainable_from
        if math.isinf(start) or self.num_steps < start:
            return 1.0
        t = self.num_steps + 1  # the update about to be made, counted as the optimizer does
        k = self.num_steps - start + 1  # its number in the group's own history
        beta1, beta2 = self.betas
        return ((1 - beta1 ** t) / (1 - beta1 ** k)) * math.sqrt((1 - beta2 ** k)
                                                                 / (1 - beta2 ** t))

    def base_lr(self) -> float:
        """The schedule's LR without group multipliers (what the metrics report)."""
        return super().get_lr({})


@dataclass
class Optimization:
    """Everything that changes parameters: DDP-wrapped chunks, optimizer, scheduler."""

    chunks: list[DistributedDataParallel]
    optimizer: MegatronOptimizer
    scheduler: GroupScheduler

    def release(self) -> None:
        """Retire the DDP wrappers before new ones are built. Their gradient hooks stay on the
        parameters' gradient accumulators as long as anything holds those, and would take each
        gradient (into the old buffers) before the new wrapper's hook sees it; a hook finds
        nothing to do once its wrapper maps no parameter to a bucket."""
        for chunk in self.chunks:
            chunk.param_to_bucket_group.clear()
            chunk.grad_accs.clear()
        self.chunks.clear()
        gc.collect()


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


def _in_group(group: str, param: torch.nn.Parameter, name: str) -> bool:
    return group_of(name) == group


def build_optimization(modules: list[torch.nn.Module], optim: OptimConfig,
                       parallel: ParallelConfig, bf16: bool, total_steps: int, on_gpu: bool,
                       freeze: FreezeSchedule) -> Optimization:
    """DDP, optimizer and scheduler over the parameters that currently require grad."""
    chunks = wrap_ddp(modules, parallel, on_gpu)
    config = OptimizerConfig(
        optimizer="adam", lr=optim.lr, min_lr=optim.min_lr, weight_decay=optim.weight_decay,
        adam_beta1=optim.adam_beta1, adam_beta2=optim.adam_beta2, adam_eps=optim.adam_eps,
        clip_grad=optim.clip_grad, bf16=bf16,
        params_dtype=torch.bfloat16 if bf16 else torch.float32,
        use_distributed_optimizer=parallel.use_distributed_optimizer)
    # Passing overrides replaces megatron-core's default grouping, so start from it.
    overrides = get_standard_config_overrides(config)
    for group, mult in freeze.lr_mults().items():
        key = ParamKey(with_name_predicate=ParamWithNamePredicate(
            name=f"freeze-group-{group}", fn=partial(_in_group, group)))
        override = ParamGroupOverride(freeze_group=group)
        if mult != 1.0:
            override.update(max_lr=optim.lr * mult, min_lr=optim.min_lr * mult)
        overrides[key] = override
    optimizer = get_megatron_optimizer(config, chunks, config_overrides=overrides)
    optimizer_state.fused_on_cpu(optimizer)
    scheduler = GroupScheduler(
        optimizer, init_lr=0.0, max_lr=optim.lr, min_lr=optim.min_lr,
        lr_warmup_steps=min(optim.warmup_steps, total_steps - 1),
        lr_decay_steps=total_steps, lr_decay_style=optim.decay_style,
        start_wd=optim.weight_decay, end_wd=optim.weight_decay, wd_incr_steps=total_steps,
        wd_incr_style="constant",
        # On resume the config's schedule wins (raise train.steps to extend a run); only the
        # step count comes from the checkpoint.
        override_opt_param_scheduler=True, use_checkpoint_opt_param_scheduler=False,
        freeze=freeze, betas=(optim.adam_beta1, optim.adam_beta2))
    return Optimization(chunks, optimizer, scheduler)


@torch.no_grad()
def step_if_finite(optimizer: MegatronOptimizer) -> Optional[float]:
    """megatron-core's optimizer step with its gradient norm computed once: returns the norm
    (over every rank that holds a part of the gradients), or None, without updating anything,
    when the gradients are not finite (a finite loss can still overflow in the backward pass,
    in bf16 above all). ``optimizer.step()`` cannot be told to skip, so checking before it
    took a second norm (2% of a T5 step at hidden 512). The steps are those of megatron-core's
    ChainedOptimizer.step, which for one optimizer does what that optimizer's own step does:
    prepare the gradients, take their norm, clip each part by it, update."""
    if optimizer.prepare_grads():
        return None
    grad_norm = float(optimizer.get_grad_norm())
    if not math.isfinite(grad_norm):
        return None
    for part in optimizer_state.parts(optimizer):
        if getattr(part, "is_stub_optimizer", False) or part.config.clip_grad <= 0.0:
            continue
        params = part.get_parameters()
        if params:
            clip_grad_by_total_norm_fp32(
                params, part.config.clip_grad, grad_norm,
                part.config.use_precision_aware_optimizer_no_fp8_or_ds_fp8)
    optimizer.step_with_ready_grads()
    return grad_norm


def rebuild_for(trainable: dict[str, bool], previous: Optional[Optimization],
                modules: list[torch.nn.Module], optim: OptimConfig, parallel: ParallelConfig,
                bf16: bool, total_steps: int, on_gpu: bool,
                freeze_schedule: FreezeSchedule) -> tuple[Optimization, dict[str, int]]:
    """Freeze/unfreeze groups: (re)build DDP, optimizer and scheduler for the groups that
    train, carrying over the state of those that trained before. Returns the new optimization
    and the parameter count per group."""
    if previous is not None:
        # Collective: also a stage that trained nothing so far learns the step count.
        states, step = optimizer_transfer.export_states(previous.optimizer)
        previous.release()
    counts = freeze.apply(modules, trainable)
    opt = build_optimization(modules, optim, parallel, bf16, total_steps, on_gpu,
                             freeze_schedule)
    if previous is not None:
        optimizer_transfer.import_states(opt.optimizer, states, step)
    opt.scheduler.num_steps = previous.scheduler.num_steps if previous else 0
    opt.scheduler.step(increment=0)
    return opt, counts

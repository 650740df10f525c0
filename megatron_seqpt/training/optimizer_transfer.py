"""Carry Adam state across a rebuild of megatron-core's optimizer (when a group unfreezes).

megatron-core builds its DDP buffers and optimizer for the parameters that require grad, so
unfreezing a group means building both again. Parameters that were already training keep their
state: the fp32 main weights, both moments and the step count, taken out per parameter as whole
tensors (gathered over the data-parallel group for the distributed optimizer, whose ranks each
hold a slice) and put back into the new optimizer, sliced again to the new layout. Newly
trainable parameters start with zero moments and the run's step count (megatron-core keeps one
step for all parameters); their group's LR carries the correction that makes those updates the
ones of an Adam started at the unfreeze (optim.GroupScheduler.adam_start).

megatron-core 0.16.1 has no public call for this; the per-parameter accessors used here are the
ones its own fully-reshardable checkpoint format is built on.
"""

from __future__ import annotations

from itertools import chain
from typing import Iterator

import torch
import torch.distributed as dist
from megatron.core.optimizer import MegatronOptimizer
from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer
from megatron.core.optimizer.optimizer import Float16OptimizerWithFloat16Params

from megatron_seqpt.training.optimizer_state import init_state, parts

MOMENTS = ("exp_avg", "exp_avg_sq")
ParamStates = dict[torch.nn.Parameter, dict[str, torch.Tensor]]


def _model_to_main(part: MegatronOptimizer) -> Iterator[tuple[torch.nn.Parameter, torch.Tensor]]:
    """(model parameter, the parameter the inner optimizer updates) for plain optimizers."""
    if isinstance(part, Float16OptimizerWithFloat16Params):
        yield from zip(chain.from_iterable(part.float16_groups),
                       chain.from_iterable(part.fp32_from_float16_groups))
        for param in chain.from_iterable(part.fp32_from_fp32_groups):
            yield param, param
    else:
        for group in part.optimizer.param_groups:
            for param in group["params"]:
                yield param, param


def _step_count(part: MegatronOptimizer) -> float:
    """Optimizer steps taken: in the per-parameter state (torch Adam) or the param groups
    (fused Adam)."""
    steps = [float(s["step"]) for s in part.optimizer.state.values() if "step" in s]
    steps += [float(g["step"]) for g in part.optimizer.param_groups if "step" in g]
    return max(steps, default=0.0)


def export_states(optimizer: MegatronOptimizer) -> tuple[ParamStates, float]:
    """Whole-tensor state of every trained parameter, and the step count (collective)."""
    states: ParamStates = {}
    step = 0.0
    for part in parts(optimizer):
        step = max(step, _step_count(part))
        if isinstance(part, DistributedOptimizer):
            states.update(_export_distributed(part))
        else:
            for model_param, main in _model_to_main(part):
                state = part.optimizer.state.get(main, {})
                if all(k in state for k in MOMENTS):
                    states[model_param] = {"param": main.detach().clone(),
                                           **{k: state[k].detach().clone() for k in MOMENTS}}
    if dist.is_initialized():  # ranks without any parameter state know no step count
        shared = torch.tensor([step], dtype=torch.float64, device=_device())
        dist.all_reduce(shared, op=dist.ReduceOp.MAX)
        step = shared.item()
    return states, step


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() \
        else torch.device("cpu")


def _export_distributed(part: DistributedOptimizer) -> ParamStates:
    states: ParamStates = {}
    for buffer in part.buffers:
        for model_param in buffer.param_index_map:
            local = model_param in part.model_param_group_index_map
            full = {k: torch.zeros(model_param.numel(), dtype=torch.float32,
                                   device=model_param.device) for k in ("param", *MOMENTS)}
            if local:
                shard = part._get_main_param_and_optimizer_states(model_param)
                where = part._get_model_param_range_map(model_param)["param"]
                for key in full:
                    full[key][where.start:where.end] = shard[key].detach().float().view(-1)
            for tensor in full.values():
                dist.all_reduce(tensor, group=part.data_parallel_group)
            states[model_param] = {k: v.view(model_param.shape) for k, v in full.items()}
    return states


def import_states(optimizer: MegatronOptimizer, states: ParamStates, step: float) -> None:
    """Put exported states into a freshly built optimizer; everything else starts at zero."""
    init_state(optimizer, step)
    for part in parts(optimizer):
        if isinstance(part, DistributedOptimizer):
            for model_param in part.model_param_group_index_map:
                if model_param not in states:
                    continue
                where = part._get_model_param_range_map(model_param)["param"]
                shard = {k: v.view(-1)[where.start:where.end] for k, v in
                         states[model_param].items()}
                with torch.no_grad():
                    part._set_main_param_and_optimizer_states(
                        model_param, {**shard, "step": torch.tensor(step)})
        else:
            for model_param, main in _model_to_main(part):
                if model_param in states:
                    saved = states[model_param]
                    with torch.no_grad():
                        main.copy_(saved["param"])
                    for key in MOMENTS:
                        part.optimizer.state[main][key] = saved[key].clone()

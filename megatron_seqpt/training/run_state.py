"""What a run's checkpoint holds, and putting it back: model, optimizer, scheduler, data
position, RNG states and counters as one megatron-core sharded state dict."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import torch

from megatron_seqpt.runtime.log import log
from megatron_seqpt.training import checkpoint as ckpt
from megatron_seqpt.training import optimizer_state
from megatron_seqpt.training.optim import Optimization
from megatron_seqpt.training.state import TrainState
from megatron_seqpt.training.workload import RunData


def model_state(modules: list[torch.nn.Module]) -> dict:
    state = {}
    for module in modules:
        state.update(module.sharded_state_dict())
    return state


def sharded_state(modules: list[torch.nn.Module], opt: Optimization, train_state: TrainState,
                  data: RunData, *, for_loading: bool, full: bool,
                  optimizer_format: dict) -> dict:
    """The sharded state dict to save, or (``for_loading``) the template to load into;
    ``full=False``: the model only."""
    models = model_state(modules)
    state = {"model": models}
    if full:
        state.update(
            optimizer=opt.optimizer.sharded_state_dict(models, is_loading=for_loading,
                                                       metadata=optimizer_format),
            scheduler=opt.scheduler.state_dict(),
            train_state=dataclasses.asdict(train_state),
            data=data.train.state_dict(),
            rng=ckpt.rng_sharded_object(for_loading))
    return state


def restore(path: Path, meta: dict, modules: list[torch.nn.Module], opt: Optimization,
            data: RunData, *, same_layout: bool, full: bool,
            optimizer_format: dict) -> Optional[TrainState]:
    """Load a checkpoint into the run; returns its train state (None for ``full=False``, which
    takes the weights only and leaves the optimizer fresh)."""
    if full:
        optimizer_state.init_state(opt.optimizer, step=0.0)  # a template to load into
    template = sharded_state(modules, opt, TrainState(), data, for_loading=True, full=full,
                             optimizer_format=meta.get("optimizer_format", optimizer_format))
    if full and not same_layout:
        # RNG states are per rank; another layout cannot take them over.
        template.pop("rng")
    loaded = ckpt.load(path, template)
    for module in modules:
        module.load_state_dict(loaded["model"], strict=True)
    if not full:
        opt.optimizer.reload_model_params()
        return None
    with torch.no_grad():  # the distributed optimizer copies into fp32 main params
        opt.optimizer.load_state_dict(loaded["optimizer"])
    optimizer_state.restore_step_counters(opt.optimizer, loaded["optimizer"])
    optimizer_state.fused_on_cpu(opt.optimizer)
    opt.scheduler.load_state_dict(loaded["scheduler"])
    data.train.load_state_dict(loaded["data"])
    if "rng" in loaded:
        ckpt.restore_rng(loaded["rng"])
    else:
        log(f"{path} was written with layout {meta['layout']}; dropout RNG starts afresh")
    return TrainState(**loaded["train_state"])

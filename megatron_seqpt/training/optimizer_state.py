"""Checkpoint fixes for megatron-core's distributed optimizer over torch's AdamW.

Without apex or transformer-engine (every CPU run, and GPU images without them) megatron-core's
distributed optimizer wraps torch AdamW, whose per-parameter state (with its ``step`` counter)
only exists after a first step. Two consequences for checkpoints, handled here:

- a fresh optimizer cannot describe its state for loading (megatron-core reads the step from the
  empty state): give it AdamW's zero state first, as AdamW's first step would;
- after loading, the parameters' ``step`` counters hold the fresh state's 0 instead of the saved
  count (megatron-core keeps the true count in the saved param groups), and where it does set
  them they share one tensor, which AdamW increments once per parameter: give each parameter
  its own counter with the saved count, so the run continues as if never stopped.
"""

from __future__ import annotations

from typing import Iterator

import torch
from megatron.core.optimizer import MegatronOptimizer
from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer


def _torch_adam_states(optimizer: MegatronOptimizer) -> Iterator[torch.optim.Optimizer]:
    parts = getattr(optimizer, "chained_optimizers", [optimizer])
    for part in parts:
        inner = getattr(part, "optimizer", None)
        if isinstance(part, DistributedOptimizer) and isinstance(inner, torch.optim.Adam):
            yield inner


def checkpoint_format(optimizer: MegatronOptimizer) -> dict:
    """How the distributed optimizer stores its state (the plain optimizer ignores this).

    The canonical per-parameter form reshards to any layout, but megatron-core cannot load it
    into torch AdamW (its per-parameter ``step``); there the DP-reshardable form is used, which
    resumes under another data-parallel size but not another tensor/pipeline split.
    """
    kind = "dp_reshardable" if any(True for _ in _torch_adam_states(optimizer)) \
        else "fully_reshardable"
    return {"distrib_optim_sharding_type": kind}


def fill_fresh_state(optimizer: MegatronOptimizer) -> None:
    """AdamW's initial state (step 0, zero moments) for parameters that have none yet."""
    for inner in _torch_adam_states(optimizer):
        for group in inner.param_groups:
            for param in group["params"]:
                if not inner.state[param]:
                    inner.state[param] = {
                        "step": torch.zeros((), dtype=torch.float32),
                        "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
                        "exp_avg_sq": torch.zeros_like(param,
                                                       memory_format=torch.preserve_format)}


def _saved_steps(node) -> set[float]:
    """The ``step`` values in the param groups of a loaded optimizer state (any nesting)."""
    if not isinstance(node, dict):
        return set()
    steps = {float(g["step"]) for g in node.get("param_groups", []) if "step" in g}
    for value in node.values():
        steps |= _saved_steps(value)
    return steps


def restore_step_counters(optimizer: MegatronOptimizer, loaded_state: dict) -> None:
    """Give every parameter its own ``step`` counter holding the saved count."""
    inners = list(_torch_adam_states(optimizer))
    if not inners:
        return
    steps = _saved_steps(loaded_state)
    if len(steps) != 1:
        raise RuntimeError(f"expected one saved AdamW step count, found {sorted(steps)}")
    (step,) = steps
    for inner in inners:
        for state in inner.state.values():
            state["step"] = torch.tensor(step, dtype=torch.float32)

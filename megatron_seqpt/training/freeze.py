"""The freeze scheduler: which named parameter groups train at each step, and their LR.

Groups are module paths: ``embeddings`` (word and position embeddings, and the vocabulary
projections tied to them with their biases: megatron-core treats a projection whose weight is
frozen as frozen, bias included), ``encoder``, ``decoder``, ``heads`` (the MLM and task
heads). Each has a schedule from ``freeze.<group>``: trainable from the start, frozen for the
whole run, or frozen until a step (or a fraction of ``train.steps``), then trainable with its
own LR multiplier and a linear warm-up from 0 over ``warmup_steps``.

A frozen group has ``requires_grad=False``: megatron-core's DDP and optimizer leave it out (no
gradient buffer, no optimizer state), and the T5 encoder runs under no_grad while it and the
embeddings are frozen. The trainer rebuilds DDP and optimizer when a group unfreezes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Optional

import torch

from megatron_seqpt.config.schema import FreezeConfig, GroupSchedule

# Group -> first component of its parameters' names (after wrapper prefixes).
GROUP_PREFIXES = {
    "embeddings": ("embedding",),
    "encoder": ("encoder",),
    "decoder": ("decoder",),
    "heads": ("lm_head", "encoder_mlm_head", "binary_head", "pooler", "task_head"),
}
# The vocabulary projections (weight tied to the word embeddings) belong to the embeddings.
TIED_PROJECTIONS = ("output_layer.", "lm_head.output_layer.", "encoder_mlm_output.")
# Prefixes that wrappers (DDP, Float16Module) put in front of the model's own names.
_WRAPPER_PREFIX = "module."


def group_of(param_name: str) -> str:
    """The freeze group of a parameter, from its name in any wrapper."""
    while param_name.startswith(_WRAPPER_PREFIX):
        param_name = param_name[len(_WRAPPER_PREFIX):]
    if param_name.startswith(TIED_PROJECTIONS):
        return "embeddings"
    first = param_name.split(".", 1)[0]
    for group, prefixes in GROUP_PREFIXES.items():
        if first in prefixes:
            return group
    raise ValueError(f"parameter '{param_name}' belongs to no freeze group "
                     f"({', '.join(GROUP_PREFIXES)})")


@dataclass(frozen=True)
class GroupPlan:
    # Completed steps after which the group trains (0: from the start; inf: never).
    trainable_from: float
    lr_mult: float
    warmup_steps: int


class FreezeSchedule:
    """The resolved schedule of one run (``train.steps`` fixes fractional unfreeze points)."""

    def __init__(self, freeze: FreezeConfig, total_steps: int):
        self.total_steps = total_steps
        self.plans = {name: self._plan(getattr(freeze, name)) for name in GROUP_PREFIXES}

    def _plan(self, schedule: GroupSchedule) -> GroupPlan:
        if not schedule.frozen:
            start = 0.0
        elif schedule.unfreeze_at_step is not None:
            start = float(schedule.unfreeze_at_step)
        elif schedule.unfreeze_at_fraction is not None:
            start = float(round(schedule.unfreeze_at_fraction * self.total_steps))
        else:
            start = math.inf
        return GroupPlan(start, schedule.lr_mult, schedule.warmup_steps)

    def trainable(self, completed_steps: int) -> dict[str, bool]:
        """Which groups train in the step after ``completed_steps`` steps."""
        return {name: completed_steps >= plan.trainable_from
                for name, plan in self.plans.items()}

    def lr_factor(self, group: str, completed_steps: int) -> float:
        """Warm-up of a group's LR from 0 after it starts training (1.0 once warm)."""
        plan = self.plans[group]
        if plan.warmup_steps <= 0:
            return 1.0
        into = completed_steps - plan.trainable_from + 1
        return min(1.0, max(0.0, into / plan.warmup_steps))

    def lr_mults(self) -> dict[str, float]:
        return {name: plan.lr_mult for name, plan in self.plans.items()}

    def describe(self) -> str:
        parts = []
        for name, plan in self.plans.items():
            if plan.trainable_from == 0:
                when = "trains"
            elif math.isinf(plan.trainable_from):
                when = "frozen"
            else:
                when = f"frozen until step {int(plan.trainable_from)}"
            extra = "".join([f", lr x{plan.lr_mult:g}" if plan.lr_mult != 1 else "",
                             f", warm-up {plan.warmup_steps}" if plan.warmup_steps else ""])
            parts.append(f"{name} {when}{extra}")
        return "; ".join(parts)


def apply(modules: Iterable[torch.nn.Module], trainable: dict[str, bool]) -> dict[str, int]:
    """Set ``requires_grad`` by group; returns the parameter count per group present."""
    counts: dict[str, int] = {}
    for module in modules:
        for name, param in module.named_parameters():
            group = group_of(name)
            param.requires_grad_(trainable[group])
            counts[group] = counts.get(group, 0) + param.numel()
    return counts


def trainable_names(trainable: dict[str, bool], present: Optional[Iterable[str]] = None) -> str:
    """``encoder,decoder``-style summary for metrics lines."""
    names = [g for g, on in trainable.items() if on and (present is None or g in present)]
    return ",".join(names) or "none"

"""Dropout on the CPU from 16-bit random draws, in half the time of torch's CPU dropout.

torch's CPU dropout draws a float Bernoulli per element (~5 ns each here), which made dropout
the largest cost of a CPU training step after the matmuls (9% of a T5 step at hidden 512).
Here one 64-bit draw of torch's CPU generator gives four 16-bit numbers, each kept when it is at
least a threshold: the drop probability is ``p`` rounded to a multiple of 1/65536
(FlashAttention's kernel keeps an 8-bit threshold), and kept values are scaled by the inverse
of the rounded keep probability, so the expected output is the input exactly. Draws come from
the default CPU generator, which megatron-core's RNG tracker forks on the CPU
(runtime/cpu_compat.py), as torch's dropout does. Tensors on a GPU go to torch's own (fused)
dropout.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from megatron.core.fusions.fused_bias_dropout import get_bias_dropout_add

_LEVELS = 1 << 16
_INT16_MIN = -(1 << 15)
_INT64_MIN = -(1 << 63)


def rounded_drop_probability(p: float) -> float:
    """The probability with which ``dropout`` drops an element on the CPU."""
    return round(p * _LEVELS) / _LEVELS


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout(x, p, training)`` with the drop probability rounded to 1/65536 on the CPU."""
    dropped_levels = round(p * _LEVELS)
    if not training or dropped_levels == 0:
        return x
    if x.device.type != "cpu" or not x.is_floating_point() or dropped_levels >= _LEVELS:
        return F.dropout(x, p, training)
    # The whole 64-bit range: random_() without it leaves the sign bit, one lane in four, 0.
    draws = torch.empty((x.numel() + 3) // 4, dtype=torch.int64).random_(_INT64_MIN, None)
    keep = draws.view(torch.int16)[:x.numel()].view(x.shape) >= _INT16_MIN + dropped_levels
    # One multiply by a mask of 0 and the scale, as torch's dropout does: the backward is one
    # multiply too (masking and scaling separately cost a third more, measured). The mask as
    # the kept flags times the scale: a third less time than torch.where(keep, scale, 0).
    scale = x.new_tensor(_LEVELS / (_LEVELS - dropped_levels))
    return x * keep.to(x.dtype).mul_(scale)


class Dropout(torch.nn.Dropout):
    """``torch.nn.Dropout`` drawing its masks with ``dropout`` above."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


def use_cpu_dropout(module: torch.nn.Module) -> torch.nn.Module:
    """Every ``torch.nn.Dropout`` in ``module`` (embeddings, attention probabilities, task
    heads) replaced by ``Dropout`` with the same probability; returns ``module``."""
    for parent in module.modules():
        for name, child in parent.named_children():
            if type(child) is torch.nn.Dropout:
                setattr(parent, name, Dropout(child.p))
    return module


def bias_dropout_add(training: bool, fused: bool):
    """megatron-core's ``get_bias_dropout_add`` for the layer specs, with ``dropout`` above
    where megatron-core's unfused version would call torch's (training without the fusion,
    which is enabled on GPUs only)."""
    if fused or not training:
        return get_bias_dropout_add(training, fused)
    return _bias_dropout_add_train


def _bias_dropout_add_train(x_with_bias: tuple[torch.Tensor, Optional[torch.Tensor]],
                            residual: torch.Tensor, prob: float) -> torch.Tensor:
    x, bias = x_with_bias
    residual = residual if residual.dtype == x.dtype else residual.to(x.dtype)
    if bias is not None:
        x = x + bias
    return residual + dropout(x, prob, True)

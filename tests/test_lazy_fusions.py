"""megatron-core's fusions are compiled at their first call, not when megatron-core is
imported (runtime/lazy_fusions.py)."""

import subprocess
import sys

import torch

from megatron_seqpt.runtime.lazy_fusions import decorate_at_first_call


def test_importing_the_model_stack_does_not_import_the_compiler():
    probe = ("import sys, megatron_seqpt.training.loop, megatron_seqpt.models.builder\n"
             "from megatron.core.fusions import fused_bias_gelu\n"
             "print(sorted(m for m in ('torch._dynamo', 'torch._inductor') if m in sys.modules))\n"
             "print(fused_bias_gelu.bias_gelu.__wrapped__.__module__)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[0] == "[]"
    # The fusion module's function is the deferred one, wrapping megatron-core's own code.
    assert out[1] == "megatron.core.fusions.fused_bias_gelu"


def test_the_decorator_runs_once_at_the_first_call_and_gives_its_result():
    applied = []

    def script(function):
        applied.append(function.__name__)
        return torch.jit.script(function)

    def scaled_sum(x: torch.Tensor, scale: float) -> torch.Tensor:
        return (x * scale).sum(dim=-1)

    deferred = decorate_at_first_call(script)(scaled_sum)
    assert applied == [] and deferred.__name__ == "scaled_sum"
    x = torch.randn(3, 5)
    first, second = deferred(x, 2.0), deferred(x, 3.0)
    assert applied == ["scaled_sum"]
    assert torch.equal(first, scaled_sum(x, 2.0)) and torch.equal(second, scaled_sum(x, 3.0))

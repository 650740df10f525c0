"""Comparing fp32 results computed in another order (fused kernels, other parallel layouts):
the rounding error of a sum grows with the magnitude of its terms, so an element's tolerance
is set from its tensor's largest value, not from the element itself (a gradient element near
zero that is the difference of large terms is off by the terms' rounding). 1e-3 of the scale
is far above fp32 reordering noise (measured: up to 1e-6 on the development machine) and far
below what a real difference (a wrong mask, a missing term) causes."""

import torch

RELATIVE_TO_SCALE = 1e-3


def assert_close_to_scale(actual: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    scale = expected.abs().max().item() or 1.0
    torch.testing.assert_close(actual, expected, rtol=0.0, atol=RELATIVE_TO_SCALE * scale,
                               msg=lambda m: f"{name} (scale {scale:.3g}): {m}")

"""Gradient norm and clipping on the CPU (runtime/cpu_multi_tensor.py): the foreach versions
give megatron-core's fallbacks' bits on a real model's gradients, and the CPU layer puts them in
megatron-core's clipping and takes them out again."""

import torch
from megatron.core import utils as mcore_utils
from megatron.core.optimizer import clip_grads

from megatron_seqpt.runtime import cpu_compat, cpu_multi_tensor


def _gradients() -> list[torch.Tensor]:
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(64, 4, 256, batch_first=True)
    layer(torch.randn(3, 10, 64)).square().mean().backward()
    return [p.grad for p in layer.parameters()]


def test_foreach_norm_and_scale_give_the_fallbacks_bits():
    grads = _gradients()
    flag = torch.zeros(1, dtype=torch.int)
    with_cpu_layer = cpu_compat._mode is None
    if with_cpu_layer:  # the fallback makes its result with device="cuda"
        cpu_compat.install()
    try:
        expected, _ = mcore_utils.local_multi_tensor_l2_norm(0, flag, [grads, grads], False)
    finally:
        if with_cpu_layer:
            cpu_compat.uninstall()
    norm, _ = cpu_multi_tensor.foreach_l2_norm(0, flag, [grads, grads], False)
    assert norm.shape == (1,) and torch.equal(norm, expected)

    coeff = 1.0 / (float(norm) + 1e-6)
    clipped = [g.clone() for g in grads]
    mcore_utils.local_multi_tensor_scale(0, flag, [clipped, clipped], coeff)
    in_place = [g.clone() for g in grads]
    cpu_multi_tensor.foreach_scale(0, flag, [in_place, in_place], coeff)
    copied = [torch.empty_like(g) for g in grads]
    cpu_multi_tensor.foreach_scale(0, flag, [grads, copied], coeff)
    for want, got_in_place, got_copied in zip(clipped, in_place, copied):
        assert torch.equal(got_in_place, want) and torch.equal(got_copied, want)


def test_the_cpu_layer_installs_them_in_megatron_cores_clipping():
    was_installed = cpu_compat._mode is not None
    cpu_compat.install()
    try:
        assert clip_grads.l2_norm_impl is cpu_multi_tensor.foreach_l2_norm
        assert clip_grads.multi_tensor_scale_impl is cpu_multi_tensor.foreach_scale
    finally:
        if not was_installed:
            cpu_compat.uninstall()
    if not was_installed:
        assert clip_grads.l2_norm_impl is mcore_utils.local_multi_tensor_l2_norm
        assert clip_grads.multi_tensor_scale_impl is mcore_utils.local_multi_tensor_scale

"""The CPU layer (runtime/cpu_compat.py): its function mode redirects CUDA placements while it
is on, is off inside ``suspended`` blocks and functions wrapped by ``without_mode``, and is on
again after them."""

import pytest
import torch

from megatron_seqpt.runtime import cpu_compat


@pytest.fixture
def layer():
    """The layer installed for the test (and removed after it unless it was installed before)."""
    was_installed = cpu_compat._mode is not None
    cpu_compat.install()
    yield
    if not was_installed:
        cpu_compat.uninstall()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the redirection on a CPU machine")
def test_mode_is_suspended_only_inside(layer):
    assert torch.zeros(2, device="cuda").device.type == "cpu"
    with cpu_compat.suspended():
        with pytest.raises((RuntimeError, AssertionError)):
            torch.zeros(2, device="cuda")
    wrapped = cpu_compat.without_mode(lambda: torch.ones(1, device="cuda"))
    with pytest.raises((RuntimeError, AssertionError)):
        wrapped()
    assert torch.ones(1, device="cuda").device.type == "cpu"


def test_suspended_is_a_no_op_without_the_layer():
    if cpu_compat._mode is not None:
        pytest.skip("the layer is installed in this process")
    with cpu_compat.suspended():
        assert torch.ones(1).sum() == 1

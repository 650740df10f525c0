"""What this machine offers: CUDA, transformer-engine, NVIDIA apex.

GPU-only packages are used when they import and never required. The PyPI package named
``apex`` is an unrelated web toolkit that megatron-core would mistake for NVIDIA apex, so it is
detected and refused with the fix.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache

import torch

from megatron_seqpt.errors import UserError


class BackendError(UserError):
    """The installed GPU packages are unusable; the message says how to fix them."""


@dataclass(frozen=True)
class Backend:
    cuda: bool
    transformer_engine: bool
    apex: bool
    # megatron-core's fused masked-softmax CUDA kernel (built with apex in NVIDIA containers).
    fused_softmax: bool = False

    @property
    def device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if self.cuda else \
            torch.device("cpu")

    @property
    def dist_backend(self) -> str:
        return "nccl" if self.cuda else "gloo"

    @property
    def bf16(self) -> bool:
        return self.cuda and torch.cuda.is_bf16_supported()

    def describe(self) -> str:
        where = f"cuda ({torch.cuda.get_device_name()})" if self.cuda else "cpu"
        return (f"device={where} transformer-engine={'yes' if self.transformer_engine else 'no'} "
                f"apex={'yes' if self.apex else 'no'} torch={torch.__version__}")


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _check_apex() -> bool:
    """True for NVIDIA apex; an error for the unrelated PyPI ``apex``."""
    if not _has_module("apex"):
        return False
    if _has_module("apex.normalization") or _has_module("amp_C"):
        return True
    raise BackendError(
        "the installed package 'apex' is not NVIDIA apex (it is the unrelated PyPI web toolkit), "
        "and megatron-core would take it for NVIDIA apex and break its layer norm. Remove it: "
        "pip uninstall -y apex. NVIDIA apex comes with NVIDIA's PyTorch containers.")


@lru_cache(maxsize=1)
def detect() -> Backend:
    cuda = torch.cuda.is_available()
    te = cuda and _has_module("transformer_engine")
    return Backend(cuda=cuda, transformer_engine=te, apex=_check_apex(),
                   fused_softmax=cuda and _has_module("scaled_masked_softmax_cuda"))

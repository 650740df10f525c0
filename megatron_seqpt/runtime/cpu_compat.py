"""Lets megatron-core's own modules, schedules, DDP, optimizer and checkpointing run on CPU.

megatron-core assumes CUDA in a few fixed ways: ``device="cuda"`` / ``torch.cuda.current_device()``
for new tensors, ``Tensor.cuda()``, ``torch.cuda.synchronize()``, CUDA RNG state for its RNG
tracker and activation recompute, and CUDA type strings in the optimizer. Each is redirected to
the CPU here; nothing of megatron-core is copied or replaced, except the Python-loop fallbacks of
its gradient clipping, which get foreach versions (``cpu_multi_tensor``). Installed only on the
CPU backend.

The function mode costs a few microseconds on every torch call (about 2,700 calls, some 10 ms,
in a fine-tuning step at hidden 256), so it is suspended where nothing needs it: around the
workloads' forward steps (the model makes no CUDA placements; the schedules around it do) and
generation.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Optional

import torch
from megatron.core.tensor_parallel import random as mcore_random
from torch.overrides import TorchFunctionMode

from megatron_seqpt.runtime import cpu_multi_tensor

_CUDA_TYPE_NAMES = {
    torch.float32: "torch.cuda.FloatTensor",
    torch.float16: "torch.cuda.HalfTensor",
    torch.bfloat16: "torch.cuda.BFloat16Tensor",
}

# The active function mode and what install() replaced, while installed.
_mode: Optional["CudaToCpuMode"] = None
_saved: dict = {}


def _is_cuda(device) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    return isinstance(device, str) and device.startswith("cuda")


class CudaToCpuMode(TorchFunctionMode):
    """Rewrites CUDA placements to the CPU for every torch call made while it is active.

    Optimizer code tests ``tensor.type() == 'torch.cuda.FloatTensor'``; floating CPU tensors
    answer with the CUDA name so those branches take the path they take on a GPU.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.cuda:
            return args[0]
        if func is torch.Tensor.type and len(args) == 1 and not kwargs:
            name = _CUDA_TYPE_NAMES.get(args[0].dtype)
            if name is not None:
                return name
        if _is_cuda(kwargs.get("device")):
            kwargs["device"] = "cpu"
        if func is torch.Tensor.to and len(args) > 1 and _is_cuda(args[1]):
            args = (args[0], "cpu", *args[2:])
        return func(*args, **kwargs)


class CpuRNGStatesTracker(mcore_random.CudaRNGStatesTracker):
    """megatron-core's RNG tracker over the CPU generator: each named stream (data parallel,
    tensor-model parallel, expert) keeps its own state, so tensor-parallel ranks draw their own
    dropout masks as they do on GPUs."""

    def add(self, name, seed):
        self._is_initialized = True
        if seed in self.seeds_:
            raise ValueError(f"rng seed {seed} already exists")
        if name in self.states_:
            raise ValueError(f"rng state {name} already exists")
        self.seeds_.add(seed)
        outer = torch.get_rng_state()
        torch.manual_seed(seed)
        self.states_[name] = torch.get_rng_state()
        torch.set_rng_state(outer)

    @contextlib.contextmanager
    def fork(self, name=mcore_random._MODEL_PARALLEL_RNG_TRACKER_NAME):
        if name not in self.states_:
            raise ValueError(f"rng state {name} is not added")
        outer = torch.get_rng_state()
        torch.set_rng_state(self.states_[name])
        try:
            yield
        finally:
            self.states_[name] = torch.get_rng_state()
            torch.set_rng_state(outer)


def _cpu_rng_state(*args, **kwargs) -> torch.Tensor:
    return torch.get_rng_state()


def _set_cpu_rng_state(state: torch.Tensor, *args, **kwargs) -> None:
    torch.set_rng_state(state)


@contextlib.contextmanager
def suspended():
    """The function mode off for a block that makes no CUDA placements (a model's forward,
    generation): it costs a few microseconds on every torch call. A no-op when the layer is not
    installed or another mode was entered after it."""
    if _mode is None or torch.overrides._get_current_function_mode() is not _mode:
        yield
        return
    with torch.overrides._pop_mode_temporarily():
        yield


def without_mode(fn):
    """``fn`` run with the function mode suspended (see ``suspended``)."""

    @functools.wraps(fn)
    def call(*args, **kwargs):
        with suspended():
            return fn(*args, **kwargs)

    return call


def install() -> None:
    """Install the CPU redirections for this process (idempotent); ``uninstall`` undoes them."""
    global _mode
    if _mode is not None:
        return
    _saved.update(current_device=torch.cuda.current_device,
                  synchronize=torch.cuda.synchronize,
                  get_rng=mcore_random._get_cuda_rng_state,
                  set_rng=mcore_random._set_cuda_rng_state,
                  tracker=mcore_random._CUDA_RNG_STATE_TRACKER,
                  tracker_initialized=mcore_random._CUDA_RNG_STATE_TRACKER_INITIALIZED)
    torch.cuda.current_device = lambda: torch.device("cpu")
    torch.cuda.synchronize = lambda *args, **kwargs: None
    # Activation recompute saves and restores the RNG state around the recomputed forward.
    mcore_random._get_cuda_rng_state = _cpu_rng_state
    mcore_random._set_cuda_rng_state = _set_cpu_rng_state
    mcore_random._CUDA_RNG_STATE_TRACKER = CpuRNGStatesTracker()
    mcore_random._CUDA_RNG_STATE_TRACKER_INITIALIZED = True
    cpu_multi_tensor.install()
    _mode = CudaToCpuMode()
    _mode.__enter__()


def uninstall() -> None:
    """Put everything ``install`` changed back (at shutdown): the function mode otherwise
    stays on every later torch call of the process, other libraries' included."""
    global _mode
    if _mode is None:
        return
    if torch.overrides._get_current_function_mode() is not _mode:
        raise RuntimeError("another torch function mode was entered after the CPU layer's "
                           "and is still active; exit it first")
    _mode.__exit__(None, None, None)
    _mode = None
    cpu_multi_tensor.uninstall()
    torch.cuda.current_device = _saved["current_device"]
    torch.cuda.synchronize = _saved["synchronize"]
    mcore_random._get_cuda_rng_state = _saved["get_rng"]
    mcore_random._set_cuda_rng_state = _saved["set_rng"]
    mcore_random._CUDA_RNG_STATE_TRACKER = _saved["tracker"]
    mcore_random._CUDA_RNG_STATE_TRACKER_INITIALIZED = _saved["tracker_initialized"]
    _saved.clear()

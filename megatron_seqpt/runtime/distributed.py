"""Start torch.distributed and megatron-core's parallel state, the same way on CPU and GPU.

The layout (tensor x pipeline x data parallel) is checked against the world size and the model
shape before any process group exists, so a wrong layout fails at once with the numbers that
disagree instead of hanging or failing deep inside megatron-core.
"""

from __future__ import annotations

import datetime
import random
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist
from megatron.core import parallel_state, tensor_parallel

from megatron_seqpt.config.schema import ModelConfig, ParallelConfig
from megatron_seqpt.errors import UserError
from megatron_seqpt.runtime import backend as backend_mod
from megatron_seqpt.runtime import child_processes, cpu_compat
from megatron_seqpt.runtime.launch_env import LaunchEnv, detect


# The launch (init method, rank, world size) the process group was started for, by
# ``initialize``; None when there is none or another started it.
_group_launch: Optional[tuple[str, int, int]] = None


class LayoutError(UserError):
    """The parallel layout does not fit the world size or the model."""


@dataclass(frozen=True)
class DistributedContext:
    launch: LaunchEnv
    backend: backend_mod.Backend
    tensor_parallel: int
    pipeline_parallel: int
    data_parallel: int

    @property
    def rank(self) -> int:
        return self.launch.rank

    @property
    def world_size(self) -> int:
        return self.launch.world_size

    @property
    def is_main(self) -> bool:
        return self.launch.rank == 0

    def describe(self) -> str:
        return (f"world={self.world_size} (tp={self.tensor_parallel} pp={self.pipeline_parallel} "
                f"dp={self.data_parallel}) launcher={self.launch.launcher} "
                f"dist={self.backend.dist_backend} {self.backend.describe()}")


def check_layout(world_size: int, parallel: ParallelConfig,
                 model: Optional[ModelConfig] = None) -> int:
    """Return the data-parallel size, or raise LayoutError naming the numbers that disagree."""
    tp, pp = parallel.tensor_model_parallel_size, parallel.pipeline_model_parallel_size
    if world_size % (tp * pp):
        raise LayoutError(
            f"world size {world_size} is not divisible by parallel.tensor_model_parallel_size "
            f"({tp}) x parallel.pipeline_model_parallel_size ({pp}) = {tp * pp}; launch a "
            f"multiple of {tp * pp} processes or change the sizes")
    if model is not None:
        stacks = [("encoder", model.encoder)]
        if model.kind == "t5":
            stacks.append(("decoder", model.decoder))
        for name, stack in stacks:
            if stack.num_attention_heads % tp:
                raise LayoutError(
                    f"model.{name}.num_attention_heads ({stack.num_attention_heads}) is not "
                    f"divisible by parallel.tensor_model_parallel_size ({tp})")
            if stack.ffn_hidden_size % tp:
                raise LayoutError(
                    f"model.{name}.ffn_hidden_size ({stack.ffn_hidden_size}) is not divisible by "
                    f"parallel.tensor_model_parallel_size ({tp})")
        if model.kind == "t5" and pp > 1:
            _check_t5_pipeline(parallel, model)
        elif parallel.pipeline_layers is not None:
            raise LayoutError("parallel.pipeline_layers applies to model.kind t5 only; the MLM "
                              "encoder's layers are split evenly over the stages")
        elif model.encoder.num_layers % pp:
            raise LayoutError(
                f"model.encoder.num_layers ({model.encoder.num_layers}) is not divisible by "
                f"parallel.pipeline_model_parallel_size ({pp})")
    return world_size // (tp * pp)


def _check_t5_pipeline(parallel: ParallelConfig, model: ModelConfig) -> None:
    pp = parallel.pipeline_model_parallel_size
    total = model.encoder.num_layers + model.decoder.num_layers
    if total < pp:
        raise LayoutError(f"T5 has {total} layers (model.encoder.num_layers + "
                          f"model.decoder.num_layers) for parallel.pipeline_model_parallel_size "
                          f"{pp} stages; each stage needs at least one")
    if parallel.sequence_parallel:
        raise LayoutError("sequence parallel is not available for T5 with pipeline parallelism; "
                          "set parallel.sequence_parallel=false")
    if model.encoder_mlm_weight:
        raise LayoutError("model.encoder_mlm_weight (the encoder MLM loss) is not available "
                          "for T5 with pipeline parallelism")


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch; megatron-core's tracker gets the tensor-parallel streams.

    Pipeline stages hold different layers, so each gets its own offset (as Megatron-LM does);
    data-parallel replicas share the seed so that they initialise identical weights.
    """
    stage_seed = seed + 100 * parallel_state.get_pipeline_model_parallel_rank()
    random.seed(stage_seed)
    np.random.seed(stage_seed)
    torch.manual_seed(stage_seed)
    tensor_parallel.model_parallel_cuda_manual_seed(stage_seed)


def initialize(parallel: ParallelConfig, model: Optional[ModelConfig] = None, seed: int = 1234,
               launch: Optional[LaunchEnv] = None) -> DistributedContext:
    """Start (or join) the process group and megatron-core's parallel state."""
    launch = launch or detect()
    child_processes.install()
    backend = backend_mod.detect()
    dp = check_layout(launch.world_size, parallel, model)
    if parallel.backend == "nccl" and not backend.cuda:
        raise LayoutError("parallel.backend is nccl but no CUDA device is visible; use auto")
    dist_backend = backend.dist_backend if parallel.backend == "auto" else parallel.backend
    if backend.cuda:
        torch.cuda.set_device(launch.local_rank % torch.cuda.device_count())
    else:
        cpu_compat.install()
    global _group_launch
    started_for = (launch.init_method, launch.rank, launch.world_size)
    if dist.is_initialized() and _group_launch not in (None, started_for):
        # Kept from a stage of an earlier world (tests run worlds in turn in one process).
        _destroy_process_group()
    if not dist.is_initialized():
        dist.init_process_group(
            dist_backend, init_method=launch.init_method, rank=launch.rank,
            world_size=launch.world_size,
            timeout=datetime.timedelta(minutes=parallel.timeout_minutes))
        _group_launch = started_for
    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=parallel.tensor_model_parallel_size,
        pipeline_model_parallel_size=parallel.pipeline_model_parallel_size,
        distributed_timeout_minutes=parallel.timeout_minutes)
    seed_everything(seed)
    return DistributedContext(launch, backend, parallel.tensor_model_parallel_size,
                              parallel.pipeline_model_parallel_size, dp)


def shutdown() -> None:
    """The end of a stage: tear down megatron-core's groups and the CPU layer, and the process
    group of a world of one. A world of several ranks keeps its process group for the next
    stage of the same launch (training then scoring, a recipe's runs; ``initialize`` takes it
    up with its first settings of backend and timeout) until ``close``: a second
    ``init_process_group`` in one launch reads the first one's rendezvous keys from the
    launcher's store, and its ranks connect to addresses closed since."""
    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if dist.is_initialized() and dist.get_world_size() == 1:
        _destroy_process_group()
    cpu_compat.uninstall()


def close() -> None:
    """The end of a command: ``shutdown`` and the process group of any world."""
    shutdown()
    if dist.is_initialized():
        _destroy_process_group()


def _destroy_process_group() -> None:
    global _group_launch
    dist.destroy_process_group()
    _group_launch = None

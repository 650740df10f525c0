"""Weights-only checkpoints: taking part of a model from another checkpoint, and writing one.

A weights-only checkpoint has the layout of a training checkpoint (``checkpoints/latest``,
``config.yaml``) but holds only the model, so ``seqpt pretrain`` can start from it with
``checkpoint.load`` and a fresh optimizer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch
from megatron.core import parallel_state

from megatron_seqpt.config import RunConfig, dump
from megatron_seqpt.training import checkpoint as ckpt


def load_parts(modules: Iterable[torch.nn.Module], path: Path, prefixes: tuple[str, ...]) -> int:
    """Load the tensors under these module paths from a checkpoint; others stay as they are.
    Returns how many were loaded."""
    loaded_count = 0
    for module in modules:
        template = {key: value for key, value in module.sharded_state_dict().items()
                    if key.startswith(prefixes)}
        if not template:
            continue
        loaded = ckpt.load(path, template)
        missing = [key for key in template if key not in loaded]
        if missing:
            raise ckpt.CheckpointError(f"{path} lacks {', '.join(missing[:5])}")
        module.load_state_dict(loaded, strict=False)
        loaded_count += len(template)
    return loaded_count


def save_weights(modules: Iterable[torch.nn.Module], output: Path, config: RunConfig,
                 vocab_size: int, precision: str) -> Path:
    """Write the modules' weights as step 0 of ``output`` (with ``output/config.yaml``)."""
    state = {}
    for module in modules:
        state.update(module.sharded_state_dict())
    layout = {"tp": parallel_state.get_tensor_model_parallel_world_size(),
              "pp": parallel_state.get_pipeline_model_parallel_world_size(),
              "dp": parallel_state.get_data_parallel_world_size()}
    metadata = {"model": ckpt.model_shape(config.model, vocab_size), "layout": layout,
                "step": 0, "precision": precision, "weights_only": True}
    manager = ckpt.CheckpointManager(output, keep_last=0)
    path = manager.save(0, {"model": state}, metadata,
                        lambda directory: dump(config, directory / "config.yaml"))
    if torch.distributed.get_rank() == 0:
        dump(config, Path(output) / "config.yaml")
    return path

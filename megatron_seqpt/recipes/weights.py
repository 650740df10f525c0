"""Weights-only checkpoints: what the conversions write.

A weights-only checkpoint has the layout of a training checkpoint (``checkpoints/latest``,
``config.yaml``) but holds only the model, so ``seqpt pretrain`` can start from it with
``checkpoint.load`` and a fresh optimizer.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterable

import torch
from megatron.core import parallel_state

from megatron_seqpt.config import RunConfig, dump
from megatron_seqpt.training import checkpoint as ckpt
from megatron_seqpt.training.checkpoint import TOKENIZER_FILE


def save_weights(modules: Iterable[torch.nn.Module], output: Path, config: RunConfig,
                 meta: dict, tokenizer_file: Path) -> Path:
    """Write the modules' weights as step 0 of ``output`` (with ``output/config.yaml`` and a
    copy of ``tokenizer_file``). ``meta``: the metadata of the checkpoint they came from, whose
    vocabulary, precision and tokenizer record they keep."""
    state = {}
    for module in modules:
        state.update(module.sharded_state_dict())
    layout = {"tp": parallel_state.get_tensor_model_parallel_world_size(),
              "pp": parallel_state.get_pipeline_model_parallel_world_size(),
              "dp": parallel_state.get_data_parallel_world_size()}
    metadata = {"model": ckpt.model_shape(config.model, meta["model"]["vocab_size"]),
                "layout": layout, "step": 0, "precision": meta.get("precision", "fp32"),
                "weights_only": True}
    if meta.get("tokenizer"):
        metadata["tokenizer"] = meta["tokenizer"]
    manager = ckpt.CheckpointManager(output, keep_last=0)
    path = manager.save(0, {"model": state}, metadata,
                        lambda directory: dump(config, directory / "config.yaml"))
    if torch.distributed.get_rank() == 0:
        dump(config, Path(output) / "config.yaml")
        if tokenizer_file.is_file():
            shutil.copyfile(tokenizer_file, Path(output) / TOKENIZER_FILE)
    return path

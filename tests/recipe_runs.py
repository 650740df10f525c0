"""Tiny runs the recipe tests start from, trained once per test session in spawned processes
(each a fresh world) and reused: an MLM encoder and a T5 model."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from megatron_seqpt.runtime.local_ranks import run_ranks

WEIGHT_PREFIXES = ("embedding.", "encoder.")


def _train(kind: str, cache_dir: Path, run_dir: Path, overrides: tuple) -> None:
    """(Runs in a spawned process.)"""
    from megatron_seqpt.runtime import distributed
    from megatron_seqpt.training.loop import Trainer
    from tests.run_configs import tiny_config

    config = tiny_config(kind, cache_dir, ["train.steps=6", *overrides])
    ctx = distributed.initialize(config.parallel, config.model, config.train.seed)
    trainer = Trainer(config, run_dir, ctx)
    trainer.run()
    # The final embedding and encoder weights by name, to compare converted models with.
    torch.save({name: param.detach().clone() for name, param in
                trainer.modules[0].named_parameters() if name.startswith(WEIGHT_PREFIXES)},
               Path(run_dir) / "weights.pt")
    distributed.shutdown()


@functools.lru_cache(maxsize=None)
def trained(kind: str, root: Path) -> Path:
    """The run directory of a 6-step tiny ``kind`` run under ``root``."""
    run_dir = root / kind
    if not (run_dir / "weights.pt").exists():
        run_ranks(_train, 1, kind, root / "cache", run_dir, ())
    return run_dir

"""Run-log lines from the main rank only (every rank would repeat them otherwise)."""

import sys

import torch.distributed as dist

from megatron_seqpt.runtime.launch_env import process_rank


def is_main_rank() -> bool:
    """Rank 0 of the process group, or before there is one, of the launch."""
    return dist.get_rank() == 0 if dist.is_initialized() else process_rank() == 0


def log(message: str) -> None:
    if is_main_rank():
        print(f"[seqpt] {message}", file=sys.stdout, flush=True)

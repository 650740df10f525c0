"""Run-log lines from the main rank only (every rank would repeat them otherwise)."""

import sys

import torch.distributed as dist


def is_main_rank() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def log(message: str) -> None:
    if is_main_rank():
        print(f"[seqpt] {message}", file=sys.stdout, flush=True)

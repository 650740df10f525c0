"""Run a function on N local ranks (spawned processes, each a world member through the
torchrun-style environment) and collect each rank's return value: multi-process tests and
benchmarks on one machine without a launcher."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import queue as queue_module
import socket
import traceback
from typing import Any, Callable


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _entry(fn, rank, world_size, port, args, queue):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    try:
        # Pickled by value: tensors sent through the queue as shared memory die with the rank.
        queue.put((rank, True, pickle.dumps(fn(*args))))
    except BaseException:  # noqa: BLE001 - reported to the parent with its traceback
        queue.put((rank, False, traceback.format_exc()))


def run_ranks(fn: Callable[..., Any], world_size: int, *args: Any,
              timeout: float = 300) -> list[Any]:
    """``fn(*args)`` on each rank (it reads RANK etc. from the environment); results by rank."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_entry, args=(fn, r, world_size, port, args, queue))
             for r in range(world_size)]
    for p in procs:
        p.start()
    results: dict[int, Any] = {}
    errors: dict[int, str] = {}
    try:
        for _ in procs:
            # After a first failure the others usually fail soon too (their peer is gone);
            # their tracebacks may hold the cause, so wait briefly for them.
            rank, ok, value = queue.get(timeout=15 if errors else timeout)
            if ok:
                results[rank] = pickle.loads(value)
            else:
                errors[rank] = value
    except queue_module.Empty:
        if not errors:
            raise AssertionError(f"ranks {sorted(set(range(world_size)) - set(results))} gave "
                                 f"no result within {timeout} s") from None
    finally:
        for p in procs:
            p.join(timeout=1 if errors else 10)
            if p.is_alive():
                p.kill()
    if errors:
        raise AssertionError("\n".join(f"rank {r}:\n{tb}" for r, tb in sorted(errors.items())))
    return [results[r] for r in range(world_size)]

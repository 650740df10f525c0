"""Run a function on N local ranks (spawned processes, each a world member through the
torchrun-style environment) and collect each rank's return value: multi-process tests and
benchmarks on one machine without a launcher.

``LocalRanks`` keeps its processes for several worlds in turn: each ``run`` is a new world (a
new rendezvous port; the function initialises and tears down its process groups, as a run
does), without paying each process's start-up again (importing torch and megatron-core takes
seconds). ``run_ranks`` is one world in processes of its own.
"""

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


def _serve(tasks, results) -> None:
    """A rank process: run each task given until told to stop (None)."""
    while (task := tasks.get()) is not None:
        call, rank, world_size, port = task
        fn, args = pickle.loads(call)
        os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
        try:
            # Pickled by value: tensors sent through the queue as shared memory die with the rank.
            results.put((rank, True, pickle.dumps(fn(*args))))
        except BaseException:  # noqa: BLE001 - reported to the parent with its traceback
            results.put((rank, False, traceback.format_exc()))


class LocalRanks:
    """Rank processes reused across ``run`` calls; started on first need, as many as the
    largest world asked for. After a failed or timed-out world they are stopped (a rank may
    be stuck in a collective) and the next ``run`` starts new ones."""

    def __init__(self, timeout: float = 300):
        self.timeout = timeout
        self._ctx = mp.get_context("spawn")
        self._procs: list = []
        self._tasks: list = []
        self._results = None

    def __enter__(self) -> "LocalRanks":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def run(self, fn: Callable[..., Any], world_size: int, *args: Any) -> list[Any]:
        """``fn(*args)`` on ranks 0..world_size-1 (it reads RANK etc. from the environment);
        results by rank."""
        call = pickle.dumps((fn, args))  # fails here, not in a queue's feeder thread
        self._grow(world_size)
        port = _free_port()
        for rank in range(world_size):
            self._tasks[rank].put((call, rank, world_size, port))
        results: dict[int, Any] = {}
        errors: dict[int, str] = {}
        try:
            for _ in range(world_size):
                # After a first failure the others usually fail soon too (their peer is gone);
                # their tracebacks may hold the cause, so wait briefly for them.
                rank, ok, value = self._results.get(timeout=15 if errors else self.timeout)
                if ok:
                    results[rank] = pickle.loads(value)
                else:
                    errors[rank] = value
        except queue_module.Empty:
            self.close(kill=True)
            if not errors:
                raise AssertionError(f"ranks {sorted(set(range(world_size)) - set(results))} "
                                     f"gave no result within {self.timeout} s") from None
        if errors:
            self.close(kill=True)
            raise AssertionError("\n".join(f"rank {r}:\n{tb}" for r, tb in sorted(errors.items())))
        return [results[r] for r in range(world_size)]

    def close(self, kill: bool = False) -> None:
        """Stop the rank processes (at once with ``kill``)."""
        for tasks, proc in zip(self._tasks, self._procs):
            if not kill and proc.is_alive():
                tasks.put(None)
        for proc in self._procs:
            proc.join(timeout=0 if kill else 10)
            if proc.is_alive():
                proc.kill()
                proc.join()
        self._procs, self._tasks, self._results = [], [], None

    def _grow(self, size: int) -> None:
        if self._results is None:
            self._results = self._ctx.Queue()
        while len(self._procs) < size:
            tasks = self._ctx.Queue()
            # Not daemonic: a rank may start processes of its own (megatron-core's checkpoint
            # writer does); close() stops them, and they die with this process.
            proc = self._ctx.Process(target=_serve, args=(tasks, self._results))
            proc.start()
            self._tasks.append(tasks)
            self._procs.append(proc)


def run_ranks(fn: Callable[..., Any], world_size: int, *args: Any,
              timeout: float = 300) -> list[Any]:
    """``fn(*args)`` on each rank, in processes started for this world alone."""
    with LocalRanks(timeout) as ranks:
        return ranks.run(fn, world_size, *args)

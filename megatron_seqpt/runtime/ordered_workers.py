"""Worker processes that return results in submission order and never hang on a dead worker.

``multiprocessing.Pool`` replaces a worker that was killed (the out-of-memory killer, a
``kill -9``) and loses the task it held, so the caller waits for its result for ever; and its
``terminate()`` can hang when an interrupt lands while a worker holds the queue's shared lock.
Here each worker has its own pair of pipes and nothing is shared between workers: a worker's
death ends its result pipe, which the caller sees at once, and stopping is killing the
processes. Tasks go round-robin, so the results come back in order by reading the workers in
turn. A sender thread per worker writes its tasks, so a large task never blocks the caller
while that worker is writing a large result back.
"""

from __future__ import annotations

import multiprocessing
import queue
import signal
import threading
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Callable

from megatron_seqpt.errors import UserError

# Tasks each worker holds at most (one being worked on, one waiting): enough to keep it busy.
IN_FLIGHT_PER_WORKER = 2


class WorkerDied(UserError):
    """A worker process ended before returning the result of a task it was given."""


@dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    outbox: queue.SimpleQueue
    sender: threading.Thread
    results: Connection


def _serve(tasks: Connection, results: Connection, initializer: Callable | None,
           initargs: tuple) -> None:
    # Ctrl-C reaches the whole process group; stopping the workers is the caller's decision.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    set_up_error = None
    try:
        if initializer is not None:
            initializer(*initargs)
    except Exception as err:  # noqa: BLE001 - the result of every task, raised in the caller
        set_up_error = err
    for function, argument in iter(tasks.recv, None):
        try:
            if set_up_error is not None:
                raise set_up_error
            outcome = (True, function(argument))
        except Exception as err:  # noqa: BLE001 - re-raised in the caller
            outcome = (False, err)
        try:
            results.send(outcome)
        except Exception as err:  # noqa: BLE001 - e.g. an exception that does not pickle
            results.send((False, RuntimeError(f"{type(err).__name__}: {err}")))


def _send_all(outbox: queue.SimpleQueue, tasks: Connection) -> None:
    try:
        for task in iter(outbox.get, None):
            tasks.send(task)
        tasks.send(None)
    except OSError:  # the worker is gone: its result pipe tells the caller
        pass
    finally:
        tasks.close()


class OrderedWorkers:
    """``count`` processes, each started with ``initializer(*initargs)``; a context manager
    that stops them on leaving (killed at once when leaving on an exception)."""

    def __init__(self, count: int, initializer: Callable | None = None, initargs: tuple = (),
                 name: str = "worker"):
        context = multiprocessing.get_context()
        self._workers: list[_Worker] = []
        # The worker of each task sent and not yet received, oldest first.
        self._pending: deque[_Worker] = deque()
        self._submitted = 0
        try:
            for index in range(count):
                task_reader, task_writer = context.Pipe(duplex=False)
                result_reader, result_writer = context.Pipe(duplex=False)
                process = context.Process(target=_serve, name=f"{name}-{index}", daemon=True,
                                          args=(task_reader, result_writer, initializer,
                                                initargs))
                process.start()
                task_reader.close()
                result_writer.close()
                outbox: queue.SimpleQueue = queue.SimpleQueue()
                sender = threading.Thread(target=_send_all, args=(outbox, task_writer),
                                          name=f"{name}-{index}-sender", daemon=True)
                sender.start()
                self._workers.append(_Worker(process, outbox, sender, result_reader))
        except BaseException:
            self.close(kill=True)
            raise

    def __enter__(self) -> OrderedWorkers:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self.close(kill=exc_type is not None)

    @property
    def capacity(self) -> int:
        """Tasks in flight that keep every worker busy."""
        return IN_FLIGHT_PER_WORKER * len(self._workers)

    def submit(self, function: Callable[[Any], Any], argument: Any) -> None:
        """Send ``function(argument)`` to the next worker in turn; ``receive`` gives results in
        the order of these calls."""
        worker = self._workers[self._submitted % len(self._workers)]
        self._submitted += 1
        worker.outbox.put((function, argument))
        self._pending.append(worker)

    def receive(self) -> Any:
        """The result of the oldest task not yet received. A worker's exception is raised
        here; a worker that died raises WorkerDied."""
        return self._receive(self._pending.popleft())

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def close(self, kill: bool = False) -> None:
        """Stop the workers: after their current tasks, or at once with ``kill``."""
        for worker in self._workers:
            if kill:
                worker.process.kill()
            worker.outbox.put(None)
        for worker in self._workers:
            worker.sender.join(timeout=10)
            worker.process.join(timeout=None if kill else 30)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.results.close()
        self._workers = []

    @staticmethod
    def _receive(worker: _Worker) -> Any:
        try:
            succeeded, value = worker.results.recv()
        except (EOFError, OSError):
            worker.process.join(timeout=10)
            code = worker.process.exitcode
            how = (f"was killed by signal {signal.Signals(-code).name}" if code and code < 0
                   else f"exited with code {code}")
            hint = ("; a SIGKILL is often the out-of-memory killer: run with fewer workers or "
                    "more memory" if code == -signal.SIGKILL else "")
            raise WorkerDied(f"{worker.process.name} (pid {worker.process.pid}) {how} before "
                             f"returning its result{hint}") from None
        if not succeeded:
            raise value
        return value

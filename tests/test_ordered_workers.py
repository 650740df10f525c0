"""Worker processes of preprocessing: results in order, worker errors raised (a failed set-up
included), stopping at once."""

import os
import time

import pytest

from megatron_seqpt.runtime.ordered_workers import OrderedWorkers


def slow_square(value: int) -> tuple[int, int]:
    # Early items take longest, so a worker finishing first must not overtake the order.
    time.sleep(0.02 * (5 - value % 5))
    return value * value, os.getpid()


def fails_on_three(value: int) -> int:
    if value == 3:
        raise ValueError(f"bad item {value}")
    return value


def fails_to_set_up(path: str) -> None:
    raise ValueError(f"cannot load {path}")


def test_results_come_in_order_from_every_worker():
    results = []
    with OrderedWorkers(3) as pool:
        assert pool.capacity == 6
        for value in range(20):
            pool.submit(slow_square, value)
            if pool.in_flight == pool.capacity:
                results.append(pool.receive())
        while pool.in_flight:
            results.append(pool.receive())
    assert [square for square, _ in results] == [value * value for value in range(20)]
    assert len({pid for _, pid in results}) == 3


def test_a_worker_exception_is_raised_and_the_workers_stop():
    pool = OrderedWorkers(2)
    processes = [worker.process for worker in pool._workers]
    with pytest.raises(ValueError, match="bad item 3"):
        with pool:
            for value in range(10):
                pool.submit(fails_on_three, value)
            for _ in range(10):
                pool.receive()
    assert all(not process.is_alive() for process in processes)


def test_a_failed_set_up_is_raised_as_itself_for_each_task():
    """Not as a worker that died (its exit code and a hint about the out-of-memory killer)."""
    with OrderedWorkers(2, initializer=fails_to_set_up, initargs=("tok.model",)) as pool:
        for value in range(4):
            pool.submit(slow_square, value)
        for _ in range(4):
            with pytest.raises(ValueError, match="cannot load tok.model"):
                pool.receive()

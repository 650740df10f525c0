"""Inference shared by the data-parallel ranks of a launch: scoring and generation batch their
inputs as one process does, each rank takes every world-th batch, and every rank gets all the
results back. The batches are the ones a single process makes, so the results are the same as
its, whatever the number of ranks; outside a process group a rank has every batch."""

from __future__ import annotations

from typing import Any, Callable, Iterable, TypeVar

import torch.distributed as dist
from megatron.core import parallel_state

T = TypeVar("T")


def _group() -> Any:
    """The ranks that share the work (the data-parallel group: inference runs unsharded), or
    None outside a process group."""
    if not dist.is_initialized():
        return None
    if parallel_state.model_parallel_is_initialized():
        return parallel_state.get_data_parallel_group()
    return dist.group.WORLD


def from_first_rank(value: T) -> T:
    """The first rank's ``value`` on every rank: inputs only it could read (stdin, which a
    launcher hands to one process)."""
    group = _group()
    if group is None or dist.get_world_size(group) == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=dist.get_global_rank(group, 0), group=group)
    return box[0]


def shared_batches(order: list[int], batch_size: int,
                   run: Callable[[list[int]], Iterable[T]]) -> list[T]:
    """The result of each input, in input order: ``order`` (a permutation of the inputs'
    indices) is cut into batches of ``batch_size`` as one process cuts it, ``run(batch)`` gives
    one result per index of its batch, and the ranks share the batches."""
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    results: dict[int, T] = {}
    for number in _batches_of_this_rank(len(batches)):
        results.update(zip(batches[number], run(batches[number])))
    results = _gathered(results)
    return [results[i] for i in range(len(order))]


def _batches_of_this_rank(count: int) -> range:
    """The indices of this rank's batches out of ``count``."""
    group = _group()
    if group is None:
        return range(count)
    return range(dist.get_rank(group), count, dist.get_world_size(group))


def _gathered(results: dict[int, T]) -> dict[int, T]:
    """Every rank's ``results`` (keyed by input index) merged, on every rank."""
    group = _group()
    if group is None or dist.get_world_size(group) == 1:
        return results
    parts: list[dict[int, T]] = [{} for _ in range(dist.get_world_size(group))]
    dist.all_gather_object(parts, results, group=group)
    merged: dict[int, T] = {}
    for part in parts:
        merged.update(part)
    return merged

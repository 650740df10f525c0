"""A resumable stream of collated micro-batches for one data-parallel rank.

The dataset's own order is the global order (megatron-core already shuffled and blended it).
Like Megatron-LM's pretraining sampler, each micro-batch step takes the next
``micro_batch_size x dp_size`` samples and rank r reads its ``micro_batch_size`` slice of them, so
ranks read disjoint samples and the position is one number: samples consumed over all ranks.
Saving that number and loading it later resumes exactly where an uninterrupted run would be.

When the position passes the end of the dataset the stream wraps around: sample ``g`` is
``dataset[g % len(dataset)]`` (``epoch`` counts the wraps). Build the dataset for the number of
samples the run needs and it never wraps during training; validation streams restart at 0.
"""

from __future__ import annotations

from typing import Callable, Iterator, Optional, Protocol

import numpy as np
import torch

# What the models read; megatron-core's other keys (types, is_random, truncated, dataset_id)
# are bookkeeping and are dropped.
MLM_KEYS = ("text", "labels", "loss_mask", "padding_mask")
T5_KEYS = ("text_enc", "text_dec", "labels", "loss_mask", "enc_mask", "dec_mask")


class MicroBatches(Protocol):
    """What a Trainer reads micro-batches from: an iterator whose position can be saved."""

    def __next__(self) -> dict[str, torch.Tensor]: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


def collate(samples: list[dict]) -> dict[str, torch.Tensor]:
    """Stack megatron-core samples into a batch: int64 tensors, ``loss_mask`` as float32."""
    keys = T5_KEYS if "text_enc" in samples[0] else MLM_KEYS
    batch = {key: torch.from_numpy(np.stack([sample[key] for sample in samples]).astype(np.int64))
             for key in keys}
    batch["loss_mask"] = batch["loss_mask"].float()
    return batch


class _RankIndices(torch.utils.data.Sampler):
    """Index lists of this rank's micro-batches, from a global position on, without end."""

    def __init__(self, size: int, micro_batch_size: int, rank: int, world: int,
                 start: int) -> None:
        self.size, self.mbs, self.rank, self.world, self.start = \
            size, micro_batch_size, rank, world, start

    def __iter__(self) -> Iterator[list[int]]:
        position = self.start
        while True:
            first = position + self.rank * self.mbs
            yield [(first + i) % self.size for i in range(self.mbs)]
            position += self.mbs * self.world


class BatchStream:
    """Micro-batches for one data-parallel rank; ``state_dict`` holds the exact position."""

    def __init__(self, dataset: torch.utils.data.Dataset, micro_batch_size: int,
                 dp_rank: int = 0, dp_size: int = 1, num_workers: int = 0,
                 collate_fn: Callable[[list[dict]], dict[str, torch.Tensor]] = collate) -> None:
        if len(dataset) == 0:
            raise ValueError("cannot stream an empty dataset")
        if micro_batch_size < 1 or not 0 <= dp_rank < dp_size:
            raise ValueError(f"need micro_batch_size >= 1 and 0 <= dp_rank < dp_size, got "
                             f"{micro_batch_size}, {dp_rank}, {dp_size}")
        self.dataset = dataset
        self.micro_batch_size = micro_batch_size
        self.dp_rank = dp_rank
        self.dp_size = dp_size
        self.num_workers = num_workers
        self.collate_fn = collate_fn
        self.consumed_samples = 0
        self._batches: Optional[Iterator[dict[str, torch.Tensor]]] = None

    @property
    def epoch(self) -> int:
        return self.consumed_samples // len(self.dataset)

    def __iter__(self) -> "BatchStream":
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        if self._batches is None:
            self._batches = iter(self._loader())
        batch = next(self._batches)
        self.consumed_samples += self.micro_batch_size * self.dp_size
        return batch

    def state_dict(self) -> dict[str, int]:
        """The position after the last batch handed out (prefetched batches do not count)."""
        return {"consumed_samples": self.consumed_samples}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from a saved position; the data-parallel layout may have changed."""
        self.consumed_samples = int(state["consumed_samples"])
        self._batches = None

    def _loader(self) -> torch.utils.data.DataLoader:
        sampler = _RankIndices(len(self.dataset), self.micro_batch_size, self.dp_rank,
                               self.dp_size, self.consumed_samples)
        # A generator of its own: starting an iterator draws a seed from it, and drawing from
        # the global generator would shift the dropout masks of a resumed run.
        # Workers come from a fresh forkserver process, not a fork of this one: a fork copies a
        # training process's threads' half-held locks and state (gloo, OpenMP, the CPU layer's
        # function mode), and such a child segfaulted at random in the first batch.
        workers = dict(num_workers=self.num_workers, prefetch_factor=2,
                       multiprocessing_context="forkserver") if self.num_workers else {}
        return torch.utils.data.DataLoader(
            self.dataset, batch_sampler=sampler, collate_fn=self.collate_fn,
            persistent_workers=False, generator=torch.Generator().manual_seed(0), **workers)


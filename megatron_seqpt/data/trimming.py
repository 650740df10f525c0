"""Padding that costs nothing: each step's micro-batches regrouped by length and cut to their
longest sample.

megatron-core pads every MLM and span-corruption sample to the configured lengths; on the
built-in corpus only about 60% of the encoder positions and 45% of the decoder positions of a
micro-batch are real tokens. A step's samples on this rank are sorted by length into micro-batches
of the same size (the shortest together), and each micro-batch drops the positions past its
longest sample (rounded up to a multiple, for the kernels). Every sample still goes into its step
and the step's loss is a sum over tokens divided by the step's token count, so the loss and
gradients are those of the padded micro-batches, up to the order of float additions; only the
dropout masks differ, as their shapes do.
"""

from __future__ import annotations

from collections import deque
from typing import Iterator

import torch

from megatron_seqpt.data.stream import MicroBatches

Batch = dict[str, torch.Tensor]

LENGTH_MULTIPLE = 8
# Per model kind: the mask marking a sequence's real positions, and the keys along it.
_MLM_SEQUENCES = {"padding_mask": ("text", "labels", "loss_mask", "padding_mask")}
_T5_SEQUENCES = {"enc_mask": ("text_enc", "enc_mask"),
                 "dec_mask": ("text_dec", "labels", "loss_mask", "dec_mask")}


def _sequences(batch: Batch) -> dict[str, tuple[str, ...]]:
    return _T5_SEQUENCES if "enc_mask" in batch else _MLM_SEQUENCES


def real_lengths(mask: torch.Tensor) -> torch.Tensor:
    """Per sample, one past its last real position (0 for none): padding need not be a
    suffix for this to keep every real token."""
    positions = torch.arange(1, mask.shape[1] + 1)
    return (mask.ne(0) * positions).amax(dim=1)


def trimmed(batch: Batch, multiple: int = LENGTH_MULTIPLE) -> Batch:
    """``batch`` without the positions past its longest sample, rounded up to ``multiple``
    (never longer than it was)."""
    out = dict(batch)
    for mask, keys in _sequences(batch).items():
        full = batch[mask].shape[1]
        longest = int(real_lengths(batch[mask]).max())
        length = min(full, max(multiple, -(-longest // multiple) * multiple))
        for key in keys:
            out[key] = batch[key][:, :length].contiguous()
    return out


def regrouped(batches: list[Batch], multiple: int = LENGTH_MULTIPLE) -> list[Batch]:
    """The samples of ``batches`` in as many micro-batches of the same size, sorted by length
    (shortest first, a stable order), each trimmed."""
    size = len(next(iter(batches[0].values())))
    joined = {key: torch.cat([batch[key] for batch in batches]) for key in batches[0]}
    lengths = sum(real_lengths(joined[mask]) for mask in _sequences(joined))
    order = torch.sort(lengths, stable=True).indices
    return [trimmed({key: value[order[i:i + size]] for key, value in joined.items()}, multiple)
            for i in range(0, len(order), size)]


class TrimmedSteps:
    """A micro-batch stream read a step (``per_step`` micro-batches) at a time, regrouped and
    trimmed. Its position is the wrapped stream's: saved between steps, it is exact."""

    def __init__(self, stream: MicroBatches, per_step: int, multiple: int = LENGTH_MULTIPLE):
        self.stream, self.per_step, self.multiple = stream, per_step, multiple
        self._ready: deque[Batch] = deque()

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        if not self._ready:
            self._ready.extend(regrouped([next(self.stream) for _ in range(self.per_step)],
                                         self.multiple))
        return self._ready.popleft()

    def state_dict(self) -> dict:
        if self._ready:
            raise RuntimeError("the stream's position is defined between steps only")
        return self.stream.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self._ready.clear()
        self.stream.load_state_dict(state)

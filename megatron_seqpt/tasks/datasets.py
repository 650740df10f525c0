"""Encoded task examples as the map-style datasets and micro-batches the Trainer streams.

Training passes over the examples in a new order every epoch, fixed by the seed, so the
stream's position (samples consumed) still names exactly where a resumed run continues.
Micro-batches are padded to their longest example (rounded up to a multiple of 8), not to the
configured maximum: fine-tuning examples are mostly short.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch

from megatron_seqpt.tasks.features import IGNORE, Features

PAD_MULTIPLE = 8


class EpochShuffled(torch.utils.data.Dataset):
    """``epochs`` passes over ``features``, each in its own seeded order."""

    def __init__(self, features: Sequence[Features], epochs: int, seed: int):
        self.features = features
        self.epochs = max(1, epochs)
        self.orders = [np.random.default_rng([seed, epoch]).permutation(len(features))
                       for epoch in range(self.epochs)]

    def __len__(self) -> int:
        return self.epochs * len(self.features)

    def __getitem__(self, index: int) -> Features:
        epoch, position = divmod(index, len(self.features))
        return self.features[int(self.orders[epoch][position])]


class Padded(torch.utils.data.Dataset):
    """The examples, then copies of the first that carry no loss up to a multiple of
    ``multiple``: every evaluation batch is full and each example counts once."""

    def __init__(self, features: Sequence[Features], multiple: int):
        self.features = list(features)
        self.size = math.ceil(len(features) / multiple) * multiple

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> Features:
        if index < len(self.features):
            return self.features[index]
        filler = dict(self.features[0])
        filler["labels"] = np.full_like(filler["labels"], IGNORE)
        return filler


def _pad(rows: Sequence[np.ndarray], multiple: int, limit: int, value: int = 0) -> torch.Tensor:
    longest = max(len(row) for row in rows)
    length = max(longest, min(math.ceil(longest / multiple) * multiple, limit))
    out = np.full((len(rows), length), value, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return torch.from_numpy(out)


def encoder_collate(multiple: int, limit: int) -> Callable[[list[Features]], dict]:
    """Batches for the classification and tagging models: ``text``, ``padding_mask`` (1 =
    token), ``labels`` and ``loss_mask`` (0 where a label is ignored)."""

    def collate(samples: list[Features]) -> dict[str, torch.Tensor]:
        text = _pad([s["text"] for s in samples], multiple, limit)
        if samples[0]["labels"].ndim == 0:  # one label per example
            labels = torch.tensor([int(s["labels"]) for s in samples])
        else:
            labels = _pad([s["labels"] for s in samples], multiple, limit, IGNORE)
            labels = labels[:, :text.shape[1]]
        loss_mask = (labels != IGNORE).float()
        return {"text": text, "padding_mask": (text != 0).long(),
                "labels": labels.clamp(min=0), "loss_mask": loss_mask}

    return collate


def seq2seq_collate(multiple: int, limit: int, decoder_limit: int
                    ) -> Callable[[list[Features]], dict]:
    """Batches in megatron-core's T5 layout: ``text_enc``, ``text_dec``, ``labels``,
    ``loss_mask``, ``enc_mask`` and ``dec_mask`` (1 = token)."""

    def collate(samples: list[Features]) -> dict[str, torch.Tensor]:
        text_enc = _pad([s["text_enc"] for s in samples], multiple, limit)
        text_dec = _pad([s["text_dec"] for s in samples], multiple, decoder_limit)
        labels = _pad([s["labels"] for s in samples], multiple, decoder_limit, IGNORE)
        labels = labels[:, :text_dec.shape[1]]
        # Real decoder positions are those with a label; fillers have none.
        loss_mask = (labels != IGNORE).float()
        return {"text_enc": text_enc, "text_dec": text_dec, "labels": labels.clamp(min=0),
                "loss_mask": loss_mask, "enc_mask": (text_enc != 0).long(),
                "dec_mask": (text_dec != 0).long()}

    return collate

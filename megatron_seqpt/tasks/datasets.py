"""Encoded task examples as the map-style datasets and micro-batches the Trainer streams.

Training passes over the examples in a new order every epoch, fixed by the seed, so the
stream's position (samples consumed) still names exactly where a resumed run continues.
Micro-batches are padded to their longest example (rounded up to a multiple of 8), not to the
configured maximum: fine-tuning examples are mostly short. With length grouping, each global
batch is cut from examples of similar length (as Hugging Face's ``group_by_length``): on the
built-in tasks a randomly drawn micro-batch is more than half padding, a grouped one a tenth
to a sixth.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from megatron_seqpt.tasks.features import IGNORE, Features

PAD_MULTIPLE = 8
# Length grouping sorts windows of this many global batches.
GROUP_WINDOW_BATCHES = 16


def example_tokens(features: Features) -> int:
    """Tokens of an encoded example (source and target for seq2seq)."""
    if "text_enc" in features:
        return len(features["text_enc"]) + len(features["text_dec"])
    return len(features["text"])


class EpochShuffled(torch.utils.data.Dataset):
    """``epochs`` passes over ``features``, each in its own seeded order. ``lengths`` (tokens
    per example) turn on length grouping for global batches of ``batch_size`` examples."""

    def __init__(self, features: Sequence[Features], epochs: int, seed: int,
                 lengths: Optional[Sequence[int]] = None, batch_size: int = 1):
        self.features = features
        self.epochs = max(1, epochs)
        lengths = None if lengths is None else np.asarray(lengths)
        self.orders = []
        for epoch in range(self.epochs):
            order = np.random.default_rng([seed, epoch]).permutation(len(features))
            if lengths is not None:
                order = length_grouped(order, lengths, batch_size,
                                       np.random.default_rng([seed, epoch, 1]))
            self.orders.append(order)

    def __len__(self) -> int:
        return self.epochs * len(self.features)

    def __getitem__(self, index: int) -> Features:
        epoch, position = divmod(index, len(self.features))
        return self.features[int(self.orders[epoch][position])]


def length_grouped(order: np.ndarray, lengths: np.ndarray, batch_size: int,
                   rng: np.random.Generator) -> np.ndarray:
    """``order`` with each window of GROUP_WINDOW_BATCHES batches sorted by length, longest
    first, and the window's batches then shuffled: every example still comes once per epoch,
    batches hold examples of similar length, and long and short batches stay mixed."""
    window = GROUP_WINDOW_BATCHES * batch_size
    out = []
    for start in range(0, len(order), window):
        chunk = order[start:start + window]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches = [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
        out.extend(batches[i] for i in rng.permutation(len(batches)))
    return np.concatenate(out) if out else order


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

"""Fine-tuning batches of the built-in tasks: length grouping keeps every example once per
epoch in a seeded order and removes most of the padding of randomly drawn micro-batches."""

import numpy as np
import pytest

from megatron_seqpt.tasks.config import TaskConfig
from megatron_seqpt.tasks.datasets import (
    EpochShuffled,
    encoder_collate,
    example_tokens,
    seq2seq_collate,
)
from megatron_seqpt.tasks.features import FeatureEncoder
from megatron_seqpt.tasks.task_data import example_labels, load_splits, task_kind
from tests.prepared_data import tokenizer

GLOBAL_BATCH, MICRO_BATCH = 32, 16


def _train_features(task: str):
    config = TaskConfig(builtin=task)
    kind = task_kind(config)
    train = load_splits(config).train
    labels = [] if kind == "seq2seq" else example_labels(train)
    features, _ = FeatureEncoder(kind, tokenizer(), labels, 128, 64, False).encode_all(train,
                                                                               "train")
    return kind, features


def _padded_positions(kind, data: EpochShuffled) -> tuple[int, int]:
    """(token positions, real tokens) of the micro-batches of the first epoch."""
    collate = seq2seq_collate(8, 128, 64) if kind == "seq2seq" else encoder_collate(8, 128)
    positions = real = 0
    size = len(data.features)
    for start in range(0, size, MICRO_BATCH):
        batch = collate([data[i] for i in range(start, min(size, start + MICRO_BATCH))])
        masks = [batch["enc_mask"], batch["dec_mask"]] if kind == "seq2seq" \
            else [batch["padding_mask"]]
        positions += sum(m.numel() for m in masks)
        real += sum(int(m.sum()) for m in masks)
    return positions, real


@pytest.mark.parametrize("task", ["topic", "punct", "restore"])
def test_length_grouping_keeps_every_example_and_cuts_padding(task):
    kind, features = _train_features(task)
    lengths = [example_tokens(f) for f in features]
    plain = EpochShuffled(features, 2, seed=7)
    grouped = EpochShuffled(features, 2, seed=7, lengths=lengths, batch_size=GLOBAL_BATCH)
    again = EpochShuffled(features, 2, seed=7, lengths=lengths, batch_size=GLOBAL_BATCH)
    for epoch in range(2):
        assert sorted(grouped.orders[epoch]) == list(range(len(features)))
        assert np.array_equal(grouped.orders[epoch], again.orders[epoch])
    assert not np.array_equal(grouped.orders[0], grouped.orders[1])
    # Long and short batches stay mixed: the order is not sorted by length as a whole.
    firsts = [lengths[grouped.orders[0][i]] for i in range(0, len(features), GLOBAL_BATCH)]
    assert firsts != sorted(firsts, reverse=True) and firsts != sorted(firsts)
    plain_positions, real = _padded_positions(kind, plain)
    grouped_positions, grouped_real = _padded_positions(kind, grouped)
    assert grouped_real == real  # the same examples, once each
    # On these tasks half or more of a plain batch is padding; grouped, far less.
    assert real / plain_positions < 0.6
    assert real / grouped_positions > 0.7, (real / plain_positions, real / grouped_positions)

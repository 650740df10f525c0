"""Predictions of a task model for scoring: label names per example (classification), tag
names per word (tagging), generated text (seq2seq). The model is whole in each process
(evaluation needs no model parallelism; checkpoints reshard to it); the ranks of a launch share
the batches."""

from __future__ import annotations

from typing import Callable, Sequence, TypeVar

import torch

from megatron_seqpt.runtime.rank_share import shared_batches
from megatron_seqpt.tasks.config import GenerationSettings
from megatron_seqpt.tasks.datasets import PAD_MULTIPLE, encoder_collate
from megatron_seqpt.tasks.features import Features
from megatron_seqpt.tasks.generation import GenerationConfig, generate
from megatron_seqpt.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer

BATCH_SIZE = 32
T = TypeVar("T")


@torch.no_grad()
def _per_example(model: torch.nn.Module, features: Sequence[Features], seq_length: int,
                 device: torch.device, read: Callable[[torch.Tensor, int], T]) -> list[T]:
    """``read(logits, index)`` of each example (its logits: [labels], or [length, labels] for
    tagging), in the order given. Batched in length order (least padding); the ranks of a
    launch share the batches (``rank_share``)."""
    collate = encoder_collate(PAD_MULTIPLE, seq_length)
    order = sorted(range(len(features)), key=lambda i: len(features[i]["text"]))

    def run(chunk: list[int]) -> list[T]:
        batch = collate([features[i] for i in chunk])
        logits = model(batch["text"].to(device), batch["padding_mask"].to(device)).float().cpu()
        return [read(logits[row], i) for row, i in enumerate(chunk)]

    return shared_batches(order, BATCH_SIZE, run)


def predict_labels(model: torch.nn.Module, features: Sequence[Features], labels: Sequence[str],
                   seq_length: int, device: torch.device) -> list[str]:
    return _per_example(model, features, seq_length, device,
                        lambda row, _: labels[int(row.argmax())])


def predict_tags(model: torch.nn.Module, features: Sequence[Features], labels: Sequence[str],
                 seq_length: int, device: torch.device, fallback: str) -> list[list[str]]:
    """A tag per word, read at the word's first piece; ``fallback`` for words without one (cut
    off by truncation, or sharing a piece with the previous word)."""
    def tags(row: torch.Tensor, index: int) -> list[str]:
        best = row.argmax(-1)
        return [labels[int(best[p])] if p >= 0 else fallback
                for p in features[index]["word_positions"]]

    return _per_example(model, features, seq_length, device, tags)


def generate_text(model: torch.nn.Module, features: Sequence[Features],
                  tokenizer: SentencePieceTokenizer, settings: GenerationSettings,
                  decoder_seq_length: int) -> list[str]:
    config = GenerationConfig(
        beam_size=settings.beam_size, length_penalty=settings.length_penalty,
        max_new_tokens=settings.max_new_tokens or max(1, decoder_seq_length - 1),
        batch_size=settings.batch_size)
    sources = [list(map(int, f["text_enc"])) for f in features]
    generated = generate(model, sources, bos=tokenizer.bos, eos=tokenizer.eos,
                         pad=tokenizer.pad, config=config, vocab_size=tokenizer.vocab_size)
    return [tokenizer.detokenize(ids) for ids in generated]

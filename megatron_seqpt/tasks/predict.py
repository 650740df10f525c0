"""Predictions of a task model for scoring: label names per example (classification), tag
names per word (tagging), generated text (seq2seq). Runs in one process (evaluation needs no
model parallelism; checkpoints reshard to it)."""

from __future__ import annotations

from typing import Sequence

import torch

from megatron_seqpt.tasks.config import GenerationSettings
from megatron_seqpt.tasks.datasets import PAD_MULTIPLE, encoder_collate
from megatron_seqpt.tasks.features import Features
from megatron_seqpt.tasks.generation import GenerationConfig, generate
from megatron_seqpt.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer

BATCH_SIZE = 32


@torch.no_grad()
def _logits(model: torch.nn.Module, features: Sequence[Features], seq_length: int,
            device: torch.device) -> list[torch.Tensor]:
    """Per example: its logits ([labels], or [length, labels] for tagging), on the CPU."""
    collate = encoder_collate(PAD_MULTIPLE, seq_length)
    # Batched in length order (least padding), returned in the order given.
    order = sorted(range(len(features)), key=lambda i: len(features[i]["text"]))
    out: list[torch.Tensor] = [None] * len(features)
    for start in range(0, len(order), BATCH_SIZE):
        chunk = order[start:start + BATCH_SIZE]
        batch = collate([features[i] for i in chunk])
        logits = model(batch["text"].to(device), batch["padding_mask"].to(device)).float().cpu()
        for row, i in enumerate(chunk):
            out[i] = logits[row]
    return out


def predict_labels(model: torch.nn.Module, features: Sequence[Features], labels: Sequence[str],
                   seq_length: int, device: torch.device) -> list[str]:
    return [labels[int(row.argmax())] for row in _logits(model, features, seq_length, device)]


def predict_tags(model: torch.nn.Module, features: Sequence[Features], labels: Sequence[str],
                 seq_length: int, device: torch.device, fallback: str) -> list[list[str]]:
    """A tag per word, read at the word's first piece; ``fallback`` for words without one (cut
    off by truncation, or sharing a piece with the previous word)."""
    tags = []
    for row, feature in zip(_logits(model, features, seq_length, device), features):
        best = row.argmax(-1)
        tags.append([labels[int(best[p])] if p >= 0 else fallback
                     for p in feature["word_positions"]])
    return tags


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

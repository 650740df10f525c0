"""Task examples as model inputs: token ids with the special tokens the pre-trained models
saw, label ids, and truncation to the configured lengths.

- classification: ``<cls> text <sep>`` (with a pair: ``<cls> text <sep> pair <sep>``, the
  longer part cut first), one label id;
- tagging: ``<cls> pieces <sep>``, the word's label id on its first piece, -1 (no loss) on the
  other pieces and the special tokens;
- seq2seq: the source pieces for the encoder, ``<s> target`` for the decoder, ``target </s>``
  as labels (megatron-core's T5 layout).

Labels unseen in training get id -1: no loss, and the metrics count them as errors.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from megatron_seqpt.errors import UserError
from megatron_seqpt.tasks.alignment import align_words
from megatron_seqpt.tasks.examples import (
    ClassificationExample,
    Example,
    Seq2SeqExample,
    TaggingExample,
)
from megatron_seqpt.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer

IGNORE = -1
Features = dict[str, np.ndarray]


@dataclass
class EncodingReport:
    """What encoding had to change, reported once per split."""

    examples: int = 0
    truncated: int = 0
    first_truncated: str = ""
    # Tagging: words left without a label position (cut off, or sharing a piece).
    unlabelled_words: int = 0
    unknown_labels: Counter = field(default_factory=Counter)

    def describe(self, split: str) -> str:
        parts = [f"{split}: {self.examples} examples"]
        if self.truncated:
            parts.append(f"{self.truncated} truncated (first at {self.first_truncated})")
        if self.unlabelled_words:
            parts.append(f"{self.unlabelled_words} words without a piece of their own (no "
                         "loss; scored with the most frequent training tag)")
        if self.unknown_labels:
            parts.append(f"{sum(self.unknown_labels.values())} labels unseen in training ("
                         + ", ".join(f"{label} x{n}" for label, n
                                     in self.unknown_labels.most_common(5))
                         + "): no loss, scored as errors")
        return "; ".join(parts)


class FeatureEncoder:
    """Encodes the examples of one task for its model."""

    def __init__(self, kind: str, tokenizer: SentencePieceTokenizer, labels: Sequence[str],
                 seq_length: int, decoder_seq_length: int, refuse_truncation: bool):
        self.kind = kind
        self.tokenizer = tokenizer
        self.label_ids = {label: i for i, label in enumerate(labels)}
        self.seq_length = seq_length
        self.decoder_seq_length = decoder_seq_length
        self.refuse_truncation = refuse_truncation

    def encode_all(self, examples: Sequence[Example], split: str
                   ) -> tuple[list[Features], EncodingReport]:
        report = EncodingReport(examples=len(examples))
        encoded = [self.encode(example, report) for example in examples]
        if report.truncated and self.refuse_truncation:
            limit = ("data.seq_length" if self.kind != "seq2seq"
                     else "data.seq_length / data.decoder_seq_length")
            raise UserError(
                f"{split}: {report.truncated} of {len(examples)} examples are longer than "
                f"{limit} allows (first at {report.first_truncated}); raise the length (up to "
                "model.max_position_embeddings) or set task.truncation=truncate to cut them")
        return encoded, report

    def encode(self, example: Example, report: EncodingReport) -> Features:
        if isinstance(example, ClassificationExample):
            return self._classification(example, report)
        if isinstance(example, TaggingExample):
            return self._tagging(example, report)
        if isinstance(example, Seq2SeqExample):
            return self._seq2seq(example, report)
        raise TypeError(f"not a task example: {example!r}")

    def _label(self, label: str, report: EncodingReport) -> int:
        found = self.label_ids.get(label)
        if found is None:
            report.unknown_labels[label] += 1
            return IGNORE
        return found

    def _truncated(self, report: EncodingReport, where: str) -> None:
        report.truncated += 1
        report.first_truncated = report.first_truncated or where

    def _classification(self, example: ClassificationExample, report: EncodingReport
                        ) -> Features:
        tok = self.tokenizer
        first = tok.tokenize(example.text)
        second = tok.tokenize(example.text_pair) if example.text_pair is not None else None
        room = self.seq_length - (3 if second is not None else 2)
        if second is None:
            if len(first) > room:
                self._truncated(report, example.where)
                first = first[:room]
            ids = [tok.cls, *first, tok.sep]
        else:
            if len(first) + len(second) > room:
                self._truncated(report, example.where)
                first, second = _longest_first(first, second, room)
            ids = [tok.cls, *first, tok.sep, *second, tok.sep]
        return {"text": np.array(ids, dtype=np.int64),
                "labels": np.array(self._label(example.label, report), dtype=np.int64)}

    def _tagging(self, example: TaggingExample, report: EncodingReport) -> Features:
        aligned = align_words(self.tokenizer, example.words, example.space_after)
        room = self.seq_length - 2
        if len(aligned.piece_ids) > room:
            self._truncated(report, example.where)
        pieces = aligned.piece_ids[:room]
        labels = np.full(len(pieces) + 2, IGNORE, dtype=np.int64)
        # Per word: the position (after <cls>) of its first piece, -1 where it has none.
        positions = np.full(len(example.words), IGNORE, dtype=np.int64)
        for word, (tag, first) in enumerate(zip(example.tags, aligned.first_piece)):
            if 0 <= first < room:
                labels[first + 1] = self._label(tag, report)
                positions[word] = first + 1
            else:
                report.unlabelled_words += 1
        tok = self.tokenizer
        return {"text": np.array([tok.cls, *pieces, tok.sep], dtype=np.int64), "labels": labels,
                "word_positions": positions}

    def _seq2seq(self, example: Seq2SeqExample, report: EncodingReport) -> Features:
        tok = self.tokenizer
        source = tok.tokenize(example.source)
        target = tok.tokenize(example.target)
        room = self.decoder_seq_length - 1  # <s> in front of the decoder input, </s> after
        if len(source) > self.seq_length or len(target) > room:
            self._truncated(report, example.where)
        source, target = source[:self.seq_length], target[:room]
        return {"text_enc": np.array(source, dtype=np.int64),
                "text_dec": np.array([tok.bos, *target], dtype=np.int64),
                "labels": np.array([*target, tok.eos], dtype=np.int64)}


def _longest_first(first: list[int], second: list[int], room: int) -> tuple[list, list]:
    """Cut the longer of the two parts until both fit ``room`` together."""
    first, second = list(first), list(second)
    while len(first) + len(second) > room:
        if len(first) >= len(second):
            first.pop()
        else:
            second.pop()
    return first, second

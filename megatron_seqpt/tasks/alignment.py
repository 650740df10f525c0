"""Word labels onto sentencepiece pieces, for tagging.

The model sees the running text (the words joined with the spaces ``space_after`` gives), so
that text is tokenized exactly as in pre-training, not each word on its own (that would put a
``▁`` before every word, also where the text has no space). Each word's label then goes to the
first piece that starts inside the word; its other pieces are left out of the loss. A piece
starts where its own characters start: the whitespace a leading ``▁`` stands for is not part of
the word, and a piece that is only ``▁`` starts no word.

In scripts written without spaces a piece may run over several words; a word in which no piece
starts has no piece of its own (``first_piece`` -1) and is counted in ``unaligned``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from megatron_seqpt.tasks.examples import join_words
from megatron_seqpt.tokenizer.sentencepiece_tokenizer import WORD_START, SentencePieceTokenizer


@dataclass(frozen=True)
class AlignedWords:
    piece_ids: list[int]    # sentencepiece ids of the whole text
    first_piece: list[int]  # per word: index into piece_ids of its first piece, -1 if none
    unaligned: int          # words sharing their first piece with the previous word


def align_words(tokenizer: SentencePieceTokenizer, words: Sequence[str],
                space_after: Sequence[bool]) -> AlignedWords:
    """The pieces of the words' running text and, per word, which piece carries its label."""
    text, word_starts = join_words(words, space_after)
    pieces = tokenizer.encode_with_offsets(text)
    starts = [_own_start(text, tokenizer.piece(token_id), begin, end)
              for token_id, begin, end in pieces]
    first_piece: list[int] = []
    p = 0
    for word, word_start in zip(words, word_starts):
        while p < len(pieces) and (starts[p] is None or starts[p] < word_start):
            p += 1
        inside = p < len(pieces) and starts[p] < word_start + len(word)
        first_piece.append(p if inside else -1)
    return AlignedWords([token_id for token_id, _, _ in pieces], first_piece,
                        first_piece.count(-1))


def _own_start(text: str, piece: str, begin: int, end: int) -> int | None:
    """Where the piece's own characters start: past the whitespace of a leading ``▁``; None
    for a piece that is only whitespace."""
    if piece.startswith(WORD_START):
        while begin < end and text[begin].isspace():
            begin += 1
    return begin if begin < end else None

"""The project's sentencepiece model as the tokenizer megatron-core's masked datasets read.

megatron-core's BERT and T5 datasets were written for WordPiece: they decide where a word starts
with ``not tokenizer.inv_vocab[id].startswith("##")``. Sentencepiece marks the opposite way (a
piece starting with ``▁`` starts a word). Rather than copying megatron-core's masking code to
change that one test, this tokenizer presents ``inv_vocab`` (and ``vocab``, its inverse) in the
WordPiece form those datasets expect: a piece that continues a word is shown as ``"##" + piece``,
every other piece as itself. Ids never change; ``piece(id)`` gives the real sentencepiece piece.
Continuation pieces are those that neither start with ``▁`` nor begin with a character of a script
written without spaces between words (see ``no_space_script.py``), nor are special tokens.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path
from typing import Iterable, Union

import numpy as np
import sentencepiece as spm
from megatron.core.tokenizers.base_tokenizer import MegatronTokenizerBase
from sentencepiece import sentencepiece_pb2

from megatron_seqpt.errors import UserError
from megatron_seqpt.tokenizer import special_tokens as st
from megatron_seqpt.tokenizer.no_space_script import starts_with_no_space_script

WORD_START = "\u2581"  # sentencepiece's "▁"
CONTINUATION_PREFIX = "##"  # what megatron-core's whole-word masking looks for


class TokenizerModelError(UserError):
    """The sentencepiece model is missing or lacks the project's special tokens."""


def load_processor(path: Path) -> spm.SentencePieceProcessor:
    """sentencepiece's processor for a model file, or a TokenizerModelError naming it."""
    if not path.is_file():
        raise TokenizerModelError(
            f"tokenizer model {path} does not exist; train one with tools/train_tokenizer.py "
            "or point data.tokenizer_model at an existing .model file")
    try:
        return spm.SentencePieceProcessor(model_proto=path.read_bytes())
    except RuntimeError:
        raise TokenizerModelError(
            f"tokenizer model {path} is not a sentencepiece model (it does not parse); pass "
            "the .model file written by tools/train_tokenizer.py, not the .vocab") from None


class SentencePieceTokenizer(MegatronTokenizerBase):
    """Encode/decode text and give megatron-core the special ids and word boundaries it needs."""

    def __init__(self, model_file: Union[str, Path]) -> None:
        path = Path(model_file).expanduser().resolve()
        self._sp = load_processor(path)
        proto = path.read_bytes()
        super().__init__(str(path), {})
        self.model_file = path
        self.model_sha256 = hashlib.sha256(proto).hexdigest()
        self._pieces = [self._sp.id_to_piece(i) for i in range(self._sp.get_piece_size())]

        self.pad = self._required_id(st.PAD)
        self.eos = self._required_id(st.EOS)
        self.bos = self._required_id(st.BOS)
        self.unk = self._required_id(st.UNK)
        self.cls = self._required_id(st.CLS)
        self.sep = self._required_id(st.SEP)
        self.mask = self._required_id(st.MASK)
        if self.pad != st.PAD_ID:
            raise TokenizerModelError(
                f"tokenizer model {path} has {st.PAD} at id {self.pad}, but megatron-core's T5 "
                f"attention masks treat id {st.PAD_ID} as padding; retrain it with "
                "tools/train_tokenizer.py")
        self.additional_special_tokens_ids = self._sentinel_ids()
        self.special_ids = frozenset({self.pad, self.eos, self.bos, self.unk, self.cls,
                                      self.sep, self.mask, *self.additional_special_tokens_ids})
        ids = range(len(self._pieces))
        self.word_starts = np.array([self._starts_word(i) for i in ids], dtype=bool)
        # Text pieces: no control, special, unknown or byte pieces.
        self.ordinary_ids = np.array(
            [i for i in ids if i not in self.special_ids and not self._sp.is_byte(i)
             and not self._sp.is_control(i) and not self._sp.is_unknown(i)], dtype=np.int64)
        self._inv_vocab = {i: piece if self.word_starts[i] else CONTINUATION_PREFIX + piece
                           for i, piece in enumerate(self._pieces)}
        self._vocab = {text: i for i, text in self._inv_vocab.items()}

    # --- what megatron-core's datasets read -------------------------------------------------

    @property
    def unique_identifiers(self) -> OrderedDict:
        """Part of every dataset cache key: a changed model invalidates cached sample indices."""
        return OrderedDict(
            [("class", f"{type(self).__module__}.{type(self).__qualname__}"),
             ("model_sha256", self.model_sha256)])

    @property
    def identity(self) -> dict:
        """What checkpoints record of the tokenizer, so that a run never continues on ids
        that mean other pieces: the model's hash, its size and its special ids."""
        return {"sha256": self.model_sha256, "vocab_size": self.vocab_size,
                "special_ids": {"pad": self.pad, "eos": self.eos, "bos": self.bos,
                                "unk": self.unk, "cls": self.cls, "sep": self.sep,
                                "mask": self.mask,
                                "sentinels": list(self.additional_special_tokens_ids)}}

    @property
    def vocab_size(self) -> int:
        return len(self._pieces)

    @property
    def inv_vocab(self) -> dict[int, str]:
        """id -> piece in WordPiece form (continuation pieces prefixed with ``##``)."""
        return self._inv_vocab

    @property
    def vocab(self) -> dict[str, int]:
        """The inverse of ``inv_vocab`` (WordPiece form); see ``piece_to_id`` for real pieces."""
        return self._vocab

    @property
    def eod(self) -> int:
        return self.eos

    def tokenize(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def detokenize(self, ids: Iterable[int]) -> str:
        return self._sp.decode([int(i) for i in ids])

    def encode_with_offsets(self, text: str) -> list[tuple[int, int, int]]:
        """``(id, begin, end)`` per piece of ``tokenize(text)``: the characters of ``text`` it
        stands for, so that labels of words can be put on their pieces.

        Sentencepiece reports UTF-8 byte offsets; these are character offsets. A piece that
        starts with ``▁`` covers the whitespace it stands for (none at the start of the text).
        The byte-fallback pieces of one character all get that character's span (sentencepiece
        gives it to the last byte only and an empty span at the character to the others).
        """
        spans = sentencepiece_pb2.SentencePieceText.FromString(
            self._sp.encode(text, out_type="serialized_proto"))
        # The character each UTF-8 byte offset falls in, and the end.
        char_at = [i for i, char in enumerate(text) for _ in char.encode("utf-8")] + [len(text)]
        pieces = []
        for piece in spans.pieces:
            begin, end = char_at[piece.begin], char_at[piece.end]
            if self._sp.is_byte(piece.id):
                end = max(end, begin + 1)
            pieces.append((piece.id, begin, end))
        return pieces

    def apply_chat_template(self, *args, **kwargs):
        raise NotImplementedError("pre-training tokenizers have no chat template")

    # --- the real sentencepiece view --------------------------------------------------------

    def piece(self, token_id: int) -> str:
        return self._pieces[token_id]

    def piece_to_id(self, piece: str) -> int:
        return self._sp.piece_to_id(piece)

    # --- internals ------------------------------------------------------------------------

    def _required_id(self, piece: str) -> int:
        token_id = self._sp.piece_to_id(piece)
        if self._pieces[token_id] != piece:
            raise TokenizerModelError(
                f"tokenizer model {self.model_file} was not trained with "
                f"tools/train_tokenizer.py (or its special-token settings): missing {piece}; "
                "retrain it with that tool")
        return token_id

    def _sentinel_ids(self) -> list[int]:
        ids = [self._required_id(st.sentinel(0))]
        while self._pieces[self._sp.piece_to_id(st.sentinel(len(ids)))] == st.sentinel(len(ids)):
            ids.append(self._sp.piece_to_id(st.sentinel(len(ids))))
        return ids

    def _starts_word(self, token_id: int) -> bool:
        if token_id in self.special_ids or self._sp.is_control(token_id) \
                or self._sp.is_unknown(token_id):
            return True  # special tokens are words of their own
        if self._sp.is_byte(token_id):
            return False  # byte fallback spells out one character of the current word
        piece = self._pieces[token_id]
        return piece.startswith(WORD_START) or starts_with_no_space_script(piece)

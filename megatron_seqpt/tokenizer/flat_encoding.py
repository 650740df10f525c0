"""A batch of texts encoded by sentencepiece as two arrays: every text's ids in one, their
counts in the other.

Preprocessing wants the ids as arrays, and its encoding thread must hold the GIL as little as it
can (the splitting thread needs it). ``sp.encode`` returns a Python list of ints per text, which
sentencepiece builds holding the GIL, and flattening them costs as much again; its numpy output
(0.2.2+) is one raw buffer per text, which its Python wrapper turns into arrays one by one.
Here the buffers of the processor's batch call (``_EncodeAsBufferBatch``, the call behind
``encode(..., return_type="numpy")``) are joined in one C call. That call is sentencepiece's
private interface (positional arguments): it is used only where it gives exactly what ``encode``
gives on a probe batch, and lists are flattened otherwise.
"""

from __future__ import annotations

from itertools import chain

import numpy as np
import sentencepiece as spm

# Texts the raw buffers must encode exactly as ``encode`` does before they are trusted: more
# than one id each, a text that encodes to nothing, and more than one byte per character.
_PROBE = ["A probe, with two clauses.", "", "\u200b", "Zweiter Satz über Öl.", "Второе."]


class FlatEncoder:
    """``encoder(texts)`` -> (each text's number of ids, all the ids in order; int32)."""

    def __init__(self, sp: spm.SentencePieceProcessor):
        self.sp = sp
        self._buffers = getattr(getattr(sp, "_processor", None), "_EncodeAsBufferBatch", None)
        if self._buffers is not None and not self._buffers_agree():
            self._buffers = None

    @property
    def uses_buffers(self) -> bool:
        return self._buffers is not None

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        if not texts:
            return np.zeros(0, np.int64), np.zeros(0, np.int32)
        if self._buffers is None:
            ids = self.sp.encode(texts, num_threads=1)
            lengths = np.fromiter(map(len, ids), np.int64, len(ids))
            return lengths, np.fromiter(chain.from_iterable(ids), np.int32, int(lengths.sum()))
        sp = self.sp
        buffers = self._buffers(texts, 1, None, sp._enable_sampling, sp._nbest_size, sp._alpha,
                                sp._add_bos, sp._add_eos, sp._reverse)
        lengths = np.fromiter(map(len, map(memoryview, buffers)), np.int64, len(buffers))
        return lengths, np.frombuffer(b"".join(buffers), np.int32)

    def _buffers_agree(self) -> bool:
        try:
            lengths, ids = self(_PROBE)
        except (TypeError, ValueError, AttributeError, RuntimeError):
            return False
        expected = self.sp.encode(_PROBE, num_threads=1)
        return lengths.tolist() == list(map(len, expected)) and \
            ids.tolist() == list(chain.from_iterable(expected))

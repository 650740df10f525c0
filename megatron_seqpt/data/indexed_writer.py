"""megatron-core indexed datasets (.bin/.idx) written so that a failed run leaves none behind.

Each dataset is built by megatron-core's ``IndexedDatasetBuilder`` under a temporary name. Only
when every dataset of the run is complete are they moved to their final names, each .idx after
its .bin: a .bin/.idx pair at the final names is always a complete one. A run that fails or is
interrupted deletes its temporary files; those of a killed run are removed by the next run that
writes the same prefix (``files.sweep_stale``). A write error (full or read-only disk) is one
line naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from megatron.core.datasets.indexed_dataset import (
    DType,
    IndexedDataset,
    IndexedDatasetBuilder,
    _IndexWriter,
)

from megatron_seqpt.files import remove_quietly, sweep_stale, temporary_tag, write_error


def token_dtype(vocab_size: int) -> type[np.number]:
    """The smallest id type megatron-core reads for this vocabulary (uint16 below 65500)."""
    return DType.optimal_dtype(vocab_size)


def token_count(prefix: str | Path) -> int:
    """Tokens in an indexed dataset, read from its .idx."""
    # Keep the dataset alive while summing: its arrays are views of a memory map it closes.
    dataset = IndexedDataset(str(prefix))
    return int(dataset.sequence_lengths.sum(dtype=np.int64))


class _IndexWriterOfArrays(_IndexWriter):
    """megatron-core's .idx writer with each item's byte offset computed as one array:
    its loop over items, a numpy scalar operation each, took a tenth of a sentence-mode run
    on short sentences. The same bytes (tested)."""

    def _sequence_pointers(self, sequence_lengths) -> np.ndarray:
        item_bytes = np.asarray(sequence_lengths, dtype=np.int64) * DType.size(self.dtype)
        pointers = np.zeros(len(item_bytes), dtype=np.int64)
        np.cumsum(item_bytes[:-1], out=pointers[1:])
        return pointers


class _Builder(IndexedDatasetBuilder):
    """megatron-core's builder with its index held as arrays, a chunk's documents appended at
    once, finalized with ``_IndexWriterOfArrays``. Its lists hold a Python object per item and
    per document (19-49 bytes per item, 43-73 while the .idx is written, with 4 to 1 items a
    document), tens of GB over a billion sentences; these arrays 4 bytes per item and 8 per
    document."""

    def __init__(self, bin_path: str, dtype: type[np.number]):
        super().__init__(bin_path, dtype=dtype)
        # megatron-core's per-item lists are not this index: None, so that its per-item methods
        # (add_item, add_document, add_index) fail instead of adding items it would not index.
        self.sequence_lengths = self.document_indices = None
        self._lengths: list[np.ndarray] = []
        self._document_ends: list[np.ndarray] = []
        self._item_count = 0

    def add_documents(self, tokens: np.ndarray, lengths: np.ndarray, items: np.ndarray) -> None:
        """Documents in order: their tokens, their items' lengths, each one's items."""
        self.data_file.write(np.asarray(tokens, dtype=self.dtype).tobytes(order="C"))
        self._lengths.append(np.asarray(lengths, dtype=np.int32))
        self._document_ends.append(self._item_count + np.cumsum(items, dtype=np.int64))
        self._item_count += len(lengths)

    def finalize(self, idx_path: str) -> None:
        self.data_file.close()
        lengths = np.concatenate([np.zeros(0, np.int32), *self._lengths])
        document_indices = np.concatenate([np.zeros(1, np.int64), *self._document_ends])
        self._lengths, self._document_ends = [], []
        with _IndexWriterOfArrays(idx_path, self.dtype) as writer:
            writer.write(lengths, None, document_indices)


class IndexedOutputs:
    """The datasets one run writes, keyed by final prefix; commit() or discard() ends them."""

    def __init__(self, dtype: type[np.number]):
        self.dtype = dtype
        self._builders: dict[str, _Builder] = {}
        # Every prefix whose temporary files may exist, recorded before they are created: an
        # interrupt between a builder creating its file and ``_builders`` holding it must not
        # leave the file behind.
        self._opened: list[str] = []
        self._suffix = temporary_tag()

    def builder(self, prefix: str) -> _Builder:
        """The builder for ``prefix``, opened (under a temporary name) on first use."""
        if prefix not in self._builders:
            temporary = self._temporary(prefix, ".bin")
            try:
                Path(prefix).parent.mkdir(parents=True, exist_ok=True)
                sweep_stale(prefix)
                self._opened.append(prefix)
                self._builders[prefix] = _Builder(temporary, dtype=self.dtype)
            except OSError as err:
                raise write_error(err, temporary) from None
        return self._builders[prefix]

    def add_documents(self, prefix: str, tokens: np.ndarray, lengths: np.ndarray,
                      items: np.ndarray) -> None:
        """Documents in order, in one write: their tokens, the lengths of their items
        (sentences) and each one's number of items (at least 1)."""
        builder = self.builder(prefix)
        try:
            builder.add_documents(tokens, lengths, items)
        except OSError as err:
            raise write_error(err, self._temporary(prefix, ".bin")) from None

    def commit(self) -> list[str]:
        """Finish every dataset, then move them all to their final names."""
        for prefix, builder in self._builders.items():
            try:
                builder.finalize(self._temporary(prefix, ".idx"))
            except OSError as err:
                raise write_error(err, self._temporary(prefix, ".idx")) from None
        for prefix in self._builders:
            # A stale .idx must not pair with the new .bin while they move.
            Path(f"{prefix}.idx").unlink(missing_ok=True)
            os.replace(self._temporary(prefix, ".bin"), f"{prefix}.bin")
            os.replace(self._temporary(prefix, ".idx"), f"{prefix}.idx")
        committed, self._builders, self._opened = sorted(self._builders), {}, []
        return committed

    def discard(self) -> None:
        """Delete every temporary file of this run. Closing a file on a full disk fails
        (its buffer cannot be written): that must not hide the error being cleaned up after."""
        for prefix in self._opened:
            builder = self._builders.get(prefix)
            try:
                if builder is not None:
                    builder.data_file.close()
            except OSError:
                pass
            for suffix in (".bin", ".idx"):
                remove_quietly(self._temporary(prefix, suffix))
        self._builders, self._opened = {}, []

    def _temporary(self, prefix: str, suffix: str) -> str:
        return f"{prefix}{self._suffix}{suffix}"

"""Real data for the data-pipeline tests: the default corpus through the project's tokenizer
training and preprocessing (small vocabulary), built once per test session in a temporary
directory."""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from megatron_seqpt.text.corpus import default_corpus_path

VOCAB_SIZE = 2000
# Set by conftest.py for the session and inherited by spawned ranks, so that every process
# finds the same prepared data (same paths, hence the same megatron-core cache keys).
DATA_DIR_VARIABLE = "SEQPT_TEST_DATA"


@dataclass(frozen=True)
class PreparedCorpus:
    root: Path
    tokenizer_model: Path
    prefixes: dict[str, str]
    # Language -> the paragraphs of its corpus records.
    paragraphs: dict[str, list[str]]


@functools.lru_cache(maxsize=None)
def prepared_corpus() -> PreparedCorpus:
    """Built with the project's own cached pipeline (``prepare``: tokenizer training and
    preprocessing, locked so that concurrent ranks build it once)."""
    from megatron_seqpt.config.schema import DataConfig
    from megatron_seqpt.data.prepare import prepare

    root = Path(os.environ[DATA_DIR_VARIABLE])
    prepared = prepare(DataConfig(vocab_size=VOCAB_SIZE, cache_dir=str(root)), progress=False)
    paragraphs: dict[str, list[str]] = {}
    for line in default_corpus_path().read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        paragraphs.setdefault(record["lang"], []).extend(record["text"].split("\n"))
    return PreparedCorpus(root, prepared.tokenizer_model, prepared.prefixes, paragraphs)


def build(kind: str, cache_dir: Path, *, num_samples=(600, 40, 0), seed: int = 1234, **data):
    """Sample datasets of the prepared corpus (torch.distributed must be started)."""
    from megatron_seqpt.config.schema import DataConfig
    from megatron_seqpt.data.samples import build_sample_datasets

    corpus = prepared_corpus()
    return build_sample_datasets(kind, corpus.prefixes, tokenizer(), DataConfig(**data),
                                 num_samples, seed, cache_dir)


@functools.lru_cache(maxsize=None)
def tokenizer():
    from megatron_seqpt.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer

    return SentencePieceTokenizer(prepared_corpus().tokenizer_model)


def original_tokens(dataset, index: int) -> np.ndarray:
    """The unmasked sentences that blended sample ``index`` was cut from, concatenated."""
    mid = dataset.datasets[dataset.dataset_index[index]]
    begin, end, _ = mid.sample_index[dataset.dataset_sample_index[index]]
    return np.concatenate([mid.dataset[i] for i in range(begin, end)]).astype(np.int64)

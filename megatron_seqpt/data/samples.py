"""Training samples from the per-language indexed datasets, on megatron-core's dataset machinery.

``build_sample_datasets`` blends the languages with temperature sampling (weights from each
language's token count) and builds, through ``BlendedMegatronDatasetBuilder``, either
masked-LM samples (megatron-core's BERT dataset: single segments, no next-sentence task) or
span-corruption samples (its T5 dataset). megatron-core does the sampling, masking, train/valid/
test split and index caching; this module only chooses their settings and adapts two details:

- MLM random replacements (the "10% random") come from text pieces only, never from special
  tokens: megatron-core would draw any id, including the pad id, which its padding mask then
  mistakes for padding.
- T5 span lengths follow ``data.mean_span_length``: megatron-core draws them from a geometric
  distribution with a fixed mean of 5; ``SpanCorruptionDataset`` gives it p = 1 / mean instead.
  Spans are counted in pieces, as in T5 (``data.whole_word_masking`` is the MLM setting).

Whole-word masking reads word starts from the tokenizer (see ``SentencePieceTokenizer``).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping, Optional, Union

import numpy as np
import torch
from megatron.core.datasets.bert_dataset import (
    BERTMaskedWordPieceDataset,
    BERTMaskedWordPieceDatasetConfig,
)
from megatron.core.datasets.blended_megatron_dataset_builder import (
    BlendedMegatronDatasetBuilder,
)
from megatron.core.datasets.blended_megatron_dataset_config import (
    convert_split_vector_to_split_matrix,
    parse_and_normalize_split,
)
from megatron.core.datasets.indexed_dataset import IndexedDataset, get_idx_path
from megatron.core.datasets.t5_dataset import (
    T5MaskedWordPieceDataset,
    T5MaskedWordPieceDatasetConfig,
)
from megatron.core.datasets.utils import Split

from megatron_seqpt.config.schema import DataConfig
from megatron_seqpt.data.indexed_writer import token_count
from megatron_seqpt.errors import UserError
from megatron_seqpt.text.sampling import temperature_weights
from megatron_seqpt.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer

SampleKind = Literal["encoder", "t5"]

# As in BERT: this share of samples is cut to a random shorter length.
SHORT_SEQUENCE_PROBABILITY = 0.1
# T5 spans longer than this many times the mean are cut (about 2% of spans at mean 3).
SPAN_LENGTH_CAP = 4
# megatron-core's sample index skips documents of several sentences with one longer than this.
LONG_SENTENCE = 512


class SampleDataError(UserError):
    """The indexed datasets or the data settings cannot give the requested samples."""


@dataclass(frozen=True)
class SampleDatasets:
    """The three splits; ``valid``/``test`` are None when their split weight or size is 0.

    Blended samples carry ``dataset_id``: the index into ``languages``.
    """

    train: torch.utils.data.Dataset
    valid: Optional[torch.utils.data.Dataset]
    test: Optional[torch.utils.data.Dataset]
    languages: tuple[str, ...]
    weights: dict[str, float]


class EncoderMLMDataset(BERTMaskedWordPieceDataset):
    """megatron-core's BERT samples, with random replacements drawn from text pieces only."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.token_lookup = self.config.tokenizer.ordinary_ids.tolist()


@dataclass
class SpanCorruptionConfig(T5MaskedWordPieceDatasetConfig):
    mean_span_length: float = None
    """Mean length of a corrupted span in pieces (before spans are cut to the masking budget)."""


class _SpanLengthDraws:
    """The per-sample random state, except that span lengths come from our geometric p."""

    def __init__(self, state: np.random.RandomState, p: float) -> None:
        self._state = state
        self._p = p

    def geometric(self, _megatron_p: float) -> int:
        return self._state.geometric(self._p)

    def __getattr__(self, name: str):
        return getattr(self._state, name)


class SpanCorruptionDataset(T5MaskedWordPieceDataset):
    """megatron-core's T5 samples with span lengths of mean ``config.mean_span_length``."""

    @staticmethod
    def _key_config_attributes() -> list[str]:
        return T5MaskedWordPieceDataset._key_config_attributes() + ["mean_span_length"]

    def _create_masked_lm_predictions(self, token_ids, target_sequence_length,
                                      numpy_random_state):
        draws = _SpanLengthDraws(numpy_random_state, 1.0 / self.config.mean_span_length)
        return super()._create_masked_lm_predictions(token_ids, target_sequence_length, draws)


def language_token_counts(prefixes: Mapping[str, str]) -> dict[str, int]:
    """Tokens per language, read from the sequence lengths in each .idx file."""
    for lang, prefix in prefixes.items():
        _open_indexed(lang, prefix)  # a clear error for a missing dataset
    return {lang: token_count(prefix) for lang, prefix in prefixes.items()}


def build_sample_datasets(kind: SampleKind, prefixes: Mapping[str, str],
                          tokenizer: SentencePieceTokenizer, data: DataConfig,
                          num_samples: tuple[int, int, int], seed: int,
                          cache_dir: Union[str, Path]) -> SampleDatasets:
    """Build train/valid/test samples; call on every rank after torch.distributed is started.

    Rank 0 builds megatron-core's index files in ``cache_dir`` first, the other ranks wait and
    load them, so ``cache_dir`` must be one directory all ranks see (a shared file system).
    Every rank builds the datasets: each reads its own micro-batches (see ``stream.py``).
    ``num_samples`` are the (train, valid, test) sample counts to draw.
    """
    if not torch.distributed.is_initialized():
        raise RuntimeError("megatron-core's dataset builders need torch.distributed; call "
                           "megatron_seqpt.runtime.distributed.initialize first")
    if not prefixes:
        raise SampleDataError("no indexed datasets given (data.prefixes is empty); run "
                              "tools/preprocess_data.py or leave data.prefixes empty to build "
                              "them from the corpus")
    if seed < 1:
        raise SampleDataError(f"the seed must be a positive integer, got {seed} (train.seed)")
    if len(num_samples) != 3 or num_samples[0] < 1 or min(num_samples) < 0:
        raise ValueError(f"num_samples must be (train >= 1, valid >= 0, test >= 0), got "
                         f"{num_samples}")

    weights = temperature_weights(language_token_counts(prefixes), data.sampling_alpha)
    languages = tuple(weights)  # languages without any token are left out
    paths = [prefixes[lang] for lang in languages]
    split_matrix = convert_split_vector_to_split_matrix(parse_and_normalize_split(data.split))
    for lang, path in zip(languages, paths):
        _check_split(lang, _open_indexed(lang, path), split_matrix, data.split)

    blend = (paths, [weights[lang] for lang in languages] if len(paths) > 1 else None)
    common = dict(random_seed=seed, sequence_length=data.seq_length, blend=blend,
                  split=data.split, path_to_cache=str(_cache_path(cache_dir, paths)),
                  tokenizer=tokenizer, short_sequence_probability=SHORT_SEQUENCE_PROBABILITY,
                  masking_do_permutation=False, masking_use_longer_ngrams=False)
    if kind == "encoder":
        cls = EncoderMLMDataset
        config = BERTMaskedWordPieceDatasetConfig(
            **common, masking_probability=data.masking_probability,
            masking_max_ngram=data.max_ngram, masking_do_full_word=data.whole_word_masking,
            masking_use_geometric_distribution=False, classification_head=False)
    elif kind == "t5":
        _check_t5_lengths(tokenizer, data)
        cls = SpanCorruptionDataset
        config = SpanCorruptionConfig(
            **common, masking_probability=data.noise_density,
            masking_max_ngram=math.ceil(SPAN_LENGTH_CAP * data.mean_span_length),
            masking_do_full_word=False, masking_use_geometric_distribution=True,
            sequence_length_decoder=data.decoder_seq_length,
            mean_span_length=data.mean_span_length)
    else:
        raise ValueError(f"kind must be 'encoder' or 't5', got {kind!r}")

    built = BlendedMegatronDatasetBuilder(cls, list(num_samples), lambda: True, config).build()
    train, valid, test = (dataset if size else None for dataset, size in zip(built, num_samples))
    return SampleDatasets(train, valid, test, languages, weights)


def _open_indexed(lang: str, prefix: str) -> IndexedDataset:
    if not IndexedDataset.exists(prefix):
        raise SampleDataError(
            f"no indexed dataset for language '{lang}' at {prefix} (.bin/.idx); run "
            "tools/preprocess_data.py or fix data.prefixes")
    return IndexedDataset(prefix)


def _check_split(lang: str, dataset: IndexedDataset, split_matrix, split: str) -> None:
    """Every split in use needs a document megatron-core can sample, or it loops without end."""
    starts, lengths = dataset.document_indices, dataset.sequence_lengths

    def usable(doc: int) -> bool:
        sentences = lengths[starts[doc]:starts[doc + 1]]
        return len(sentences) == 1 or (len(sentences) > 1
                                       and sentences.max() <= LONG_SENTENCE)

    num_docs = len(starts) - 1
    for part, bookends in zip(Split, split_matrix):
        if bookends is None:
            continue
        begin, end = (int(round(b * num_docs)) for b in bookends)
        if not any(usable(doc) for doc in range(begin, end)):
            raise SampleDataError(
                f"language '{lang}' has {num_docs} documents; data.split '{split}' gives its "
                f"{part.name} split {end - begin} of them, none usable (empty, or with a "
                f"sentence over {LONG_SENTENCE} pieces). Give it more documents or set the "
                f"{part.name} weight of data.split to 0")


def _check_t5_lengths(tokenizer: SentencePieceTokenizer, data: DataConfig) -> None:
    """The most pieces a sample can mask must fit the sentinels and the decoder length."""
    most_masked = _most_masked(data)
    if most_masked > len(tokenizer.additional_special_tokens_ids):
        raise SampleDataError(
            f"span corruption may need {most_masked} sentinels (data.noise_density x "
            f"data.seq_length), the tokenizer {tokenizer.model_file} has "
            f"{len(tokenizer.additional_special_tokens_ids)}; retrain it with more sentinels "
            "or lower data.noise_density")
    check_t5_decoder_length(data)


def _most_masked(data: DataConfig) -> int:
    """The most encoder pieces span corruption can mask in one sample."""
    return math.floor(data.noise_density * (data.seq_length - 2))


def check_t5_decoder_length(data: DataConfig) -> None:
    """The decoder must hold the longest target span corruption can make; needs no data, so
    a run checks it before preparing any."""
    needed = 1 + 2 * _most_masked(data)  # <bos>, and per span a sentinel, worst case 1-piece spans
    if data.decoder_seq_length < needed:
        raise SampleDataError(
            f"data.decoder_seq_length {data.decoder_seq_length} is too short: with "
            f"data.seq_length {data.seq_length} and data.noise_density {data.noise_density} a "
            f"decoder sequence can reach {needed} pieces; raise it to at least {needed}")


def _cache_path(cache_dir: Union[str, Path], paths: list[str]) -> Path:
    """A cache folder per content of the .idx files, so rebuilt data never meets stale indices.

    megatron-core keys its cached indices by dataset path and settings, not by content.
    """
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(get_idx_path(path)).read_bytes())
    return Path(cache_dir).expanduser() / "sample_index" / digest.hexdigest()[:16]

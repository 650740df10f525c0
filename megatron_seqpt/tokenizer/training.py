"""Train the one sentencepiece model all languages share, on a language-balanced sample.

Trained on the raw mixture, a vocabulary spends its pieces on the big languages and splits
the small ones into characters. So the training sample is drawn per language with temperature
sampling (``text/sampling.py``): a language with an estimated share p of the corpus' sentences
gets a share proportional to p**alpha of the sample. Documents are drawn whole (repeated for
small languages, thinned for big ones), split into sentences, and streamed to sentencepiece,
which keeps at most ``max_sentences`` of them.

Special tokens sit at the ids of ``special_tokens.py``: <pad> 0, </s> 1, <s> 2, <unk> 3, then
<cls> <sep> <mask> and the sentinels <extra_id_0..N-1> from id 4.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Literal, Mapping, Sequence, TypeVar

import numpy as np
import sentencepiece as spm

from megatron_seqpt.errors import UserError
from megatron_seqpt.files import publish_files, sweep_stale, write_error
from megatron_seqpt.text.corpus import (
    ByteProgress,
    ReadOptions,
    Record,
    Skips,
    file_language_notes,
    read_records,
)
from megatron_seqpt.text.kept_pipes import KeptPipes
from megatron_seqpt.text.sampling import temperature_weights
from megatron_seqpt.text.sentences import (
    SentenceSplitter,
    learn_splitters,
    survey_inputs,
)
from megatron_seqpt.tokenizer import special_tokens as st
from megatron_seqpt.tokenizer.sentencepiece_training import train_in_child

# Sentences longer than this (bytes) are left out by sentencepiece; generous, because a
# paragraph without sentence punctuation is one long sentence.
MAX_SENTENCE_BYTES = 16384

T = TypeVar("T")


@dataclass(frozen=True)
class SizeSettings:
    """How the caller's user sets the vocabulary's size and what bounds it, for the errors
    that tell them what to change: the tool's flags, or a run's config key (None: not
    settable there, not offered)."""

    vocab_size: str = "--vocab-size"
    num_sentinels: str | None = "--num-sentinels"
    character_coverage: str | None = "--character-coverage"


# A run's data preparation sets only the size (data.vocab_size).
CONFIG_SIZE_SETTINGS = SizeSettings("data.vocab_size", None, None)


@dataclass(frozen=True)
class LanguageShare:
    """How one language enters the training sample."""

    documents: int
    chars: int
    # Sentence count estimated from the corpus size and the sample's mean sentence length.
    sentences: float
    # Temperature-sampling probability of the language.
    weight: float
    # Expected copies of each of its documents in the sample (< 1: thinned, > 1: repeated).
    rate: float


def plan_sample(documents: Mapping[str, int], chars: Mapping[str, int],
                chars_per_sentence: Mapping[str, float], alpha: float,
                max_sentences: int) -> dict[str, LanguageShare]:
    """Each language's share of a sample of at most ``max_sentences`` sentences."""
    sentences = {lang: chars[lang] / max(chars_per_sentence[lang], 1.0) for lang in chars}
    weights = temperature_weights(sentences, alpha)
    total = min(sum(sentences.values()), max_sentences)
    return {lang: LanguageShare(documents[lang], chars[lang], sentences[lang], weight,
                                weight * total / sentences[lang])
            for lang, weight in weights.items()}


def sample_sentences(records: Iterable[Record], shares: Mapping[str, LanguageShare],
                     splitters: Mapping[str, SentenceSplitter], seed: int
                     ) -> Iterator[tuple[str, str]]:
    """(language, sentence) for the sentences of each document, repeated a random number of
    times whose mean is its language's rate (0 or 1 time when thinning)."""
    rng = np.random.default_rng(seed)
    for record in records:
        rate = shares[record.lang].rate
        copies = math.floor(rate) + int(rng.random() < rate - math.floor(rate))
        if not copies:
            continue
        sentences = [s for text in record.texts for s in splitters[record.lang].split(text)]
        for _ in range(copies):
            for sentence in sentences:
                yield record.lang, sentence


def train_tokenizer(inputs: Sequence[str | Path], vocab_size: int, output_prefix: str | Path,
                    *, sampling_alpha: float = 0.3,
                    num_sentinels: int = st.DEFAULT_NUM_SENTINELS,
                    model_type: Literal["unigram", "bpe"] = "unigram",
                    character_coverage: float = 0.9999, byte_fallback: bool = True,
                    max_sentences: int = 10_000_000, seed: int = 1234, num_threads: int = 16,
                    json_keys: Sequence[str] = ("text",), lang_key: str = "lang",
                    lang: str | None = None, on_error: Literal["fail", "skip"] = "fail",
                    punkt_dir: str | Path | None = None, progress: bool = True,
                    named: SizeSettings = SizeSettings()) -> Path:
    """Train PREFIX.model and PREFIX.vocab; return the .model path. ``named``: how errors
    name the size settings.

    The same inputs, seed and ``num_threads`` give the same model bytes (sentencepiece's sums
    depend on how work is split over threads, so the thread count is fixed, not the cores').
    The inputs are read twice; a pipe among them is kept in a temporary file (``kept_pipes``).
    """
    _check_options(sampling_alpha=sampling_alpha, num_sentinels=num_sentinels,
                   character_coverage=character_coverage, max_sentences=max_sentences,
                   seed=seed, num_threads=num_threads)
    _check_vocab_size(vocab_size, num_sentinels, byte_fallback, named)
    options = ReadOptions(tuple(json_keys), lang_key, lang, on_error)
    skips = Skips()
    with KeptPipes(inputs, progress) as pipes:
        surveys = survey_inputs(inputs, options, skips, progress, pipes.copies)
        if not surveys:
            raise UserError(f"no documents to train on in {', '.join(map(str, inputs))} "
                            f"(skipped: {skips.describe()})")
        for note in file_language_notes(surveys, inputs, options):
            print(f"note: {note}", file=sys.stderr)
        params = learn_splitters({lang: s.sample for lang, s in surveys.items()}, punkt_dir)
        splitters = {lang: SentenceSplitter(lang, p) for lang, p in params.items()}
        shares = plan_sample({lang: s.documents for lang, s in surveys.items()},
                             {lang: s.chars for lang, s in surveys.items()},
                             {lang: _mean_sentence_chars(splitters[lang], s.sample)
                              for lang, s in surveys.items()},
                             sampling_alpha, max_sentences)

        with ByteProgress(inputs, "sampling sentences", progress, pipes.copies) as bar:
            records = bar.records(read_records(inputs, options, copies=pipes.copies))
            sentences = sample_sentences(records, shares, splitters, seed)
            # The copies go once sentencepiece has read the sample, before it trains.
            model = _train(_then((sentence for _, sentence in sentences), pipes.remove_copies),
                           vocab_size=vocab_size, num_sentinels=num_sentinels,
                           model_type=model_type, character_coverage=character_coverage,
                           byte_fallback=byte_fallback, max_sentences=max_sentences, seed=seed,
                           num_threads=num_threads, named=named)
    if progress:
        print("tokenizer sample per language (weight, copies of each document): " + ", ".join(
            f"{lang} {share.weight:.3f} x{share.rate:.2f}" for lang, share in shares.items()),
            file=sys.stderr)
    return _write_model(model, Path(output_prefix).expanduser())


def _check_options(*, sampling_alpha: float, num_sentinels: int, character_coverage: float,
                   max_sentences: int, seed: int, num_threads: int) -> None:
    """Refuse settings sentencepiece or the sampling would fail on (with a traceback, some only
    after the first pass over the corpus) or silently misread, before any input is read."""
    problems = [
        (not 0 < sampling_alpha <= 1, f"--sampling-alpha must be in (0, 1], got {sampling_alpha}"),
        (num_sentinels < 0, f"--num-sentinels must be at least 0, got {num_sentinels}"),
        # sentencepiece's own bounds.
        (not 0.98 <= character_coverage <= 1,
         f"--character-coverage must be 0.98 to 1, got {character_coverage}"),
        (not 1 <= num_threads <= 1024, f"--num-threads must be 1 to 1024, got {num_threads}"),
        (max_sentences < 1, f"--max-sentences must be at least 1, got {max_sentences}"),
        # sentencepiece's random generator takes a 32-bit unsigned seed.
        (not 0 <= seed < 2**32, f"--seed must be 0 to {2**32 - 1}, got {seed}"),
    ]
    for failed, message in problems:
        if failed:
            raise UserError(message)


def _check_vocab_size(vocab_size: int, num_sentinels: int, byte_fallback: bool,
                      named: SizeSettings) -> None:
    reserved = 4 + len(st.reserved_symbols(num_sentinels)) + (256 if byte_fallback else 0)
    if vocab_size <= reserved:
        raise UserError(f"vocab size {vocab_size} leaves no room for text pieces: {reserved} "
                        f"ids are reserved (4 control, {3 + num_sentinels} special/sentinel"
                        f"{', 256 byte-fallback' if byte_fallback else ''}); use a larger "
                        f"{named.vocab_size}"
                        + (f" or fewer {named.num_sentinels}" if named.num_sentinels else ""))


def _mean_sentence_chars(splitter: SentenceSplitter, sample: list[str]) -> float:
    lengths = [end - start for text in sample for start, end in splitter.spans(text)]
    return sum(lengths) / max(len(lengths), 1)


def _train(sentences: Iterator[str], *, vocab_size: int, num_sentinels: int, model_type: str,
           character_coverage: float, byte_fallback: bool, max_sentences: int, seed: int,
           num_threads: int, named: SizeSettings) -> bytes:
    """The serialized model, trained in a child process (``sentencepiece_training``). It is
    returned, not written by sentencepiece, so that it does not record the output path: the
    bytes depend only on the data and the settings."""
    try:
        # The seed: sentencepiece draws its sentence sample (when over max_sentences) with it.
        return train_in_child(
            sentences, seed, vocab_size=vocab_size, model_type=model_type,
            character_coverage=character_coverage, byte_fallback=byte_fallback,
            input_sentence_size=max_sentences, shuffle_input_sentence=True,
            max_sentence_length=MAX_SENTENCE_BYTES, num_threads=num_threads, minloglevel=2,
            pad_id=st.PAD_ID, eos_id=st.EOS_ID, bos_id=st.BOS_ID, unk_id=st.UNK_ID,
            pad_piece=st.PAD, eos_piece=st.EOS, bos_piece=st.BOS, unk_piece=st.UNK,
            control_symbols=st.reserved_symbols(num_sentinels),
            # No Unicode normalisation: pieces decode to exactly the text they came from
            # (NFKC would, for one, decompose Hindi's nukta letters).
            normalization_rule_name="identity")
    except RuntimeError as err:
        largest = re.search(r"Vocabulary size too high \((\d+)\)\. Please set it to a value "
                            r"<= (\d+)", str(err))
        if largest:
            raise UserError(f"vocab size {largest.group(1)} is too large for this corpus: its "
                            f"sample yields at most {largest.group(2)} pieces; use "
                            f"{named.vocab_size} {largest.group(2)} or less, or give more "
                            "text") from None
        smallest = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", str(err))
        if smallest:
            coverage = named.character_coverage
            raise UserError(f"vocab size {smallest.group(1)} cannot hold the {smallest.group(2)} "
                            f"characters and special pieces it must cover; use a "
                            f"{named.vocab_size} above {smallest.group(2)}"
                            + (f", or a lower {coverage}" if coverage else "")) from None
        raise


def _then(items: Iterator[T], done: Callable[[], None]) -> Iterator[T]:
    """``items``, then ``done()`` once they are all taken."""
    yield from items
    done()


def _write_model(model: bytes, prefix: Path) -> Path:
    """PREFIX.vocab (piece and score a line, as sentencepiece writes it) and PREFIX.model,
    published together: both complete under temporary names first, so a failure (a full disk)
    leaves neither a new .vocab beside an old .model nor one without the other."""
    try:
        prefix.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise write_error(err, prefix.parent) from None
    for suffix in (".vocab", ".model"):
        sweep_stale(f"{prefix}{suffix}")
    processor = spm.SentencePieceProcessor(model_proto=model)
    vocab = "".join(f"{processor.id_to_piece(i)}\t{processor.get_score(i):g}\n"
                    for i in range(processor.vocab_size()))
    publish_files({Path(f"{prefix}.vocab"): vocab.encode("utf-8"),
                   Path(f"{prefix}.model"): model})
    return Path(f"{prefix}.model")

"""Raw corpus -> megatron-core indexed datasets, one per language, in Megatron's conventions.

Outputs are named ``PREFIX_<lang>_<key>_sentence`` with sentence splitting (one item per
sentence, which megatron-core's masked datasets expect) or ``PREFIX_<lang>_<key>_document``
without (one item per document). Either way one input record is one document, and each item's
tokens are exactly ``sp.encode(item_text)``.

The input is read as a stream of raw lines by this process, cut into chunks of about
``chunk_bytes``, and parsed, split and tokenized by ``workers`` processes (this process reads
and writes for all of them, so it does no more per line than it must); a bounded number of
chunks is in flight and results are written in input order, so memory is flat in the corpus
size and any worker count writes the same bytes. Outputs are committed only when complete
(``indexed_writer``); an error, Ctrl-C or SIGTERM leaves no output at the final names.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Literal, Sequence

import numpy as np
from nltk.tokenize.punkt import PunktParameters

from megatron_seqpt.data.indexed_writer import IndexedOutputs, token_dtype
from megatron_seqpt.errors import UserError
from megatron_seqpt.runtime.ordered_workers import OrderedWorkers
from megatron_seqpt.text.corpus import (
    ByteProgress,
    CorpusError,
    ReadOptions,
    Record,
    RecordSource,
    Skips,
    check_inputs,
)
from megatron_seqpt.text.sentences import (
    MAX_PARAGRAPH_CHARS,
    LanguageSurvey,
    SentenceSplitter,
    learn_splitters,
    merge_surveys,
    survey_inputs,
    survey_languages,
)
from megatron_seqpt.tokenizer.flat_encoding import FlatEncoder
from megatron_seqpt.tokenizer.sentencepiece_tokenizer import load_processor
from megatron_seqpt.tokenizer.special_tokens import EOS_ID

DEFAULT_CHUNK_BYTES = 1 << 20
# Characters of text per batch of items handed to sentencepiece: small enough that a chunk
# makes one or more (they overlap with splitting), large enough that the two threads seldom
# hand work over. Sentence mode, one worker, steady rate over sentencepiece's (2 runs each):
# 50 MB of the default corpus 0.65-0.69 at 256,000, 0.78-0.85 at 512,000, 0.79-0.82 at
# 1,000,000; 14 MB of real text (fortunes) 0.49-0.52, 0.54-0.57, 0.55-0.56.
OVERLAP_CHARS = 512_000
# The interpreter while preprocessing. Python's thread switch interval (default 5 ms):
# sentencepiece's thread waits that long for the GIL each time it needs it back from the
# splitting thread; measured, its encoding ran at 0.4 of its own speed beside a busy thread at
# 5 ms, at full speed at 0.2 ms. The garbage collector's first threshold (default 700 new
# containers): the encoding makes a list per item, Punkt an object per word, and the
# collections they set off took a fifth of a sentence-mode run (50 MB: encoding 2.70 s, 2.14 s
# at 50,000; learning Punkt 2.1 s, 1.4 s).
GIL_SWITCH_SECONDS = 0.0002
GC_FIRST_THRESHOLD = 50_000


def dataset_prefix(output_prefix: str | Path, lang: str, key: str, split_sentences: bool) -> str:
    """Megatron's output name for one language and JSON key."""
    return f"{output_prefix}_{lang}_{key}_{'sentence' if split_sentences else 'document'}"


@dataclass
class DatasetSummary:
    """What one output dataset holds."""

    lang: str
    key: str
    prefix: str
    documents: int = 0
    # Items: sentences, or documents again without sentence splitting.
    sentences: int = 0
    tokens: int = 0


@dataclass
class PreprocessSummary:
    """Per-dataset counts, the records left out and why, and the speed of the run."""

    datasets: list[DatasetSummary]
    skips: Skips
    input_bytes: int
    seconds: float
    workers: int
    # Part of ``seconds`` spent learning sentence splitting (a cost per language, not per byte).
    punkt_seconds: float = 0.0
    # Paragraphs longer than MAX_PARAGRAPH_CHARS, cut into windows before sentence splitting.
    cut_paragraphs: int = 0

    def prefixes(self, key: str = "text") -> dict[str, str]:
        """Language -> dataset prefix for one JSON key."""
        return {d.lang: d.prefix for d in self.datasets if d.key == key}

    def table(self) -> str:
        tokens = sum(d.tokens for d in self.datasets)
        seconds = max(self.seconds, 1e-9)
        lines = [f"{sum(d.documents for d in self.datasets)} documents, {tokens} tokens from "
                 f"{self.input_bytes / 1e6:.1f} MB in {self.seconds:.1f} s with {self.workers} "
                 f"worker(s): {self.input_bytes / 1e6 / seconds:.2f} MB/s, "
                 f"{tokens / seconds:,.0f} tokens/s"
                 + (f" (learning sentence splitting: {self.punkt_seconds:.1f} s)"
                    if self.punkt_seconds else ""),
                 f"{'lang':<8} {'key':<8} {'documents':>10} {'items':>10} {'tokens':>12}  prefix"]
        lines += [f"{d.lang:<8} {d.key:<8} {d.documents:>10} {d.sentences:>10} {d.tokens:>12}  "
                  f"{d.prefix}" for d in self.datasets]
        lines.append(f"skipped records: {self.skips.describe()}")
        if self.cut_paragraphs:
            lines.append(f"{self.cut_paragraphs} paragraph(s) longer than "
                         f"{MAX_PARAGRAPH_CHARS:,} characters were cut at sentence ends (else "
                         "spaces) into pieces of at most that length before sentence splitting")
        return "\n".join(lines)


def default_workers(inputs: Sequence[Path]) -> int:
    """One process for a small corpus (a pool would cost more than it saves), else the cores."""
    if sum(p.stat().st_size for p in inputs) < 4 * DEFAULT_CHUNK_BYTES:
        return 1
    return max(1, min(os.cpu_count() or 1, 16))


# A chunk's lines from one input file: the file, and (line number, raw line) pairs.
_Part = tuple[RecordSource, list[tuple[int, bytes]]]


@dataclass
class _Chunk:
    """Raw lines on their way to a worker, which parses them; one part per input file it
    spans (small files share a chunk)."""

    parts: list[_Part] = field(default_factory=list)
    nbytes: int = 0

    def payload(self) -> list[_Part]:
        return self.parts


@dataclass
class _Encoded:
    """A chunk's tokens: all items concatenated, each item's length, items per document; and
    its documents' (language, part, line) and the records left out (``on_error="skip"``) with
    their part."""

    tokens: np.ndarray
    lengths: np.ndarray
    items: list[int]
    # Paragraphs too long for sentence splitting in one piece (cut into windows).
    cut_paragraphs: int = 0
    documents: list[tuple[str, int, int]] = field(default_factory=list)
    skipped: list[tuple[int, CorpusError]] = field(default_factory=list)


@dataclass(frozen=True)
class _EncoderSettings:
    """What a worker needs to encode chunks (sent to each worker once)."""

    model_file: str
    # Punkt parameters per language; None: no sentence splitting.
    punkt: dict[str, PunktParameters | None] | None
    append_eod: bool
    dtype: type[np.number]
    read_options: ReadOptions = ReadOptions()


@dataclass
class _Submitted:
    """A chunk split into items and handed to the encoding thread, not yet collected."""

    per_document: list[int]
    batches: list[Future]
    cut_paragraphs: int
    documents: list[tuple[str, int, int]] = field(default_factory=list)
    skipped: list[tuple[int, CorpusError]] = field(default_factory=list)


class _ChunkEncoder:
    """Splits (optionally) and tokenizes chunks; one per worker process.

    Its sentencepiece calls run in a thread of their own, in batches of about OVERLAP_CHARS:
    sentencepiece releases the GIL while it encodes, so a batch is encoded while this thread
    splits the next, and, where the caller submits a chunk before collecting the previous one,
    while it reads and writes too. A batch's texts of each language are split together
    (``SentenceSplitter.split_many``)."""

    def __init__(self, settings: _EncoderSettings):
        self.options = settings.read_options
        # One call per batch, its ids as arrays: the GIL is taken once per batch, briefly, so
        # the splitting thread keeps running meanwhile.
        self._encode = FlatEncoder(load_processor(Path(settings.model_file)))
        self.splitters = ({lang: SentenceSplitter(lang, p) for lang, p in settings.punkt.items()}
                          if settings.punkt is not None else None)
        self.append_eod = settings.append_eod
        self.dtype = settings.dtype
        self._encoding = ThreadPoolExecutor(1, thread_name_prefix="encode")

    def close(self) -> None:
        self._encoding.shutdown(wait=True, cancel_futures=True)

    def __call__(self, payload: list[_Part]) -> _Encoded:
        return self.collect(self.submit(payload))

    def submit(self, payload: list[_Part]) -> _Submitted:
        """Parse the chunk's lines, split their texts (with sentence splitting) and queue
        their encoding. A bad record raises (``on_error="fail"``) or is kept for the report."""
        cut_before = self._cut_paragraphs()
        per_document: list[int] = []
        documents, skipped = [], []
        batches, langs, texts, size = [], [], [], 0
        for part, record in self._parsed(payload, skipped):
            documents.append((record.lang, part, record.line))
            for text in record.texts:
                langs.append(record.lang)
                texts.append(text)
                size += len(text)
            if size >= OVERLAP_CHARS:
                batches.append(self._submit_batch(langs, texts, per_document))
                langs, texts, size = [], [], 0
        batches.append(self._submit_batch(langs, texts, per_document))
        return _Submitted(per_document, batches, self._cut_paragraphs() - cut_before, documents,
                          skipped)

    def _submit_batch(self, langs: list[str], texts: list[str], per_document: list[int]
                      ) -> Future:
        """Queue the encoding of these texts' items (each text's sentences, or the text),
        adding each text's number of items to ``per_document``."""
        if self.splitters is None:
            per_document += [1] * len(texts)
            return self._encoding.submit(self._encode, texts)
        items, counts = _split_by_language(self.splitters, langs, texts)
        per_document += counts
        return self._encoding.submit(self._encode, items)

    def _parsed(self, payload: list[_Part], skipped: list[tuple[int, CorpusError]]
                ) -> Iterator[tuple[int, Record]]:
        """The chunk's good records with their part; a bad one raises (``on_error="fail"``) or
        goes to ``skipped``."""
        for part, (source, lines) in enumerate(payload):
            for record in source.records(lines, self.options,
                                         lambda error, part=part: skipped.append((part, error))):
                yield part, record

    def collect(self, submitted: _Submitted) -> _Encoded:
        """The chunk's tokens, once its batches are encoded (array operations, not a loop
        over items: this thread is the busier of the two)."""
        encoded = [batch.result() for batch in submitted.batches]
        lengths = np.concatenate([lengths for lengths, _ in encoded])
        tokens = np.concatenate([ids for _, ids in encoded]).astype(self.dtype, copy=False)
        per_document = submitted.per_document
        document_of = np.repeat(np.arange(len(per_document)), per_document)
        # Items that normalise to nothing (e.g. only zero-width characters) are dropped.
        kept = lengths > 0
        lengths, document_of = lengths[kept], document_of[kept]
        items = np.bincount(document_of, minlength=len(per_document))
        if self.append_eod and len(lengths):
            last = np.cumsum(items)[items > 0] - 1  # each document's last item
            tokens = np.insert(tokens, np.cumsum(lengths)[last], EOS_ID)
            lengths[last] += 1
        return _Encoded(tokens, lengths, items.tolist(), submitted.cut_paragraphs,
                        submitted.documents, submitted.skipped)

    def _cut_paragraphs(self) -> int:
        return sum(s.cut_paragraphs for s in self.splitters.values()) if self.splitters else 0


def _split_by_language(splitters: dict[str, SentenceSplitter], langs: list[str],
                       texts: list[str]) -> tuple[list[str], list[int]]:
    """The sentences of the texts in order, each split by its language's splitter, and how
    many each has: the texts of each language are split together (``split_many``)."""
    by_lang: dict[str, list[int]] = {}
    for index, lang in enumerate(langs):
        by_lang.setdefault(lang, []).append(index)
    if len(by_lang) <= 1:
        return splitters[langs[0]].split_many(texts) if texts else ([], [])
    sentences, text_of = [], []
    for lang, indices in by_lang.items():
        split, counts = splitters[lang].split_many([texts[i] for i in indices])
        sentences += split
        text_of.append(np.repeat(indices, counts))
    text_of = np.concatenate(text_of)
    order = np.argsort(text_of, kind="stable")
    return [sentences[i] for i in order.tolist()], np.bincount(
        text_of, minlength=len(texts)).tolist()


def _one_ahead(encoder: _ChunkEncoder, chunks: Iterable[_Chunk]
               ) -> Iterator[tuple[_Chunk, _Encoded]]:
    """(chunk, encoding) in order, each chunk submitted before the previous one is collected:
    its encoding overlaps with the caller's writing of the previous chunk and the reading of
    the next."""
    previous = None
    for chunk in chunks:
        submitted = encoder.submit(chunk.payload())
        if previous is not None:
            yield previous[0], encoder.collect(previous[1])
        previous = chunk, submitted
    if previous is not None:
        yield previous[0], encoder.collect(previous[1])


_worker_encoder: _ChunkEncoder | None = None


def _start_worker(settings: _EncoderSettings) -> None:
    global _worker_encoder
    _tune_interpreter()
    _worker_encoder = _ChunkEncoder(settings)


def _encode_in_worker(payload: list[_Part]) -> _Encoded:
    return _worker_encoder(payload)


def preprocess(inputs: Sequence[str | Path], output_prefix: str | Path,
               tokenizer_model: str | Path, *, workers: int = 1, split_sentences: bool = False,
               json_keys: Sequence[str] = ("text",), lang_key: str = "lang",
               lang: str | None = None, on_error: Literal["fail", "skip"] = "fail",
               append_eod: bool = False, punkt_dir: str | Path | None = None,
               chunk_bytes: int = DEFAULT_CHUNK_BYTES, progress: bool = True,
               ) -> PreprocessSummary:
    """Tokenize ``inputs`` into indexed datasets per language; see the module docstring.

    With ``split_sentences`` a first pass over the input learns Punkt parameters per language
    (from a bounded sample; ``punkt_dir`` provides them instead where it has them).
    ``append_eod`` ends each document's last item with </s>, as Megatron's --append-eod does.
    """
    if workers < 1:
        raise UserError(f"workers must be at least 1, got {workers}")
    options = ReadOptions(tuple(json_keys), lang_key, lang, on_error)
    inputs = check_inputs(inputs)
    model_file = Path(tokenizer_model).expanduser()
    if not model_file.is_file():
        raise UserError(f"tokenizer model {model_file} does not exist; train one with "
                        "tools/train_tokenizer.py (seqpt train-tokenizer)")
    started = time.perf_counter()
    dtype = token_dtype(load_processor(Path(model_file)).vocab_size())
    with _sigterm_as_interrupt(), _tuned_interpreter():
        punkt = (_learn_punkt(inputs, options, punkt_dir, workers, chunk_bytes, progress)
                 if split_sentences else None)
        punkt_seconds = time.perf_counter() - started if split_sentences else 0.0
        settings = _EncoderSettings(str(model_file), punkt, append_eod, dtype, options)
        datasets, skips, cut = _tokenize(inputs, options, output_prefix, split_sentences,
                                         settings, workers, chunk_bytes, progress)
    summary = PreprocessSummary(datasets, skips, sum(p.stat().st_size for p in inputs),
                                time.perf_counter() - started, workers, punkt_seconds, cut)
    if progress:
        print(summary.table(), file=sys.stderr)
    return summary


def _tokenize(inputs: Sequence[Path], options: ReadOptions, output_prefix: str | Path,
              split_sentences: bool, settings: _EncoderSettings, workers: int,
              chunk_bytes: int, progress: bool) -> tuple[list[DatasetSummary], Skips, int]:
    """The main pass: read, encode in workers, write; commit all outputs or none. Returns the
    datasets, the skipped records and the number of paragraphs cut into windows."""
    skips = Skips()
    cut = 0
    datasets: dict[tuple[str, str], DatasetSummary] = {}
    outputs = IndexedOutputs(settings.dtype)
    started = time.perf_counter()
    try:
        with _encoding(workers, settings) as encode, \
                ByteProgress(inputs, "preprocessing", progress) as bar:
            for chunk, encoded in encode(_chunks(inputs, options, chunk_bytes)):
                _write(chunk, encoded, output_prefix, split_sentences, options, skips,
                       outputs, datasets)
                cut += encoded.cut_paragraphs
                tokens = sum(d.tokens for d in datasets.values())
                bar.bar.update(chunk.nbytes)
                bar.bar.set_postfix_str(f"{sum(d.documents for d in datasets.values())} docs, "
                                        f"{tokens / (time.perf_counter() - started):,.0f} "
                                        "tokens/s", refresh=False)
        if not datasets:
            raise UserError(f"no documents in {', '.join(map(str, inputs))} "
                            f"(skipped records: {skips.describe()})")
        outputs.commit()
    except BaseException:
        outputs.discard()
        raise
    return sorted(datasets.values(), key=lambda d: (d.lang, d.key)), skips, cut


def _learn_punkt(inputs: Sequence[Path], options: ReadOptions, punkt_dir: str | Path | None,
                 workers: int, chunk_bytes: int, progress: bool
                 ) -> dict[str, PunktParameters | None]:
    """The first pass: a bounded text sample per language, and Punkt parameters from it. With
    several workers they parse the input for the samples (one process reading and parsing
    it, ~25 MB/s, would hold up a run whose main pass many workers share) and learn the
    languages in parallel."""
    if workers == 1:
        surveys = survey_inputs(inputs, options, progress=progress)
        return learn_splitters({lang: s.sample for lang, s in surveys.items()}, punkt_dir)
    with OrderedWorkers(workers, _tune_interpreter, name="punkt-worker") as pool, \
            ByteProgress(inputs, "surveying languages", progress) as bar:
        def surveyed_chunks() -> Iterator[dict[str, LanguageSurvey]]:
            for chunk, survey in pool.imap(_survey_chunk, _chunks(inputs, options, chunk_bytes),
                                           lambda chunk: (chunk.parts, options)):
                bar.bar.update(chunk.nbytes)
                yield survey

        surveys = merge_surveys(surveyed_chunks())
        return learn_splitters({lang: s.sample for lang, s in surveys.items()}, punkt_dir,
                               pool.map)


def _survey_chunk(task: tuple[list[_Part], ReadOptions]) -> dict[str, LanguageSurvey]:
    """A chunk's survey, in a worker; bad records are the main pass's to raise or count."""
    parts, options = task
    return survey_languages((record.lang, text) for source, lines in parts
                            for record in source.records(lines, options, lambda error: None)
                            for text in record.texts)


def _chunks(inputs: Sequence[Path], options: ReadOptions, chunk_bytes: int
            ) -> Iterator[_Chunk]:
    """The input files' raw lines in chunks of about ``chunk_bytes``: no parsing here."""
    chunk = _Chunk()
    for path in inputs:
        source = RecordSource.of(path, options)
        lines: list[tuple[int, bytes]] = []
        chunk.parts.append((source, lines))
        with open(path, "rb") as file:
            for number, raw in enumerate(file, 1):
                lines.append((number, raw))
                chunk.nbytes += len(raw)
                if chunk.nbytes >= chunk_bytes:
                    yield chunk
                    lines = []
                    chunk = _Chunk([(source, lines)])
    if chunk.nbytes:
        yield chunk


def _write(chunk: _Chunk, encoded: _Encoded, output_prefix: str | Path, split_sentences: bool,
           options: ReadOptions, skips: Skips, outputs: IndexedOutputs,
           datasets: dict[tuple[str, str], DatasetSummary]) -> None:
    """Append a chunk's documents to their datasets (each in input order) with one write per
    dataset, and count the records left out in input order. A call per document cost as much
    as parsing the records, on short documents."""
    skipped = list(encoded.skipped)
    # The dataset of each (document, key) in order, as an index into ``targets``; -1 for one
    # without tokens, which holds no items.
    targets: list[DatasetSummary] = []
    slots: dict[tuple[str, str], int] = {}
    slot_of_document = []
    counts = iter(encoded.items)
    for lang, part, line in encoded.documents:
        for key in options.json_keys:
            if not next(counts):
                error = CorpusError(str(chunk.parts[part][0].path), line, "empty_document",
                                    f"key '{key}' holds no text the tokenizer keeps (only "
                                    "characters it normalises away)")
                if options.on_error == "fail":
                    raise error
                skipped.append((part, error))
                slot_of_document.append(-1)
                continue
            slot = slots.get((lang, key))
            if slot is None:
                summary = datasets.get((lang, key))
                if summary is None:
                    summary = datasets[lang, key] = DatasetSummary(
                        lang, key, dataset_prefix(output_prefix, lang, key, split_sentences))
                slot = slots[lang, key] = len(targets)
                targets.append(summary)
            slot_of_document.append(slot)
    items = np.asarray(encoded.items, dtype=np.int64)
    documents = np.asarray(slot_of_document, dtype=np.int64)
    for slot, tokens, lengths, per_document in _grouped(documents, items, encoded.lengths,
                                                        encoded.tokens, len(targets)):
        summary = targets[slot]
        outputs.add_documents(summary.prefix, tokens, lengths, per_document)
        summary.documents += len(per_document)
        summary.sentences += len(lengths)
        summary.tokens += len(tokens)
    for _, error in sorted(skipped, key=lambda skip: (skip[0], skip[1].line)):
        skips.add(error)


def _grouped(slots: np.ndarray, items: np.ndarray, lengths: np.ndarray, tokens: np.ndarray,
             count: int) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """(slot, its tokens, its item lengths, its items per document) for each slot that the
    documents (``slots``, each with ``items`` items of ``lengths``) go to, order kept within."""
    if count == 1:
        yield 0, tokens, lengths, items[slots == 0]
        return
    item_slots = np.repeat(slots, items)
    # A stable sort by slot keeps each slot's documents in order (a radix sort on 16 bits).
    key_type = np.int16 if count < 2**15 else np.int64
    token_slots = np.repeat(item_slots, lengths).astype(key_type)
    token_order = np.argsort(token_slots, kind="stable")
    item_order = np.argsort(item_slots.astype(key_type), kind="stable")
    token_ends = np.cumsum(np.bincount(token_slots, minlength=count))
    item_ends = np.cumsum(np.bincount(item_slots, minlength=count))
    for slot in range(count):
        token_start = token_ends[slot - 1] if slot else 0
        item_start = item_ends[slot - 1] if slot else 0
        yield (slot, tokens[token_order[token_start:token_ends[slot]]],
               lengths[item_order[item_start:item_ends[slot]]], items[slots == slot])


@contextlib.contextmanager
def _encoding(workers: int, settings: _EncoderSettings
              ) -> Iterator[Callable[[Iterable[_Chunk]], Iterator[tuple[_Chunk, _Encoded]]]]:
    """A function mapping chunks to their encodings in order: here with one worker (one chunk
    ahead, ``_one_ahead``), else in worker processes with at most two chunks each in flight;
    a worker that dies fails the run (``runtime.ordered_workers``) rather than hanging it."""
    if workers == 1:
        encoder = _ChunkEncoder(settings)
        try:
            yield lambda chunks: _one_ahead(encoder, chunks)
        finally:
            encoder.close()
        return

    with OrderedWorkers(workers, _start_worker, (settings,), name="preprocess-worker") as pool:
        yield lambda chunks: pool.imap(_encode_in_worker, chunks, _Chunk.payload)


def _tune_interpreter() -> tuple[float, tuple[int, int, int]]:
    """GIL_SWITCH_SECONDS and GC_FIRST_THRESHOLD in this process; returns what they were."""
    previous = sys.getswitchinterval(), gc.get_threshold()
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    gc.set_threshold(GC_FIRST_THRESHOLD, *previous[1][1:])
    return previous


@contextlib.contextmanager
def _tuned_interpreter() -> Iterator[None]:
    """The interpreter tuned while the block runs (``_tune_interpreter``), as it was after."""
    switch_interval, thresholds = _tune_interpreter()
    try:
        yield
    finally:
        sys.setswitchinterval(switch_interval)
        gc.set_threshold(*thresholds)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (what schedulers send) raises KeyboardInterrupt, so cleanup runs as for Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

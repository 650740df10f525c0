"""Raw corpus -> megatron-core indexed datasets, one per language, in Megatron's conventions.

Outputs are named ``PREFIX_<lang>_<key>_sentence`` with sentence splitting (one item per
sentence, which megatron-core's masked datasets expect) or ``PREFIX_<lang>_<key>_document``
without (one item per document). Either way one input record is one document, and each item's
tokens are exactly ``sp.encode(item_text)``.

The input is read as a stream by this process, cut into chunks of about ``chunk_bytes``, and
split and tokenized by ``workers`` processes; a bounded number of chunks is in flight and results
are written in input order, so memory is flat in the corpus size and any worker count writes the
same bytes. Outputs are committed only when complete (``indexed_writer``); an error, Ctrl-C or
SIGTERM leaves no output at the final names.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import chain
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
    Skips,
    check_inputs,
    read_records,
)
from megatron_seqpt.text.sentences import (
    MAX_PARAGRAPH_CHARS,
    SentenceSplitter,
    learn_splitters,
    survey_inputs,
)
from megatron_seqpt.tokenizer.sentencepiece_tokenizer import load_processor
from megatron_seqpt.tokenizer.special_tokens import EOS_ID

DEFAULT_CHUNK_BYTES = 1 << 20
# With sentence splitting, characters of text per batch of sentences handed to sentencepiece:
# small enough that a chunk makes several (they overlap with splitting), large enough that a
# batch call's fixed cost does not count.
OVERLAP_CHARS = 64_000


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


@dataclass
class _Chunk:
    """Records on their way to a worker: where each came from, and what the worker needs."""

    records: list[Record] = field(default_factory=list)
    nbytes: int = 0

    def payload(self) -> list[tuple[str, tuple[str, ...]]]:
        return [(record.lang, record.texts) for record in self.records]


@dataclass
class _Encoded:
    """A chunk's tokens: all items concatenated, each item's length, items per document."""

    tokens: np.ndarray
    lengths: np.ndarray
    items: list[int]
    # Paragraphs too long for sentence splitting in one piece (cut into windows).
    cut_paragraphs: int = 0


@dataclass(frozen=True)
class _EncoderSettings:
    """What a worker needs to encode chunks (sent to each worker once)."""

    model_file: str
    # Punkt parameters per language; None: no sentence splitting.
    punkt: dict[str, PunktParameters | None] | None
    append_eod: bool
    dtype: type[np.number]


class _ChunkEncoder:
    """Splits (optionally) and tokenizes a chunk; one per worker process."""

    def __init__(self, settings: _EncoderSettings):
        self.sp = load_processor(Path(settings.model_file))
        self.splitters = ({lang: SentenceSplitter(lang, p) for lang, p in settings.punkt.items()}
                          if settings.punkt is not None else None)
        self.append_eod = settings.append_eod
        self.dtype = settings.dtype

    def __call__(self, payload: list[tuple[str, tuple[str, ...]]]) -> _Encoded:
        cut_before = self._cut_paragraphs()
        if self.splitters:
            per_document, ids = self._split_and_encode(payload)
        else:
            texts = [text for _, record_texts in payload for text in record_texts]
            per_document, ids = [1] * len(texts), self._encode(texts)
        items, start = [], 0
        for count in per_document:
            # Items that normalise to nothing (e.g. only zero-width characters) are dropped.
            document = [item for item in ids[start:start + count] if len(item)]
            if document and self.append_eod:
                document[-1] = np.append(document[-1], EOS_ID)
            items.append(document)
            start += count
        flat = list(chain.from_iterable(items))
        lengths = np.fromiter(map(len, flat), dtype=np.int64, count=len(flat))
        tokens = np.concatenate(flat).astype(self.dtype) if flat else np.empty(0, self.dtype)
        return _Encoded(tokens, lengths, [len(document) for document in items],
                        self._cut_paragraphs() - cut_before)

    def _encode(self, texts: list[str]) -> list[np.ndarray]:
        # One batch call; numpy output keeps per-token work out of Python.
        return self.sp.encode(texts, num_threads=1, out_type="numpy") if texts else []

    def _split_and_encode(self, payload: list[tuple[str, tuple[str, ...]]]
                          ) -> tuple[list[int], list[np.ndarray]]:
        """(sentences per document, their ids). Sentences go to sentencepiece in batches of
        about OVERLAP_CHARS, each encoded in a second thread while this one splits the next:
        sentencepiece releases the GIL while it encodes, so the two overlap."""
        per_document: list[int] = []
        pending, batch, size = [], [], 0
        with ThreadPoolExecutor(1, thread_name_prefix="encode") as encoding:
            for lang, record_texts in payload:
                splitter = self.splitters[lang]
                for text in record_texts:
                    sentences = splitter.split(text)
                    batch.extend(sentences)
                    per_document.append(len(sentences))
                    size += len(text)
                    if size >= OVERLAP_CHARS:
                        pending.append(encoding.submit(self._encode, batch))
                        batch, size = [], 0
            pending.append(encoding.submit(self._encode, batch))
            return per_document, [ids for done in pending for ids in done.result()]

    def _cut_paragraphs(self) -> int:
        return sum(s.cut_paragraphs for s in self.splitters.values()) if self.splitters else 0


_worker_encoder: _ChunkEncoder | None = None


def _start_worker(settings: _EncoderSettings) -> None:
    global _worker_encoder
    _worker_encoder = _ChunkEncoder(settings)


def _encode_in_worker(payload: list[tuple[str, tuple[str, ...]]]) -> _Encoded:
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
    with _sigterm_as_interrupt():
        punkt = (_learn_punkt(inputs, options, punkt_dir, workers, progress) if split_sentences
                 else None)
        punkt_seconds = time.perf_counter() - started if split_sentences else 0.0
        settings = _EncoderSettings(str(model_file), punkt, append_eod, dtype)
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
            for chunk, encoded in encode(_chunks(read_records(inputs, options, skips),
                                                 chunk_bytes)):
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
                 workers: int, progress: bool) -> dict[str, PunktParameters | None]:
    """The first pass: a bounded text sample per language, and Punkt parameters from it."""
    surveys = survey_inputs(inputs, options, progress=progress)
    samples = {lang: survey.sample for lang, survey in surveys.items()}
    if workers == 1:
        return learn_splitters(samples, punkt_dir)
    with OrderedWorkers(workers, name="punkt-worker") as pool:
        return learn_splitters(samples, punkt_dir, pool.map)


def _chunks(records: Iterable[Record], chunk_bytes: int) -> Iterator[_Chunk]:
    chunk = _Chunk()
    for record in records:
        chunk.records.append(record)
        chunk.nbytes += record.nbytes
        if chunk.nbytes >= chunk_bytes:
            yield chunk
            chunk = _Chunk()
    if chunk.records:
        yield chunk


def _write(chunk: _Chunk, encoded: _Encoded, output_prefix: str | Path, split_sentences: bool,
           options: ReadOptions, skips: Skips, outputs: IndexedOutputs,
           datasets: dict[tuple[str, str], DatasetSummary]) -> None:
    """Append a chunk's documents, in input order, to their language's dataset."""
    documents = iter(encoded.items)
    item, token = 0, 0
    for record in chunk.records:
        for key in options.json_keys:
            count = next(documents)
            if not count:
                error = CorpusError(record.path, record.line, "empty_document",
                                    f"key '{key}' holds no text the tokenizer keeps (only "
                                    "characters it normalises away)")
                if options.on_error == "fail":
                    raise error
                skips.add(error)
                continue
            lengths = encoded.lengths[item:item + count]
            size = int(lengths.sum())
            summary = datasets.get((record.lang, key))
            if summary is None:
                summary = datasets[record.lang, key] = DatasetSummary(
                    record.lang, key, dataset_prefix(output_prefix, record.lang, key,
                                                     split_sentences))
            outputs.add_document(summary.prefix, encoded.tokens[token:token + size],
                                 lengths.tolist())
            summary.documents += 1
            summary.sentences += count
            summary.tokens += size
            item += count
            token += size


@contextlib.contextmanager
def _encoding(workers: int, settings: _EncoderSettings
              ) -> Iterator[Callable[[Iterable[_Chunk]], Iterator[tuple[_Chunk, _Encoded]]]]:
    """A function mapping chunks to their encodings in order: here with one worker, else in
    worker processes with at most two chunks each in flight; a worker that dies fails the run
    (``runtime.ordered_workers``) rather than hanging it."""
    if workers == 1:
        encoder = _ChunkEncoder(settings)
        yield lambda chunks: ((chunk, encoder(chunk.payload())) for chunk in chunks)
        return

    with OrderedWorkers(workers, _start_worker, (settings,), name="preprocess-worker") as pool:
        yield lambda chunks: pool.imap(_encode_in_worker, chunks, _Chunk.payload)


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

"""Encoding a chunk of raw corpus lines, in a worker process or in this one: parse the records,
split their texts into sentences (optionally), tokenize with sentencepiece.

A worker is sent a task (``Task``): a chunk's raw lines (``Chunk``), or records that waited for
their language's Punkt parameters (``Released``); it returns their tokens grouped by the dataset
they go to and, with sentence splitting, the records of languages it has no parameters for
yet, unencoded (``Encoded``; ``punkt_on_the_way``). The process that reads and writes for all
workers does no work per line or per document: it reads blocks of whole lines and appends each
dataset's arrays. ``encoders`` gives worker processes or this process behind one interface,
results in the order of the tasks.
"""

from __future__ import annotations

import contextlib
import gc
import io
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import numpy as np

from megatron_seqpt.data.punkt_on_the_way import RecordColumns, load_learned
from megatron_seqpt.runtime.ordered_workers import OrderedWorkers
from megatron_seqpt.text.corpus import CorpusError, ReadOptions, Record, RecordSource
from megatron_seqpt.text.sentences import SentenceSplitter, load_punkt_dir, uses_punkt
from megatron_seqpt.tokenizer.flat_encoding import FlatEncoder
from megatron_seqpt.tokenizer.sentencepiece_tokenizer import load_processor
from megatron_seqpt.tokenizer.special_tokens import EOS_ID

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


# A chunk's lines from one input file: the file, the number of the first line, and the lines as
# read, each with its line break (but maybe the file's last line).
Part = tuple[RecordSource, int, bytes]


@dataclass
class Chunk:
    """Raw lines on their way to a worker, which parses them; one part per input file it
    spans (small files share a chunk)."""

    parts: list[Part] = field(default_factory=list)
    nbytes: int = 0

    def paths(self) -> list[str]:
        return [str(source.path) for source, _, _ in self.parts]

    def task(self, learned: dict[str, str]) -> Task:
        return Task(learned, self.paths(), parts=self.parts)


@dataclass
class Released:
    """Parsed records whose language was learned after they were read, on their way to be
    encoded like a chunk (``punkt_on_the_way``); a part per file they come from."""

    records: list[RecordColumns]
    # Input bytes to count as done when written: none, they were counted with the chunks they
    # came in.
    nbytes = 0

    def paths(self) -> list[str]:
        return list(dict.fromkeys(chain.from_iterable(c.paths for c in self.records)))

    def task(self, learned: dict[str, str]) -> Task:
        return Task(learned, self.paths(), records=self.records)


@dataclass
class Task:
    """What a worker is sent: a chunk's raw lines, or parsed records; the file of each part
    (of the lines, or that the records come from); and the parameter file of each language
    learned so far (``PunktOnTheWay.files``)."""

    learned: dict[str, str]
    paths: list[str]
    parts: list[Part] | None = None
    records: list[RecordColumns] | None = None


@dataclass
class DatasetPart:
    """A chunk's documents that go to one dataset (a language and a JSON key), in input
    order: their items' tokens concatenated, each item's length, each document's items."""

    lang: str
    key: str
    tokens: np.ndarray
    lengths: np.ndarray
    items: np.ndarray


@dataclass
class Encoded:
    """A chunk's tokens, a part per dataset they go to; and the records left out
    (``on_error="skip"``), in input order."""

    datasets: list[DatasetPart]
    # Paragraphs too long for sentence splitting in one piece (cut into windows).
    cut_paragraphs: int = 0
    skipped: list[CorpusError] = field(default_factory=list)
    # Records of languages not learned yet, not encoded (``punkt_on_the_way``).
    deferred: list[RecordColumns] = field(default_factory=list)
    # Time sentencepiece spent encoding the chunk (its thread's busy time).
    encode_seconds: float = 0.0


@dataclass(frozen=True)
class EncoderSettings:
    """What a worker needs to encode chunks (sent to each worker once)."""

    model_file: str
    split_sentences: bool
    append_eod: bool
    dtype: type[np.number]
    read_options: ReadOptions = ReadOptions()
    # Punkt parameters to use instead of learning, where this directory has a language's.
    punkt_dir: str | None = None


@dataclass
class _Submitted:
    """A chunk split into items and handed to the encoding thread, not yet collected."""

    per_document: list[int]
    batches: list[Future]
    cut_paragraphs: int
    # The file of each part, and each document's (language, part, line).
    paths: list[str]
    documents: list[tuple[str, int, int]]
    skipped: list[tuple[int, CorpusError]] = field(default_factory=list)
    deferred: list[RecordColumns] = field(default_factory=list)


class ChunkEncoder:
    """Splits (optionally) and tokenizes chunks; one per worker process.

    Its sentencepiece calls run in a thread of their own, in batches of about OVERLAP_CHARS:
    sentencepiece releases the GIL while it encodes, so a batch is encoded while this thread
    splits the next, and, where the caller submits a chunk before collecting the previous one,
    while it reads and writes too. A batch's texts of each language are split together
    (``SentenceSplitter.split_many``). With sentence splitting, the records of a language it
    has no Punkt parameters for are handed back unencoded (``punkt_on_the_way``)."""

    def __init__(self, settings: EncoderSettings):
        self.options = settings.read_options
        # One call per batch, its ids as arrays: the GIL is taken once per batch, briefly, so
        # the splitting thread keeps running meanwhile.
        self._encode = FlatEncoder(load_processor(Path(settings.model_file)))
        self.splitters: dict[str, SentenceSplitter] | None = (
            {} if settings.split_sentences else None)
        self.punkt_dir = settings.punkt_dir
        self.append_eod = settings.append_eod
        self.dtype = settings.dtype
        self._encoding = ThreadPoolExecutor(1, thread_name_prefix="encode")

    def close(self) -> None:
        self._encoding.shutdown(wait=True, cancel_futures=True)

    def __call__(self, task: Task) -> Encoded:
        return self.collect(self.submit(task))

    def submit(self, task: Task) -> _Submitted:
        """Parse the task's lines (or take its records), split their texts (with sentence
        splitting) and queue their encoding. A bad record raises (``on_error="fail"``) or is
        kept for the report; a record of a language not learned yet is deferred."""
        skipped: list[tuple[int, CorpusError]] = []
        records = (self._parsed(task.parts, skipped) if task.parts is not None
                   else _with_parts(task.records, task.paths))
        learned = task.learned
        cut_before = self._cut_paragraphs()
        per_document: list[int] = []
        documents, deferred = [], []
        batches, langs, texts, size = [], [], [], 0
        can_split: dict[str, bool] = {}
        for part, record in records:
            if self.splitters is not None:
                known = can_split.get(record.lang)
                if known is None:
                    known = can_split[record.lang] = self._has_splitter(record.lang, learned)
                if not known:
                    deferred.append(record)
                    continue
            documents.append((record.lang, part, record.line))
            for text in record.texts:
                langs.append(record.lang)
                texts.append(text)
                size += len(text)
            if size >= OVERLAP_CHARS:
                batches.append(self._submit_batch(langs, texts, per_document))
                langs, texts, size = [], [], 0
        batches.append(self._submit_batch(langs, texts, per_document))
        return _Submitted(per_document, batches, self._cut_paragraphs() - cut_before,
                          task.paths, documents, skipped, RecordColumns.of(deferred))

    def _has_splitter(self, lang: str, learned: dict[str, str]) -> bool:
        """Whether ``lang`` can be split here, its splitter made on first sight: languages
        written without spaces need no parameters; the others' come from the Punkt directory,
        else from learning (``learned``: the files of the languages learned so far)."""
        if lang in self.splitters:
            return True
        params = None
        if uses_punkt(lang):
            params = load_punkt_dir(self.punkt_dir, lang) if self.punkt_dir else None
            if params is None:
                params = load_learned(learned, lang)
            if params is None:
                return False
        self.splitters[lang] = SentenceSplitter(lang, params)
        return True

    def _submit_batch(self, langs: list[str], texts: list[str], per_document: list[int]
                      ) -> Future:
        """Queue the encoding of these texts' items (each text's sentences, or the text),
        adding each text's number of items to ``per_document``."""
        if self.splitters is None:
            per_document += [1] * len(texts)
            return self._encoding.submit(self._timed_encode, texts)
        items, counts = _split_by_language(self.splitters, langs, texts)
        per_document += counts
        return self._encoding.submit(self._timed_encode, items)

    def _timed_encode(self, items: list[str]) -> tuple[np.ndarray, np.ndarray, float]:
        started = time.perf_counter()
        lengths, ids = self._encode(items)
        return lengths, ids, time.perf_counter() - started

    def _parsed(self, parts: list[Part], skipped: list[tuple[int, CorpusError]]
                ) -> Iterator[tuple[int, Record]]:
        """The chunk's good records with their part; a bad one raises (``on_error="fail"``) or
        goes to ``skipped``."""
        for part, (source, first_line, lines) in enumerate(parts):
            numbered = enumerate(io.BytesIO(lines), first_line)
            for record in source.records(numbered, self.options,
                                         lambda error, part=part: skipped.append((part, error))):
                yield part, record

    def collect(self, submitted: _Submitted) -> Encoded:
        """The chunk's tokens by dataset, once its batches are encoded (array operations, not
        a loop over items: this thread is the busier of the two). A document with no tokens
        (only text the tokenizer normalises away) raises (``on_error="fail"``) or is left out
        and reported."""
        encoded = [batch.result() for batch in submitted.batches]
        lengths = np.concatenate([lengths for lengths, _, _ in encoded])
        tokens = np.concatenate([ids for _, ids, _ in encoded]).astype(self.dtype, copy=False)
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
        skipped = list(submitted.skipped)
        datasets = self._by_dataset(submitted, tokens, lengths, items, skipped)
        skipped.sort(key=lambda skip: (skip[0], skip[1].line))
        return Encoded(datasets, submitted.cut_paragraphs, [error for _, error in skipped],
                       submitted.deferred, sum(seconds for _, _, seconds in encoded))

    def _by_dataset(self, submitted: _Submitted, tokens: np.ndarray, lengths: np.ndarray,
                    items: np.ndarray, skipped: list[tuple[int, CorpusError]]
                    ) -> list[DatasetPart]:
        """The documents' tokens (each text of a record a document, ``items`` items each)
        grouped by dataset, input order kept within; empty ones go to ``skipped`` or raise."""
        keys = self.options.json_keys
        datasets: list[tuple[str, str]] = []
        slots: dict[tuple[str, str], int] = {}
        # Each document's dataset, as an index into ``datasets``; -1 for an empty one.
        slot_of_document = []
        counts = iter(items.tolist())
        for lang, part, line in submitted.documents:
            for key in keys:
                if not next(counts):
                    error = CorpusError(submitted.paths[part], line, "empty_document",
                                        f"key '{key}' holds no text the tokenizer keeps (only "
                                        "characters it normalises away)")
                    if self.options.on_error == "fail":
                        raise error
                    skipped.append((part, error))
                    slot_of_document.append(-1)
                    continue
                slot = slots.get((lang, key))
                if slot is None:
                    slot = slots[lang, key] = len(datasets)
                    datasets.append((lang, key))
                slot_of_document.append(slot)
        documents = np.asarray(slot_of_document, dtype=np.int64)
        return [DatasetPart(*datasets[slot], part_tokens, part_lengths, per_document)
                for slot, part_tokens, part_lengths, per_document
                in _grouped(documents, items, lengths, tokens, len(datasets))]

    def _cut_paragraphs(self) -> int:
        return sum(s.cut_paragraphs for s in self.splitters.values()) if self.splitters else 0


def _with_parts(records: list[RecordColumns], paths: list[str]
                ) -> Iterator[tuple[int, Record]]:
    """The records in order, each with its part: the index of its file in ``paths``."""
    part_of = {path: part for part, path in enumerate(paths)}
    for columns in records:
        for record in columns.records():
            yield part_of[record.path], record


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


_worker_encoder: ChunkEncoder | None = None


def _start_worker(settings: EncoderSettings) -> None:
    global _worker_encoder
    tune_interpreter()
    _worker_encoder = ChunkEncoder(settings)


def encode_in_worker(task: Task) -> Encoded:
    return _worker_encoder(task)


class Encoders(Protocol):
    """Where tasks run, results in the order of the tasks, with ``capacity`` tasks in flight
    to keep them busy: worker processes (``OrderedWorkers``) or ``_InProcess``."""

    capacity: int

    def submit(self, function: Callable[[Any], Any], argument: Any) -> None: ...

    def receive(self) -> Any: ...


class _InProcess:
    """One encoder in this process, one task ahead: a chunk is parsed and split while
    sentencepiece encodes the previous one in its thread, and while this process writes.
    Other tasks (learning Punkt) run when submitted."""

    capacity = 2

    def __init__(self, settings: EncoderSettings):
        self._encoder = ChunkEncoder(settings)
        self._results: deque[Callable[[], Any]] = deque()

    def submit(self, function: Callable[[Any], Any], argument: Any) -> None:
        if function is encode_in_worker:
            submitted = self._encoder.submit(argument)
            self._results.append(lambda: self._encoder.collect(submitted))
        else:
            result = function(argument)
            self._results.append(lambda: result)

    def receive(self) -> Any:
        return self._results.popleft()()

    def close(self) -> None:
        self._encoder.close()


@contextlib.contextmanager
def encoders(workers: int, settings: EncoderSettings) -> Iterator[Encoders]:
    """This process with one worker, else worker processes; a worker that dies fails the run
    (``runtime.ordered_workers``) rather than hanging it."""
    if workers > 1:
        with OrderedWorkers(workers, _start_worker, (settings,),
                            name="preprocess-worker") as pool:
            yield pool
        return
    here = _InProcess(settings)
    try:
        yield here
    finally:
        here.close()


def tune_interpreter() -> tuple[float, tuple[int, int, int]]:
    """GIL_SWITCH_SECONDS and GC_FIRST_THRESHOLD in this process; returns what they were."""
    previous = sys.getswitchinterval(), gc.get_threshold()
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    gc.set_threshold(GC_FIRST_THRESHOLD, *previous[1][1:])
    return previous

"""Raw corpus -> megatron-core indexed datasets, one per language, in Megatron's conventions.

Outputs are named ``PREFIX_<lang>_<key>_sentence`` with sentence splitting (one item per
sentence, which megatron-core's masked datasets expect) or ``PREFIX_<lang>_<key>_document``
without (one item per document). Either way one input record is one document, and each item's
tokens are exactly ``sp.encode(item_text)``.

The input is read once, as a stream of raw lines, by this process, cut into chunks of about
``chunk_bytes``, and parsed, split, tokenized and grouped by dataset by ``workers`` processes
(``chunk_encoding``; this process reads and writes for all of them, so it reads blocks of whole
lines and appends arrays, with no work per line or per document, and keeps up with many); a
bounded number of chunks is in flight and results are written in input order, so memory is
flat in the corpus size and any worker count writes the same bytes. With sentence splitting,
Punkt is learned per language on the way (``punkt_on_the_way``). Outputs are committed only
when complete (``indexed_writer``); an error, Ctrl-C or SIGTERM leaves no output at the final
names.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Literal, Sequence

from megatron_seqpt.data.chunk_encoding import (
    Chunk,
    Encoded,
    Encoders,
    EncoderSettings,
    Released,
    encode_in_worker,
    encoders,
    tune_interpreter,
)
from megatron_seqpt.data.indexed_writer import IndexedOutputs, token_dtype
from megatron_seqpt.data.punkt_on_the_way import (
    Lesson,
    PunktOnTheWay,
    RecordColumns,
    learn_lesson,
)
from megatron_seqpt.errors import UserError
from megatron_seqpt.runtime.interrupts import (
    LatchedInterrupt,
    latched_interrupts,
    waited_in_short_waits,
)
from megatron_seqpt.text.corpus import (
    ByteProgress,
    ReadOptions,
    RecordSource,
    Skips,
    check_inputs,
    file_language_notes,
)
from megatron_seqpt.text.sentences import (
    DEFAULT_SAMPLE_CHARS,
    MAX_PARAGRAPH_CHARS,
    checked_punkt_dir,
)
from megatron_seqpt.tokenizer.sentencepiece_tokenizer import load_processor

DEFAULT_CHUNK_BYTES = 1 << 20
# Workers per core past which a worker count is taken for a mistake (each is a process with
# a tokenizer; --workers 100000 would start that many).
MAX_WORKERS_PER_CORE = 4
# Input held for languages being learned, beyond which reading waits for their lessons: chunks
# read while a lesson is out come back with that language unencoded, and with its text in
# blocks and many workers they would pile up (16 workers parse tens of MB in a lesson's
# 0.1-0.2 s).
MAX_WAITING_BYTES = 32 * DEFAULT_CHUNK_BYTES


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
    # Time spent learning sentence splitting (a cost per language, not per byte), summed over
    # the processes that learned: with several workers, learning overlaps other work.
    punkt_seconds: float = 0.0
    # Paragraphs longer than MAX_PARAGRAPH_CHARS, cut into windows before sentence splitting.
    cut_paragraphs: int = 0
    # Time sentencepiece spent encoding, summed over workers: near workers x seconds, the run
    # goes at the speed of sentencepiece itself beside the rest of the work.
    encode_seconds: float = 0.0

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
    return min(_available_cores(), 16)


def _available_cores() -> int:
    """The cores this process may use: its CPU affinity, which SLURM and taskset set (the
    machine's count where the system has none, as macOS)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def preprocess(inputs: Sequence[str | Path], output_prefix: str | Path,
               tokenizer_model: str | Path, *, workers: int = 1, split_sentences: bool = False,
               json_keys: Sequence[str] = ("text",), lang_key: str = "lang",
               lang: str | None = None, on_error: Literal["fail", "skip"] = "fail",
               append_eod: bool = False, punkt_dir: str | Path | None = None,
               chunk_bytes: int = DEFAULT_CHUNK_BYTES, progress: bool = True,
               punkt_sample_chars: int = DEFAULT_SAMPLE_CHARS) -> PreprocessSummary:
    """Tokenize ``inputs`` into indexed datasets per language; see the module docstring.

    With ``split_sentences`` Punkt parameters are learned per language from the first
    ``punkt_sample_chars`` of its text, in the same pass (``punkt_on_the_way``); ``punkt_dir``
    provides them instead where it has them. ``append_eod`` ends each document's last item
    with </s>, as Megatron's --append-eod does.
    """
    if workers < 1:
        raise UserError(f"workers must be at least 1, got {workers}")
    cores = _available_cores()
    if workers > MAX_WORKERS_PER_CORE * cores:
        raise UserError(f"{workers} workers is more than {MAX_WORKERS_PER_CORE} per core of the "
                        f"{cores} core(s) this process may use; past the cores a worker adds "
                        f"memory, not speed: use --workers {cores}")
    options = ReadOptions(tuple(json_keys), lang_key, lang, on_error)
    inputs = check_inputs(inputs)
    model_file = Path(tokenizer_model).expanduser()
    if not model_file.is_file():
        raise UserError(f"tokenizer model {model_file} does not exist; train one with "
                        "tools/train_tokenizer.py (seqpt train-tokenizer)")
    if punkt_dir is not None:
        punkt_dir = checked_punkt_dir(punkt_dir)
    started = time.perf_counter()
    dtype = token_dtype(load_processor(Path(model_file)).vocab_size())
    settings = EncoderSettings(str(model_file), split_sentences, append_eod, dtype, options,
                                None if punkt_dir is None else str(punkt_dir))
    # Ctrl-C and SIGTERM are latched: Python drops the interrupt where it lands in the at-fork
    # hooks of the workers' forks, so the pass raises it again per chunk and before it commits.
    with latched_interrupts() as interrupted, _tuned_interpreter(), \
            PunktOnTheWay(punkt_sample_chars) as learning:
        datasets, skips, totals = _tokenize(inputs, options, output_prefix, split_sentences,
                                            settings, workers, chunk_bytes, progress, learning,
                                            interrupted)
    for note in file_language_notes((d.lang for d in datasets), inputs, options):
        print(f"note: {note}", file=sys.stderr)
    summary = PreprocessSummary(datasets, skips, totals.input_bytes,
                                time.perf_counter() - started, workers, learning.seconds,
                                totals.cut_paragraphs, totals.encode_seconds)
    if progress:
        print(summary.table(), file=sys.stderr)
    return summary


@dataclass
class _PassTotals:
    """What the pass adds up over chunks (``PreprocessSummary``'s fields of the same names)."""

    cut_paragraphs: int = 0
    encode_seconds: float = 0.0
    # Bytes read: a pipe's size is 0.
    input_bytes: int = 0


def _tokenize(inputs: Sequence[Path], options: ReadOptions, output_prefix: str | Path,
              split_sentences: bool, settings: EncoderSettings, workers: int,
              chunk_bytes: int, progress: bool, learning: PunktOnTheWay,
              interrupted: LatchedInterrupt) -> tuple[list[DatasetSummary], Skips, _PassTotals]:
    """The one pass: read, encode in workers, write; commit all outputs or none (none once
    ``interrupted``). Returns the datasets, the skipped records and the pass's totals."""
    skips = Skips(inputs=[str(path) for path in inputs])
    totals = _PassTotals()
    datasets: dict[tuple[str, str], DatasetSummary] = {}
    outputs = IndexedOutputs(settings.dtype)
    started = time.perf_counter()
    try:
        with encoders(workers, settings) as workers_or_here, \
                ByteProgress(inputs, "preprocessing", progress) as bar:
            for item, encoded in _in_write_order(_chunks(inputs, options, chunk_bytes),
                                                 workers_or_here, learning, chunk_bytes):
                interrupted.raise_if_set()
                _write(encoded, output_prefix, split_sentences, skips, outputs, datasets)
                totals.cut_paragraphs += encoded.cut_paragraphs
                totals.encode_seconds += encoded.encode_seconds
                totals.input_bytes += item.nbytes
                tokens = sum(d.tokens for d in datasets.values())
                bar.bar.update(item.nbytes)
                bar.bar.set_postfix_str(f"{sum(d.documents for d in datasets.values())} docs, "
                                        f"{tokens / (time.perf_counter() - started):,.0f} "
                                        "tokens/s", refresh=False)
        if not datasets:
            raise UserError(f"no documents in {', '.join(map(str, inputs))} "
                            f"(skipped records: {skips.describe()})")
        interrupted.raise_if_set()
        outputs.commit()
    except BaseException:
        outputs.discard()
        raise
    return sorted(datasets.values(), key=lambda d: (d.lang, d.key)), skips, totals


def _chunks(inputs: Sequence[Path], options: ReadOptions, chunk_bytes: int
            ) -> Iterator[Chunk]:
    """The input files' raw lines in chunks: each the fewest whole lines that reach
    ``chunk_bytes`` (small files share one), read as blocks; the lines are not looked at
    here."""
    chunk = Chunk()
    for path in inputs:
        source = RecordSource.of(path, options)
        first_line = 1
        for lines in _line_blocks(path, chunk_bytes - chunk.nbytes, chunk_bytes):
            chunk.parts.append((source, first_line, lines))
            chunk.nbytes += len(lines)
            first_line += lines.count(b"\n")
            if chunk.nbytes >= chunk_bytes:
                yield chunk
                chunk = Chunk()
    if chunk.nbytes:
        yield chunk


def _line_blocks(path: Path, first_size: int, size: int) -> Iterator[bytes]:
    """The file's blocks of whole lines (``_whole_lines``): the first of ``first_size`` (what
    fills the current chunk), then of ``size`` (only the last block of a file is shorter). A
    pipe (stdin, a FIFO fed by a decompressor) is read in a helper thread, so that Ctrl-C or
    SIGTERM stops the run even while the pipe has no data (``runtime/interrupts.py``)."""
    blocks = _read_line_blocks(path, first_size, size)
    return blocks if path.is_file() else waited_in_short_waits(blocks, f"read {path.name}")


def _read_line_blocks(path: Path, first_size: int, size: int) -> Iterator[bytes]:
    with open(path, "rb") as file:
        lines = _whole_lines(file, first_size)
        while lines:
            yield lines
            lines = _whole_lines(file, size)


def _whole_lines(file: BinaryIO, size: int) -> bytes:
    """The fewest whole lines from ``file`` that hold at least ``size`` bytes, or what is
    left: ``size - 1`` bytes, then the rest of the line that holds the next one."""
    return file.read(max(size - 1, 0)) + file.readline()


def _write(encoded: Encoded, output_prefix: str | Path, split_sentences: bool, skips: Skips,
           outputs: IndexedOutputs, datasets: dict[tuple[str, str], DatasetSummary]) -> None:
    """Append a chunk's documents to their datasets (each in input order), one write per
    dataset, and count the records left out; no work per document here (the workers group
    them, ``ChunkEncoder.collect``), so this process keeps up with many workers."""
    for part in encoded.datasets:
        summary = datasets.get((part.lang, part.key))
        if summary is None:
            summary = datasets[part.lang, part.key] = DatasetSummary(
                part.lang, part.key,
                dataset_prefix(output_prefix, part.lang, part.key, split_sentences))
        outputs.add_documents(summary.prefix, part.tokens, part.lengths, part.items)
        summary.documents += len(part.items)
        summary.sentences += len(part.lengths)
        summary.tokens += len(part.tokens)
    for error in encoded.skipped:
        skips.add(error)


def _in_write_order(chunks: Iterator[Chunk], encoders: Encoders, learning: PunktOnTheWay,
                    chunk_bytes: int) -> Iterator[tuple[Chunk | Released, Encoded]]:
    """Each chunk, and each batch of released records, with its encoding, in an order that
    keeps every language's documents in input order.

    Chunks are numbered as read. Records of a language not learned yet come back deferred and
    ``learning`` holds them; when a language's sample is full its lesson goes to the encoders
    (learned there, in parallel with the chunks), and when it comes back the language's held
    records are released. Released records go to the encoders before the next chunk (in
    pieces of about ``chunk_bytes`` of input, so that all workers share them), with a
    number no smaller than any chunk they come from: the number of the chunk whose result
    released them, or for a lesson's, the last chunk read before it went out (chunks sent
    before the lesson came back hold no encoded document of that language). A language is
    deferred or encoded in the whole of a chunk, so its documents are in input order when
    results are written in the order of their numbers: a number is written once nothing still
    in flight, waiting to be sent, or yet to be read can carry it. Reading pauses while more
    than MAX_WAITING_BYTES of input wait for lessons that are out."""
    to_send: deque[tuple[int, Released | Lesson]] = deque()
    in_flight: deque[tuple[int, Chunk | Released | Lesson]] = deque()
    done: dict[int, list[tuple[Chunk | Released, Encoded]]] = {}
    read = 0            # chunks read so far: the number of the next one
    written = 0         # numbers below this are written
    reading, at_end = True, False

    def send(item: Chunk | Released | Lesson, number: int) -> None:
        if isinstance(item, Lesson):
            encoders.submit(learn_lesson, item)
        else:
            encoders.submit(encode_in_worker, item.task(dict(learning.files)))
        in_flight.append((number, item))

    while True:
        while len(in_flight) < encoders.capacity and (to_send or reading):
            if to_send:
                number, item = to_send.popleft()
                send(item, number)
                continue
            if learning.waiting_bytes > MAX_WAITING_BYTES:
                break  # until a lesson, which is out, comes back

            chunk = next(chunks, None)
            if chunk is None:
                reading = False
                continue
            send(chunk, read)
            read += 1
        if not in_flight:
            if at_end:
                break
            # The end of the input: languages whose sample never filled learn from what they have.
            at_end = True
            to_send.extend((read, lesson) for lesson in learning.lessons_left())
            continue
        number, item = in_flight.popleft()
        result = encoders.receive()
        if isinstance(item, Lesson):
            to_send.extend((number, piece) for piece in
                           _pieces(learning.learned(item, result), chunk_bytes))
        else:
            done.setdefault(number, []).append((item, result))
            if result.deferred:
                if isinstance(item, Released):
                    raise RuntimeError("released records came back deferred: their language's "
                                       "parameters did not reach the encoder")
                released, lessons = learning.release(result.deferred)
                to_send.extend((number, piece) for piece in _pieces(released, chunk_bytes))
                to_send.extend((read - 1, lesson) for lesson in lessons)
        still_open = [n for n, _ in in_flight] + [n for n, _ in to_send]
        if not at_end:
            still_open.append(read)
        first_open = min(still_open, default=read + 1)
        while written < first_open:
            yield from done.pop(written, [])
            written += 1


def _pieces(records: list[RecordColumns], chunk_bytes: int) -> Iterator[Released]:
    """The records in order, in pieces of about ``chunk_bytes`` of input lines (whole
    columns: each came from one chunk)."""
    start, size = 0, 0
    for index, columns in enumerate(records):
        size += columns.nbytes
        if size >= chunk_bytes:
            yield Released(records[start:index + 1])
            start, size = index + 1, 0
    if start < len(records):
        yield Released(records[start:])


@contextlib.contextmanager
def _tuned_interpreter() -> Iterator[None]:
    """The interpreter tuned while the block runs (``tune_interpreter``), as it was after."""
    switch_interval, thresholds = tune_interpreter()
    try:
        yield
    finally:
        sys.setswitchinterval(switch_interval)
        gc.set_threshold(*thresholds)

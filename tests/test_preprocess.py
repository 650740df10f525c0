"""Preprocessing the default corpus into megatron-core indexed datasets, and prepare()'s cache:
counts and tokens match the input, any worker count writes the same bytes, bad input is named
by file and line (or counted), and a failed or interrupted run leaves no output behind."""

import gc
import gzip
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import psutil
import pytest
import sentencepiece as spm
from megatron.core.datasets.indexed_dataset import IndexedDataset

from megatron_seqpt import cli
from megatron_seqpt.config.schema import DataConfig
from megatron_seqpt.data import preprocess as preprocess_module
from megatron_seqpt.data.chunk_encoding import ChunkEncoder, EncoderSettings, _Submitted
from megatron_seqpt.data.indexed_writer import IndexedOutputs
from megatron_seqpt.data.prepare import prepare
from megatron_seqpt.data.preprocess import _chunks, dataset_prefix, preprocess
from megatron_seqpt.errors import UserError
from megatron_seqpt.text.corpus import CorpusError, ReadOptions
from megatron_seqpt.text.sentences import (
    DEFAULT_SAMPLE_CHARS,
    MAX_PARAGRAPH_CHARS,
    SentenceSplitter,
    learn_punkt,
    learn_splitters,
    survey_languages,
)
from megatron_seqpt.tokenizer.special_tokens import EOS_ID
from megatron_seqpt.tokenizer.training import train_tokenizer
from tests.raw_corpus import CORPUS, records, texts_of, tokenizer_model, write_jsonl
from tests.named_pipes import fed_once, stalled_pipe_and_interrupt

ROOT = Path(__file__).resolve().parents[1]
LANGS = sorted({record["lang"] for record in records()})


@pytest.fixture(scope="module")
def sp():
    return spm.SentencePieceProcessor(model_file=str(tokenizer_model()))


@pytest.fixture(scope="module")
def sentence_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sentences")
    summary = preprocess([CORPUS], out / "udhr", tokenizer_model(), split_sentences=True,
                         progress=False)
    return out, summary


def documents(prefix):
    """Each document of an indexed dataset as a list of its items (token arrays)."""
    dataset = IndexedDataset(prefix)
    bounds = dataset.document_indices
    # Copies: the items are views of a memory map that closes with the dataset.
    return [[np.array(dataset[i]) for i in range(bounds[d], bounds[d + 1])]
            for d in range(len(bounds) - 1)]


def squeezed(text):
    return re.sub(r"\s+", "", text)


def test_sentence_datasets_hold_each_record_as_a_document_of_its_sentences(sp, sentence_run):
    out, summary = sentence_run
    surveys = survey_languages((r["lang"], r["text"]) for r in records())
    splitters = {lang: SentenceSplitter(lang, p) for lang, p in
                 learn_splitters({lang: s.sample for lang, s in surveys.items()}).items()}
    assert summary.prefixes() == {lang: str(out / f"udhr_{lang}_text_sentence")
                                  for lang in LANGS}
    for lang in LANGS:
        texts = texts_of(lang)
        docs = documents(summary.prefixes()[lang])
        assert len(docs) == len(texts)
        for text, doc in zip(texts, docs):
            sentences = splitters[lang].split(text)
            assert len(doc) == len(sentences)
            # Each item is exactly sentencepiece's encoding of its sentence ...
            assert [list(item) for item in doc] == sp.encode(sentences)
            # ... and a document decodes to its text, up to the whitespace between sentences
            # (sentencepiece collapses runs of spaces; the tokenizer does no other
            # normalisation).
            decoded = sp.decode(np.concatenate(doc).tolist())
            assert squeezed(decoded) == squeezed(text)
        row = next(d for d in summary.datasets if d.lang == lang)
        assert (row.documents, row.sentences) == (len(texts), sum(map(len, docs)))
        assert row.tokens == sum(len(item) for doc in docs for item in doc)


def test_document_datasets_and_eod(sp, tmp_path):
    interpreter = sys.getswitchinterval(), gc.get_threshold()
    summary = preprocess([CORPUS], tmp_path / "doc", tokenizer_model(), append_eod=True,
                         progress=False)
    # Encoding here tunes the thread switch interval and the garbage collector; the caller's
    # settings come back.
    assert (sys.getswitchinterval(), gc.get_threshold()) == interpreter
    for lang in LANGS:
        prefix = dataset_prefix(tmp_path / "doc", lang, "text", split_sentences=False)
        docs = documents(prefix)
        assert [list(doc[0]) for doc in docs] == [ids + [EOS_ID] for ids in
                                                   sp.encode(texts_of(lang))]
        assert all(len(doc) == 1 for doc in docs)
    assert sum(d.documents for d in summary.datasets) == len(records())


@pytest.mark.parametrize("append_eod", [False, True])
def test_a_chunk_drops_items_encoded_to_nothing_groups_documents_and_ends_them_with_eod(
        append_eod):
    """Items that encode to no tokens (text the tokenizer normalises away: not in the built-in
    corpus) are dropped, </s> goes to a document's last kept item, a document left with no
    item is reported by its file and line, and the others reach their dataset's part in
    order."""
    rng = random.Random(0)
    encoder = ChunkEncoder(EncoderSettings(str(tokenizer_model()), False, append_eod,
                                           np.uint16, ReadOptions(on_error="skip")))
    try:
        for _ in range(300):
            per_document = [rng.choice([0, 1, 2, 3]) for _ in range(rng.randint(0, 6))]
            ids = [[rng.randint(5, 900) for _ in range(rng.choice([0, 0, 1, 3]))]
                   for _ in range(sum(per_document))]
            placed = [(rng.choice(["de", "en"]), rng.randrange(2), line)
                      for line in range(1, len(per_document) + 1)]
            done = Future()  # what the encoding thread gives: counts and ids as arrays, seconds
            done.set_result((np.array([len(item) for item in ids], np.int64),
                             np.array([token for item in ids for token in item], np.int32),
                             0.25))
            encoded = encoder.collect(_Submitted(per_document, [done], 0, ["a.jsonl", "b.jsonl"],
                                                 placed))
            expected, empty, start = {}, [], 0
            for count, (lang, part, line) in zip(per_document, placed):
                kept = [item for item in ids[start:start + count] if item]
                start += count
                if not kept:
                    empty.append((part, line))
                    continue
                if append_eod:
                    kept[-1] = kept[-1] + [EOS_ID]
                expected.setdefault(lang, []).append(kept)
            got = {part.lang: part for part in encoded.datasets}
            assert sorted(got) == sorted(expected)
            for lang, documents in expected.items():
                items = [item for document in documents for item in document]
                assert got[lang].key == "text"
                assert got[lang].items.tolist() == [len(document) for document in documents]
                assert got[lang].lengths.tolist() == [len(item) for item in items]
                assert got[lang].tokens.dtype == np.uint16
                assert got[lang].tokens.tolist() == [token for item in items for token in item]
            assert [(error.path, error.line, error.reason) for error in encoded.skipped] == [
                (["a.jsonl", "b.jsonl"][part], line, "empty_document")
                for part, line in sorted(empty)]
            assert encoded.encode_seconds == 0.25
    finally:
        encoder.close()


@pytest.fixture(scope="module")
def nfkc_model(tmp_path_factory):
    """A sentencepiece model with NFKC normalisation, which removes zero-width spaces (the
    project's tokenizers keep every character), trained on the built-in corpus."""
    folder = tmp_path_factory.mktemp("nfkc")
    text = folder / "text.txt"
    text.write_text("\n".join(record["text"] for record in records()), encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(folder / "nfkc"),
                                   vocab_size=1000, normalization_rule_name="nmt_nfkc",
                                   minloglevel=2)
    return folder / "nfkc.model"


@pytest.mark.parametrize("workers", [1, 2])
def test_a_document_the_tokenizer_normalises_away_is_named_or_skipped(tmp_path, nfkc_model,
                                                                     workers):
    """A record whose text holds only characters the tokenizer removes has no tokens: it is
    named by file and line, or skipped and counted, and the rest is written as without it."""
    assert spm.SentencePieceProcessor(model_file=str(nfkc_model)).encode("\u200b") == []
    path = write_jsonl(tmp_path / "in.jsonl",
                       [*GOOD[:25], {"text": "\u200b\u200b", "lang": "en"}, *GOOD[25:]])
    with pytest.raises(CorpusError) as info:
        preprocess([path], tmp_path / "out" / "x", nfkc_model, workers=workers,
                   chunk_bytes=4_000, progress=False)
    assert (info.value.reason, info.value.line) == ("empty_document", 26)
    assert str(info.value).startswith(f"{path}:26: ") and "normalises away" in str(info.value)
    summary = preprocess([path], tmp_path / "out" / "x", nfkc_model, workers=workers,
                         chunk_bytes=4_000, on_error="skip", progress=False)
    assert summary.skips.first == {"empty_document": f"{path}:26"}
    without = write_jsonl(tmp_path / "without.jsonl", GOOD)
    preprocess([without], tmp_path / "clean" / "x", nfkc_model, progress=False)
    assert files(tmp_path / "out") == files(tmp_path / "clean")


def files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("split", [True, False])
def test_two_workers_write_the_same_bytes_as_one(sentence_run, tmp_path, split):
    # Small chunks, so that the work is really spread over both workers.
    one = sentence_run[0] if split else tmp_path / "one"
    if not split:
        preprocess([CORPUS], one / "udhr", tokenizer_model(), progress=False)
    preprocess([CORPUS], tmp_path / "two" / "udhr", tokenizer_model(), workers=2,
               split_sentences=split, chunk_bytes=16_000, progress=False)
    assert files(tmp_path / "two") == files(one)


GOOD = records()[:40]
BAD_LINES = {
    "invalid_json": b'{"text": "unterminated',
    "missing_key": json.dumps({"body": "Text under another key.", "lang": "en"}).encode(),
    "not_utf8": '{"text": "caf\u00e9", "lang": "fr"}'.encode("latin-1"),
    "empty_document": json.dumps({"text": "  \n ", "lang": "en"}).encode(),
}


@pytest.mark.parametrize("reason", sorted(BAD_LINES))
def test_bad_record_is_named_by_file_and_line_or_skipped_and_counted(tmp_path, reason):
    path = write_jsonl(tmp_path / "in.jsonl", [*GOOD[:25], BAD_LINES[reason], *GOOD[25:]])
    with pytest.raises(CorpusError) as info:
        preprocess([path], tmp_path / "out" / "x", tokenizer_model(), progress=False)
    message = str(info.value)
    assert info.value.reason == reason
    assert message.startswith(f"{path}:26: ") and "--on-error skip" in message
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())

    summary = preprocess([path], tmp_path / "out" / "x", tokenizer_model(), on_error="skip",
                         progress=False)
    assert dict(summary.skips.counts) == {reason: 1}
    assert summary.skips.first == {reason: f"{path}:26"}
    assert sum(d.documents for d in summary.datasets) == len(GOOD)


def test_workers_parse_the_records_and_report_bad_ones_by_file_and_line(tmp_path):
    # The reading process hands raw lines to the workers; their errors cross back whole.
    bad = sorted(BAD_LINES)
    rows = [row for i, reason in enumerate(bad) for row in (*GOOD[10 * i:10 * i + 10],
                                                          BAD_LINES[reason])]
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    with pytest.raises(CorpusError) as info:
        preprocess([path], tmp_path / "out" / "x", tokenizer_model(), workers=2,
                   chunk_bytes=4_000, progress=False)
    assert (info.value.reason, info.value.line) == (bad[0], 11)
    assert str(info.value).startswith(f"{path}:11: ")
    summary = preprocess([path], tmp_path / "out" / "x", tokenizer_model(), workers=2,
                         chunk_bytes=4_000, on_error="skip", progress=False)
    assert summary.skips.first == {reason: f"{path}:{11 * (i + 1)}" for i, reason in
                                   enumerate(bad)}
    assert sum(d.documents for d in summary.datasets) == 10 * len(bad)


def test_small_files_share_chunks_and_write_what_one_file_writes(tmp_path):
    paths = [write_jsonl(tmp_path / f"in{i:02}.jsonl", GOOD[2 * i:2 * i + 2]) for i in range(20)]
    bad = write_jsonl(tmp_path / "in10b.jsonl", [GOOD[0], BAD_LINES["invalid_json"]])
    paths.insert(11, bad)
    # A file whose last line has no line break.
    paths[5].write_bytes(paths[5].read_bytes().rstrip(b"\n"))
    chunks = list(_chunks(paths, ReadOptions(), 4_000))
    assert len(chunks) < len(paths) // 2
    # Each chunk is the fewest whole lines that reach 4,000 bytes.
    assert all(chunk.nbytes >= 4_000 for chunk in chunks[:-1])
    assert all(chunk.nbytes - len(chunk.parts[-1][2].splitlines(keepends=True)[-1]) < 4_000
               for chunk in chunks)
    assert [(source.path, number, raw) for chunk in chunks for source, first, lines in chunk.parts
            for number, raw in enumerate(lines.splitlines(keepends=True), first)] == [
        (path, number, raw) for path in paths
        for number, raw in enumerate(path.read_bytes().splitlines(keepends=True), 1)]
    summary = preprocess(paths, tmp_path / "many" / "x", tokenizer_model(), workers=2,
                         chunk_bytes=4_000, on_error="skip", progress=False)
    assert summary.skips.first == {"invalid_json": f"{bad}:2"}
    one = write_jsonl(tmp_path / "one.jsonl", [*GOOD[:22], GOOD[0], *GOOD[22:40]])
    preprocess([one], tmp_path / "one" / "x", tokenizer_model(), progress=False)
    assert files(tmp_path / "many") == files(tmp_path / "one")


@pytest.mark.parametrize("split, workers, sample_chars, waiting", [
    (False, 1, DEFAULT_SAMPLE_CHARS, None), (True, 1, DEFAULT_SAMPLE_CHARS, None),
    (True, 1, 3_000, None), (True, 2, 3_000, None), (True, 2, 3_000, 0)])
def test_interleaved_languages_and_keys_go_to_their_datasets_in_order(
        sp, tmp_path, monkeypatch, split, workers, sample_chars, waiting):
    """A chunk's documents are written with one call per dataset: records of all languages
    shuffled together, two keys each, reach each (language, key) dataset in input order. In
    sentence mode each language is split with Punkt learned from its first ``sample_chars``
    of text: with a small sample, languages are learned part way (records held until then,
    chunks on their way without the parameters, then chunks with them); also with reading
    paused whenever records wait for a lesson (``waiting`` bytes)."""
    if waiting is not None:
        monkeypatch.setattr(preprocess_module, "MAX_WAITING_BYTES", waiting)
    rng = random.Random(0)
    rows = [dict(r, title=r["text"].split("\n")[0][:60]) for r in records()]
    rng.shuffle(rows)
    path = write_jsonl(tmp_path / "mixed.jsonl", rows)
    summary = preprocess([path], tmp_path / "out" / "x", tokenizer_model(), workers=workers,
                         split_sentences=split, json_keys=("text", "title"), append_eod=True,
                         chunk_bytes=20_000 // workers, progress=False,
                         punkt_sample_chars=sample_chars)
    if split:
        surveys = survey_languages(((r["lang"], r[key]) for r in rows
                                    for key in ("text", "title")), sample_chars)
        splitters = {lang: SentenceSplitter(lang, p) for lang, p in
                     learn_splitters({lang: s.sample for lang, s in surveys.items()}).items()}
    for dataset in summary.datasets:
        texts = [row[dataset.key] for row in rows if row["lang"] == dataset.lang]
        expected = []
        for text in texts:
            items = sp.encode(splitters[dataset.lang].split(text) if split else [text])
            expected.append(items[:-1] + [items[-1] + [EOS_ID]])
        assert [[list(item) for item in doc] for doc in documents(dataset.prefix)] == expected
        assert (dataset.documents, dataset.sentences) == (len(texts), sum(map(len, expected)))
    assert len(summary.datasets) == 2 * len(LANGS)
    # sentencepiece's busy time, summed over the workers, within what they had.
    assert 0 < summary.encode_seconds <= summary.seconds * workers


def test_sentence_mode_reads_the_input_once_so_a_named_pipe_works(sentence_run, tmp_path):
    fifo = tmp_path / "in" / "udhr.jsonl"
    fifo.parent.mkdir()
    with fed_once(fifo, CORPUS.read_bytes()):
        summary = preprocess([fifo], tmp_path / "out" / "udhr", tokenizer_model(),
                             split_sentences=True, progress=False)
    assert files(tmp_path / "out") == files(sentence_run[0])
    # The bytes read, not the pipe's size (0): the summary said "from 0.0 MB ... 0.00 MB/s".
    assert summary.input_bytes == sentence_run[1].input_bytes == CORPUS.stat().st_size
    assert f"from {CORPUS.stat().st_size / 1e6:.1f} MB" in summary.table()


def test_punkt_parameters_from_a_directory_are_used_and_the_other_languages_learned(
        sp, tmp_path):
    folder = tmp_path / "punkt" / "english"
    folder.mkdir(parents=True)
    (folder / "abbrev_types.txt").write_text("art\n")
    for name in ("collocations.tab", "sent_starters.txt", "ortho_context.tab"):
        (folder / name).write_text("")
    text = "It is in Art. Seven of the text. Read it."
    rows = [*records(), {"text": text, "lang": "en"}]
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    summary = preprocess([path], tmp_path / "out" / "x", tokenizer_model(), workers=2,
                         split_sentences=True, punkt_dir=tmp_path / "punkt",
                         chunk_bytes=20_000, progress=False)
    surveys = survey_languages((r["lang"], r["text"]) for r in rows)
    splitters = {lang: SentenceSplitter(lang, p) for lang, p in
                 learn_splitters({lang: s.sample for lang, s in surveys.items()},
                                 tmp_path / "punkt").items()}
    # What the directory's abbreviation changes: learned from the corpus, "Art." ends one.
    assert splitters["en"].split(text) == ["It is in Art. Seven of the text.", "Read it."]
    assert len(SentenceSplitter("en", learn_punkt("\n".join(texts_of("en")))).split(text)) == 3
    for lang, prefix in summary.prefixes().items():
        assert [[list(item) for item in doc] for doc in documents(prefix)] == [
            sp.encode(splitters[lang].split(row["text"])) for row in rows if row["lang"] == lang]
    with pytest.raises(UserError, match="Punkt directory .*missing does not exist"):
        preprocess([path], tmp_path / "out2" / "x", tokenizer_model(), split_sentences=True,
                   punkt_dir=tmp_path / "missing", progress=False)


def test_error_messages_say_what_to_do(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [GOOD[0], BAD_LINES["missing_key"]])
    with pytest.raises(CorpusError, match=r"in.jsonl:2: record has no key 'text' \(it has: "
                                          r"'body', 'lang'\); name the key .* --json-keys"):
        preprocess([path], tmp_path / "x", tokenizer_model(), progress=False)
    text = tmp_path / "de.txt"
    text.write_bytes("Erste Zeile.\n\nZweite \xfcber.\n".encode("latin-1"))
    with pytest.raises(CorpusError, match=r"de.txt:3: bytes that are not UTF-8 .*iconv"):
        preprocess([text], tmp_path / "x", tokenizer_model(), progress=False)


@pytest.mark.parametrize("compress, says", [
    (gzip.compress, "gzip-compressed; decompress it first (gunzip -k"),
    (lambda data: bytes.fromhex("28b52ffd") + data, "zstd-compressed; decompress it first "
                                                    "(unzstd")])
def test_a_compressed_input_is_refused_saying_how_to_read_it(compress, says, tmp_path):
    """Corpora come compressed (.jsonl.gz, .jsonl.zst); such a file was read as text and
    refused as 'not UTF-8' with the advice to convert it from LATIN1."""
    path = tmp_path / "corpus.jsonl.gz"
    path.write_bytes(compress(CORPUS.read_bytes()))
    with pytest.raises(UserError, match=re.escape(f"{path} is {says}")):
        preprocess([path], tmp_path / "x", tokenizer_model(), progress=False)
    with pytest.raises(UserError, match="--input /dev/stdin"):
        preprocess([path], tmp_path / "x", tokenizer_model(), progress=False)
    with pytest.raises(UserError, match=re.escape(f"{path} is {says}")):
        prepare(DataConfig(corpus=[str(path)], cache_dir=str(tmp_path / "cache")),
                progress=False)
    assert not list(tmp_path.glob("x*"))


def test_text_files_hold_one_document_per_line_in_the_files_language(sp, tmp_path):
    text = tmp_path / "de.txt"
    lines = texts_of("de")[0].split("\n")
    text.write_text("\n\n".join(lines) + "\n", encoding="utf-8")
    summary = preprocess([text], tmp_path / "t", tokenizer_model(), progress=False)
    docs = documents(summary.prefixes()["de"])
    assert [list(d[0]) for d in docs] == sp.encode(lines)
    summary = preprocess([text], tmp_path / "t", tokenizer_model(), lang="xx", progress=False)
    assert list(summary.prefixes()) == ["xx"]


def test_failure_part_way_leaves_no_output(tmp_path):
    # Many chunks are written before the bad last record stops the run.
    rows = list(records()) + [BAD_LINES["invalid_json"]]
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    out.mkdir()
    (out / "x_en_text_document.idx").write_bytes(b"from an earlier run")
    with pytest.raises(CorpusError):
        preprocess([path], out / "x", tokenizer_model(), workers=2, chunk_bytes=8_000,
                   progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["x_en_text_document.idx"]


def _tool_mid_run(tmp_path: Path, workers: int, release: threading.Event,
                  rest_copies: int = 0) -> tuple[subprocess.Popen, Path]:
    """The preprocessing tool reading a named pipe fed part of the corpus (~5.6 MB, five chunks
    of 1 MiB) and then held open until ``release`` (then fed ``rest_copies`` more copies of the
    corpus and closed); returned once the tool has started its outputs, so it is surely mid-run.
    Returns the process and the output directory."""
    pipe = tmp_path / "in.jsonl"
    os.mkfifo(pipe)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tools/preprocess_data.py"), "--input", str(pipe),
         "--output-prefix", str(out / "x"), "--tokenizer-model", str(tokenizer_model()),
         "--workers", str(workers), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # A test run started in the background (nohup, `&` in a script) passes SIGINT on as
        # ignored, and Python then keeps ignoring it; the tool must see Ctrl-C as a user would.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def feed():
        try:
            with open(pipe, "wb") as writer:
                writer.write(CORPUS.read_bytes() * 24)
                writer.flush()
                release.wait(120)
                writer.write(CORPUS.read_bytes() * rest_copies)
        except BrokenPipeError:                         # the tool stopped reading: fine
            pass

    threading.Thread(target=feed, daemon=True).start()
    try:
        deadline = time.time() + 60
        while not any(".tmp-" in p.name for p in out.glob("*")):
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, "no output was started"
            time.sleep(0.05)
    except BaseException:
        release.set()
        proc.kill()
        raise
    return proc, out


@pytest.mark.parametrize("signum,workers", [(signal.SIGTERM, 2), (signal.SIGINT, 1)])
def test_interrupted_tool_leaves_no_output(tmp_path, signum, workers):
    release = threading.Event()
    proc, out = _tool_mid_run(tmp_path, workers, release)
    try:
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=60)
    finally:
        release.set()
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert list(out.iterdir()) == []


# Run as a script: the signal lands inside an at-fork callback of the first worker's fork,
# where CPython drops (and prints) an exception the signal handler raises.
_SIGNAL_DURING_A_FORK = """
import os, runpy, signal, sys

def signal_once():
    if not getattr(signal_once, "done", False):
        signal_once.done = True
        print("signal in a fork of a worker", file=sys.stderr, flush=True)
        signal.raise_signal(int(os.environ["SIGNAL_IN_A_FORK"]))

os.register_at_fork(after_in_parent=signal_once)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_signal_stops_the_tool_even_where_python_drops_its_exception(tmp_path, signum):
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-c", _SIGNAL_DURING_A_FORK, str(ROOT / "tools/preprocess_data.py"),
         "--input", str(CORPUS), "--output-prefix", str(out / "x"), "--tokenizer-model",
         str(tokenizer_model()), "--workers", "2", "--quiet"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "SIGNAL_IN_A_FORK": str(int(signum))},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert "signal in a fork" in done.stderr  # the situation under test did arise
    assert done.returncode == 130, done.stderr
    assert "interrupted" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not out.exists() or list(out.iterdir()) == []


def test_a_signal_noted_between_reads_stops_the_read_of_a_stalled_pipe(tmp_path):
    """A signal that Python notes while the main thread is not blocked in a read (here taken by
    another thread; a buffered read of a pipe also makes several reads without running the
    handler in between) must not wait for the pipe's next data: it did, as a rare hang of the
    interrupted-tool test, whose pipe stalls until the test ends."""
    data = CORPUS.read_bytes()[:200_000].rpartition(b"\n")[0] + b"\n"
    with stalled_pipe_and_interrupt(tmp_path / "in.jsonl", data) as stall_ended:
        with pytest.raises(KeyboardInterrupt):
            list(_chunks([tmp_path / "in.jsonl"], ReadOptions(), 1 << 20))  # waits for 1 MiB
        assert not stall_ended.is_set()


def test_killed_worker_fails_the_tool_instead_of_hanging(tmp_path):
    """A worker killed mid-run (the out-of-memory killer, an operator's kill -9) ends the tool
    with one line saying so and no output; a process pool that replaces the worker loses its
    task and waits for it for ever."""
    killed = threading.Event()
    proc, out = _tool_mid_run(tmp_path, 2, killed, rest_copies=16)
    try:
        workers = psutil.Process(proc.pid).children()
        assert len(workers) >= 2, workers
        workers[0].kill()
        killed.set()
        _, stderr = proc.communicate(timeout=60)
    finally:
        killed.set()
        proc.kill()
    assert proc.returncode == 2, stderr
    assert stderr.startswith("preprocess_data.py: error: preprocess-worker-0 (pid ")
    assert "killed by signal SIGKILL" in stderr and "Traceback" not in stderr, stderr
    assert list(out.iterdir()) == []

def test_tools_run_from_the_clone(tmp_path):
    tool = [sys.executable, str(ROOT / "tools/train_tokenizer.py"), "--input", str(CORPUS),
            "--vocab-size", "2000", "--output-prefix", str(tmp_path / "tok"), "--quiet"]
    done = subprocess.run(tool, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    bad = subprocess.run([sys.executable, str(ROOT / "tools/preprocess_data.py"), "--input",
                          str(CORPUS), "--output-prefix", str(tmp_path / "x"),
                          "--tokenizer-model", str(tmp_path / "missing.model")],
                         capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.startswith("preprocess_data.py: error: tokenizer model ")


def test_prepare_builds_once_and_reuses(tmp_path):
    config = DataConfig(cache_dir=str(tmp_path / "cache"))
    first = prepare(config, progress=False)
    assert sorted(first.prefixes) == LANGS
    manifest = first.directory / "manifest.json"
    built = manifest.stat().st_mtime_ns
    for lang, prefix in first.prefixes.items():
        assert first.token_counts[lang] == int(IndexedDataset(prefix).sequence_lengths.sum()) > 0
    assert spm.SentencePieceProcessor(model_file=str(first.tokenizer_model)).vocab_size() == \
        config.vocab_size
    again = prepare(config, progress=False)
    assert again == first and manifest.stat().st_mtime_ns == built
    # Another vocabulary is another cache entry.
    other = prepare(DataConfig(cache_dir=config.cache_dir, vocab_size=2000), progress=False)
    assert other.directory != first.directory
    Path(first.prefixes["en"] + ".bin").unlink()
    with pytest.raises(UserError, match=r"incomplete \(data_en_text_sentence.bin is gone\); "
                                        "delete that directory"):
        prepare(config, progress=False)


def test_prepare_refuses_a_pipe_in_the_corpus_at_once(tmp_path):
    """A run reads its corpus several times (the tokenizer's two passes, then the datasets'):
    a pipe fed once left preprocessing waiting for a second writer."""
    fifo = tmp_path / "corpus.jsonl"
    with fed_once(fifo, CORPUS.read_bytes()):
        with pytest.raises(UserError, match=rf"data.corpus: {fifo} is not a regular file"):
            prepare(DataConfig(corpus=[str(fifo)], cache_dir=str(tmp_path / "cache")),
                    progress=False)
        with open(fifo, "rb") as reader:  # let the writer finish
            reader.read()
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def _prepare_in_process(cache_dir):
    return str(prepare(DataConfig(cache_dir=cache_dir), progress=False).directory)


def test_prepare_from_several_processes_at_once_builds_once(tmp_path):
    # Spawned like the ranks of a job (sentencepiece cannot train in a process forked from one
    # that trained before, as this one did).
    with get_context("spawn").Pool(3) as pool:
        directories = pool.map_async(_prepare_in_process, [str(tmp_path)] * 3).get(timeout=240)
    assert len(set(directories)) == 1
    entries = [p.name for p in tmp_path.iterdir() if p.is_dir()]
    assert entries == [Path(directories[0]).name]           # no temporary build left


def test_prepare_with_given_prefixes(sentence_run, tmp_path):
    out, summary = sentence_run
    given = DataConfig(prefixes=summary.prefixes(), tokenizer_model=str(tokenizer_model()))
    prepared = prepare(given, progress=False)
    assert prepared.prefixes == summary.prefixes()
    assert prepared.token_counts == {d.lang: d.tokens for d in summary.datasets}
    missing = DataConfig(prefixes={"en": str(out / "udhr_en_text_sentence"),
                                   "xx": str(tmp_path / "nope")},
                         tokenizer_model=str(tokenizer_model()))
    with pytest.raises(UserError, match=r"data.prefixes.xx: .*nope.bin does not exist; make the "
                                        r"pair with python tools/preprocess_data.py"):
        prepare(missing, progress=False)
    with pytest.raises(UserError, match="needs data.tokenizer_model"):
        prepare(DataConfig(prefixes=summary.prefixes()), progress=False)


def test_a_huge_single_line_record_is_cut_deterministically_and_reported(sp, tmp_path):
    """nltk's regexes run under a wall-clock limit: a multi-MB paragraph would pass or fail
    with the machine's load. It is cut into bounded windows at sentence ends instead."""
    sentence = "The committee met again in Geneva on Tuesday. "
    line = sentence * (3 * MAX_PARAGRAPH_CHARS // len(sentence))
    path = write_jsonl(tmp_path / "long.jsonl", [{"text": line, "lang": "en"},
                                                 {"text": "Short. Two sentences.", "lang": "en"}])
    summary = preprocess([path], tmp_path / "out" / "x", tokenizer_model(),
                         split_sentences=True, progress=False)
    assert summary.cut_paragraphs == 1
    assert "1 paragraph(s) longer than 100,000 characters were cut" in summary.table()
    long_doc, short_doc = documents(summary.datasets[0].prefix)
    # Nothing lost, each of the (at least 3) windows split on its own, all within the bound.
    decoded = [sp.decode(item.tolist()) for item in long_doc]
    assert squeezed("".join(decoded)) == squeezed(line)
    assert len(decoded) >= 3 and max(map(len, decoded)) <= MAX_PARAGRAPH_CHARS
    assert all(text.endswith("Tuesday.") for text in decoded)
    assert len(short_doc) == 2


def test_an_interrupt_while_a_dataset_is_opened_leaves_no_temporary(tmp_path, monkeypatch):
    """Ctrl-C or SIGTERM can arrive between megatron-core's builder creating its file and the
    writer recording it (the interrupted-tool test sends its signal as soon as that file
    appears): the cleanup must still find and remove it."""
    from megatron_seqpt.data import indexed_writer

    class InterruptedAfterOpening(indexed_writer._Builder):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            raise KeyboardInterrupt("signal 15")

    outputs = indexed_writer.IndexedOutputs(np.int32)
    monkeypatch.setattr(indexed_writer, "_Builder", InterruptedAfterOpening)
    with pytest.raises(KeyboardInterrupt):
        outputs.builder(str(tmp_path / "x_en_text_document"))
    assert any(".tmp-" in p.name for p in tmp_path.iterdir())  # the builder made its file
    outputs.discard()
    assert list(tmp_path.iterdir()) == []


def test_the_index_is_held_in_a_few_bytes_per_item(tmp_path):
    """What a run keeps until its .idx is written grows with every item: arrays of 4 bytes per
    item and 8 per document, not a Python object each (megatron-core's builder lists held about
    19 bytes per item here, tens of GB over a billion sentences)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    outputs = IndexedOutputs(np.uint16)
    prefix = str(tmp_path / "x_en_text_sentence")
    outputs.builder(prefix)
    item_count = document_count = 0
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(40):
            items = rng.integers(1, 8, size=5_000)
            lengths = rng.integers(5, 60, size=int(items.sum()))
            tokens = rng.integers(0, 30_000, size=int(lengths.sum())).astype(np.uint16)
            outputs.add_documents(prefix, tokens, lengths, items)
            item_count, document_count = item_count + len(lengths), document_count + len(items)
        del items, lengths, tokens
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 1.1 * (4 * item_count + 8 * document_count)
    outputs.commit()
    dataset = IndexedDataset(prefix)
    assert (len(dataset), len(dataset.document_indices) - 1) == (item_count, document_count)


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_the_index_is_megatron_cores_to_the_byte(tmp_path, dtype):
    """The writer computes the items' byte offsets as one array; megatron-core's builder,
    given the same documents one by one, writes the same .bin and .idx with its loop."""
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    rng = np.random.default_rng(0)
    outputs = IndexedOutputs(dtype)
    reference = IndexedDatasetBuilder(str(tmp_path / "reference.bin"), dtype=dtype)
    for _ in range(50):
        # A chunk: documents of 1-4 items, written at once.
        items = rng.integers(1, 5, size=rng.integers(1, 30))
        lengths = rng.integers(1, 300, size=int(items.sum()))
        tokens = rng.integers(0, 30_000, size=int(lengths.sum())).astype(dtype)
        outputs.add_documents(str(tmp_path / "ours"), tokens, lengths, items)
        item_bounds = np.concatenate([[0], np.cumsum(items)])
        token_bounds = np.concatenate([[0], np.cumsum(lengths)])
        for first, last in zip(item_bounds[:-1], item_bounds[1:]):
            reference.add_document(tokens[token_bounds[first]:token_bounds[last]],
                                   lengths[first:last].tolist())
    reference.finalize(str(tmp_path / "reference.idx"))
    outputs.commit()
    for suffix in (".bin", ".idx"):
        assert (tmp_path / f"ours{suffix}").read_bytes() == \
            (tmp_path / f"reference{suffix}").read_bytes()
    assert len(IndexedDataset(str(tmp_path / "ours"))) > 1000


def test_far_more_workers_than_cores_is_refused_before_any_starts(tmp_path):
    """--workers 100000 (a typo) started that many processes on a 2-core machine."""
    cores = len(os.sched_getaffinity(0))
    with pytest.raises(UserError, match=rf"{4 * cores + 1} workers .* {cores} core.*"
                                        rf"--workers {cores}"):
        preprocess([CORPUS], tmp_path / "x", tokenizer_model(), workers=4 * cores + 1,
                   progress=False)
    assert list(tmp_path.iterdir()) == []


def test_default_workers_follow_the_cores_this_process_may_use(tmp_path):
    """Under SLURM or taskset a process may use fewer cores than the machine has: the default
    took the machine's count."""
    large = tmp_path / "large.jsonl"
    with open(large, "wb") as file:
        file.truncate(64 << 20)  # its size is all default_workers looks at
    code = ("import sys; from pathlib import Path; from megatron_seqpt.data.preprocess import "
            "default_workers; print(default_workers([Path(sys.argv[1])]))")
    one_core = min(os.sched_getaffinity(0))
    done = subprocess.run([sys.executable, "-c", code, str(large)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          preexec_fn=lambda: os.sched_setaffinity(0, {one_core}))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "1"


@pytest.mark.parametrize("name,lang_key,noted", [("corpus.jsonl", "lang", True),
                                                 ("en.jsonl", "lang", False),
                                                 ("corpus.jsonl", "language", False)])
def test_records_that_name_no_language_under_the_key_are_noted(tmp_path, capsys, name,
                                                                lang_key, noted):
    """Records whose language sits under another key than --lang-key all took the file's name
    as their language (one dataset "corpus", Punkt learned over every language) without a
    word; a name that is not a language code is now noted, by both tools."""
    rows = [{"text": text, "language": "en"} for text in texts_of("en")]
    corpus = write_jsonl(tmp_path / name, rows)
    summary = preprocess([corpus], tmp_path / "out" / "x", tokenizer_model(), progress=False,
                         lang_key=lang_key)
    train_tokenizer([corpus], 800, tmp_path / "tok", lang_key=lang_key, progress=False)
    note = (f"{corpus}: no record names its language under '{lang_key}' (--lang-key), so they "
            "took the file's name 'corpus'")
    assert capsys.readouterr().err.count(note) == (2 if noted else 0)
    assert [d.lang for d in summary.datasets] == [
        "en" if lang_key == "language" else Path(name).stem]


@pytest.mark.parametrize("command", [["train-tokenizer", "--vocab-size", "400"],
                                     ["preprocess", "--tokenizer-model", "x.model"]])
def test_an_output_prefix_that_names_a_directory_is_refused(command, tmp_path, capsys):
    """'out/' wrote out.model beside the directory (train-tokenizer) or files named
    out/_en_text_document.* (preprocess): neither where the user looked."""
    with pytest.raises(SystemExit) as exit_code:
        cli.main([command[0], "--input", str(CORPUS), "--output-prefix", f"{tmp_path}/out/",
                  *command[1:]])
    assert exit_code.value.code == 2
    assert "give a file prefix, e.g." in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []

"""Preprocessing throughput and memory, next to sentencepiece's own encode rate on the same text.

    python benchmarks/preprocess_throughput.py [--mb 50] [--memory-mb 100] [--workers 1 2]
        [--corpus FILE.jsonl]

``--corpus`` measures on a given JSONL corpus (``text`` and ``lang`` keys) instead, for
example real, unrepeated text made by ``benchmarks/fortunes_corpus.py``; the memory comparison
is then skipped.

Builds corpora of about --mb and --memory-mb megabytes from the default corpus (its records
reshuffled for each repetition), trains a tokenizer on the default corpus, and measures in one run:
- the ceiling: ``sp.encode(texts, num_threads=1)`` tokens/s on the corpus' first 10 MB of texts
  at its best (garbage collector off, one call or preprocessing's batches, lists or numpy
  output), measured again next to each run (this machine's speed drifts; ratios use the
  adjacent one);
- the bound of sentence mode: sentencepiece's rate the same way on the sentences of those texts
  (split as preprocessing splits them, Punkt learned from each language's first
  DEFAULT_SAMPLE_CHARS), over the ceiling. Each sentence is an item sentencepiece encodes on its
  own, so on short sentences it runs below its rate on whole documents: this is the most a
  worker can reach in sentence mode with the splitting free;
- ``preprocess`` tokens/s with each worker count, per document and with sentence splitting, and
  its ratio to (workers x ceiling); sentence splitting also without its fixed cost of learning
  Punkt per language ("steady": the learning time, summed over the workers that learned,
  taken off the run's time; with several workers learning overlaps other work, so this
  overstates the steady rate there);
- the cores a run kept busy (CPU seconds of the process tree over wall seconds): a worker
  encodes in a second thread while it splits (and, the one worker being this process, while it
  reads the next chunk and writes the last);
- how busy sentencepiece was (its encoding seconds over workers x wall seconds): near 1, the
  run goes at sentencepiece's own speed as it runs beside the rest of the work, and what
  separates it from the ceiling is that speed, not the splitting; well below, something else
  (splitting, parsing, learning Punkt) kept it waiting;
- with worker processes, how many workers the one process that reads and writes for all of
  them keeps up with: the workers' CPU seconds over its own (fixed costs included, so a lower
  bound); past that many workers, adding more cannot make the run faster;
- the peak memory (PSS, summed over the process tree) on both corpus sizes: it should not grow.
Each setting runs --repeat times and the fastest run counts.
Each preprocess run is a child process, so its memory is its own.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import sentencepiece as spm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from megatron_seqpt.data.chunk_encoding import OVERLAP_CHARS  # noqa: E402
from megatron_seqpt.data.preprocess import preprocess  # noqa: E402
from megatron_seqpt.text.corpus import default_corpus_path  # noqa: E402
from megatron_seqpt.text.sentences import (  # noqa: E402
    SentenceSplitter,
    learn_splitters,
    survey_languages,
)
from megatron_seqpt.tokenizer.training import train_tokenizer  # noqa: E402


def make_corpus(path: Path, megabytes: float, seed: int = 0) -> Path:
    lines = default_corpus_path().read_text(encoding="utf-8").splitlines()
    rng, size = random.Random(seed), 0
    with open(path, "w", encoding="utf-8") as out:
        while size < megabytes * 1e6:
            rng.shuffle(lines)
            block = "\n".join(lines) + "\n"
            out.write(block)
            size += len(block.encode("utf-8"))
    return path


def ceiling(texts: list[str], model: Path) -> float:
    """sentencepiece's encode rate (tokens/s, one thread) on these texts at its best: with
    Python's garbage collector off (the lists it returns otherwise set off collections that
    cost it 15-25% here, and preprocessing runs with the collector tuned), in one call and in
    batches of OVERLAP_CHARS characters as preprocessing makes them, returning lists and (where
    it can, 0.2.2+) numpy arrays; the best of two timings of each after a warm-up."""
    sp = spm.SentencePieceProcessor(model_file=str(model))
    sp.encode(texts[:1000], num_threads=1)
    batches, batch, size = [], [], 0
    for text in texts:
        batch.append(text)
        size += len(text)
        if size >= OVERLAP_CHARS:
            batches.append(batch)
            batch, size = [], 0
    batches.append(batch)
    outputs = [{}]
    try:
        sp.encode(texts[:10], num_threads=1, return_type="numpy")
        outputs.append({"return_type": "numpy"})
    except (TypeError, ValueError):
        pass
    rates = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for output in outputs:
            for split in ([texts], batches) * 2:
                started = time.perf_counter()
                tokens = sum(len(ids) for part in split
                             for ids in sp.encode(part, num_threads=1, **output))
                rates.append(tokens / (time.perf_counter() - started))
    finally:
        if gc_was_enabled:
            gc.enable()
    return max(rates)


def corpus_records(corpus: Path, megabytes: float) -> list[tuple[str, str]]:
    """(language, text) of the corpus' first ``megabytes``: enough for a stable rate."""
    records, size = [], 0
    with corpus.open(encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            records.append((record["lang"], record["text"]))
            size += len(line)
            if size > megabytes * 1e6:
                break
    return records


def sentences_of(records: list[tuple[str, str]]) -> list[str]:
    """The records' sentences as sentence mode makes them: Punkt learned per language from its
    first texts, each language's texts split together."""
    surveys = survey_languages(records)
    params = learn_splitters({lang: survey.sample for lang, survey in surveys.items()})
    by_lang: dict[str, list[str]] = {}
    for lang, text in records:
        by_lang.setdefault(lang, []).append(text)
    return [sentence for lang, texts in by_lang.items()
            for sentence in SentenceSplitter(lang, params[lang]).split_many(texts)[0]]


def measured_run(corpus: Path, model: Path, output: Path, workers: int, split: bool) -> dict:
    """Preprocess in a child process; its result plus the peak memory of its process tree."""
    child = subprocess.Popen([sys.executable, __file__, "--child", str(corpus), str(model),
                              str(output), str(workers), str(int(split))],
                             stdout=subprocess.PIPE, text=True)
    peak, process = 0, psutil.Process(child.pid)
    while child.poll() is None:
        try:
            tree = [process] + process.children(recursive=True)
            # PSS: pages the forked workers share with the parent count once, not per process.
            peak = max(peak, sum(p.memory_full_info().pss for p in tree))
        except psutil.NoSuchProcess:
            pass
        time.sleep(0.05)
    if child.returncode:
        raise SystemExit(f"preprocess failed with exit status {child.returncode}")
    result = json.loads(child.stdout.read())
    result["peak_mb"] = peak / 2**20
    return result


def child(corpus: str, model: str, output: str, workers: str, split: str) -> None:
    def cpu_seconds() -> tuple[float, float]:
        # This process, and its waited-for children (the workers, joined when the run ends).
        t = os.times()
        return t.user + t.system, t.children_user + t.children_system

    before = cpu_seconds()
    summary = preprocess([corpus], output, model, workers=int(workers),
                         split_sentences=bool(int(split)), progress=False)
    reader, workers_cpu = (after - start for after, start in zip(cpu_seconds(), before))
    print(json.dumps({"tokens": sum(d.tokens for d in summary.datasets),
                      "seconds": summary.seconds, "punkt_seconds": summary.punkt_seconds,
                      "encode_seconds": summary.encode_seconds,
                      "cpu_seconds": reader + workers_cpu, "reader_cpu_seconds": reader,
                      "workers_cpu_seconds": workers_cpu}))


def reader_feeds(run: dict, workers: int) -> str:
    """How many busy workers the reading process keeps up with: the workers' CPU seconds over
    its own ("-" with one worker, which is the reading process itself)."""
    if workers == 1:
        return "-"
    return f"{run['workers_cpu_seconds'] / run['reader_cpu_seconds']:.0f} workers"


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        return child(*sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=50)
    parser.add_argument("--memory-mb", type=float, default=100,
                        help="second corpus size, for the memory comparison (0: none)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=2,
                        help="runs per setting; the fastest counts (this machine is shared)")
    parser.add_argument("--corpus", type=Path,
                        help="a JSONL corpus to measure on instead of the repeated default one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="seqpt-bench-") as tmp:
        root = Path(tmp)
        model = train_tokenizer([default_corpus_path()], 4000, root / "tok", progress=False)
        corpus = args.corpus or make_corpus(root / "corpus.jsonl", args.mb)
        records = corpus_records(corpus, 10)
        texts = [text for _, text in records]
        sentences = sentences_of(records)
        print(f"corpus {corpus.stat().st_size / 1e6:.1f} MB; ratios are tokens/s per worker over "
              "sentencepiece's own encode rate (1 thread), the ceiling")
        print(f"{'mode':<9} {'workers':>7} {'ceiling':>11} {'tokens/s':>11} {'per worker':>11} "
              f"{'steady/worker':>14} {'sp sentences':>13} {'cores busy':>11} {'sp busy':>8} "
              f"{'peak PSS MB':>12} {'reader feeds':>13}")
        runs = {}
        for split in (False, True):
            for workers in args.workers:
                rate = ceiling(texts, model)
                bound = f"{ceiling(sentences, model) / rate:.2f}" if split else "-"
                tries = [measured_run(corpus, model, root / "out" / "x", workers, split)
                         for _ in range(args.repeat)]
                r = runs[split, workers] = min(tries, key=lambda t: t["seconds"])
                speed = r["tokens"] / r["seconds"]
                steady = r["tokens"] / (r["seconds"] - r["punkt_seconds"])
                print(f"{'sentence' if split else 'document':<9} {workers:>7} {rate:>11,.0f} "
                      f"{speed:>11,.0f} {speed / workers / rate:>11.2f} "
                      f"{steady / workers / rate:>14.2f} {bound:>13} "
                      f"{r['cpu_seconds'] / r['seconds']:>11.2f} "
                      f"{r['encode_seconds'] / workers / r['seconds']:>8.2f} "
                      f"{r['peak_mb']:>12.0f} {reader_feeds(r, workers):>13}")
        if args.corpus or not args.memory_mb:
            return
        workers = max(args.workers)
        big = make_corpus(root / "big.jsonl", args.memory_mb, seed=1)
        bigger = measured_run(big, model, root / "out" / "y", workers, True)
        print(f"memory, sentence mode, {workers} workers: peak PSS of the process tree "
              f"{runs[True, workers]['peak_mb']:.0f} MB on {corpus.stat().st_size / 1e6:.0f} MB, "
              f"{bigger['peak_mb']:.0f} MB on {big.stat().st_size / 1e6:.0f} MB")

if __name__ == "__main__":
    main()

"""The data a training run needs, built once and cached: tokenizer + sentence-split datasets.

Given ``data.prefixes`` (and the ``data.tokenizer_model`` they were made with), those are used
as they are. Otherwise the corpus (``data.corpus``, else the packaged default corpus) is turned
into a sentencepiece model and one indexed dataset per language under ``data.cache_dir``, in a
directory named by a hash of everything the result depends on, so the next run reuses it.
Several processes (the ranks of one job) may call ``prepare`` at once: a lock file lets one
build while the others wait, and the build happens in a temporary directory renamed into place
when complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from megatron_seqpt.config.schema import DataConfig
from megatron_seqpt.data.indexed_writer import token_count
from megatron_seqpt.errors import UserError
from megatron_seqpt.hashing import file_sha256
from megatron_seqpt.text.corpus import check_inputs, default_corpus_path
from megatron_seqpt.tokenizer.special_tokens import DEFAULT_NUM_SENTINELS

# Bump when the layout or content of a cache entry changes: old entries are then rebuilt.
FORMAT_VERSION = 1
# The tokenizer's own sampling temperature and seed. Not data.sampling_alpha: changing how
# languages are blended in training must not change the vocabulary.
TOKENIZER_ALPHA = 0.3
TOKENIZER_SEED = 1234
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class PreparedData:
    """What training reads: the tokenizer and one sentence-split dataset per language."""

    tokenizer_model: Path
    # Language -> indexed dataset prefix (PREFIX.bin / PREFIX.idx).
    prefixes: dict[str, str]
    # Language -> tokens in its dataset (from the .idx), for temperature blending.
    token_counts: dict[str, int]
    # The cache entry built or reused; None when data.prefixes were given.
    directory: Path | None = None


def prepare(data: DataConfig, *, workers: int | None = None,
            progress: bool = True) -> PreparedData:
    """The prepared data for ``data``, built now unless a previous call already built it."""
    if data.prefixes:
        return _given(data)
    inputs = check_inputs([Path(p).expanduser() for p in data.corpus] or [default_corpus_path()])
    for path in inputs:
        if not path.is_file():
            raise UserError(f"data.corpus: {path} is not a regular file (a pipe?); a run reads "
                            "its corpus several times (the tokenizer, then the datasets) and "
                            "keys its cache by each file's size and time: write it to a file "
                            "and name that")
    tokenizer = _given_tokenizer(data)
    key = _cache_key(inputs, tokenizer, data)
    root = Path(data.cache_dir).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    entry = root / f"prepared-{key}"
    if not entry.is_dir():
        with _exclusive(root / f"prepared-{key}.lock", progress):
            # Another process may have built it while this one waited for the lock.
            if not entry.is_dir():
                _build(entry, inputs, tokenizer, data, workers, progress)
    return _load(entry, tokenizer)


def _given(data: DataConfig) -> PreparedData:
    tokenizer = _given_tokenizer(data)
    if tokenizer is None:
        raise UserError("data.prefixes needs data.tokenizer_model: the sentencepiece model the "
                        "datasets were tokenized with")
    for lang, prefix in data.prefixes.items():
        for path in _missing(Path(prefix).expanduser()):
            hint = (" (give the prefix, without .bin/.idx)"
                    if prefix.endswith((".bin", ".idx")) else "")
            raise UserError(
                f"data.prefixes.{lang}: {path} does not exist{hint}; make the pair with "
                f"python tools/preprocess_data.py --input FILE --output-prefix PREFIX "
                f"--tokenizer-model {tokenizer} --split-sentences, which writes "
                "PREFIX_<lang>_text_sentence.bin/.idx")
    prefixes = {lang: str(Path(p).expanduser()) for lang, p in sorted(data.prefixes.items())}
    return PreparedData(tokenizer, prefixes,
                        {lang: token_count(p) for lang, p in prefixes.items()})


def _missing(prefix: Path) -> list[Path]:
    return [path for path in (Path(f"{prefix}.bin"), Path(f"{prefix}.idx"))
            if not path.is_file()]


def _given_tokenizer(data: DataConfig) -> Path | None:
    if data.tokenizer_model is None:
        return None
    path = Path(data.tokenizer_model).expanduser()
    if not path.is_file():
        raise UserError(f"data.tokenizer_model: {path} does not exist; train one with "
                        "python tools/train_tokenizer.py, or leave it null to train one on the "
                        "corpus")
    return path


def _cache_key(inputs: Sequence[Path], tokenizer: Path | None, data: DataConfig) -> str:
    """A hash of what the prepared data depends on. Files are known by path, size and mtime;
    the packaged corpus and a given tokenizer by content (reinstalling must not rebuild)."""
    packaged = default_corpus_path().resolve()

    def identity(path: Path) -> list:
        path = path.resolve()
        if path == packaged:
            return ["sha256", file_sha256(path)]
        stat = path.stat()
        return [str(path), stat.st_size, stat.st_mtime_ns]

    described = {
        "format": FORMAT_VERSION,
        "inputs": [identity(p) for p in inputs],
        "tokenizer": ["sha256", file_sha256(tokenizer)] if tokenizer else {
            "vocab_size": data.vocab_size, "num_sentinels": DEFAULT_NUM_SENTINELS,
            "alpha": TOKENIZER_ALPHA, "seed": TOKENIZER_SEED},
        "split_sentences": True,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


@contextlib.contextmanager
def _exclusive(lock_path: Path, progress: bool) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path``, waiting for another holder to finish."""
    with open(lock_path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if progress:
                print(f"waiting for another process preparing data ({lock_path})",
                      file=sys.stderr)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build(entry: Path, inputs: Sequence[Path], tokenizer: Path | None, data: DataConfig,
           workers: int | None, progress: bool) -> None:
    # Only the lock holder gets here: temporary directories of this entry are left-overs of a
    # build that died, and can go.
    for stale in entry.parent.glob(f"{entry.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    # Imported here: they load nltk (with scipy, over a second), which a run that finds its
    # data prepared, and every rank that waits for the one building, never needs.
    from megatron_seqpt.data.preprocess import default_workers, preprocess
    from megatron_seqpt.tokenizer.training import CONFIG_SIZE_SETTINGS, train_tokenizer

    building = entry.with_name(f"{entry.name}.tmp-{os.getpid()}")
    building.mkdir()
    try:
        if tokenizer is None:
            train_tokenizer(inputs, data.vocab_size, building / "tokenizer",
                            sampling_alpha=TOKENIZER_ALPHA, num_sentinels=DEFAULT_NUM_SENTINELS,
                            seed=TOKENIZER_SEED, progress=progress,
                            named=CONFIG_SIZE_SETTINGS)
        model = tokenizer or building / "tokenizer.model"
        summary = preprocess(inputs, building / "data", model, workers=workers or
                             default_workers(inputs), split_sentences=True, progress=progress)
        manifest = {
            "format": FORMAT_VERSION,
            "inputs": [str(p) for p in inputs],
            "tokenizer_model": str(tokenizer) if tokenizer else "tokenizer.model",
            "prefixes": {lang: Path(prefix).name
                         for lang, prefix in summary.prefixes().items()},
            "skipped": dict(summary.skips.counts),
        }
        (building / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        os.rename(building, entry)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise


def _load(entry: Path, tokenizer: Path | None) -> PreparedData:
    manifest = json.loads((entry / MANIFEST).read_text())
    prefixes = {lang: str(entry / name) for lang, name in manifest["prefixes"].items()}
    model = tokenizer or entry / "tokenizer.model"
    missing = [path for prefix in prefixes.values() for path in _missing(Path(prefix))]
    missing += [] if model.is_file() else [model]
    if missing:
        raise UserError(f"the prepared data in {entry} is incomplete ({missing[0].name} is "
                        "gone); delete that directory and the next run builds it again")
    return PreparedData(model, prefixes, {lang: token_count(p) for lang, p in prefixes.items()},
                        entry)

"""The default corpus as raw records, and a tokenizer trained on it once per test session:
what the text-pipeline tests (tokenizer training, sentences, preprocess) start from."""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path

from megatron_seqpt.text.corpus import default_corpus_path

CORPUS = default_corpus_path()
VOCAB_SIZE = 4000
_TMP = tempfile.TemporaryDirectory(prefix="seqpt-test-text-")


@functools.lru_cache(maxsize=None)
def records() -> tuple[dict, ...]:
    with open(CORPUS, encoding="utf-8") as lines:
        return tuple(json.loads(line) for line in lines)


def texts_of(lang: str) -> list[str]:
    return [record["text"] for record in records() if record["lang"] == lang]


@functools.lru_cache(maxsize=None)
def tokenizer_model() -> Path:
    from megatron_seqpt.tokenizer.training import train_tokenizer

    return train_tokenizer([CORPUS], VOCAB_SIZE, Path(_TMP.name) / "tok", progress=False)


def write_jsonl(path: Path, rows) -> Path:
    """Rows are records (dicts) or raw lines (bytes/str) written as they are."""
    with open(path, "wb") as out:
        for row in rows:
            if isinstance(row, dict):
                row = json.dumps(row, ensure_ascii=False)
            out.write((row if isinstance(row, bytes) else row.encode("utf-8")) + b"\n")
    return path

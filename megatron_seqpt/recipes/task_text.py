"""The reproduction's in-domain pre-training text: the running text of the grid's tasks'
training splits, added to the built-in corpus so that the models pre-train on the language the
tasks are scored on (the built-in corpus is a short legal text; the built-in tasks are chat).

A text that also occurs in any task's validation or test split (compared without case,
punctuation or spacing) is left out, so no scored example is seen in pre-training. The texts of
one language are grouped into documents of ``LINES_PER_DOCUMENT`` lines, in the order the task
files hold them, so that pre-training samples span several sentences."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

from megatron_seqpt.config import load
from megatron_seqpt.files import publish_files
from megatron_seqpt.recipes.stages import task_settings
from megatron_seqpt.tasks.config import FinetuneConfig
from megatron_seqpt.tasks.examples import (
    ClassificationExample,
    Example,
    Seq2SeqExample,
    TaggingExample,
)
from megatron_seqpt.tasks.task_data import load_splits

LINES_PER_DOCUMENT = 16
UNKNOWN_LANGUAGE = "xx"
# Whose text wins when two tasks hold the same sentence: a seq2seq target and a classification
# text keep their case and punctuation, a tagging sentence's words often lose them.
KIND_ORDER = ("seq2seq", "classification", "tagging")


@dataclass(frozen=True)
class TaskText:
    """What ``write_task_text`` wrote."""

    path: Path
    texts: int
    documents: int
    held_out: int   # training texts left out because a validation or test split holds them


def _texts(example: Example) -> Iterator[str]:
    """The running text of an example: what a model reading the task sees as language (a
    seq2seq source is only the target with its form taken away, so the target alone)."""
    if isinstance(example, ClassificationExample):
        yield example.text
        if example.text_pair:
            yield example.text_pair
    elif isinstance(example, TaggingExample):
        yield example.text()
    elif isinstance(example, Seq2SeqExample):
        yield example.target


def _all_texts(example: Example) -> Iterator[str]:
    yield from _texts(example)
    if isinstance(example, Seq2SeqExample):
        yield example.source


def _key(text: str) -> str:
    """Texts that differ only in case, punctuation or spacing are the same sentence."""
    return "".join(ch for ch in text.casefold() if ch.isalnum())


def write_task_text(tasks: Mapping[str, str], path: Path) -> TaskText:
    """Write the training text of ``tasks`` (task kind -> built-in task or task config file) to
    ``path`` as corpus jsonl (``text``, ``lang``), the same bytes for the same tasks."""
    held: set[str] = set()
    train: list[Example] = []
    ordered = sorted(tasks.items(), key=lambda item: KIND_ORDER.index(item[0])
                     if item[0] in KIND_ORDER else len(KIND_ORDER))
    for task in dict.fromkeys(task for _, task in ordered):
        config = load(FinetuneConfig, *task_settings(task))
        splits = load_splits(config.task, with_test=True)
        train += splits.train
        for example in [*splits.valid, *(splits.test or [])]:
            held.update(_key(text) for text in _all_texts(example))
    by_language: dict[str, list[str]] = {}
    seen: set[str] = set()
    held_out = 0
    for example in train:
        for text in _texts(example):
            key = _key(text)
            if not key or key in seen:
                continue
            seen.add(key)
            if key in held:
                held_out += 1
                continue
            by_language.setdefault(example.lang or UNKNOWN_LANGUAGE, []).append(text)
    lines = []
    for lang in sorted(by_language):
        texts = by_language[lang]
        for start in range(0, len(texts), LINES_PER_DOCUMENT):
            document = "\n".join(texts[start:start + LINES_PER_DOCUMENT])
            lines.append(json.dumps({"text": document, "lang": lang}, ensure_ascii=False))
    data = ("\n".join(lines) + "\n").encode("utf-8")
    # Rewritten only when it changed, so a continued reproduction keeps its data cache.
    if not (path.is_file() and path.read_bytes() == data):
        path.parent.mkdir(parents=True, exist_ok=True)
        publish_files({path: data})
    return TaskText(path, sum(len(t) for t in by_language.values()), len(lines), held_out)

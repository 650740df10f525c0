"""The reproduction's pre-training text from the tasks: every training text once, in its richest
form, and nothing a validation or test split holds; the grid pre-trains on it unless the user
gives a corpus."""

import json

from megatron_seqpt.recipes.reproduce_grid import (
    DEFAULT_TASKS,
    SCALES,
    TASK_TEXT,
    pretrain_configs,
)
from megatron_seqpt.recipes.task_text import LINES_PER_DOCUMENT, _key, write_task_text
from megatron_seqpt.tasks.builtin import BUILTIN_TASKS
from megatron_seqpt.text.corpus import default_corpus_path


def _jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _conll_sentences(path):
    sentences, words = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            continue
        if not line.strip():
            if words:
                sentences.append(" ".join(words))
            words = []
        else:
            words.append(line.split("\t")[0])
    return sentences + ([" ".join(words)] if words else [])


def _scored_texts():
    """Every text of the built-in tasks' validation and test files, read here independently."""
    texts = []
    for split in ("validation", "test"):
        for record in _jsonl(getattr(BUILTIN_TASKS["topic"], split)):
            texts += [record["text"], record.get("text_pair") or ""]
        for record in _jsonl(getattr(BUILTIN_TASKS["restore"], split)):
            texts += [record["source"], record["target"]]
        texts += _conll_sentences(getattr(BUILTIN_TASKS["punct"], split))
    return {_key(text) for text in texts if text}


def test_task_text_holds_the_training_text_and_nothing_scored(tmp_path):
    path = tmp_path / "task_text.jsonl"
    result = write_task_text(DEFAULT_TASKS, path)
    documents = _jsonl(path)
    assert len(documents) == result.documents
    lines = [line for doc in documents for line in doc["text"].split("\n")]
    assert len(lines) == result.texts
    assert all(len(doc["text"].split("\n")) <= LINES_PER_DOCUMENT for doc in documents)
    keys = [_key(line) for line in lines]
    key_set = set(keys)
    assert len(key_set) == len(keys)
    scored = _scored_texts()
    assert not key_set & scored
    assert result.held_out > 0
    # A sentence in both restore (cased, punctuated) and punct (lower-case words) comes in the
    # restore form; every restore training target not held out is there (one of those that
    # differ only in spacing or punctuation).
    targets = [r["target"] for r in _jsonl(BUILTIN_TASKS["restore"].train)]
    kept = set(lines)
    assert sum(t in kept for t in targets) > 0.9 * len(set(map(_key, targets)) - scored)
    accounted = key_set | scored
    missing = [t for t in targets if _key(t) not in accounted]
    assert not missing, missing[:3]
    punct = _conll_sentences(BUILTIN_TASKS["punct"].train)
    assert not set(punct) & kept  # lower-case, unpunctuated: the restore form won
    topic = _jsonl(BUILTIN_TASKS["topic"].train)
    assert {r["lang"] for r in topic} <= {doc["lang"] for doc in documents}
    # Written again: the same bytes, and the file is left alone (a data cache keys on it).
    before = path.stat().st_mtime_ns, path.read_bytes()
    write_task_text(DEFAULT_TASKS, path)
    assert (path.stat().st_mtime_ns, path.read_bytes()) == before


def test_the_grid_pretrains_on_the_task_text_unless_a_corpus_is_given(tmp_path):
    default = pretrain_configs(tmp_path, SCALES["micro"], [])
    for config in default.values():
        assert config.data.corpus == [str(default_corpus_path()), str(tmp_path / TASK_TEXT)]
    mine = tmp_path / "mine.jsonl"
    given = pretrain_configs(tmp_path, SCALES["micro"], [f"data.corpus=[{mine}]"])
    for config in given.values():
        assert config.data.corpus == [str(mine)]

"""The built-in downstream task data: files present and well-formed, several languages, no text
in two splits, evaluation labels seen in training, and not solvable by guessing the majority."""

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from megatron_seqpt.errors import UserError
from megatron_seqpt.tasks.builtin import BUILTIN_TASKS, BuiltinTask, builtin_task

TASKS = sorted(BUILTIN_TASKS)
SPLITS = ("train", "validation", "test")
RESTORE_REMOVED = set(",.?!;:।。、？！，\"“”«»")
DECIMAL_MARK = re.compile(r"(?<=\d)[.,](?=\d)")  # 40.075 keeps its point


@dataclass(frozen=True)
class Example:
    key: str                  # the input text, to find an example in two splits
    labels: tuple[str, ...]   # its label, or one tag per word; empty for seq2seq
    lang: str


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def blocks(path: Path) -> list[list[str]]:
    """The sentences of a CoNLL or CoNLL-U file: groups of lines between blank lines."""
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n\n") and "\n\n\n" not in text
    return [block.split("\n") for block in text.rstrip("\n").split("\n\n")]


def comments(block: list[str]) -> dict[str, str]:
    return dict(line[2:].split(" = ", 1) for line in block if line.startswith("# "))


def rows(block: list[str]) -> list[list[str]]:
    return [line.split("\t") for line in block if not line.startswith("# ")]


def normalised(text: str) -> str:
    return " ".join(text.casefold().split())


def examples(task: BuiltinTask, path: Path) -> list[Example]:
    if task.name == "topic":
        return [Example(normalised(r["text"]), (r["label"],), r["lang"]) for r in read_jsonl(path)]
    if task.name == "restore":
        return [Example(normalised(r["source"]), (), r["lang"]) for r in read_jsonl(path)]
    if task.name == "punct":
        return [Example(" ".join(r[0] for r in rows(b)), tuple(r[1] for r in rows(b)),
                        comments(b)["lang"]) for b in blocks(path)]
    return [Example(normalised(comments(b)["text"]), tuple(r[3] for r in rows(b)), "tr")
            for b in blocks(path)]


@pytest.fixture(scope="module")
def data() -> dict[str, dict[str, list[Example]]]:
    return {name: {split: examples(task, getattr(task, split)) for split in SPLITS}
            for name, task in BUILTIN_TASKS.items()}


def test_registry_and_unknown_task():
    assert TASKS == ["pos_tr", "punct", "restore", "topic"]
    assert builtin_task("topic") is BUILTIN_TASKS["topic"]
    with pytest.raises(UserError, match="pos_tr, punct, restore, topic"):
        builtin_task("sentiment")


@pytest.mark.parametrize("name", TASKS)
def test_files_exist_with_sizes_in_proportion(name, data):
    task = BUILTIN_TASKS[name]
    for split in SPLITS:
        assert getattr(task, split).is_file()
    sizes = {split: len(data[name][split]) for split in SPLITS}
    assert sizes["test"] >= 100 and sizes["validation"] >= 100
    assert 6 <= sizes["train"] / sizes["test"] <= 10


def test_total_size_stays_small():
    paths = [getattr(task, split) for task in BUILTIN_TASKS.values() for split in SPLITS]
    assert sum(p.stat().st_size for p in paths) <= 3_000_000


@pytest.mark.parametrize("split", SPLITS)
def test_topic_records(split):
    for record in read_jsonl(getattr(BUILTIN_TASKS["topic"], split)):
        assert sorted(record) == ["label", "lang", "text", "text_pair"]
        assert all(isinstance(v, str) and v == v.strip() and v for v in record.values())


@pytest.mark.parametrize("split", SPLITS)
def test_restore_records(split):
    for record in read_jsonl(getattr(BUILTIN_TASKS["restore"], split)):
        assert sorted(record) == ["lang", "source", "target"]
        source, target = record["source"], record["target"]
        assert source == source.lower() and source == " ".join(source.split())
        assert not RESTORE_REMOVED & set(DECIMAL_MARK.sub("", source)), record
        assert source != target and len(target) <= 160


@pytest.mark.parametrize("split", SPLITS)
def test_punct_sentences(split):
    for block in blocks(getattr(BUILTIN_TASKS["punct"], split)):
        assert block[0].startswith("# lang = ") and not any(
            line.startswith("#") for line in block[1:])
        words = rows(block)
        assert len(words) >= 3 and all(len(row) == 2 and row[0] == row[0].lower()
                                       for row in words)
        assert words[-1][1] in ("PERIOD", "QUESTION", "EXCLAMATION")


@pytest.mark.parametrize("split", SPLITS)
def test_pos_sentences_are_conllu_whose_words_give_the_text(split):
    for block in blocks(getattr(BUILTIN_TASKS["pos_tr"], split)):
        assert [line.split(" = ")[0] for line in block[:2]] == ["# sent_id", "# text"]
        words = rows(block)
        assert all(len(row) == 10 for row in words)
        assert [row[0] for row in words] == [str(i) for i in range(1, len(words) + 1)]
        assert all(row[9] in ("_", "SpaceAfter=No") for row in words)
        text = "".join(r[1] + ("" if r[9] == "SpaceAfter=No" else " ") for r in words)
        assert text.rstrip(" ") == comments(block)["text"]


@pytest.mark.parametrize("name", TASKS)
def test_languages_match_the_registry(name, data):
    task = BUILTIN_TASKS[name]
    for split in SPLITS:
        assert sorted({e.lang for e in data[name][split]}) == sorted(task.languages), split
    if name != "pos_tr":
        assert len(task.languages) >= 2


@pytest.mark.parametrize("name", TASKS)
def test_no_text_in_two_splits(name, data):
    keys = {split: {e.key for e in data[name][split]} for split in SPLITS}
    assert not keys["train"] & keys["test"]
    assert not keys["train"] & keys["validation"]
    assert not keys["validation"] & keys["test"]


@pytest.mark.parametrize("name", [n for n in TASKS if BUILTIN_TASKS[n].labels])
def test_evaluation_labels_are_seen_in_training(name, data):
    def labels(split):
        return {label for e in data[name][split] for label in e.labels}

    assert labels("train") == set(BUILTIN_TASKS[name].labels)
    assert labels("validation") <= labels("train") and labels("test") <= labels("train")


@pytest.mark.parametrize("name", [n for n in TASKS if BUILTIN_TASKS[n].labels])
def test_majority_class_is_far_from_solving_the_task(name, data):
    majority = Counter(label for e in data[name]["train"] for label in e.labels).most_common(1)
    test_labels = [label for e in data[name]["test"] for label in e.labels]
    accuracy = test_labels.count(majority[0][0]) / len(test_labels)
    assert accuracy < 0.9


def test_copying_the_source_never_restores(data):
    records = read_jsonl(BUILTIN_TASKS["restore"].test)
    assert not [r for r in records if r["source"] == r["target"]]

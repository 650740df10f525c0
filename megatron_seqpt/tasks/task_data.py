"""The examples of a task's train/valid/test splits: from the task config's files (or a
built-in task's), or held back from the training file when no validation or test file is given
(a fixed seed decides which examples)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from megatron_seqpt.errors import UserError
from megatron_seqpt.runtime.log import log
from megatron_seqpt.tasks.builtin import builtin_task
from megatron_seqpt.tasks.config import TaskConfig
from megatron_seqpt.tasks.examples import Example, TaggingExample
from megatron_seqpt.tasks.readers import ReadReport, read_task_file
from megatron_seqpt.tasks.splits import parse_split, split_examples


@dataclass(frozen=True)
class TaskFiles:
    kind: str
    train: Path
    validation: Optional[Path]
    test: Optional[Path]
    tag_column: str
    # Language of examples whose data names none.
    lang: Optional[str] = None


@dataclass
class TaskSplits:
    train: list[Example]
    valid: list[Example]
    test: Optional[list[Example]]
    # Where each split came from, for logs and eval.json.
    sources: dict[str, str] = field(default_factory=dict)


def task_kind(task: TaskConfig) -> str:
    return task.kind or builtin_task(task.builtin).kind


def task_files(task: TaskConfig) -> TaskFiles:
    """The files of the task: the config's, over those of a built-in task."""
    kind = task_kind(task)
    if task.builtin is not None:
        builtin = builtin_task(task.builtin)
        if task.kind is not None and task.kind != builtin.kind:
            raise UserError(f"task.kind is {task.kind}, but the built-in task {builtin.name} is "
                            f"a {builtin.kind} task; leave task.kind out")
        given = [Path(p).expanduser() if p else None
                 for p in (task.train_file, task.validation_file, task.test_file)]
        only = builtin.languages[0] if len(builtin.languages) == 1 else None
        return TaskFiles(kind, given[0] or builtin.train, given[1] or builtin.validation,
                         given[2] or builtin.test, builtin.tag_column or task.tag_column,
                         task.lang or only)
    return TaskFiles(kind, Path(task.train_file).expanduser(),
                     Path(task.validation_file).expanduser() if task.validation_file else None,
                     Path(task.test_file).expanduser() if task.test_file else None,
                     task.tag_column, task.lang)


def read_split(path: Path, task: TaskConfig, files: TaskFiles) -> list[Example]:
    report = ReadReport()
    examples = read_task_file(path, files.kind, on_error=task.on_error,
                              tag_column=files.tag_column, lang=files.lang, report=report)
    if report.skipped.counts:
        log(f"{path}: left out {report.skipped.describe()}")
    return examples


def load_splits(task: TaskConfig, *, with_test: bool = False) -> TaskSplits:
    """Train and valid examples (and test ones with ``with_test``)."""
    files = task_files(task)
    train = read_split(files.train, task, files)
    sources = {"train": str(files.train)}
    valid = read_split(files.validation, task, files) if files.validation else None
    test = read_split(files.test, task, files) if files.test and with_test else None
    if valid is None:
        shares = parse_split(task.split)
        held_test = files.test is None and shares[2] > 0
        # With a test file of its own, training keeps the test share too.
        fractions = shares if held_test else (shares[0] + shares[2], shares[1], 0.0)
        train, valid, held = split_examples(train, fractions, task.split_seed)
        sources["valid"] = f"{files.train} (held back: task.split {task.split})"
        if held_test and with_test:
            test = held
            sources["test"] = sources["valid"]
        if held_test:
            sources["train"] = f"{files.train} (the rest)"
    else:
        sources["valid"] = str(files.validation)
    if files.test:
        sources["test"] = str(files.test)
    return TaskSplits(train, valid, test, sources)


def example_labels(examples: list[Example]) -> list[str]:
    """The label (tag) set of examples, sorted."""
    found = set()
    for example in examples:
        if isinstance(example, TaggingExample):
            found.update(example.tags)
        elif hasattr(example, "label"):
            found.add(example.label)
    return sorted(found)

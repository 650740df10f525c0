"""The downstream tasks shipped with the package, so that fine-tuning runs offline without user
data. What each holds, where it comes from and its licence:
megatron_seqpt/resources/tasks/SOURCE.md; rebuilt by tools/build_task_data.py.

File formats: ``*.jsonl`` one JSON object per line; ``*.conll`` two columns (word, tag), a
blank line after each sentence and a ``# lang = xx`` comment before it; ``*.conllu`` CoNLL-U.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path

from megatron_seqpt.errors import UserError
from megatron_seqpt.tasks.examples import TaskKind

TOPIC_LABELS = ("ai", "botprofile", "computers", "conversations", "emotion", "food", "gossip",
                "greetings", "history", "humor", "literature", "money", "movies", "politics",
                "psychology", "science", "sports", "trivia")
PUNCT_TAGS = ("O", "COMMA", "PERIOD", "QUESTION", "EXCLAMATION")
# The treebank's coarse tags: Google's universal tag set plus ONOM and AFFIX (not UD v2 UPOS).
TURKISH_UPOS = ("ADJ", "ADP", "ADV", "AFFIX", "CONJ", "DET", "NOUN", "NUM", "ONOM", "PRON",
                "PRT", "PUNCT", "VERB", "X")


@dataclass(frozen=True)
class BuiltinTask:
    """One built-in task: what kind of model head it needs, its files and its languages."""

    name: str
    kind: TaskKind
    description: str
    train: Path
    validation: Path
    test: Path
    languages: tuple[str, ...]
    labels: tuple[str, ...] = ()         # the label or tag set; empty for seq2seq
    tag_column: str | None = None        # the CoNLL-U column holding the tags


def _task(name: str, kind: TaskKind, description: str, suffix: str,
          languages: tuple[str, ...], labels: tuple[str, ...] = (),
          tag_column: str | None = None) -> BuiltinTask:
    """A task whose files are resources/tasks/NAME/{train,valid,test}SUFFIX in the package."""
    root = Path(str(importlib.resources.files("megatron_seqpt") / "resources" / "tasks" / name))
    return BuiltinTask(name, kind, description, train=root / f"train{suffix}",
                       validation=root / f"valid{suffix}", test=root / f"test{suffix}",
                       languages=languages, labels=labels, tag_column=tag_column)


BUILTIN_TASKS: dict[str, BuiltinTask] = {task.name: task for task in (
    _task("topic", "classification",
          "topic of a chatbot utterance and its reply (jsonl: text, text_pair, label, lang)",
          ".jsonl", ("de", "en", "es", "fr", "it", "ja", "pt"), TOPIC_LABELS),
    _task("punct", "tagging",
          "punctuation restoration: the mark after each lower-cased word (word<TAB>tag)",
          ".conll", ("de", "en", "es", "fr", "hi", "it", "pt"), PUNCT_TAGS),
    _task("restore", "seq2seq",
          "punctuation and casing restoration (jsonl: source, target, lang)",
          ".jsonl", ("de", "en", "es", "fr", "hi", "it", "ja", "pt")),
    _task("pos_tr", "tagging",
          "Turkish part-of-speech tagging, human-annotated treebank (CoNLL-U, UPOS column)",
          ".conllu", ("tr",), TURKISH_UPOS, tag_column="upos"),
)}


def builtin_task(name: str) -> BuiltinTask:
    """The built-in task called NAME, or an error that lists the known ones."""
    try:
        return BUILTIN_TASKS[name]
    except KeyError:
        raise UserError(f"unknown built-in task {name!r}; the built-in tasks are "
                        f"{', '.join(sorted(BUILTIN_TASKS))}") from None

"""One downstream example per task kind, as the readers produce them and fine-tuning consumes them.

Each example keeps ``where`` ("FILE:LINE") so that later checks (a label the task does not know,
a text too long for the model) can name the record the user has to look at.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

TaskKind = Literal["classification", "tagging", "seq2seq"]


@dataclass(frozen=True)
class ClassificationExample:
    text: str
    label: str
    text_pair: str | None = None
    lang: str | None = None
    where: str = ""


@dataclass(frozen=True)
class TaggingExample:
    words: tuple[str, ...]
    tags: tuple[str, ...]
    # Whether a space follows each word in running text (CoNLL-U SpaceAfter=No gives False);
    # the text a tokenizer sees is the words joined accordingly.
    space_after: tuple[bool, ...]
    lang: str | None = None
    where: str = ""  # "FILE:LINE" of the sentence's first line

    def __post_init__(self):
        if not len(self.words) == len(self.tags) == len(self.space_after):
            raise ValueError(f"{self.where}: {len(self.words)} words, {len(self.tags)} tags and "
                             f"{len(self.space_after)} space_after flags; they must match")

    def text(self) -> str:
        """The running text: the words joined with the spaces ``space_after`` gives."""
        return join_words(self.words, self.space_after)[0]


@dataclass(frozen=True)
class Seq2SeqExample:
    source: str
    target: str
    lang: str | None = None
    where: str = ""


Example = ClassificationExample | TaggingExample | Seq2SeqExample


def join_words(words: Sequence[str], space_after: Sequence[bool]) -> tuple[str, list[int]]:
    """The running text and the character offset where each word starts in it.

    One space follows a word whose ``space_after`` is True, except the last word: the text a
    model sees never ends in a space.
    """
    parts: list[str] = []
    starts: list[int] = []
    length = 0
    for i, word in enumerate(words):
        if i and space_after[i - 1]:
            parts.append(" ")
            length += 1
        starts.append(length)
        parts.append(word)
        length += len(word)
    return "".join(parts), starts

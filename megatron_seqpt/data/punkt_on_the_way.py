"""Punkt parameters learned during sentence-mode preprocessing's one pass over the input.

A language's Punkt parameters come from the first ``sample_chars`` of its text in input order
(``LanguageSurvey``). A survey pass over the whole input used to collect those samples, which
cost a full extra read and parse of the corpus. Here the main pass collects them: an encoder
hands back unencoded the records of a language it has no parameters for (``deferred``).
Results arrive in input order, so a language's deferred records begin with its first one; they
are held until their text fills the sample (or the input ends). The sample then goes out as a
lesson (``Lesson``, learned by a worker, which writes the parameters to a file), the records
stay held until it comes back, and are then released to be encoded. Deferred records of a
learned language (chunks sent before it was learned) are released at once. The parameters
reach the workers as that file, named in each later task: pickling them into every task would
cost a good part of a chunk's transfer. Each language's documents reach its dataset in input
order, so the outputs are the bytes a survey pass first gave. Deferred records travel and are
held as columns (``RecordColumns``), so that the one process that holds them does no work per
record beyond its language's sample.
"""

from __future__ import annotations

import pickle
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from nltk.tokenize.punkt import PunktParameters

from megatron_seqpt.text.corpus import Record
from megatron_seqpt.text.sentences import DEFAULT_SAMPLE_CHARS, LanguageSurvey, learn_punkt


@dataclass
class RecordColumns:
    """Records of one language, in order, as a list per field. A list of plain values pickles
    in C, a list of Records one object at a time (3-4 us each), and many thousands cross
    between processes when a language's text comes in a block: workers hand them back, the
    reading process holds them and sends them out again."""

    lang: str
    paths: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    texts: list[tuple[str, ...]] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, records: Iterable[Record]) -> list[RecordColumns]:
        """The records grouped by language, in order within each."""
        by_lang: dict[str, RecordColumns] = {}
        for record in records:
            columns = by_lang.get(record.lang)
            if columns is None:
                columns = by_lang[record.lang] = cls(record.lang)
            columns.paths.append(record.path)
            columns.lines.append(record.line)
            columns.texts.append(record.texts)
            columns.sizes.append(record.nbytes)
        return list(by_lang.values())

    @property
    def nbytes(self) -> int:
        return sum(self.sizes)

    def records(self) -> Iterator[Record]:
        lang = self.lang
        for path, line, texts, size in zip(self.paths, self.lines, self.texts, self.sizes):
            yield Record(path, line, lang, texts, size)


@dataclass(frozen=True)
class Lesson:
    """A language's sample, and the file its learned parameters go to."""

    lang: str
    sample: str
    path: str


def learn_lesson(lesson: Lesson) -> float:
    """Learn the lesson's parameters into its file (in a worker); the seconds it took."""
    started = time.perf_counter()
    params = learn_punkt(lesson.sample)
    Path(lesson.path).write_bytes(pickle.dumps(params, protocol=pickle.HIGHEST_PROTOCOL))
    return time.perf_counter() - started


@dataclass
class _Held:
    """A language's deferred records so far and the sample their text makes."""

    records: list[RecordColumns] = field(default_factory=list)
    survey: LanguageSurvey = field(default_factory=LanguageSurvey)
    # Its lesson is out: the sample is complete, records are only held.
    learning: bool = False
    # Input bytes of its records.
    nbytes: int = 0


class PunktOnTheWay:
    """Holds deferred records per language, gives each language's lesson once its sample is
    full, and names the parameter file of each learned language (``files``). A context
    manager: the files are removed on leaving."""

    def __init__(self, sample_chars: int = DEFAULT_SAMPLE_CHARS):
        self.sample_chars = sample_chars
        self._directory: tempfile.TemporaryDirectory | None = None
        # Language -> its parameters' pickle: what a task carries, read by a worker once.
        self.files: dict[str, str] = {}
        self._held: dict[str, _Held] = {}
        self._lessons = 0
        # Time spent learning, summed over the processes that learned (a cost per language).
        self.seconds = 0.0

    def __enter__(self) -> PunktOnTheWay:
        return self

    def __exit__(self, *exc) -> None:
        if self._directory is not None:
            self._directory.cleanup()

    def release(self, deferred: list[RecordColumns]
                ) -> tuple[list[RecordColumns], list[Lesson]]:
        """Of these deferred records (each language's in input order): those that can be
        encoded now (of a language learned before), and the lessons of languages whose sample
        they filled."""
        released: list[RecordColumns] = []
        lessons: list[Lesson] = []
        for columns in deferred:
            if columns.lang in self.files:
                released.append(columns)
                continue
            held = self._held.setdefault(columns.lang, _Held())
            held.records.append(columns)
            held.nbytes += columns.nbytes
            if held.learning:
                continue
            survey = held.survey
            for texts in columns.texts:
                for text in texts:
                    survey.offer(text, self.sample_chars)
                if survey.sample_chars >= self.sample_chars:
                    lessons.append(self._lesson(columns.lang))
                    break
        return released, lessons

    @property
    def waiting_bytes(self) -> int:
        """Input bytes of the records held for languages whose lesson is out (they wait for
        it, not for more text)."""
        return sum(held.nbytes for held in self._held.values() if held.learning)

    def lessons_left(self) -> list[Lesson]:
        """At the end of the input: the lesson of every language whose sample never filled,
        from the text it has."""
        return [self._lesson(lang) for lang in sorted(self._held)
                if not self._held[lang].learning]

    def learned(self, lesson: Lesson, seconds: float) -> list[RecordColumns]:
        """The lesson is learned (its file written): the language's held records, released."""
        self.files[lesson.lang] = lesson.path
        self.seconds += seconds
        return self._held.pop(lesson.lang).records

    def _lesson(self, lang: str) -> Lesson:
        held = self._held[lang]
        held.learning = True
        if self._directory is None:
            self._directory = tempfile.TemporaryDirectory(prefix="seqpt-punkt-")
        self._lessons += 1
        return Lesson(lang, "\n".join(held.survey.sample),
                      str(Path(self._directory.name) / f"{self._lessons}.pickle"))


def load_learned(files: Mapping[str, str], lang: str) -> PunktParameters | None:
    """A learned language's parameters from ``files`` (``PunktOnTheWay.files``), else None."""
    path = files.get(lang)
    if path is None:
        return None
    return pickle.loads(Path(path).read_bytes())

"""Punkt learned during preprocessing's one pass: each language from the first text a survey of
the whole input would sample, its records released in input order, the parameter files read
back as what was learned."""

import random
from pathlib import Path

import pytest

from megatron_seqpt.data.punkt_on_the_way import (
    PunktOnTheWay,
    RecordColumns,
    learn_lesson,
    load_learned,
)
from megatron_seqpt.text.corpus import Record
from megatron_seqpt.text.sentences import learn_punkt, survey_languages
from tests.punkt_params import params_facts
from tests.raw_corpus import records


def corpus_records(seed: int) -> list[Record]:
    """The default corpus shuffled, each record with two texts (text and its first line)."""
    rows = list(records())
    random.Random(seed).shuffle(rows)
    return [Record("in.jsonl", line, row["lang"], (row["text"], row["text"].split("\n")[0]), 0)
            for line, row in enumerate(rows, 1)]


@pytest.mark.parametrize("sample_chars", [700, 3_000, 10**9])
def test_languages_are_learned_from_their_first_text_and_released_in_input_order(sample_chars):
    recs = corpus_records(sample_chars)
    surveys = survey_languages(((r.lang, text) for r in recs for text in r.texts), sample_chars)
    lesson_at: dict[str, int] = {}
    with PunktOnTheWay(sample_chars) as learning:
        released = []
        # Batches as chunks bring them; a lesson is learned one batch after it is given, so
        # records of its language keep coming meanwhile (held), and after (released at once).
        out = []
        for start in range(0, len(recs), 13):
            for lesson in out:
                released += learning.learned(lesson, learn_lesson(lesson))
            now, out = learning.release(RecordColumns.of(recs[start:start + 13]))
            released += now
            lesson_at.update((lesson.lang, start) for lesson in out)
        for lesson in out + learning.lessons_left():
            released += learning.learned(lesson, learn_lesson(lesson))
        assert learning.lessons_left() == [] and learning.seconds > 0
        files = dict(learning.files)
        folder = Path(next(iter(files.values()))).parent
        for lang, survey in surveys.items():
            learned = load_learned(files, lang)
            assert params_facts(learned) == params_facts(learn_punkt("\n".join(survey.sample)))
    assert not folder.exists()
    assert load_learned(files, "xx") is None
    released = [record for columns in released for record in columns.records()]
    assert sorted(released, key=lambda r: r.line) == recs
    for lang, survey in surveys.items():
        assert [r.line for r in released if r.lang == lang] == [
            r.line for r in recs if r.lang == lang]
        if survey.sample_chars >= sample_chars:
            # The lesson is given with the batch holding the record of the sample's last text.
            texts = [(index, text) for index, r in enumerate(recs) if r.lang == lang
                     for text in r.texts]
            filling = texts[len(survey.sample) - 1][0]
            assert lesson_at[lang] == filling - filling % 13
        else:
            assert lang not in lesson_at
    if sample_chars < 10**9:
        assert lesson_at

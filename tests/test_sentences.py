"""Sentence splitting per language on the default corpus: lossless, Punkt learned from the text
itself, punctuation rules for Japanese, danda and Arabic marks, paragraph breaks."""

import json
import random
import re

import pytest
import regex
from nltk.tokenize.punkt import (
    PunktLanguageVars,
    PunktParameters,
    PunktSentenceTokenizer,
)

from megatron_seqpt.errors import UserError
from megatron_seqpt.text.punkt_training import as_re, unguarded, word_pattern
from megatron_seqpt.tasks.builtin import builtin_task
from megatron_seqpt.text.sentences import (
    MAX_PARAGRAPH_CHARS,
    CachedPunkt,
    CachedToken,
    MultilingualLanguageVars,
    SentenceSplitter,
    learn_punkt,
    learn_splitters,
    line_candidates,
    load_punkt_dir,
    survey_languages,
    uses_punkt,
)
from tests.punkt_params import nltk_learned, params_facts
from tests.raw_corpus import records, texts_of

LANGS = sorted({record["lang"] for record in records()})


@pytest.fixture(scope="module")
def splitters():
    surveys = survey_languages((r["lang"], r["text"]) for r in records())
    params = learn_splitters({lang: s.sample for lang, s in surveys.items()})
    return {lang: SentenceSplitter(lang, p) for lang, p in params.items()}


def squeeze(text):
    return re.sub(r"\s+", "", text)


@pytest.mark.parametrize("lang", LANGS)
def test_split_is_lossless_and_paragraphs_end_sentences(splitters, lang):
    splitter = splitters[lang]
    for text in texts_of(lang):
        spans = list(splitter.spans(text))
        sentences = [text[a:b] for a, b in spans]
        # In order, non-overlapping, only whitespace in between, each stripped and non-empty.
        bounds = [0] + [x for span in spans for x in span] + [len(text)]
        gaps = [text[bounds[i]:bounds[i + 1]] for i in range(0, len(bounds), 2)]
        assert all(not gap.strip() for gap in gaps)
        assert all(s and s == s.strip() for s in sentences)
        assert "\n".join(sentences) == text or squeeze("".join(sentences)) == squeeze(text)
        # No sentence spans a paragraph break, and there are at least as many as paragraphs.
        assert all("\n" not in s for s in sentences)
        assert len(sentences) >= len([p for p in text.split("\n") if p.strip()])


def test_each_language_splits_inside_paragraphs(splitters):
    for lang in LANGS:
        texts = texts_of(lang)
        sentences = sum(len(splitters[lang].split(t)) for t in texts)
        paragraphs = sum(len(t.split("\n")) for t in texts)
        assert sentences > paragraphs, lang


def test_japanese_splits_after_its_punctuation_not_inside_quotes(splitters):
    ja = splitters["ja"]
    assert not uses_punkt("ja") and not uses_punkt("zh-Hans") and uses_punkt("en")
    for text in texts_of("ja"):
        for paragraph in text.split("\n"):
            sentences = ja.split(paragraph)
            assert "".join(sentences) == paragraph
            # Every 。 ends a sentence (UDHR's Japanese has no brackets around one).
            assert len(sentences) == paragraph.count("。") + (not paragraph.endswith("。"))
            assert all(s.endswith("。") for s in sentences[:-1])
    assert ja.split("「自由とは何か。」と彼は問うた。答えはない！本当？") == [
        "「自由とは何か。」と彼は問うた。", "答えはない！", "本当？"]


def test_hindi_danda_ends_sentences(splitters):
    hi = splitters["hi"]
    checked = 0
    for text in texts_of("hi"):
        for paragraph in text.split("\n"):
            expected = [s.strip() for s in re.split(r"(?<=।)\s+", paragraph) if s.strip()]
            if "।" in paragraph.rstrip(" ।"):
                checked += 1
            assert hi.split(paragraph) == expected
    assert checked > 5


def test_arabic_question_mark_and_marathi_full_stop(splitters):
    first, second = texts_of("ar")[0].split("\n")[:2]
    question = first.rstrip(".") + "؟"
    assert splitters["ar"].split(question + " " + second) == [
        question] + splitters["ar"].split(second)
    mr = texts_of("mr")
    two = mr[3].strip() + " " + mr[4].split("\n")[0]
    assert len(splitters["mr"].split(two)) == 2


def test_punkt_learns_abbreviations_from_the_text():
    english = "\n".join(texts_of("en"))
    # "Art." cited often in the middle of sentences: Punkt must learn it is no sentence end.
    citing = " ".join(f"This right is set out in Art. {n} of the Declaration."
                      for n in range(1, 31))
    params = learn_punkt(english + "\n" + citing)
    assert "art" in params.abbrev_types
    text = "Everyone has this right under Art. 3 of the Declaration. Nobody may take it."
    assert SentenceSplitter("en", params).split(text) == [
        "Everyone has this right under Art. 3 of the Declaration.", "Nobody may take it."]


def test_punkt_parameters_load_from_a_punkt_tab_directory(tmp_path):
    params = learn_punkt("\n".join(texts_of("en"))
                         + " ".join(f"See Art. {n} of it." for n in range(1, 31)))
    folder = tmp_path / "english"          # nltk's punkt_tab names: english, german, ...
    folder.mkdir()
    (folder / "abbrev_types.txt").write_text("\n".join(sorted(params.abbrev_types)) + "\n")
    for name in ("collocations.tab", "sent_starters.txt", "ortho_context.tab"):
        (folder / name).write_text("")
    loaded = load_punkt_dir(tmp_path, "en")
    assert isinstance(loaded, PunktParameters) and loaded.abbrev_types == params.abbrev_types
    assert load_punkt_dir(tmp_path, "de") is None
    learned = learn_splitters({"en": ["x."], "de": texts_of("de"), "ja": ["。"]}, tmp_path)
    assert learned["en"].abbrev_types == params.abbrev_types and learned["ja"] is None
    with pytest.raises(UserError, match="does not exist"):
        load_punkt_dir(tmp_path / "missing", "en")


# Candidate sentence ends through every branch of Punkt's decision: abbreviations (learned and
# not), initials, numbers, ellipses, quotes and brackets after the mark, lower-case and
# upper-case continuations; each context appears twice, so the second is a remembered decision.
EDGE_CASES = ("Dr. Smith met J. S. Bach in 1999. The meeting... It went well! \"Really?\" she "
              "asked. (Yes.) ok. no. Art. 5 applies, see Art. 6. e.g. this one. U.S. officials "
              "said so. 3.14. Pi is round. It ended at 5 p.m. Then we left.. Or not. ") * 2


def builtin_texts(lang):
    """The language's text in the default corpus and in the built-in tasks."""
    texts = list(texts_of(lang))
    for task, field in (("topic", "text_pair"), ("restore", "target")):
        with open(builtin_task(task).train, encoding="utf-8") as lines:
            texts += [row[field] for row in map(json.loads, lines) if row["lang"] == lang]
    return texts + [EDGE_CASES]


@pytest.mark.parametrize("lang", [lang for lang in LANGS if uses_punkt(lang)])
def test_cached_punkt_splits_as_nltk_does(lang):
    surveys = survey_languages((r["lang"], r["text"]) for r in records())
    params = learn_punkt("\n".join(surveys[lang].sample) + "\n" + EDGE_CASES)
    cached = CachedPunkt(params, MultilingualLanguageVars())
    plain = PunktSentenceTokenizer(params, lang_vars=MultilingualLanguageVars())
    paragraphs = [p for text in builtin_texts(lang) for p in text.split("\n") if p.strip()]
    assert [list(cached.span_tokenize(p)) for p in paragraphs] == [
        list(plain.span_tokenize(p)) for p in paragraphs]
    assert cached.text_contains_sentbreak.cache_info().hits > 0


# Pieces of random paragraphs: what Punkt's rules turn on (abbreviations, initials, numbers,
# ellipses, runs of marks, closing punctuation, other whitespace than spaces).
_MARKS = [".", "!", "?", "!!!", "?!", "..", "...", ". . .", "।", "؟", ".)", ".\"", ".»", ".”",
          ")", "(", "\"", "'", "«", "»", "“", "”", "--", ";", ":", ",", "%", "-", "*", "]"]
_SPACES = [" ", " ", " ", "  ", "\t", "\x0b", "\xa0", "\u2028", "\r", ""]


def random_paragraph(rng, params, words):
    vocabulary = (words + [a + "." for a in params.abbrev_types]
                  + [f"{a}. {b}" for a, b in params.collocations]
                  + [w.capitalize() for w in params.sent_starters]
                  + ["J.", "S.", "e.g.", "U.S.", "3.", "1999.", "-2,5.", "12.5", "No.", "a.b.c."])
    pieces = []
    for _ in range(rng.randint(1, 40)):
        piece = rng.choice(vocabulary)
        piece = rng.choice([piece, piece.capitalize(), piece.upper(), piece.lower()])
        if rng.random() < 0.4:
            piece += rng.choice(_MARKS)
        pieces.append(piece + rng.choice(_SPACES))
    return "".join(pieces)


@pytest.mark.parametrize("lang", ["en", "de", "fr", "hi", "ar"])
@pytest.mark.parametrize("collocations", ["learned", "of_ordinary_words"])
def test_cached_punkt_splits_random_text_as_nltk_does(lang, collocations):
    rng = random.Random(lang)
    text = "\n".join(builtin_texts(lang))
    params = learn_punkt(text)
    words = sorted(set(re.findall(r"\w+", text)))
    if collocations == "of_ordinary_words":
        # Parameters loaded from a punkt_tab directory may pair any words; learned ones mostly
        # start with numbers and initials.
        params.collocations = {(a.lower(), b.lower()) for a, b in
                               zip(rng.sample(words, 200), rng.sample(words, 200))}
    cached = CachedPunkt(params, MultilingualLanguageVars())
    plain = PunktSentenceTokenizer(params, lang_vars=MultilingualLanguageVars())
    paragraphs = [random_paragraph(rng, params, words) for _ in range(3000)]
    assert [list(cached.span_tokenize(p)) for p in paragraphs] == [
        list(plain.span_tokenize(p)) for p in paragraphs]
    assert sum(len(list(plain.span_tokenize(p))) > 1 for p in paragraphs) > 1000


@pytest.mark.parametrize("lang", ["en", "de", "hi", "ar"])
def test_punkt_learns_the_parameters_nltk_learns(lang):
    text = "\n".join(builtin_texts(lang))
    expected, learned = nltk_learned(text), learn_punkt(text)
    assert params_facts(learned) == params_facts(expected)


@pytest.mark.parametrize("lang", ["en", "de", "hi"])
def test_punkt_learns_the_parameters_nltk_learns_from_random_text(lang):
    """The language's text mixed with random paragraphs, blank lines between some: words seen
    with and without a period, rare abbreviations before lower-case words, initials, numbers
    and ellipses."""
    rng = random.Random(lang)
    text = "\n".join(builtin_texts(lang))
    params = learn_punkt(text)
    words = sorted(set(re.findall(r"\w+", text)))
    lines = [random_paragraph(rng, params, words) for _ in range(3000)] + text.split("\n")
    rng.shuffle(lines)
    sample = "".join(line + rng.choice(["\n", "\n", "\n\n", "\n \n"]) for line in lines)
    expected, learned = nltk_learned(sample), learn_punkt(sample)
    assert len(expected.abbrev_types) > 3 and expected.ortho_context
    assert params_facts(learned) == params_facts(expected)


@pytest.mark.parametrize("text", ["", " \n\n", "a.", "A. b.", "Dr. Smith. Dr. Jones went.",
                                  "...", "1. 2. 3.", "-- --", "\n\nHello.\n\nWorld", "x\n \ny."])
def test_punkt_learns_what_nltk_learns_from_tiny_samples(text):
    """A language with a few words (its sample at the end of the input) or none: the arrays
    over positions and pairs may be empty."""
    expected, learned = nltk_learned(text), learn_punkt(text)
    assert params_facts(learned) == params_facts(expected)


def test_tokens_of_many_words_are_those_made_one_by_one():
    """Types from one lowering and substitution over the words joined by lines: numbers of
    every shape, final and inner sigmas, letters that lower to two, separators that ``regex``
    counts as text; a word holding a line break falls back to one at a time."""
    rng = random.Random(3)
    pieces = ["1", "-2", ".5", ",3", "4.", "7-8", "a", "B", "ΣΑΣ", "Σ", "'", "İ", "ẞ", "\x1c",
              ".", "-", ",", "##number##", "١٢"]
    words = sorted({"".join(rng.choices(pieces, k=rng.randint(1, 4))) for _ in range(5000)})
    slots = ("tok", "type", "period_final", "parastart", "linestart", "sentbreak", "abbr",
             "ellipsis")

    def facts(tokens):
        return [tuple(getattr(token, slot) for slot in slots) for token in tokens]

    for batch in (words, words[:50] + ["a\nb"], []):
        assert facts(CachedToken.of_words(batch)) == facts(map(CachedToken, batch))
    assert sum(CachedToken(word).is_number for word in words) > 100


def test_survey_keeps_a_bounded_sample():
    surveys = survey_languages(((r["lang"], r["text"]) for r in records()), sample_chars=1000)
    assert sorted(surveys) == LANGS
    for lang, survey in surveys.items():
        texts = texts_of(lang)
        assert survey.documents == len(texts) and survey.chars == sum(map(len, texts))
        assert 1000 <= survey.sample_chars < 1000 + max(map(len, texts))


def varied_texts(splitter, lang):
    """Multi-line texts with blank and whitespace-only lines, lines that hold a mark only at
    their end, other line-end whitespace, closing punctuation at a line's start after a
    line's last mark, lines Punkt would split that hold no mark with whitespace after it, and
    a line long enough to be cut into windows."""
    rng = random.Random(lang)
    params = splitter._punkt._params if splitter._punkt else PunktParameters()
    words = sorted(set(re.findall(r"\w+", "\n".join(texts_of(lang)))))
    lines = [random_paragraph(rng, params, words) for _ in range(2000)]
    lines += ["", " ", "\t \xa0", "Ends here.", "Ends here. ", "Ends. here\r", "x.\u2028y",
              " lead. Trail ", "。", "a. b\r", "He said \"Stop.\"", "\" Then he left.",
              ") and more. Next", "» Fin. Oui", "a.)b", "Stop!(Go", "Why?\"No. Way", "x.\x1c",
              "\t!!:Say, what? Yes", " !) x", "\t?!? Yes."]
    # Lines that start with whitespace and a mark: nltk's word before the mark starts at the
    # line's start there, not after the whitespace.
    lines += [rng.choice(_SPACES) + rng.choice(_MARKS) + random_paragraph(rng, params, words)
              for _ in range(300)]
    # Lines Punkt need not see, and lines it must see only for their other whitespace.
    plain = ["  indented words", "words\t", "\xa0Ends here.", "Ends here.  ", "Two. Ends."]
    plain += [f"Ends.{space}here" for space in ("\t", "\xa0", "\u2028", "\x0b", "\u3000")]
    texts = ["\n".join(rng.choices(pool, k=rng.randint(1, 12)))
             for pool in (lines, plain, plain[:5]) for _ in range(500)]
    return texts + texts_of(lang) + ["\n".join(lines)] + [" ".join(words) * 3]


@pytest.mark.parametrize("lang", ["en", "de", "hi", "ja"])
def test_split_gives_the_sentences_of_spans(splitters, lang):
    """``split`` goes over the lines of a text at once, without offsets; its sentences are
    those of ``spans``, which goes paragraph by paragraph."""
    splitter = SentenceSplitter(lang, splitters[lang]._punkt._params
                                if splitters[lang]._punkt else None)
    texts = varied_texts(splitter, lang)
    assert any(len(t) > MAX_PARAGRAPH_CHARS for t in texts)
    for text in texts:
        assert splitter.split(text) == [text[a:b] for a, b in splitter.spans(text)]


@pytest.mark.parametrize("lang", ["en", "de", "hi", "ja"])
def test_split_many_gives_the_sentences_of_each_text(splitters, lang):
    """Texts split together (as preprocessing does) give each text's own sentences: none
    crosses from one text into the next, and closing punctuation at a text's start stays."""
    splitter = splitters[lang]
    texts = [t for t in varied_texts(splitter, lang) if len(t) <= MAX_PARAGRAPH_CHARS]
    random.Random(0).shuffle(texts)
    # Texts after one that ends in a mark, starting with closing punctuation.
    texts += ["He said \"Stop.\"", "\" Then he left. ok", "Ends.", "» Fin. Oui", "x.", ")"]
    expected = [[text[a:b] for a, b in splitter.spans(text)] for text in texts]
    for batch in (slice(0, 1), slice(0, 2), slice(0, None)):
        sentences, counts = splitter.split_many(texts[batch])
        assert counts == [len(e) for e in expected[batch]]
        assert sentences == [s for e in expected[batch] for s in e]
    assert [e[0][0] for e in expected[-5:]] == ["\"", "E", "»", "x", ")"]
    # A text too long for one piece is split by itself, its neighbours as ever.
    long_text = " ".join(["Word."] * (MAX_PARAGRAPH_CHARS // 5))
    sentences, counts = splitter.split_many(texts[:3] + [long_text])
    assert counts == [len(e) for e in expected[:3]] + [len(list(splitter.spans(long_text)))]


# Characters on which Punkt's patterns turn, and whitespace that ``re`` and ``regex`` see alike
# and unlike (\x1c-\x1f).
_PATTERN_ALPHABET = ["a", "Bc", "1", ".", "!", "?", "।", "؟", "\"", "'", ")", "(", "»", "”", ":",
                     ",", "-", "--", "...", ". . .", " ", "  ", "\t", "\r", "\x0b", "\x1c",
                     "\x1f", "\x85", "\xa0", "\u2028", "\u3000", "\n"]


@pytest.mark.parametrize("lang_vars", [MultilingualLanguageVars(), PunktLanguageVars()])
def test_punkts_word_pattern_compiled_by_re_finds_nltks_words(lang_vars):
    nltks = unguarded(lang_vars._word_tokenizer_re())
    rng = random.Random(1)
    lines = ["".join(rng.choices(_PATTERN_ALPHABET[:-1], k=rng.randint(0, 60)))
             for _ in range(20_000)]
    expected = [nltks.findall(line) for line in lines]
    for ours in (as_re(nltks), word_pattern(lang_vars)):
        assert isinstance(ours, re.Pattern)
        assert [ours.findall(line) for line in lines] == expected
    # A pattern it cannot spell in re (\\w differs too) is kept as it is.
    kept = regex.compile(r"\w+\s")
    assert as_re(kept) is kept


class _OtherWordEnds(PunktLanguageVars):
    _word_tokenize_fmt = r"(%(MultiChar)s|(?=%(WordStart)s)\S+?(?=\s|$|%(NonWord)s)|\S)"


class _LettersStartWords(PunktLanguageVars):
    _re_word_start = r"\p{L}"       # ``regex`` reads it, ``re`` does not


@pytest.mark.parametrize("lang_vars", [_OtherWordEnds(), _LettersStartWords()])
def test_word_pattern_keeps_nltks_for_word_rules_it_does_not_know(lang_vars):
    nltks = unguarded(lang_vars._word_tokenizer_re())
    pattern = word_pattern(lang_vars)
    assert pattern.pattern == as_re(nltks).pattern
    lines = ["Ab,c.. d", "-x 1y, (z)", "ü. . . v--w"]
    assert [pattern.findall(line) for line in lines] == [nltks.findall(line) for line in lines]


def test_line_candidates_are_nltks_candidates_on_each_line_alone():
    """The candidate pattern of Python's ``re`` over a text of many lines finds what nltk's
    (``regex``) finds on each line alone, with whitespace that the two engines see alike and
    unlike (\\x1c-\\x1f), closing punctuation and every mark."""
    nltks = unguarded(MultilingualLanguageVars().period_context_re())
    ours = line_candidates(nltks)
    assert isinstance(ours, re.Pattern)
    rng = random.Random(0)
    text = "".join(rng.choices(_PATTERN_ALPHABET, k=200_000))

    def found(pattern, line, offset=0):
        return [(m.start() + offset, m.end() + offset, m.group("after_tok"), m.group("next_tok"))
                for m in pattern.finditer(line)]

    expected, offset = [], 0
    for line in text.split("\n"):
        expected += found(nltks, line, offset)
        offset += len(line) + 1
    assert found(ours, text) == expected
    assert sum(next_tok is not None for *_, next_tok in expected) > 1000

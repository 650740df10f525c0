"""Sentence splitting for many languages with nltk's Punkt, learned from the corpus itself.

nltk's pretrained Punkt models cannot be downloaded here, so each language's Punkt parameters
(abbreviations, collocations, sentence starters) are learned as ``PunktTrainer`` learns them from a
bounded sample of that language's text, or loaded from a directory in nltk's ``punkt_tab``
format. Punkt is told about more sentence-final marks than '.', '?', '!': the Devanagari danda
and the Arabic, Urdu, Armenian and Ethiopic marks. Scripts that write no space between
sentences (Japanese, Chinese, Thai, ...) do not suit Punkt; they split after their sentence
punctuation (。！？), except inside brackets and quotes (「...。」と言った。 is one sentence).
A line break always ends a sentence (paragraphs are separated by "\\n").
Punkt here is nltk's parameters, rules and annotation methods, with what it derives from a
word and its decisions computed once each and its candidate loop fused (``CachedToken``,
``CachedPunkt``): the same sentences and parameters, tested against nltk's tokenizer. Many
texts are split at once (``SentenceSplitter.split_many``): their lines in one call, Punkt's
candidates on every line in one search, and only the lines with a break looked at one by one;
the same sentences as text by text, line by line (tested).

Splitting is lossless: sentences are non-overlapping slices of the text, in order, and only
whitespace lies between them, so the text is its sentences joined by the whitespace they left.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import nltk
import nltk.data
import numpy as np
import regex
from nltk.data import FileSystemPathPointer
from nltk.tokenize.punkt import (
    PunktLanguageVars,
    PunktParameters,
    PunktSentenceTokenizer,
    PunktToken,
    load_punkt_params,
)

from megatron_seqpt.errors import UserError
from megatron_seqpt.text.corpus import ByteProgress, ReadOptions, Skips, read_records
from megatron_seqpt.text.punkt_training import as_re, train_punkt, unguarded, word_pattern

# Languages written without spaces between sentences (ISO 639-1 and -3 primary subtags).
NO_SPACE_LANGUAGES = frozenset({"ja", "jpn", "zh", "zho", "cmn", "yue", "wuu", "th", "tha",
                                "lo", "lao", "km", "khm", "my", "mya", "bo", "bod"})
# Characters of text per language Punkt learns from (~50k words): enough to find the frequent
# abbreviations, and learning takes well under a second.
DEFAULT_SAMPLE_CHARS = 300_000
# nltk's punkt_tab directory names its models by English language name.
_PUNKT_TAB_NAMES = {
    "cs": "czech", "da": "danish", "nl": "dutch", "en": "english", "et": "estonian",
    "fi": "finnish", "fr": "french", "de": "german", "el": "greek", "it": "italian",
    "ml": "malayalam", "no": "norwegian", "nb": "norwegian", "pl": "polish", "pt": "portuguese",
    "ru": "russian", "sl": "slovene", "es": "spanish", "sv": "swedish", "tr": "turkish",
}
_PARAGRAPH = re.compile(r"[^\n]+")
# In scripts without spaces: sentence punctuation, and the brackets and quotes that it must not
# split inside of (「こんにちは。」と言った。 is one sentence).
_NO_SPACE_MARK = re.compile(r"(?P<open>[「『（〔【《〈“‘])|(?P<close>[」』）〕】》〉”’])"
                            r"|(?P<end>[。！？｡!?]+)")


class MultilingualLanguageVars(PunktLanguageVars):
    """Punkt's rules with the sentence-final marks of more scripts than Latin."""

    sent_end_chars = (".", "?", "!", "।", "॥", "؟", "۔", "։", "።", "፧")


# Punkt decisions remembered per language (a context is a few words: ~1 MB at most), and word
# types per process.
DECISION_CACHE_SIZE = 8192
PAIR_CACHE_SIZE = 1 << 15
WORD_CACHE_SIZE = 1 << 15


# nltk's patterns for a word's facts, without their guard (``unguarded``).
_NUMBER = unguarded(PunktToken._RE_NUMERIC)
_ELLIPSIS = unguarded(PunktToken._RE_ELLIPSIS)
_INITIAL = unguarded(PunktToken._RE_INITIAL)


# The number pattern over many words at once, a word a line (``CachedToken.of_words``).
_NUMBER_LINES = regex.compile(_NUMBER.pattern, _NUMBER.flags | regex.MULTILINE)


@functools.lru_cache(WORD_CACHE_SIZE)
def _word_type(tok: str) -> str:
    # nltk's ``PunktToken._get_type`` with its number pattern.
    return _NUMBER.sub("##number##", tok.lower())


@functools.lru_cache(WORD_CACHE_SIZE)
def _is_ellipsis(tok: str) -> bool:
    return bool(_ELLIPSIS.match(tok))


@functools.lru_cache(WORD_CACHE_SIZE)
def _is_initial(tok: str) -> bool:
    return bool(_INITIAL.match(tok))


class CachedToken(PunktToken):
    """nltk's Punkt token whose regex-derived facts (the type, whether an ellipsis or an
    initial), functions of the word alone, are computed once per word: nltk runs each of its
    regexes through a guard that costs more than the match."""

    __slots__ = ()

    def __init__(self, tok: str, **params):
        self._start(tok, _word_type(tok))
        for name, value in params.items():
            setattr(self, name, value)

    def _start(self, tok: str, typ: str) -> None:
        """nltk's token of ``tok`` before annotation, whose type is ``typ``."""
        self.tok, self.type, self.period_final = tok, typ, tok.endswith(".")
        self.parastart = self.linestart = self.sentbreak = self.abbr = self.ellipsis = None

    @classmethod
    def of_words(cls, words: list[str]) -> list[CachedToken]:
        """Tokens of many words at once, as ``cls(word)`` makes them. Learning meets each
        distinct word once, where the per-word cache of types only misses: their types come
        from one lowering and one substitution over the words a line each (lowering is per
        character; a line break, neither cased nor case-ignorable, ends a final sigma's
        context as the end of a word does)."""
        types = _NUMBER_LINES.sub("##number##", "\n".join(words).lower()).split("\n")
        if len(types) != len(words):  # a word holding a line break: one at a time
            return [cls(word) for word in words]
        tokens, new = [], cls.__new__
        for word, typ in zip(words, types):
            token = new(cls)
            token._start(word, typ)
            tokens.append(token)
        return tokens

    @property
    def is_ellipsis(self) -> bool:
        return _is_ellipsis(self.tok)

    @property
    def is_initial(self) -> bool:
        return _is_initial(self.tok)


class CachedPunkt(PunktSentenceTokenizer):
    """nltk's Punkt tokenizer with its candidate loop fused and its decisions kept.

    Punkt's decision at a candidate (a sentence-final mark and some whitespace) is a function
    of its context alone, the words around the mark under fixed parameters
    (``text_contains_sentbreak``): a break follows a word when nltk's two annotation passes
    over that word and the next one mark it, a function of the two words, and for most words
    of the word alone. Each context's decision is kept (DECISION_CACHE_SIZE contexts: "it. The"
    recurs), each word's where the next word cannot change it, and each word pair's
    (PAIR_CACHE_SIZE pairs, decided by nltk's own annotation methods). Candidates, decisions
    and the realignment of closing punctuation run in two loops instead of nltk's chain of
    generators, with its patterns unguarded (``unguarded``). Output is nltk's: tests compare
    the two on the built-in text, edge cases and random text.
    """

    def __init__(self, params: PunktParameters, lang_vars: PunktLanguageVars):
        super().__init__(params, lang_vars=lang_vars, token_cls=CachedToken)
        self._sent_end_chars = frozenset(lang_vars.sent_end_chars)
        self._word_tokenize = word_pattern(lang_vars).findall
        candidates = unguarded(lang_vars.period_context_re())
        self._find_candidates = candidates.finditer
        self._find_line_candidates = line_candidates(candidates).finditer
        self._match_closing = unguarded(lang_vars.re_boundary_realignment).match
        self._pair_breaks: dict[tuple[str, str], bool] = {}
        self._collocation_starts = frozenset(first for first, _ in params.collocations)
        self._breaks_before_any = functools.lru_cache(WORD_CACHE_SIZE)(self._breaks_before_any)
        self.text_contains_sentbreak = functools.lru_cache(DECISION_CACHE_SIZE)(
            self._contains_sentbreak)

    def _contains_sentbreak(self, text: str) -> bool:
        """nltk's ``text_contains_sentbreak``: a break after any word but the last."""
        words = [word for line in text.split("\n") if line.strip()
                 for word in self._word_tokenize(line)]
        return any(map(self._breaks_after, words, words[1:]))

    def _breaks_after(self, word: str, next_word: str) -> bool:
        if not word.endswith("."):
            # nltk's second pass looks only at words ending in a period; its first pass marks
            # a bare sentence-final mark as a break.
            return word in self._sent_end_chars
        if self._breaks_before_any(word):
            return True
        decided = self._pair_breaks.get((word, next_word))
        if decided is None:
            if len(self._pair_breaks) >= PAIR_CACHE_SIZE:
                self._pair_breaks.clear()
            token, next_token = CachedToken(word), CachedToken(next_word)
            self._first_pass_annotation(token)
            self._first_pass_annotation(next_token)
            self._second_pass_annotation(token, next_token)
            decided = self._pair_breaks[(word, next_word)] = bool(token.sentbreak)
        return decided

    def _breaks_before_any(self, word: str) -> bool:
        """Whether a break follows this period-final word whatever the next word is: nltk's
        first pass marks it a break (not an abbreviation or ellipsis), and its second pass
        can undo that only for initials, numbers and the first word of a collocation."""
        stem = word[:-1]
        if len(stem) > 1 and stem.isalpha():
            return self._letters_break_before_any(stem)
        token = CachedToken(word)
        self._first_pass_annotation(token)
        return bool(token.sentbreak) and not token.is_initial and \
            token.type_no_period != "##number##" and \
            token.type_no_period not in self._collocation_starts

    def _letters_break_before_any(self, stem: str) -> bool:
        """``_breaks_before_any(stem + ".")`` for a stem of two or more letters (most words):
        not an initial, a number or an ellipsis, and its type without the period is its lower
        case."""
        lower = stem.lower()
        return lower not in self._params.abbrev_types and lower not in self._collocation_starts

    def span_tokenize(self, text: str, realign_boundaries: bool = True
                      ) -> Iterator[tuple[int, int]]:
        """nltk's ``span_tokenize``: its candidates, decisions and realignment of closing
        punctuation in two loops instead of a chain of generators."""
        if not realign_boundaries:
            return super().span_tokenize(text, realign_boundaries)
        return iter(self.spans_of_breaks(text, self._breaks(text, self._find_candidates)))

    def spans_of_breaks(self, text: str, breaks: list[tuple[int, int]]
                        ) -> list[tuple[int, int]]:
        """``span_tokenize``'s spans of a text whose breaks (``_breaks``) are known: nltk's
        ``_slices_from_text`` and its realignment of closing punctuation."""
        slices, last_break = [], 0
        for end, next_start in breaks:
            slices.append((last_break, end))
            last_break = next_start
        slices.append((last_break, len(text.rstrip())))
        spans, realign = [], 0
        for (start, stop), (next_start, next_stop) in zip(slices, slices[1:]):
            start += realign
            closing = (self._match_closing(text, next_start, next_stop) if next_start < next_stop
                       else None)
            if closing:
                spans.append((start, next_start + len(closing.group().rstrip())))
                realign = closing.end() - next_start
            else:
                realign = 0
                if start < stop:
                    spans.append((start, stop))
        start, stop = slices[-1]
        if start + realign < stop:
            spans.append((start + realign, stop))
        return spans

    def line_breaks(self, text: str) -> list[tuple[int, int]]:
        """The breaks (``_breaks``) Punkt decides on each line of ``text`` alone, in one
        search over the whole text (most lines are short), on the lines whose stripped text
        holds a mark that some whitespace follows (``_MAYBE_SEVERAL``; any other line is one
        sentence): a break with a next word on its line shows that; a break before
        punctuation keeps its line's test."""
        breaks = self._breaks(text, self._find_line_candidates)
        checked: dict[int, bool] = {}
        kept = []
        for end, next_start in breaks:
            if next_start == end:
                line_start = text.rfind("\n", 0, end) + 1
                passes = checked.get(line_start)
                if passes is None:
                    line_end = text.find("\n", end)
                    line = text[line_start:line_end if line_end >= 0 else len(text)]
                    passes = checked[line_start] = bool(_MAYBE_SEVERAL.search(line.strip()))
                if not passes:
                    continue
            kept.append((end, next_start))
        return kept

    def _breaks(self, text: str, find_candidates: Callable[[str], Iterator[re.Match]]
                ) -> list[tuple[int, int]]:
        """(end, start of the next sentence) of each break Punkt decides in ``text``, in order:
        nltk's ``_match_potential_end_contexts`` and its decisions."""
        candidates: list[tuple[re.Match, int]] = []  # a mark and where the word before starts
        word_start = word_end = 0
        last_space = _LAST_ASCII_SPACE.search
        for match in find_candidates(text):
            # The word before the mark starts after the last whitespace since the previous
            # mark; with none there it reaches back over the previous mark's word, and then
            # nltk drops the previous candidate. On a new line the search starts afresh, as on
            # that line alone (where whitespace at its start is not looked past).
            mark = match.start()
            if line_start := text.rfind("\n", word_end, mark) + 1:
                word_start = word_end = line_start
            space = last_space(text, word_end, mark)
            start = space.end() if space and space.start() > word_end else word_start
            if candidates and word_end > start:
                candidates.pop()
            candidates.append((match, start))
            word_start, word_end = start, mark
        breaks = []
        for match, start in candidates:
            word, mark = text[start:match.start()], match.group()
            # Any other mark than '.' is a token of its own (Punkt's word pattern ends words
            # before it) and some token follows it in the context, so the context holds a
            # break. A context "word." whose word is letters only starts with the token "word.":
            # when that breaks before any next token, the context holds a break.
            if mark != "." or (len(word) > 1 and word.isalpha()
                               and self._letters_break_before_any(word)) or \
                    self.text_contains_sentbreak(word + mark + match.group("after_tok")):
                breaks.append((match.end(), match.start("next_tok") if match.group("next_tok")
                               else match.end()))
        return breaks


# nltk looks for the word before a mark back to the last ASCII whitespace (string.whitespace).
_LAST_ASCII_SPACE = regex.compile("[ \t\n\r\x0b\x0c]", regex.REVERSE)

# nltk's candidate pattern with the word after the mark sought on the mark's line only: over a
# text of many lines, the candidates it finds on each line alone.
_NEXT_WORD = r"\s+(?P<next_tok>\S+)"
_NEXT_WORD_ON_LINE = r"(?:(?!\n)\s)+(?P<next_tok>\S+)"


def line_candidates(candidates: regex.Pattern) -> re.Pattern | regex.Pattern:
    """nltk's candidate pattern, for candidates on one line of a text (see above), compiled
    by ``re`` (``as_re``)."""
    if _NEXT_WORD not in candidates.pattern:
        raise RuntimeError(f"nltk {nltk.__version__}'s Punkt candidate pattern does not have "
                           f"the form this module reads ({candidates.pattern!r}); install the "
                           "nltk it is tested with: pip install 'nltk==3.10.*'")
    return as_re(regex.compile(candidates.pattern.replace(_NEXT_WORD, _NEXT_WORD_ON_LINE),
                               candidates.flags))


# Punkt breaks only after a sentence-final mark that some whitespace follows (after closing
# punctuation, maybe): a paragraph without one is one sentence, and Punkt need not look at it.
# Longer paragraphs are cut into windows before Punkt: its work per paragraph stays bounded, and
# nltk runs the regexes it applies to words under a wall-clock limit, so on one huge line whether
# a record passed would depend on the machine's load. A cut
# falls after the last sentence end (else the last space) inside the window: deterministic.
MAX_PARAGRAPH_CHARS = 100_000
_WINDOW_CUT = re.compile(r"[.!?。！？][\"')\]»”’]*\s+|\s+")

_SENT_END_CLASS = f"[{re.escape(''.join(MultilingualLanguageVars.sent_end_chars))}]"
_MAYBE_SEVERAL = re.compile(f"{_SENT_END_CLASS}\\S*\\s")


def primary_language(lang: str) -> str:
    """'zh-Hans' -> 'zh', 'ja_JP' -> 'ja': the part that decides how to split."""
    return re.split(r"[-_.]", lang, maxsplit=1)[0].lower()


def uses_punkt(lang: str) -> bool:
    """Whether the language separates sentences with spaces (Punkt) or not (punctuation)."""
    return primary_language(lang) not in NO_SPACE_LANGUAGES


def learn_punkt(text: str) -> PunktParameters:
    """Punkt parameters learned from a sample of one language's text (unsupervised)."""
    return train_punkt(text, MultilingualLanguageVars(), CachedToken)


def checked_punkt_dir(directory: str | Path) -> Path:
    """``directory`` as a path, or an error saying what it must hold."""
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise UserError(f"Punkt directory {root} does not exist; give a directory holding one "
                        "punkt_tab folder per language (e.g. nltk_data/tokenizers/punkt_tab)")
    return root


def load_punkt_dir(directory: str | Path, lang: str) -> PunktParameters | None:
    """Punkt parameters for ``lang`` from ``directory`` (punkt_tab format), None if absent.

    ``directory/<lang>/`` is tried first, then nltk's English model name (``english``), so
    nltk's own ``tokenizers/punkt_tab`` directory works as it is.
    """
    root = checked_punkt_dir(directory)
    names = [lang, _PUNKT_TAB_NAMES.get(primary_language(lang))]
    for name in filter(None, names):
        if (root / name / "abbrev_types.txt").is_file():
            # nltk reads data only below its data path; the user chose this directory.
            if str(root) not in nltk.data.path:
                nltk.data.path.append(str(root))
            try:
                return load_punkt_params(FileSystemPathPointer(str(root / name)))
            except (LookupError, OSError, ValueError) as err:
                raise UserError(f"cannot read Punkt parameters in {root / name}: {err}; it "
                                "needs collocations.tab, sent_starters.txt, abbrev_types.txt "
                                "and ortho_context.tab") from None
    return None


class SentenceSplitter:
    """Splits one language's text into sentences; parameters None: punctuation rule only."""

    def __init__(self, lang: str, params: PunktParameters | None):
        self.lang = lang
        # Paragraphs cut into windows of at most MAX_PARAGRAPH_CHARS (for the summary).
        self.cut_paragraphs = 0
        self._punkt = None
        if uses_punkt(lang):
            self._punkt = CachedPunkt(params or PunktParameters(), MultilingualLanguageVars())

    def spans(self, text: str) -> Iterator[tuple[int, int]]:
        """(start, end) of each sentence: stripped, non-empty, in order."""
        for offset, paragraph in self._windows(text):
            if not self._punkt:
                pieces = _punctuation_spans(paragraph)
            elif _MAYBE_SEVERAL.search(paragraph.strip()):
                pieces = self._punkt.span_tokenize(paragraph)
            else:
                pieces = [(0, len(paragraph))]
            for start, end in pieces:
                piece = paragraph[start:end]
                stripped = piece.strip()
                if stripped:
                    lead = len(piece) - len(piece.lstrip())
                    yield offset + start + lead, offset + start + lead + len(stripped)

    def split(self, text: str) -> list[str]:
        """The sentences ``spans`` gives, as strings."""
        return self.split_many([text])[0]

    def split_many(self, texts: Sequence[str]) -> tuple[list[str], list[int]]:
        """The sentences ``split`` gives for each text, all in one list, and how many each text
        has. Where no line needs cutting into windows (most text), the texts are split as one:
        their lines at once, then Punkt's breaks (``CachedPunkt.line_breaks``) on the lines
        that have some. On short real documents, work per text or per line in Python cost more
        than Punkt's decisions."""
        if not self._punkt or any(len(text) > MAX_PARAGRAPH_CHARS for text in texts):
            per_text = [[text[start:end] for start, end in self.spans(text)] for text in texts]
            return [s for sentences in per_text for s in sentences], list(map(len, per_text))
        joined = "\n".join(texts)
        lines = joined.split("\n")
        sentences = list(map(str.strip, lines))
        per_line = np.fromiter(map(bool, sentences), np.int64, len(sentences))
        breaks = self._punkt.line_breaks(joined)
        if breaks:
            sentences = self._with_breaks(lines, sentences, per_line, breaks)
        sentences = list(filter(None, sentences))
        if len(texts) == 1:
            return sentences, [len(sentences)]
        lines_per_text = [text.count("\n") + 1 for text in texts]
        first_lines = np.cumsum([0] + lines_per_text[:-1])
        return sentences, np.add.reduceat(per_line, first_lines).tolist()

    def _with_breaks(self, lines: list[str], sentences: list[str], per_line: np.ndarray,
                     breaks: list[tuple[int, int]]) -> list[str]:
        """``sentences`` (one per line) with each line that has Punkt breaks (offsets in the
        lines joined by "\\n") replaced by its sentences; ``per_line`` counts them."""
        line_starts = np.zeros(len(lines), np.int64)
        np.cumsum(np.fromiter(map(len, lines), np.int64, len(lines))[:-1] + 1,
                  out=line_starts[1:])
        line_of = np.searchsorted(line_starts, [end for end, _ in breaks], side="right") - 1
        by_line: dict[int, list[tuple[int, int]]] = {}
        for (end, next_start), line in zip(breaks, line_of.tolist()):
            by_line.setdefault(line, []).append((end, next_start))
        assembled, previous = [], 0
        for line, breaks_on_line in by_line.items():
            text, offset = lines[line], int(line_starts[line])
            spans = self._punkt.spans_of_breaks(
                text, [(end - offset, next_start - offset) for end, next_start in breaks_on_line])
            pieces = [piece for start, end in spans if (piece := text[start:end].strip())]
            assembled += sentences[previous:line]
            assembled += pieces
            per_line[line] = len(pieces)
            previous = line + 1
        assembled += sentences[previous:]
        return assembled

    def _windows(self, text: str) -> Iterator[tuple[int, str]]:
        """(offset, text) of each paragraph, long ones cut into bounded windows."""
        for found in _PARAGRAPH.finditer(text):
            offset, paragraph = found.start(), found.group()
            if len(paragraph) <= MAX_PARAGRAPH_CHARS:
                yield offset, paragraph
                continue
            self.cut_paragraphs += 1
            start = 0
            while len(paragraph) - start > MAX_PARAGRAPH_CHARS:
                window = paragraph[start:start + MAX_PARAGRAPH_CHARS]
                last_space = last_sentence_end = None
                for cut in _WINDOW_CUT.finditer(window):
                    if cut.group()[0].isspace():
                        last_space = cut.end()
                    else:
                        last_sentence_end = cut.end()
                end = last_sentence_end or last_space or len(window)
                yield offset + start, window[:end]
                start += end
            yield offset + start, paragraph[start:]


def _punctuation_spans(paragraph: str) -> Iterator[tuple[int, int]]:
    start, depth = 0, 0
    for mark in _NO_SPACE_MARK.finditer(paragraph):
        if mark.lastgroup == "open":
            depth += 1
        elif mark.lastgroup == "close":
            depth = max(depth - 1, 0)
        elif depth == 0:
            yield start, mark.end()
            start = mark.end()
    if start < len(paragraph):
        yield start, len(paragraph)


@dataclass
class LanguageSurvey:
    """What one pass over a corpus learns per language: sizes and a bounded text sample."""

    documents: int = 0
    chars: int = 0
    sample: list[str] = field(default_factory=list)
    sample_chars: int = 0

    def offer(self, text: str, sample_chars: int) -> bool:
        """Append ``text`` to the sample unless it already holds ``sample_chars``; whether it
        did."""
        if self.sample_chars >= sample_chars:
            return False
        self.sample.append(text)
        self.sample_chars += len(text)
        return True


def survey_languages(texts: Iterable[tuple[str, str]],
                     sample_chars: int = DEFAULT_SAMPLE_CHARS) -> dict[str, LanguageSurvey]:
    """Sizes of each language and the first ``sample_chars`` of its text (memory stays flat)."""
    surveys: dict[str, LanguageSurvey] = {}
    for lang, text in texts:
        survey = surveys.setdefault(lang, LanguageSurvey())
        survey.documents += 1
        survey.chars += len(text)
        survey.offer(text, sample_chars)
    return dict(sorted(surveys.items()))


def survey_inputs(inputs: Sequence[str | Path], options: ReadOptions, skips: Skips | None = None,
                  progress: bool = True, copies: Mapping[Path, Path] = {}
                  ) -> dict[str, LanguageSurvey]:
    """``survey_languages`` over input files (pipes read from their ``copies``): the first pass
    of tokenizer training."""
    with ByteProgress(inputs, "surveying languages", progress, copies) as bar:
        records = read_records(inputs, options, skips, copies)
        return survey_languages((record.lang, text) for record in bar.records(records)
                                for text in record.texts)


def learn_splitters(samples: Mapping[str, list[str]], punkt_dir: str | Path | None = None
                    ) -> dict[str, PunktParameters | None]:
    """Punkt parameters per language: loaded from ``punkt_dir`` where it has them, else learned
    from the sample; None for languages split by punctuation."""
    params: dict[str, PunktParameters | None] = {lang: None for lang in samples}
    to_learn = []
    for lang in filter(uses_punkt, samples):
        params[lang] = load_punkt_dir(punkt_dir, lang) if punkt_dir else None
        if params[lang] is None:
            to_learn.append(lang)
    learned = map(learn_punkt, ["\n".join(samples[lang]) for lang in to_learn])
    params.update(zip(to_learn, learned))
    return params

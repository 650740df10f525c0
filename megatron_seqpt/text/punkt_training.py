"""nltk's Punkt training, with its per-token work done once per distinct word.

``PunktTrainer.train`` builds an annotated token object for every word of the text and runs its
regexes (each under nltk's wall-clock guard) on each: 12-13 us a word here (6-8 us with the
token class of ``sentences``, whose regex facts are cached per word). What the trainer derives
from a word (its type, whether it ends in a period, its first-pass annotation, its case) is a
function of the word alone, so here it is computed once per distinct word; what depends on
position (the orthographic context: paragraph and line starts, the word before) is array
arithmetic over the words' numbers, and the pairs after a period are decided once per distinct
pair. Words are found by an equivalent of nltk's word pattern that ``re`` matches in runs
instead of one lookahead per character (``word_pattern``), and a token class may make the
tokens of all distinct words at once (``CachedToken.of_words``). 300,000-character samples,
best of 3, three rounds alternated with the code that looped over every word: 0.66-0.73 us a
word for the default corpus's 11 languages (1.48-2.23 before), 2.2-3.0 for Debian's fortunes
in 6 (3.6-4.4), whose real text has more distinct words. Every count and the final statistics
are nltk's own: its trainer's counters are filled and its methods decide (tests compare the
parameters with nltk's trainer on real and random text).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Callable

import numpy as np
import regex
from nltk.tokenize.punkt import (
    _ORTHO_MAP,
    PunktLanguageVars,
    PunktParameters,
    PunktToken,
    PunktTrainer,
)


def unguarded(pattern):
    """nltk's pattern without the wall-clock guard nltk (3.10+) runs each call under: it costs
    more than matching a few words, and the text given to Punkt here is bounded."""
    if isinstance(pattern, re.Pattern):
        return pattern
    return regex.compile(pattern.pattern, pattern.flags)


# ``regex``'s whitespace (Unicode's White_Space) is ``re``'s (str.isspace) less \x1c-\x1f.
_AS_RE = {r"\s": r"[^\S\x1c-\x1f]", r"\S": r"[\S\x1c-\x1f]"}


def as_re(pattern: regex.Pattern) -> re.Pattern | regex.Pattern:
    """nltk's pattern compiled by Python's ``re`` where that is exact: Punkt's patterns are
    ``regex`` ones whose only class escapes are \\s and \\S outside brackets, which are spelled
    out as ``regex`` reads them (``re`` matches them twice as fast). Any other pattern is kept
    as it is."""
    source, pieces, in_class, i = pattern.pattern, [], False, 0
    while i < len(source):
        char = source[i]
        if char == "\\":
            escape = source[i:i + 2]
            if escape in _AS_RE and not in_class:
                pieces.append(_AS_RE[escape])
            elif escape[1:].isalnum() and escape[1:] not in "uxntrfv":
                return pattern
            else:
                pieces.append(escape)
            i += 2
            continue
        if char == "[" and not in_class:
            in_class = True
        elif char == "]" and in_class:
            in_class = False
        pieces.append(char)
        i += 1
    flags = re.VERBOSE if pattern.flags & regex.VERBOSE else 0
    if pattern.flags & ~(regex.VERBOSE | regex.UNICODE | regex.VERSION0):
        return pattern
    return re.compile("".join(pieces), flags)


# Whitespace and not, as ``regex`` (nltk's engine) reads \s and \S, spelled for ``re``.
_SPACE, _NON_SPACE = _AS_RE[r"\s"], _AS_RE[r"\S"]


def word_pattern(lang_vars: PunktLanguageVars) -> re.Pattern | regex.Pattern:
    r"""The words nltk's word pattern finds, found faster (``as_re`` of it where the language's
    variables change its pieces in a way this does not know).

    nltk's word is a lazy ``\S+?`` that tries, after each character, whether a word ends there
    (whitespace, the end, a character that cannot be in a word, multi-character punctuation,
    a comma before any of those). A word ends at the first such place, so the same word is a
    run of characters where none holds, and only '.', '-' and ',' need a look ahead to say so:
    the run is matched possessively, ordinary characters many at a time (tested against
    nltk's pattern on random text of the characters it turns on)."""
    fallback = as_re(unguarded(lang_vars._word_tokenizer_re()))
    non_word = lang_vars._re_non_word_chars
    if (type(lang_vars)._word_tokenize_fmt != PunktLanguageVars._word_tokenize_fmt
            or lang_vars._re_multi_char_punct != PunktLanguageVars._re_multi_char_punct
            or not (non_word.startswith("(?:[") and non_word.endswith("])"))
            or "\\s" in non_word or "\\S" in non_word):
        return fallback
    multi_char = r"(?:\-{2,}|\.{2,}|(?:\.%s){2,}\.)" % _SPACE
    word_end = r"%s|%s|%s" % (_SPACE, non_word, multi_char)
    inside = (r"(?:[^\s%s.,\-]++|[\x1c-\x1f]|\.(?!\.|%s\.%s\.)|-(?!-)|,(?!$|%s))"
              % (non_word[4:-2], _SPACE, _SPACE, word_end))
    try:
        return re.compile(r"((?=[.\-])%s|(?=%s)%s%s*+|%s)" % (
            multi_char, lang_vars._re_word_start, _NON_SPACE, inside, _NON_SPACE))
    except re.error:  # a piece written for ``regex`` that ``re`` does not read
        return fallback


def train_punkt(text: str, lang_vars: PunktLanguageVars,
                token_cls: type[PunktToken] = PunktToken) -> PunktParameters:
    """The parameters ``PunktTrainer(lang_vars=lang_vars).train(text)`` learns."""
    trainer = PunktTrainer(lang_vars=lang_vars, token_cls=token_cls)
    words, line_starts = _words(text, word_pattern(lang_vars).findall)
    counts = Counter(words)
    # A token class may make many tokens at once (``CachedToken.of_words``).
    of_words = getattr(token_cls, "of_words", None)
    annotated = dict(zip(counts, of_words(list(counts)) if of_words else map(token_cls, counts)))
    type_counts: dict[str, int] = {}
    for word, count in counts.items():
        typ = annotated[word].type
        type_counts[typ] = type_counts.get(typ, 0) + count
        if word.endswith("."):
            trainer._num_period_toks += count
    trainer._type_fdist.update(type_counts)
    abbrev_types = trainer._params.abbrev_types
    unique_types = {token.type for token in annotated.values()}
    # nltk reclassifies period-final types and known abbreviations and passes over the rest
    # (after a guarded regex search each); asked lazily, as the set changes in the loop.
    candidates = (typ for typ in unique_types if typ.endswith(".") or typ in abbrev_types)
    for abbr, score, is_add in trainer._reclassify_abbrev_types(candidates):
        if score >= trainer.ABBREV and is_add:
            abbrev_types.add(abbr)
        elif score < trainer.ABBREV and not is_add:
            abbrev_types.remove(abbr)
    # First-pass annotation with the abbreviations as they stand now (the pairs below add
    # rare ones, which nltk's first pass never saw).
    for token in annotated.values():
        trainer._first_pass_annotation(token)
    tokens = list(annotated.values())
    number = {word: i for i, word in enumerate(annotated)}
    ids = np.fromiter(map(number.__getitem__, words), dtype=np.int64, count=len(words))
    _add_orthography(trainer._params, tokens, ids, line_starts)
    trainer._sentbreak_count += sum(count for word, count in counts.items()
                                    if annotated[word].sentbreak)
    _count_pairs_after_periods(trainer, tokens, ids)
    trainer.finalize_training()
    return trainer.get_params()


def _words(text: str, tokenize: Callable[[str], list[str]]
           ) -> tuple[list[str], dict[int, bool]]:
    """nltk's ``_tokenize_words``: the words, and for each line's first word its index and
    whether a paragraph starts there (a blank line before it)."""
    words: list[str] = []
    line_starts: dict[int, bool] = {}
    parastart = False
    for line in text.split("\n"):
        if not line.strip():
            parastart = True
            continue
        found = tokenize(line)
        if found:
            line_starts[len(words)] = parastart
            parastart = False
            words.extend(found)
    return words, line_starts


_CONTEXTS = ("internal", "initial", "unknown")
_INTERNAL, _INITIAL, _UNKNOWN = range(3)
_CASES = ("lower", "upper", "none")
# nltk's orthographic flag of a case (row) in a context (column); all below 2**_FLAG_BITS.
_FLAGS = np.array([[_ORTHO_MAP.get((context, case), 0) for context in _CONTEXTS]
                   for case in _CASES], dtype=np.int64)
_FLAG_BITS = 8
assert _FLAGS.max() < 1 << _FLAG_BITS


def _add_orthography(params: PunktParameters, tokens: list[PunktToken], ids: np.ndarray,
                     line_starts: dict[int, bool]) -> None:
    """nltk's ``_get_orthography_data`` over the words (``ids``: each word's index in
    ``tokens``): the case each type appears in, by context (after a sentence break, inside a
    sentence, unknown), which follows from the word before and the line and paragraph starts."""
    after = np.array([(_UNKNOWN if token.is_number or token.is_initial else _INITIAL)
                      if token.sentbreak else
                      _UNKNOWN if token.ellipsis or token.abbr else _INTERNAL
                      for token in tokens], dtype=np.int64)
    case = np.array([_CASES.index(token.first_case) for token in tokens], dtype=np.int64)
    type_number: dict[str, int] = {}
    types = np.array([type_number.setdefault(token.type_no_sentperiod, len(type_number))
                      for token in tokens], dtype=np.int64)
    context = np.empty(len(ids), dtype=np.int64)
    context[:1] = _INTERNAL
    context[1:] = after[ids[:-1]]
    # At a line's first word: a paragraph start makes any context but unknown initial, and
    # inside a paragraph an internal context becomes unknown.
    starts = np.fromiter(line_starts, dtype=np.int64, count=len(line_starts))
    paragraph = np.fromiter(line_starts.values(), dtype=bool, count=len(line_starts))
    at_start = context[starts]
    context[starts] = np.where(paragraph, np.where(at_start == _UNKNOWN, _UNKNOWN, _INITIAL),
                               np.where(at_start == _INTERNAL, _UNKNOWN, at_start))
    flags = _FLAGS[case[ids], context]
    seen = flags != 0
    type_names = list(type_number)
    ortho_context = params.ortho_context
    for key in np.unique((types[ids[seen]] << _FLAG_BITS) | flags[seen]).tolist():
        ortho_context[type_names[key >> _FLAG_BITS]] |= key & ((1 << _FLAG_BITS) - 1)


def _count_pairs_after_periods(trainer: PunktTrainer, tokens: list[PunktToken],
                               ids: np.ndarray) -> None:
    """nltk's loop over each word that ends in a period and the word after it: rare
    abbreviations, potential sentence starters and collocations. Each distinct pair is decided
    once and counted as often as it occurs: the decisions read only the two tokens and the
    statistics gathered before the loop, except that a rare abbreviation is not added twice."""
    ends_in_period = np.array([token.period_final for token in tokens], dtype=bool)
    firsts = np.flatnonzero(ends_in_period[ids[:-1]])
    pairs, occurrences = np.unique(ids[firsts] * len(tokens) + ids[firsts + 1],
                                   return_counts=True)
    abbrev_types = trainer._params.abbrev_types
    for pair, count in zip(pairs.tolist(), occurrences.tolist()):
        first, second = tokens[pair // len(tokens)], tokens[pair % len(tokens)]
        if trainer._is_rare_abbrev_type(first, second):
            abbrev_types.add(first.type_no_period)
        if trainer._is_potential_sent_starter(second, first):
            trainer._sent_starter_fdist[second.type] += count
        if trainer._is_potential_collocation(first, second):
            trainer._collocation_fdist[(first.type_no_period,
                                        second.type_no_sentperiod)] += count

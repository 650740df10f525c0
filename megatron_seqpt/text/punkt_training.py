"""nltk's Punkt training, with its per-token work done once per distinct word.

``PunktTrainer.train`` builds an annotated token object for every word of the text and runs its
regexes (each under nltk's wall-clock guard) on each: 12-13 us a word here (6-8 us with the
token class of ``sentences``, whose regex facts are cached per word). What the trainer derives
from a word (its type, whether it ends in a period, its first-pass annotation, its case) is a
function of the word alone, so here it is computed once per distinct word and the loops over
tokens keep only what depends on position: the orthographic context (paragraph and line starts,
the word before) and the pairs after a period. 3.4-5.5 us a word (300,000 characters of Debian's
fortunes in English, German and Russian, best of 5). Every count and the final statistics are
nltk's own: its trainer's counters are filled and its methods decide (tests compare the
parameters with nltk's trainer on real and random text).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Callable

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


def train_punkt(text: str, lang_vars: PunktLanguageVars,
                token_cls: type[PunktToken] = PunktToken) -> PunktParameters:
    """The parameters ``PunktTrainer(lang_vars=lang_vars).train(text)`` learns."""
    trainer = PunktTrainer(lang_vars=lang_vars, token_cls=token_cls)
    words, line_starts = _words(text, as_re(unguarded(lang_vars._word_tokenizer_re())).findall)
    counts = Counter(words)
    annotated = {word: token_cls(word) for word in counts}
    for word, count in counts.items():
        trainer._type_fdist[annotated[word].type] += count
        if word.endswith("."):
            trainer._num_period_toks += count
    abbrev_types = trainer._params.abbrev_types
    unique_types = {token.type for token in annotated.values()}
    for abbr, score, is_add in trainer._reclassify_abbrev_types(unique_types):
        if score >= trainer.ABBREV and is_add:
            abbrev_types.add(abbr)
        elif score < trainer.ABBREV and not is_add:
            abbrev_types.remove(abbr)
    # First-pass annotation with the abbreviations as they stand now (the pairs below add
    # rare ones, which nltk's first pass never saw).
    for token in annotated.values():
        trainer._first_pass_annotation(token)
    _add_orthography(trainer._params, words, line_starts, annotated)
    trainer._sentbreak_count += sum(count for word, count in counts.items()
                                    if annotated[word].sentbreak)
    for i, word in enumerate(words[:-1]):
        if word.endswith("."):
            first, second = annotated[word], annotated[words[i + 1]]
            if trainer._is_rare_abbrev_type(first, second):
                abbrev_types.add(first.type_no_period)
            if trainer._is_potential_sent_starter(second, first):
                trainer._sent_starter_fdist[second.type] += 1
            if trainer._is_potential_collocation(first, second):
                trainer._collocation_fdist[(first.type_no_period,
                                            second.type_no_sentperiod)] += 1
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


def _add_orthography(params: PunktParameters, words: list[str], line_starts: dict[int, bool],
                     annotated: dict[str, PunktToken]) -> None:
    """nltk's ``_get_orthography_data``: the case each type appears in, by context (after a
    sentence break, inside a sentence, unknown), which follows from the word before."""
    # Per word: its type without a sentence period, its flag in each context, the next context.
    flags_by_case = {case: {context: _ORTHO_MAP.get((context, case), 0)
                            for context in ("initial", "internal", "unknown")}
                     for case in ("lower", "upper", "none")}
    facts = {}
    for word, token in annotated.items():
        flags = flags_by_case[token.first_case]
        if token.sentbreak:
            after = "unknown" if token.is_number or token.is_initial else "initial"
        elif token.ellipsis or token.abbr:
            after = "unknown"
        else:
            after = "internal"
        facts[word] = (token.type_no_sentperiod, flags, after)
    ortho_context = params.ortho_context
    context = "internal"
    for i, word in enumerate(words):
        parastart = line_starts.get(i)
        if parastart is not None:
            if parastart and context != "unknown":
                context = "initial"
            if context == "internal":
                context = "unknown"
        typ, flags, after = facts[word]
        flag = flags[context]
        if flag:
            ortho_context[typ] |= flag
        context = after

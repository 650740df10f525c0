"""Task metrics, from the field's libraries: scikit-learn (accuracy, macro-F1), seqeval (span
F1 of BIO tag sets, CoNLL evaluation rules), sacrebleu (chrF, BLEU); exact match by string.

BLEU needs word boundaries: sacrebleu's "13a" tokenizer for languages written with spaces,
its character tokenizer for those without (Japanese, Chinese, Thai); a mixed-language corpus
is tokenized by characters where any of its texts needs it. chrF needs no tokenizer and is the
figure to compare across languages.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

import sacrebleu
from seqeval.metrics import f1_score as span_f1_score
from sklearn.metrics import accuracy_score, f1_score

NO_SPACE_LANGUAGES = frozenset({"ja", "zh", "th", "lo", "km", "my", "bo", "yue", "wuu"})
_BIO = re.compile(r"^(O|[BI]-.+)$")


def classification_metrics(gold: Sequence[str], predicted: Sequence[str]) -> dict[str, float]:
    return {"accuracy": float(accuracy_score(gold, predicted)),
            "macro_f1": float(f1_score(gold, predicted, average="macro", zero_division=0))}


def is_bio(tags: Sequence[str]) -> bool:
    """A BIO tag set (O, B-X, I-X, at least one span type): span F1 applies."""
    return bool(tags) and all(_BIO.match(tag) for tag in tags) and any(
        tag.startswith("B-") for tag in tags)


def tagging_metrics(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]],
                    bio: bool) -> dict[str, float]:
    """Word accuracy and macro-F1 over tags on the flattened words; span F1 (seqeval) for
    BIO tag sets."""
    flat_gold = [tag for sentence in gold for tag in sentence]
    flat_pred = [tag for sentence in predicted for tag in sentence]
    metrics = classification_metrics(flat_gold, flat_pred)
    if bio:
        metrics["span_f1"] = float(span_f1_score([list(s) for s in gold],
                                                 [list(s) for s in predicted]))
    return metrics


def bleu_tokenizer(langs: Sequence[Optional[str]]) -> str:
    return "char" if any(lang in NO_SPACE_LANGUAGES for lang in langs) else "13a"


def seq2seq_metrics(references: Sequence[str], hypotheses: Sequence[str],
                    langs: Sequence[Optional[str]]) -> dict[str, float]:
    refs, hyps = [r.strip() for r in references], [h.strip() for h in hypotheses]
    return {
        "chrf": float(sacrebleu.corpus_chrf(hyps, [refs]).score),
        "bleu": float(sacrebleu.corpus_bleu(hyps, [refs], tokenize=bleu_tokenizer(langs)).score),
        "exact_match": sum(r == h for r, h in zip(refs, hyps)) / max(len(refs), 1),
    }

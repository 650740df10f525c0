"""Task metrics on hand-made cases whose scores are known, and the evaluation report built on
them (baselines, per-language scores, examples)."""

import pytest

from megatron_seqpt.tasks.evaluate import report
from megatron_seqpt.tasks.examples import (
    ClassificationExample,
    Seq2SeqExample,
    TaggingExample,
)
from megatron_seqpt.tasks.metrics import (
    classification_metrics,
    is_bio,
    seq2seq_metrics,
    tagging_metrics,
)


def test_classification_accuracy_and_macro_f1():
    gold = ["a", "a", "b", "b"]
    # a: precision 1/2, recall 1/2; b: the same -> F1 0.5 for both.
    metrics = classification_metrics(gold, ["a", "b", "a", "b"])
    assert metrics == {"accuracy": 0.5, "macro_f1": 0.5}
    assert classification_metrics(gold, gold) == {"accuracy": 1.0, "macro_f1": 1.0}


def test_span_f1_counts_whole_spans_only():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG"]]
    # PER right; LOC missed; ORG predicted with the wrong extent (a span is right only whole).
    predicted = [["B-PER", "I-PER", "O", "O"], ["O", "B-ORG", "O"]]
    metrics = tagging_metrics(gold, predicted, bio=True)
    # 3 gold spans, 2 predicted, 1 correct: precision 1/2, recall 1/3, F1 0.4.
    assert metrics["span_f1"] == pytest.approx(0.4)
    assert metrics["accuracy"] == pytest.approx(5 / 7)
    assert "span_f1" not in tagging_metrics([["NOUN", "VERB"]], [["NOUN", "NOUN"]], bio=False)


def test_bio_tag_sets_are_recognised():
    assert is_bio(["O", "B-PER", "I-PER"])
    assert not is_bio(["NOUN", "VERB"])
    assert not is_bio(["O", "COMMA", "PERIOD"])
    assert not is_bio(["O"])


def test_chrf_bleu_and_exact_match():
    refs = ["The cat sat on the mat.", "Hello world!"]
    perfect = seq2seq_metrics(refs, refs, ["en", "en"])
    assert perfect == {"chrf": pytest.approx(100.0), "bleu": pytest.approx(100.0),
                       "exact_match": 1.0}
    unrelated = seq2seq_metrics(refs, ["zzz qqq", "xxx"], ["en", "en"])
    assert unrelated["bleu"] == 0.0 and unrelated["exact_match"] == 0.0
    assert unrelated["chrf"] < 5
    half = seq2seq_metrics(refs, [refs[0], "Hello there!"], ["en", "en"])
    assert half["exact_match"] == 0.5 and 0 < half["chrf"] < 100


def test_bleu_of_text_without_spaces_counts_characters():
    """One wrong character of a Japanese sentence costs a little BLEU, not all of it."""
    ref = ["すべての人間は、生まれながらにして自由である。"]
    hyp = ["すべての人間は、生まれながらにして自由でる。"]
    assert seq2seq_metrics(ref, hyp, ["ja"])["bleu"] > 50
    assert seq2seq_metrics(ref, hyp, [None])["bleu"] == 0.0  # one "word": no n-gram matches


def test_report_has_baselines_languages_and_examples():
    train = [ClassificationExample("x", "pos"), ClassificationExample("y", "pos"),
             ClassificationExample("z", "neg")]
    test = [ClassificationExample("a", "pos", lang="en", where="t:1"),
            ClassificationExample("b", "neg", lang="en", where="t:2"),
            ClassificationExample("c", "neg", lang="de", where="t:3")]
    result = report("classification", test, ["pos", "neg", "pos"], train, ["neg", "pos"],
                    shown=2)
    assert result["metrics"]["accuracy"] == pytest.approx(2 / 3)
    assert result["baseline"]["name"] == "majority class 'pos'"
    assert result["baseline"]["metrics"]["accuracy"] == pytest.approx(1 / 3)
    assert result["per_language"]["de"]["metrics"]["accuracy"] == 0.0
    assert result["per_language"]["en"]["examples"] == 2
    assert [e["where"] for e in result["examples"]] == ["t:1", "t:2"]

    tagged = [TaggingExample(("a", "b"), ("B-X", "O"), (True, True))]
    tag_train = [TaggingExample(("a", "b", "c"), ("B-X", "O", "O"), (True, True, True))]
    result = report("tagging", tagged, [["B-X", "O"]], tag_train, ["B-X", "I-X", "O"], shown=1)
    assert result["metrics"]["span_f1"] == 1.0
    assert result["baseline"]["name"] == "majority tag 'O'"
    assert result["baseline"]["metrics"]["span_f1"] == 0.0

    pairs = [Seq2SeqExample("hello world", "Hello world.")]
    result = report("seq2seq", pairs, ["Hello world."], pairs, [], shown=1)
    assert result["baseline"]["name"] == "copy the source"
    assert result["baseline"]["metrics"]["exact_match"] == 0.0
    assert result["metrics"]["exact_match"] == 1.0

"""Tokenizer training on the default corpus: reserved ids, language balance, determinism,
clear errors, nothing half-written."""

from collections import Counter

import pytest
import sentencepiece as spm

from megatron_seqpt.errors import UserError
from megatron_seqpt.text.corpus import ReadOptions, read_records
from megatron_seqpt.text.sampling import temperature_weights
from megatron_seqpt.text.sentences import (
    SentenceSplitter,
    learn_splitters,
    survey_languages,
)
from megatron_seqpt.tokenizer import special_tokens as st
from megatron_seqpt.tokenizer.training import (
    plan_sample,
    sample_sentences,
    train_tokenizer,
)
from tests.raw_corpus import CORPUS, VOCAB_SIZE, records, tokenizer_model, write_jsonl


def test_special_tokens_and_sentinels_sit_at_their_reserved_ids():
    sp = spm.SentencePieceProcessor(model_file=str(tokenizer_model()))
    assert sp.vocab_size() == VOCAB_SIZE
    assert (sp.pad_id(), sp.eos_id(), sp.bos_id(), sp.unk_id()) == (
        st.PAD_ID, st.EOS_ID, st.BOS_ID, st.UNK_ID)
    expected = [st.PAD, st.EOS, st.BOS, st.UNK] + st.reserved_symbols(
        st.DEFAULT_NUM_SENTINELS)
    assert [sp.id_to_piece(i) for i in range(len(expected))] == expected
    ids = [sp.piece_to_id(piece) for piece in expected]
    assert ids == list(range(len(expected))) and len(set(ids)) == len(ids)
    assert sp.piece_to_id(st.sentinel(99)) == 4 + 3 + 99
    # Special symbols are control symbols: a literal "<mask>" in text is text.
    assert all(sp.is_control(i) for i in ids[4:])
    assert sp.piece_to_id(st.MASK) not in sp.encode(f"see {st.MASK} and {st.sentinel(0)}")
    # No ordinary piece duplicates a special one.
    pieces = [sp.id_to_piece(i) for i in range(sp.vocab_size())]
    assert len(set(pieces)) == len(pieces)


def test_same_inputs_and_seed_give_the_same_model_bytes(tmp_path):
    again = train_tokenizer([CORPUS], VOCAB_SIZE, tmp_path / "again", progress=False)
    assert again.read_bytes() == tokenizer_model().read_bytes()
    assert again.with_suffix(".vocab").is_file()
    other = train_tokenizer([CORPUS], VOCAB_SIZE, tmp_path / "other", seed=7, progress=False)
    assert other.read_bytes() != again.read_bytes()


def skewed_corpus(tmp_path):
    """English eight times over, the eleven other languages once: a big and small languages."""
    rows = [r for r in records() if r["lang"] == "en"] * 8 + \
        [r for r in records() if r["lang"] != "en"]
    return write_jsonl(tmp_path / "skewed.jsonl", rows)


@pytest.mark.parametrize("alpha", [0.3, 1.0])
def test_sample_follows_the_temperature(tmp_path, alpha):
    path = skewed_corpus(tmp_path)
    recs = list(read_records([path], ReadOptions()))
    surveys = survey_languages((r.lang, r.texts[0]) for r in recs)
    params = learn_splitters({lang: s.sample for lang, s in surveys.items()})
    splitters = {lang: SentenceSplitter(lang, p) for lang, p in params.items()}
    sentences = Counter()
    for r in recs:
        sentences[r.lang] += len(splitters[r.lang].split(r.texts[0]))
    mean_chars = {lang: s.chars / sentences[lang] for lang, s in surveys.items()}
    shares = plan_sample({lang: s.documents for lang, s in surveys.items()},
                         {lang: s.chars for lang, s in surveys.items()}, mean_chars, alpha,
                         max_sentences=10**7)
    expected = temperature_weights(sentences, alpha)
    drawn = Counter(lang for lang, _ in sample_sentences(recs, shares, splitters, seed=1))
    total = sum(drawn.values())
    assert abs(total - sum(sentences.values())) < 0.1 * total
    for lang, weight in expected.items():
        assert drawn[lang] / total == pytest.approx(weight, abs=0.03), lang
    natural = sentences["en"] / sum(sentences.values())
    if alpha == 1.0:
        assert drawn == sentences                       # the natural mixture, as it is
    else:
        assert drawn["en"] / total < natural / 2        # the big language gives way


def test_sample_is_capped_at_max_sentences(tmp_path):
    surveys = {"en": 5000, "de": 1000}
    shares = plan_sample(surveys, {"en": 500_000, "de": 100_000}, {"en": 100.0, "de": 100.0},
                         0.5, max_sentences=600)
    expected = sum(share.rate * share.sentences for share in shares.values())
    assert expected == pytest.approx(600)
    assert shares["de"].rate > shares["en"].rate


def test_too_large_vocab_names_the_largest_that_works_and_leaves_nothing(tmp_path):
    with pytest.raises(UserError, match=r"vocab size 20000 is too large .* --vocab-size \d+"):
        train_tokenizer([CORPUS], 20000, tmp_path / "big", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_too_small_vocab_is_explained(tmp_path):
    with pytest.raises(UserError, match="363 ids are reserved"):
        train_tokenizer([CORPUS], 300, tmp_path / "small", progress=False)
    with pytest.raises(UserError, match=r"vocab size 1000 cannot hold the \d+ characters"):
        train_tokenizer([CORPUS], 1000, tmp_path / "small", progress=False)


def test_no_documents_is_an_error(tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", ["not json", '{"text": ""}'])
    with pytest.raises(UserError, match="no documents to train on .*invalid_json 1"):
        train_tokenizer([bad], VOCAB_SIZE, tmp_path / "tok", on_error="skip", progress=False)

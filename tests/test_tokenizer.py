"""The sentencepiece tokenizer as megatron-core's masked datasets see it: special ids, exact
round trips in every language of the default corpus, and whole-word masking on real samples."""

import unicodedata

import numpy as np
import pytest
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2

from megatron_seqpt.config.schema import ParallelConfig
from megatron_seqpt.tokenizer import special_tokens as st
from megatron_seqpt.tokenizer.flat_encoding import FlatEncoder
from megatron_seqpt.tokenizer.sentencepiece_tokenizer import (
    SentencePieceTokenizer,
    TokenizerModelError,
)
from tests.prepared_data import build, prepared_corpus, tokenizer
from tests.raw_corpus import records, tokenizer_model


def test_special_and_sentinel_ids_exist_and_are_distinct():
    tok = tokenizer()
    named = {st.PAD: tok.pad, st.EOS: tok.eos, st.BOS: tok.bos, st.UNK: tok.unk, st.CLS: tok.cls,
             st.SEP: tok.sep, st.MASK: tok.mask}
    assert (tok.pad, tok.eos, tok.bos, tok.unk) == (st.PAD_ID, st.EOS_ID, st.BOS_ID, st.UNK_ID)
    assert tok.eod == tok.eos
    sentinels = tok.additional_special_tokens_ids
    assert [tok.piece(i) for i in sentinels] == [st.sentinel(k) for k in
                                                range(st.DEFAULT_NUM_SENTINELS)]
    assert all(tok.piece(i) == piece for piece, i in named.items())
    ids = list(named.values()) + sentinels
    assert len(set(ids)) == len(ids)
    assert not set(ids) & set(tok.ordinary_ids.tolist())


def _first_difference(original: str, decoded: str) -> str:
    at = next((i for i, (a, b) in enumerate(zip(original, decoded)) if a != b),
              min(len(original), len(decoded)))
    return f"{original[at:at + 2]!a} became {decoded[at:at + 2]!a}"


def test_every_language_of_the_default_corpus_round_trips():
    tok = tokenizer()
    changed = []
    for lang, paragraphs in prepared_corpus().paragraphs.items():
        for paragraph in paragraphs:
            ids = tok.tokenize(paragraph)
            assert st.UNK_ID not in ids, (lang, paragraph)
            decoded = tok.detokenize(np.array(ids))
            if decoded != paragraph:
                changed.append(f"{lang}: {_first_difference(paragraph, decoded)}")
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(prepared_corpus().tokenizer_model.read_bytes())
    assert not changed, (f"{len(changed)} paragraphs do not round-trip under the model's "
                         f"'{proto.normalizer_spec.name}' normalization, e.g. {changed[:3]}")


def test_wordpiece_view_changes_no_id():
    tok = tokenizer()
    raw = spm.SentencePieceProcessor(model_file=str(prepared_corpus().tokenizer_model))
    text = prepared_corpus().paragraphs["de"][3]
    assert tok.tokenize(text) == raw.encode(text)
    assert sorted(tok.inv_vocab) == list(range(tok.vocab_size)) == list(range(len(raw)))
    for token_id, shown in tok.inv_vocab.items():
        piece = raw.id_to_piece(token_id)
        assert shown == (piece if tok.word_starts[token_id] else "##" + piece)
        assert tok.vocab[shown] == token_id
    # "▁" starts a word and pieces continuing it do not; each kana or kanji piece is a word.
    english = tok.tokenize("Everyone has the right to liberty")
    assert tok.word_starts[english[0]] and not tok.word_starts[english].all()
    assert tok.word_starts[tok.tokenize("人類社会のすべての構成員")].all()
    assert tok.word_starts[list(tok.special_ids)].all()


def test_cache_identity_follows_the_model_content(tmp_path):
    copy = tmp_path / "copy.model"
    copy.write_bytes(prepared_corpus().tokenizer_model.read_bytes())
    assert SentencePieceTokenizer(copy).unique_identifiers == tokenizer().unique_identifiers


def test_model_without_project_special_tokens_is_refused(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("\n".join(prepared_corpus().paragraphs["en"]), encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(tmp_path / "plain"),
                                   vocab_size=300, pad_id=0, eos_id=1, bos_id=2, unk_id=3,
                                   minloglevel=2)
    with pytest.raises(TokenizerModelError, match=r"plain\.model.*missing <cls>"):
        SentencePieceTokenizer(tmp_path / "plain.model")
    with pytest.raises(TokenizerModelError, match="does not exist"):
        SentencePieceTokenizer(tmp_path / "absent.model")


def _word_ids(tokens: np.ndarray, tok: SentencePieceTokenizer) -> np.ndarray:
    """Word number per position: "▁" starts a word, each East Asian wide piece and special token
    is one. A piece right after a special token starts a (cut) word too."""
    word, out = -1, []
    for i, token_id in enumerate(tokens.tolist()):
        piece = tok.piece(token_id)
        starts = (token_id in tok.special_ids or piece.startswith("\u2581")
                  or unicodedata.east_asian_width(piece[0]) in "WF"
                  or (i > 0 and tokens[i - 1] in tok.special_ids))
        word += starts
        out.append(word)
    return np.array(out)


def _masking_by_words(datasets, count: int) -> tuple[int, int, dict[str, float]]:
    """(words masked in part, multi-piece words masked whole, masked share per language)."""
    tok = tokenizer()
    partial = whole_multi = 0
    masked_tokens: dict[str, list[int]] = {}
    for index in range(count):
        sample = datasets.train[index]
        length = int(sample["padding_mask"].sum())
        masked = sample["loss_mask"][:length].astype(bool)
        original = np.where(masked, sample["labels"][:length], sample["text"][:length])
        words = _word_ids(original, tok)
        for word in np.unique(words[masked]):
            in_word = masked[words == word]
            partial += not in_word.all()
            whole_multi += in_word.all() and len(in_word) > 1
        counts = masked_tokens.setdefault(datasets.languages[sample["dataset_id"]], [0, 0])
        counts[0] += int(masked.sum())
        counts[1] += length
    return partial, whole_multi, {lang: m / n for lang, (m, n) in masked_tokens.items()}


def test_whole_word_masking_never_masks_part_of_a_word(single_process, tmp_path):
    single_process.initialize(ParallelConfig(), seed=1)
    partial, whole_multi, share = _masking_by_words(build("encoder", tmp_path), 300)
    assert partial == 0
    assert whole_multi > 100  # multi-piece words were masked, and masked whole
    # Every language keeps its masking rate; Japanese too (its words are pieces, not sentences).
    assert len(share) == 12 and min(share.values()) > 0.12, share

    # The same check finds partly masked words when whole-word masking is off.
    partial, _, _ = _masking_by_words(build("encoder", tmp_path, whole_word_masking=False), 300)
    assert partial > 50


def test_flat_encoding_gives_encodes_ids_with_and_without_sentencepieces_buffers():
    """Preprocessing's batch encoding (one array of ids, one of counts) from sentencepiece's raw
    buffers where it has them, else from its lists: either way what ``encode`` gives, on every
    language of the default corpus, sentences, texts that encode to nothing, and none."""
    sp = spm.SentencePieceProcessor(model_file=str(tokenizer_model()))
    texts = [t for r in records() for t in (r["text"], *r["text"].split(". "))]
    texts += ["", "\u200b", " "]
    expected = sp.encode(texts)
    with_buffers, with_lists = FlatEncoder(sp), FlatEncoder(sp)
    with_lists._buffers = None
    # sentencepiece has them from 0.2.2 on.
    version = tuple(int(part) for part in spm.__version__.split(".")[:3])
    assert with_buffers.uses_buffers == (version >= (0, 2, 2))
    for encoder in (with_buffers, with_lists):
        lengths, ids = encoder(texts)
        assert lengths.tolist() == [len(x) for x in expected]
        assert ids.dtype == np.int32 and ids.tolist() == [i for x in expected for i in x]
        assert [a.size for a in encoder([])] == [0, 0]

"""Word labels onto pieces with the project's tokenizer (trained on the built-in corpus): character
offsets of pieces, and each word's first piece in several scripts, with and without spaces."""

import pytest

from megatron_seqpt.tasks.alignment import align_words
from megatron_seqpt.tasks.examples import join_words
from megatron_seqpt.tasks.readers import read_task_file
from tests.prepared_data import tokenizer

SPACED = {
    "en": "Everyone has the right to life , liberty and security of person .",
    "de": "Jeder hat das Recht auf Leben , Freiheit und Sicherheit der Person .",
    "hi": "प्रत्येक व्यक्ति को जीवन , स्वाधीनता और वैयक्तिक सुरक्षा का अधिकार है ।",
    "ar": "لكل فرد الحق في الحياة والحرية وسلامة شخصه .",
}
# A segmented Japanese sentence (UDHR article 1); the text has no spaces.
JAPANESE = ("すべて の 人間 は 、 生まれ ながら に し て 自由 で あり 、 "
            "かつ 、 尊厳 と 権利 と に つい て 平等 で ある 。").split()
PUNCTUATION = ",.।"


def spaced_words(sentence: str) -> tuple[list[str], list[bool]]:
    """Words of a sentence written with spaces; punctuation attaches to the word before it."""
    words = sentence.split()
    return words, [following not in PUNCTUATION for following in words[1:]] + [True]


def own_start(text: str, piece: str, begin: int, end: int) -> int:
    """Where a piece's characters start: past the whitespace a leading ▁ stands for."""
    if piece.startswith("\u2581"):
        begin += len(text[begin:end]) - len(text[begin:end].lstrip())
    return begin


@pytest.mark.parametrize("text", [
    "Everyone has  the right, \"to life\".", "Sicherheit der Person über alles",
    "प्रत्येक व्यक्ति को जीवन", "لكل فرد الحق في الحياة", "すべての人間は、生まれながらにして自由",
    "Ψ😀z naïve", " leading and trailing "])
def test_offsets_are_character_spans_of_the_tokenized_ids(text):
    tok = tokenizer()
    pieces = tok.encode_with_offsets(text)
    assert [token_id for token_id, _, _ in pieces] == tok.tokenize(text)
    ends = [0]
    for token_id, begin, end in pieces:
        assert ends[-1] <= begin <= end <= len(text)
        piece = tok.piece(token_id)
        if tok._sp.is_byte(token_id):  # one UTF-8 byte of the character it spans
            assert end == begin + 1
            assert bytes([int(piece[3:5], 16)]) in text[begin:end].encode("utf-8")
        else:
            assert text[own_start(text, piece, begin, end):end] == piece.lstrip("\u2581")
            ends.append(end)
    if "Ψ" in text:
        assert any(tok._sp.is_byte(token_id) for token_id, _, _ in pieces)


@pytest.mark.parametrize("lang", sorted(SPACED))
def test_first_piece_of_each_word_is_a_prefix_of_it(lang):
    tok = tokenizer()
    words, space_after = spaced_words(SPACED[lang])
    aligned = align_words(tok, words, space_after)
    assert aligned.piece_ids == tok.tokenize(join_words(words, space_after)[0])
    assert aligned.unaligned == 0
    assert aligned.first_piece == sorted(set(aligned.first_piece))
    for word, index in zip(words, aligned.first_piece):
        decoded = tok.detokenize([aligned.piece_ids[index]]).lstrip(" ")
        assert decoded and word.startswith(decoded), (word, decoded)
    # Multi-piece words exist here: their other pieces carry no label.
    assert len(aligned.piece_ids) > len(words)


def test_punctuation_attached_without_space_gets_its_own_piece(tmp_path):
    conllu = tmp_path / "en.conllu"
    conllu.write_text(
        "1\tSue\t_\tPROPN\t_\t_\t_\t_\t_\t_\n2\twent\t_\tVERB\t_\t_\t_\t_\t_\tSpaceAfter=No\n"
        "3\t,\t_\tPUNCT\t_\t_\t_\t_\t_\t_\n4\tI\t_\tPRON\t_\t_\t_\t_\t_\t_\n"
        "5\tstayed\t_\tVERB\t_\t_\t_\t_\t_\tSpaceAfter=No\n6\t.\t_\tPUNCT\t_\t_\t_\t_\t_\t_\n",
        encoding="utf-8")
    (sentence,) = read_task_file(conllu, "tagging")
    tok = tokenizer()
    aligned = align_words(tok, sentence.words, sentence.space_after)
    assert aligned.piece_ids == tok.tokenize("Sue went, I stayed.")
    pieces = [tok.piece(i) for i in aligned.piece_ids]
    assert [pieces[i] for i in aligned.first_piece[2::3]] == [",", "."]
    # Tokenizing each word alone would have put a ▁ before the comma.
    assert aligned.unaligned == 0


def test_japanese_words_without_spaces():
    tok = tokenizer()
    space_after = [False] * len(JAPANESE)
    text, word_starts = join_words(JAPANESE, space_after)
    aligned = align_words(tok, JAPANESE, space_after)
    assert text == "".join(JAPANESE) and aligned.piece_ids == tok.tokenize(text)
    starts = [own_start(text, tok.piece(token_id), begin, end)
              for token_id, begin, end in tok.encode_with_offsets(text)]
    for word, word_start, index in zip(JAPANESE, word_starts, aligned.first_piece):
        word_end = word_start + len(word)
        inside = [i for i, start in enumerate(starts) if word_start <= start < word_end]
        if index >= 0:  # the first piece that starts inside the word
            assert inside[0] == index, word
        else:  # merged into a piece that started in an earlier word
            assert not inside and starts[0] < word_start, word
    # Some pieces of this vocabulary run over several words (e.g. "して" over し|て).
    assert aligned.unaligned == aligned.first_piece.count(-1) >= 1
    assert aligned.first_piece[0] == 0


def test_a_word_spelled_in_byte_fallback_starts_at_its_first_byte():
    tok = tokenizer()
    words, space_after = ["Ψ", "is", "psi"], [True, True, True]
    aligned = align_words(tok, words, space_after)
    first, second = aligned.first_piece[:2]
    assert tok.piece(aligned.piece_ids[0]) == "\u2581" and first == 1  # ▁ starts no word
    assert tok._sp.is_byte(aligned.piece_ids[first])
    assert tok.detokenize(aligned.piece_ids[first:second]).strip() == "Ψ"

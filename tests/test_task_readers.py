"""Downstream task readers on small files in each format: what they read, the exact message for
each kind of bad record, skipping, and train/validation/test splits."""

import gzip
import json
import os
import subprocess
import sys

import pytest

from megatron_seqpt.errors import UserError
from megatron_seqpt.tasks.examples import ClassificationExample, Seq2SeqExample, TaggingExample
from megatron_seqpt.tasks.readers import ReadReport, TaskDataError, read_task_file
from megatron_seqpt.tasks.splits import parse_split, split_examples

SKIP = ", or pass --on-error skip to leave such records out"


def write(tmp_path, name: str, content) -> str:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return str(path)


def jsonl(*records) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n"
                   for r in records)


# --- what the readers read --------------------------------------------------------------------

def test_classification_jsonl_with_int_and_bool_labels_pairs_and_languages(tmp_path):
    path = write(tmp_path, "cls.jsonl", jsonl(
        {"text": "great film", "label": 1, "lang": "en"},
        {"text": "schrecklich", "label": 0},
        "",
        {"text": "¿Qué hora es?", "text_pair": "Las tres.", "label": True, "lang": "es",
         "id": 17},
        {"text": "otro", "label": "neutral", "text_pair": None}))
    report = ReadReport()
    examples = read_task_file(path, "classification", lang="de", report=report)
    assert examples == [
        ClassificationExample("great film", "1", None, "en", f"{path}:1"),
        ClassificationExample("schrecklich", "0", None, "de", f"{path}:2"),
        ClassificationExample("¿Qué hora es?", "true", "Las tres.", "es", f"{path}:4"),
        ClassificationExample("otro", "neutral", None, "de", f"{path}:5"),
    ]
    assert report.examples == 4 and report.describe() == "4 examples; skipped: none"


def test_seq2seq_jsonl(tmp_path):
    path = write(tmp_path, "s2s.jsonl", jsonl(
        {"source": "i dream", "target": "I dream.", "lang": "en"},
        {"source": "जी हाँ", "target": "जी हाँ।"}))
    assert read_task_file(path, "seq2seq") == [
        Seq2SeqExample("i dream", "I dream.", "en", f"{path}:1"),
        Seq2SeqExample("जी हाँ", "जी हाँ।", None, f"{path}:2"),
    ]


CONLLU = """\
# sent_id = es-1
# lang = es
# text = Vamos al mar.
1\tVamos\tir\tVERB\tVMIP1P0\t_\t0\troot\t_\t_
2-3\tal\t_\t_\t_\t_\t_\t_\t_\t_
2\ta\ta\tADP\tSPS00\t_\t4\tcase\t_\t_
3\tel\tel\tDET\tDA0MS0\t_\t4\tdet\t_\t_
4\tmar\tmar\tNOUN\tNCMS000\t_\t1\tobl\t_\tSpaceAfter=No
5\t.\t.\tPUNCT\tFp\t_\t1\tpunct\t_\t_

# text = Sue went, I stayed.
1\tSue\tSue\tPROPN\tNNP\t_\t2\tnsubj\t_\t_
2\twent\tgo\tVERB\tVBD\t_\t0\troot\t_\tSpaceAfter=No
3\t,\t,\tPUNCT\t,\t_\t2\tpunct\t_\t_
4\tI\tI\tPRON\tPRP\t_\t5\tnsubj\t_\t_
4.1\tstayed\tstay\tVERB\tVBD\t_\t_\t_\t0:root\tCopyOf=5
5\tstayed\tstay\tVERB\tVBD\t_\t2\tconj\t_\tSpaceAfter=No
6\t.\t.\tPUNCT\t.\t_\t2\tpunct\t_\t_

# text = dárselo
1-3\tdárselo\t_\t_\t_\t_\t_\t_\t_\tSpaceAfter=No
1\tdar\tdar\tVERB\tVMN0000\t_\t0\troot\t_\t_
2\tse\tél\tPRON\tPP3CN00\t_\t1\tiobj\t_\t_
3\tlo\tél\tPRON\tPP3MSA0\t_\t1\tobj\t_\t_
"""


def test_conllu_words_tags_spaces_and_languages(tmp_path):
    path = write(tmp_path, "ud.conllu", CONLLU)
    first, second, third = read_task_file(path, "tagging", lang="en")
    # The range 2-3 and the empty node 4.1 are left out; SpaceAfter=No joins words.
    assert first == TaggingExample(("Vamos", "a", "el", "mar", "."),
                                   ("VERB", "ADP", "DET", "NOUN", "PUNCT"),
                                   (True, True, True, False, True), "es", f"{path}:1")
    assert first.text() == "Vamos a el mar."
    assert second.words == ("Sue", "went", ",", "I", "stayed", ".")
    assert second.text() == "Sue went, I stayed."
    assert second.lang == "en" and second.where == f"{path}:11"  # the lang argument
    # A multiword token's SpaceAfter=No is its last word's.
    assert third.space_after == (True, True, False)
    xpos = read_task_file(path, "tagging", tag_column="xpos")
    assert xpos[0].tags == ("VMIP1P0", "SPS00", "DA0MS0", "NCMS000", "Fp")
    assert xpos[1].lang is None


def test_two_column_conll_languages_docstart_and_scripts_without_spaces(tmp_path):
    path = write(tmp_path, "punct.conll", (
        "-DOCSTART- O\n\n"
        "# lang = de\n"
        "wie\tO\nspät  O\nist\tO\nes \t QUESTION\n\n"
        "# a comment\n"
        "noch\tO\neiner\tPERIOD\n\n"
        "# lang = ja\n"
        "東京\tO\nに\tO\n住む\tO\nAI\tO\n研究者\tO\n。\tPERIOD\n"))
    first, second, third = read_task_file(path, "tagging")
    assert first == TaggingExample(("wie", "spät", "ist", "es"), ("O", "O", "O", "QUESTION"),
                                   (True, True, True, True), "de", f"{path}:3")
    assert second.lang == "de" and second.where == f"{path}:9"  # the language carries on
    assert third.lang == "ja" and third.where == f"{path}:13"
    assert third.text() == "東京に住む AI 研究者。"
    assert third.tags[-1] == "PERIOD"


def test_conll_2003_four_columns_give_token_and_ner_tag(tmp_path):
    path = write(tmp_path, "eng.train", (
        "-DOCSTART- -X- -X- O\n\n"
        "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman JJ B-NP B-MISC\ncall NN I-NP O\n"
        ". . O O\n\n"
        "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n"))
    first, second = read_task_file(path, "tagging")
    assert first.words == ("EU", "rejects", "German", "call", ".")
    assert first.tags == ("B-ORG", "O", "B-MISC", "O", "O")
    assert second.tags == ("B-PER", "I-PER") and second.where == f"{path}:9"


# --- bad records: file:line, what is wrong, how to fix it -----------------------------------

CLS_SCHEMA = '{"text": "...", "label": "..."} (optional keys: "text_pair", "lang")'
S2S_SCHEMA = '{"source": "...", "target": "..."} (optional key: "lang")'
TWO_COLUMN_FIX = ("give one token per line with its tag after a tab or spaces (or the 4 columns "
                  "token POS chunk NER of CoNLL-2003), and a blank line after each sentence")
ID_FIX = ("number a sentence's words 1, 2, 3, ... (multiword tokens as ranges such as 1-2, empty "
          "nodes as decimals such as 1.1) and end each sentence with a blank line")
GOOD_CLS = '{"text": "fine", "label": "ok"}\n'
GOOD_ROW = "1\tok\t_\tADJ\tJJ\t_\t0\troot\t_\t_\n"

BAD_RECORDS = {
    "invalid JSON": (
        "classification", "a.jsonl", GOOD_CLS + '{"text": "x", "label": }\n', 2,
        "not valid JSON (Expecting value at column 24); fix the line; classification and "
        "seq2seq data are jsonl, one JSON object per line"),
    "not UTF-8": (
        "classification", "a.jsonl", GOOD_CLS.encode() + b'{"text": "caf\xe9", "label": "x"}\n',
        2, "bytes that are not UTF-8 at byte 14 of the line (b'\\xe9\", '); convert the file "
        "to UTF-8 (e.g. iconv -f LATIN1 -t UTF-8 IN > OUT)"),
    "not an object": (
        "classification", "a.jsonl", GOOD_CLS + '["x", "ok"]\n', 2,
        f"a JSON array where an object was expected; write one JSON object per line, like "
        f"{CLS_SCHEMA}"),
    "missing key": (
        "classification", "a.jsonl", GOOD_CLS + '{"sentence": "x", "label": "ok"}\n', 2,
        "record has no key 'text' (it has: 'sentence', 'label'); give every record the key "
        f"'text'; a classification record looks like {CLS_SCHEMA}"),
    "missing target": (
        "seq2seq", "a.jsonl", '{"source": "x"}\n', 1,
        "record has no key 'target' (it has: 'source'); give every record the key 'target'; "
        f"a seq2seq record looks like {S2S_SCHEMA}"),
    "text of a wrong type": (
        "classification", "a.jsonl", '{"text": ["a", "b"], "label": "ok"}\n', 1,
        "'text' holds a JSON array ([\"a\", \"b\"]); make 'text' a string"),
    "float label": (
        "classification", "a.jsonl", '{"text": "x", "label": 0.5}\n', 1,
        "'label' holds a JSON number (0.5); make 'label' a string, an integer or a boolean"),
    "null label": (
        "classification", "a.jsonl", '{"text": "x", "label": null}\n', 1,
        "'label' holds a JSON null (null); make 'label' a string, an integer or a boolean"),
    "language of a wrong type": (
        "seq2seq", "a.jsonl", '{"source": "x", "target": "y", "lang": 3}\n', 1,
        "'lang' holds a JSON number (3); make 'lang' a string"),
    "empty text": (
        "classification", "a.jsonl", '{"text": " ", "label": "ok"}\n', 1,
        "'text' is empty; give 'text' some text, or remove the record"),
    "empty label": (
        "classification", "a.jsonl", '{"text": "x", "label": ""}\n', 1,
        "'label' is empty; give 'label' some text, or remove the record"),
    "empty source": (
        "seq2seq", "a.jsonl", '{"source": "", "target": "y"}\n', 1,
        "'source' is empty; give 'source' some text, or remove the record"),
    "empty target": (
        "seq2seq", "a.jsonl", '{"source": "x", "target": ""}\n', 1,
        "'target' is empty; give 'target' some text, or remove the record"),
    "three columns": (
        "tagging", "a.conll", "fine\tO\n\nNew York\tB-LOC\n", 3,
        f"3 fields ('New York\\tB-LOC') where a token and its tag were expected; "
        f"{TWO_COLUMN_FIX}"),
    "four columns that are not CoNLL-2003": (
        "tagging", "a.conll", "New York City B-LOC\n", 1,
        f"4 fields ('New York City B-LOC') where a token and its tag were expected; "
        f"{TWO_COLUMN_FIX}"),
    "a tag missing": (
        "tagging", "a.conll", "fine\tO\nwords\n", 2,
        f"1 field ('words') where a token and its tag were expected; {TWO_COLUMN_FIX}"),
    "CoNLL-U columns split by spaces": (
        "tagging", "a.conllu", "# text = ok\n1 ok _ ADJ JJ _ 0 root _ _\n", 2,
        "1 tab-separated fields where CoNLL-U has 10 (ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL "
        "DEPS MISC); separate the columns with tabs and give all 10 (_ for an empty one)"),
    "CoNLL-U id not an integer": (
        "tagging", "a.conllu", GOOD_ROW + "2a\tok\t_\tADJ\tJJ\t_\t0\troot\t_\t_\n", 2,
        f"word id '2a' is not an integer; {ID_FIX}"),
    "CoNLL-U ids out of order (no blank line between sentences)": (
        "tagging", "a.conllu", GOOD_ROW + "2\tok\t_\tADJ\tJJ\t_\t0\troot\t_\t_\n" + GOOD_ROW, 3,
        f"word id 1 where 3 was expected; {ID_FIX}"),
    "CoNLL-U sentence without words": (
        "tagging", "a.conllu", GOOD_ROW + "\n# sent_id = 2\n# text = nothing\n", 3,
        "a sentence without words (only comments, multiword-token ranges or empty nodes); "
        "give the sentence its word lines, or remove it"),
    "CoNLL-U without the chosen tag": (
        "tagging", "a.conllu", GOOD_ROW.replace("ADJ", "_"), 1,
        "word 1 ('ok') has no UPOS tag (column 4 is _); if XPOS (column 5) holds the tags, "
        "read them with task.tag_column=xpos; else tag every word"),
}


@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
def test_each_bad_record_names_file_line_problem_and_fix(tmp_path, case):
    kind, name, content, line, message = BAD_RECORDS[case]
    path = write(tmp_path, name, content)
    with pytest.raises(TaskDataError) as failure:
        read_task_file(path, kind)
    assert str(failure.value) == f"{path}:{line}: {message}{SKIP}"
    assert (failure.value.path, failure.value.line) == (path, line)


def test_xpos_missing_suggests_upos(tmp_path):
    path = write(tmp_path, "a.conllu", GOOD_ROW.replace("JJ", "_"))
    with pytest.raises(TaskDataError, match=r"has no XPOS tag \(column 5 is _\); if UPOS "
                                            r"\(column 4\) holds the tags, read them with "
                                            r"task.tag_column=upos; else tag every word"):
        read_task_file(path, "tagging", tag_column="xpos")


def test_skip_leaves_bad_records_out_and_counts_them(tmp_path):
    path = write(tmp_path, "mixed.jsonl", jsonl(
        {"text": "one", "label": "a"}, "{not json", {"text": "", "label": "a"},
        {"text": "two", "label": "b"}, "[1]", "{}", {"text": "three", "label": 3}))
    report = ReadReport()
    examples = read_task_file(path, "classification", on_error="skip", report=report)
    assert [e.text for e in examples] == ["one", "two", "three"]
    assert report.examples == 3
    assert dict(report.skipped.counts) == {"invalid_json": 1, "empty_value": 1, "bad_value": 1,
                                           "missing_key": 1}
    assert report.describe() == (
        f"3 examples; skipped: bad_value 1 (first at {path}:5), empty_value 1 (first at "
        f"{path}:3), invalid_json 1 (first at {path}:2), missing_key 1 (first at {path}:6)")


def test_skip_leaves_out_whole_bad_sentences_and_the_report_adds_up_files(tmp_path):
    conllu = write(tmp_path, "a.conllu", CONLLU.replace("5\tstayed", "5x\tstayed"))
    conll = write(tmp_path, "b.conll", "a O\nb O\n\nc O extra\nd O\n\ne O\n")
    report = ReadReport()
    tagged = read_task_file(conllu, "tagging", on_error="skip", report=report)
    assert [s.words[0] for s in tagged] == ["Vamos", "dar"]
    tagged = read_task_file(conll, "tagging", on_error="skip", report=report)
    assert [s.words for s in tagged] == [("a", "b"), ("e",)]
    assert report.examples == 4
    assert report.skipped.describe() == (f"bad_fields 1 (first at {conll}:4), "
                                         f"bad_id 1 (first at {conllu}:17)")


def test_a_file_without_examples_is_an_error_also_when_skipping(tmp_path):
    bad = write(tmp_path, "bad.jsonl", jsonl("{oops", {"text": "x"}))
    with pytest.raises(UserError) as failure:
        read_task_file(bad, "classification", on_error="skip")
    assert str(failure.value) == (
        f"{bad}: no classification examples: every record was left out (invalid_json 1 (first "
        f"at {bad}:1), missing_key 1 (first at {bad}:2)); fix those records")
    empty = write(tmp_path, "empty.jsonl", "\n\n")
    with pytest.raises(UserError) as failure:
        read_task_file(empty, "seq2seq", on_error="skip")
    assert str(failure.value) == (
        f"{empty}: the file holds no seq2seq examples; a seq2seq file holds one JSON object "
        f"per line, like {S2S_SCHEMA}")
    headers = write(tmp_path, "docs.conll", "-DOCSTART- O\n\n# lang = en\n")
    with pytest.raises(UserError, match=r"docs\.conll: the file holds no tagging examples; a "
                                        r"tagging file holds sentences of one token and its "
                                        r"tag per line"):
        read_task_file(headers, "tagging")


def test_missing_file_directory_and_bad_arguments(tmp_path):
    with pytest.raises(UserError, match=rf"^task data file {tmp_path}/absent\.jsonl does not "
                                        r"exist$"):
        read_task_file(tmp_path / "absent.jsonl", "classification")
    with pytest.raises(UserError, match=rf"^{tmp_path} is a directory; give a task data file"):
        read_task_file(tmp_path, "seq2seq")
    path = write(tmp_path, "a.jsonl", GOOD_CLS)
    with pytest.raises(UserError, match="task kind must be one of classification, tagging, "
                                        "seq2seq; got 'ner'"):
        read_task_file(path, "ner")
    with pytest.raises(UserError, match="on_error must be one of fail, skip; got 'ignore'"):
        read_task_file(path, "classification", on_error="ignore")


def test_a_compressed_task_file_is_refused_naming_how_to_decompress_it(tmp_path):
    """It was read as text: 'bytes that are not UTF-8', with the advice to convert it."""
    path = tmp_path / "train.jsonl.gz"
    path.write_bytes(gzip.compress(GOOD_CLS.encode()))
    with pytest.raises(UserError, match=rf"^{path} is gzip-compressed; decompress it first "
                                        rf"\(gunzip -k {path}\)$"):
        read_task_file(path, "classification")


def test_byte_order_mark_and_crlf_line_ends_are_read(tmp_path):
    path = write(tmp_path, "win.conll", b"\xef\xbb\xbfhola\tO\r\nmundo\tPERIOD\r\n\r\n")
    (sentence,) = read_task_file(path, "tagging")
    assert sentence.words == ("hola", "mundo") and sentence.tags == ("O", "PERIOD")


# --- splits -------------------------------------------------------------------------------------

def test_split_is_deterministic_shuffled_and_sized_by_rounding():
    items = list(range(103))
    train, valid, test = split_examples(items, (0.8, 0.1, 0.1), seed=7)
    assert (len(train), len(valid), len(test)) == (83, 10, 10)  # 82.4, 10.3, 10.3
    assert sorted(train + valid + test) == items and train != sorted(train)
    assert split_examples(items, (0.8, 0.1, 0.1), seed=7) == (train, valid, test)
    assert split_examples(items, (0.8, 0.1, 0.1), seed=8) != (train, valid, test)
    assert [len(p) for p in split_examples(items, (0.9, 0.1, 0.0), seed=7)] == [93, 10, 0]


def test_split_keeps_every_wanted_part_non_empty_and_refuses_too_few():
    assert [len(p) for p in split_examples(["a", "b", "c"], (0.98, 0.01, 0.01), 0)] == [1, 1, 1]
    assert [len(p) for p in split_examples(list(range(10)), (0.9, 0.05, 0.05), 0)] == [8, 1, 1]
    with pytest.raises(UserError, match=r"2 examples cannot fill the 3 non-empty parts of the "
                                        r"split 80%/10%/10%; give at least 3 examples"):
        split_examples(["a", "b"], (0.8, 0.1, 0.1), 0)


def test_split_does_not_depend_on_the_hash_seed():
    code = ("from megatron_seqpt.tasks.splits import split_examples as s; "
            "print(s([f'w{i}' for i in range(50)], (0.6, 0.2, 0.2), 3))")
    outputs = {subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                              text=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout
               for seed in ("1", "2")}
    assert len(outputs) == 1


def test_parse_split():
    assert parse_split("80,10,10") == pytest.approx((0.8, 0.1, 0.1))
    assert parse_split("0.9,0.1,0") == pytest.approx((0.9, 0.1, 0.0))
    for text, problem in [("80,20", "needs three comma-separated weights"),
                          ("80,ten,10", "not a number"), ("80,-10,30", "not negative"),
                          ("0,0,0", "not all 0"), ("nan,1,1", "must be finite")]:
        with pytest.raises(UserError, match=problem):
            parse_split(text)

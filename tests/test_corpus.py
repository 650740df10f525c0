"""Reading jsonl records: the quick path for clean lines gives the records the careful parser
gives, and every other line the careful parser's record or error."""

import json

import pytest

from megatron_seqpt.text.corpus import (
    CorpusError,
    ReadOptions,
    RecordSource,
    Skips,
    _CleanJsonParser,
)

CLEAN = [json.dumps({"text": f"Sentence {i}. And more.\nA paragraph.", "title": f"T{i}",
                     "lang": lang}).encode() + b"\n"
         for i, lang in enumerate(["en", "de", "pt-BR", "zh_Hans", "en"] * 4)]
ODD = [
    b'{"lang": "fr", "title": "t", "text": "Ordre \\u00e9chang\\u00e9 \\ud83d\\ude00."}\n',
    b'{"text": "crlf", "title": "t", "lang": "en"}\r\n',
    b'{"text": "trailing spaces", "title": "t", "lang": "en"}  \t \n',
    b'{"text": "no newline at the end", "title": "t", "lang": "en"}',
    b'{"text": "a form feed after", "title": "t", "lang": "en"}\x0c\n',
    b' {"text": "a space before", "title": "t", "lang": "en"}\n',
    b'\xef\xbb\xbf{"text": "a byte order mark", "title": "t", "lang": "en"}\n',
    b'{"text": "no language", "title": "t"}\n',
    b'{"text": "null language", "title": "t", "lang": null}\n',
    b'{"text": "number language", "title": "t", "lang": 5}\n',
    b'{"text": "empty language", "title": "t", "lang": ""}\n',
    b'{"text": "spaced language", "title": "t", "lang": "e n"}\n',
    b'{"text": "language and a line break", "title": "t", "lang": "en\\n"}\n',
    b'{"text": "", "title": "t", "lang": "en"}\n',
    b'{"text": " \\n\\t", "title": "t", "lang": "en"}\n',
    b'{"text": "\\u3000\\u2028", "title": "t", "lang": "en"}\n',
    b'{"text": 5, "title": "t", "lang": "en"}\n',
    b'{"text": null, "title": "t", "lang": "en"}\n',
    b'{"text": NaN, "title": "t", "lang": "en"}\n',
    b'{"text": "a lone surrogate \\ud800", "title": "t", "lang": "en"}\n',
    b'{"text": "first", "text": "second", "title": "t", "lang": "en"}\n',
    b'{"text": "no title", "lang": "en"}\n',
    b'{"text": "a trailing comma", "title": "t", "lang": "en",}\n',
    b'{"text": "two values", "title": "t", "lang": "en"} {"x": 1}\n',
    b'{"text": "unterminated\n',
    b'["text", "an array"]\n',
    b'"a string"\n',
    b'5\n',
    b'{}\n',
    b'\n',
    b'   \n',
    b'{"text": "caf\xe9", "title": "t", "lang": "fr"}\n',
    b'{"text": {"nested": [1, 2, {"deep": "x"}]}, "title": "t", "lang": "en"}\n',
]


def outcome(source, number, raw, options):
    try:
        return source.parse(number, raw, options)
    except CorpusError as error:
        return error.reason, error.detail


@pytest.mark.parametrize("options", [
    ReadOptions(json_keys=("text", "title"), on_error="skip"),
    ReadOptions(json_keys=("text",), lang="xx", on_error="skip"),
    ReadOptions(json_keys=("title",), lang_key="text", on_error="skip"),
], ids=["two_keys", "given_language", "language_under_another_key"])
def test_quick_parsing_gives_the_careful_parsers_records_and_errors(tmp_path, options):
    path = tmp_path / "de.jsonl"
    lines = list(enumerate(CLEAN + ODD + CLEAN[:3], 1))
    source = RecordSource.of(path, options)
    skipped = []
    read = list(source.records(lines, options, skipped.append))
    expected = [outcome(source, number, raw, options) for number, raw in lines]
    assert read == [r for r in expected if r is not None and not isinstance(r, tuple)]
    assert [(e.reason, e.detail) for e in skipped] == [r for r in expected if isinstance(r, tuple)]
    # The quick path took the clean lines (else this compares the careful parser with itself).
    quick = _CleanJsonParser(str(path), options)
    taken = [quick(number, raw) for number, raw in lines]
    assert sum(r is not None for r in taken) >= len(CLEAN) or options.lang_key == "text"
    assert all(r == e for r, e in zip(taken, expected) if r is not None)


def test_a_language_must_name_files_without_a_line_break(tmp_path):
    source = RecordSource.of(tmp_path / "in.jsonl", ReadOptions())
    with pytest.raises(CorpusError, match="cannot name output files"):
        source.parse(1, b'{"text": "x", "lang": "en\\n"}\n', ReadOptions())


def test_the_first_skipped_record_is_the_earliest_in_the_input_whatever_order_it_comes_in():
    # Preprocessing finds a held record's errors late (after later chunks are written).
    found = [CorpusError("b.jsonl", 3, "empty_document", ""),
             CorpusError("a.jsonl", 9, "empty_document", ""),
             CorpusError("a.jsonl", 4, "empty_document", ""),
             CorpusError("b.jsonl", 1, "invalid_json", "")]
    skips = Skips(inputs=["a.jsonl", "b.jsonl"])
    for error in found:
        skips.add(error)
    assert skips.first == {"empty_document": "a.jsonl:4", "invalid_json": "b.jsonl:1"}
    assert dict(skips.counts) == {"empty_document": 3, "invalid_json": 1}
    unordered = Skips()
    for error in found:
        unordered.add(error)
    assert unordered.first["empty_document"] == "b.jsonl:3"

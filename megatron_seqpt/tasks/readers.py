"""Readers for downstream task data in the formats users already have.

- classification: jsonl, ``{"text": str, "label": str|int|bool, ["text_pair": str],
  ["lang": str]}`` per line; labels become strings (``1`` -> ``"1"``, ``true`` -> ``"true"``).
- seq2seq: jsonl, ``{"source": str, "target": str, ["lang": str]}`` per line.
- tagging, chosen by the file suffix:
  - ``*.conllu``: CoNLL-U. Words only (multiword-token ranges ``1-2`` and empty nodes ``1.1``
    are left out; a range's ``SpaceAfter=No`` applies to its last word), the tag from UPOS or
    XPOS, ``SpaceAfter=No`` in MISC joins a word to the next, ``# lang = xx`` names the
    sentence's language.
  - anything else: two columns, ``token<TAB or spaces>tag``; 4-column CoNLL-2003 lines
    (``token POS chunk NER``) give the token and the NER tag. A blank line ends a sentence,
    ``-DOCSTART-`` lines are left out, ``# `` starts a comment and ``# lang = xx`` names the
    language of the sentences that follow. Words of scripts written without spaces (Japanese,
    Chinese, Thai, ...) are joined without a space when both neighbours are such scripts.

A record's or sentence's own language wins over the ``lang`` argument, which serves the others.
Bad input raises ``TaskDataError`` naming file and line, what is wrong and how to fix it, the
same style as the pre-training corpus readers (``text/corpus.py``); with ``on_error="skip"`` the
record (a whole sentence for CoNLL) is left out and counted in the ``ReadReport``. A file that
yields no example is an error either way.
"""

from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, get_args

from megatron_seqpt.errors import UserError
from megatron_seqpt.tasks.examples import (
    ClassificationExample,
    Example,
    Seq2SeqExample,
    TaggingExample,
    TaskKind,
)
from megatron_seqpt.text.corpus import OnError, Skips, check_not_compressed
from megatron_seqpt.tokenizer.no_space_script import is_no_space_char

TagColumn = Literal["upos", "xpos"]
CONLLU_SUFFIX = ".conllu"
DOCSTART = "-DOCSTART-"
# CoNLL-U columns (1-based, as the format's documentation counts them) of the two tag columns.
_TAG_COLUMNS = {"upos": 4, "xpos": 5}
_CONLLU_COLUMNS = "ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC"

_SCHEMAS = {
    "classification": '{"text": "...", "label": "..."} (optional keys: "text_pair", "lang")',
    "seq2seq": '{"source": "...", "target": "..."} (optional key: "lang")',
}
_NOT_UTF8_FIX = "convert the file to UTF-8 (e.g. iconv -f LATIN1 -t UTF-8 IN > OUT)"
_TWO_COLUMN_FIX = ("give one token per line with its tag after a tab or spaces (or the 4 "
                   "columns token POS chunk NER of CoNLL-2003), and a blank line after each "
                   "sentence")
_CONLLU_ID_FIX = ("number a sentence's words 1, 2, 3, ... (multiword tokens as ranges such as "
                  "1-2, empty nodes as decimals such as 1.1) and end each sentence with a blank "
                  "line")

_LANG_COMMENT = re.compile(r"^#\s*lang\s*=\s*(\S+)\s*$")
_FIELD_SEPARATOR = re.compile(r"[ \t]+")
_IOB_TAG = re.compile(r"^(O|[BIES]-\S+)$")
_WORD_ID = re.compile(r"^[0-9]+$")
_RANGE_ID = re.compile(r"^[0-9]+-([0-9]+)$")
_EMPTY_NODE_ID = re.compile(r"^[0-9]+\.[0-9]+$")
_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number",
               bool: "boolean", type(None): "null"}


class TaskDataError(UserError):
    """A bad record or sentence: which file and line, what is wrong, and what to do."""

    def __init__(self, path: str, line: int, reason: str, detail: str, fix: str):
        self.path, self.line, self.reason = path, line, reason
        super().__init__(f"{path}:{line}: {detail}; {fix}, or pass --on-error skip to leave "
                         "such records out")


@dataclass
class ReadReport:
    """What reading gave, over every file read with it: examples, and records left out."""

    examples: int = 0
    skipped: Skips = field(default_factory=Skips)

    def describe(self) -> str:
        return f"{self.examples} examples; skipped: {self.skipped.describe()}"


def read_task_file(path: str | Path, kind: TaskKind, *, on_error: OnError = "fail",
                   tag_column: TagColumn = "upos", lang: str | None = None,
                   report: ReadReport | None = None) -> list[Example]:
    """Every good example of the file, in file order; bad records raise or are counted."""
    _check_choice("task kind", kind, get_args(TaskKind))
    _check_choice("on_error", on_error, get_args(OnError))
    _check_choice("tag column", tag_column, get_args(TagColumn))
    file = _task_file(path)
    if kind == "tagging" and file.name.endswith(CONLLU_SUFFIX):
        items = _conllu(file, tag_column, lang)
    elif kind == "tagging":
        items = _two_column(file, lang)
    else:
        items = _jsonl(file, kind, lang)
    examples: list[Example] = []
    skips = Skips()
    for item in items:
        if isinstance(item, TaskDataError):
            if on_error == "fail":
                raise item
            skips.add(item)
            if report is not None:
                report.skipped.add(item)
        else:
            examples.append(item)
    if not examples:
        raise UserError(_no_examples(file, kind, skips))
    if report is not None:
        report.examples += len(examples)
    return examples


# --- files and lines ------------------------------------------------------------------------

def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"{what} must be one of {', '.join(choices)}; got {value!r}")


def _task_file(path: str | Path) -> Path:
    file = Path(path).expanduser()
    if file.is_dir():
        raise UserError(f"{file} is a directory; give a task data file (jsonl, *.conllu or "
                        "two-column CoNLL)")
    if not file.exists():
        raise UserError(f"task data file {file} does not exist")
    check_not_compressed(file)
    return file


def _lines(file: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, raw line); a UTF-8 byte-order mark (as some editors write) is dropped."""
    with open(file, "rb") as lines:
        for number, raw in enumerate(lines, 1):
            yield number, raw.removeprefix(codecs.BOM_UTF8) if number == 1 else raw


def _decode(raw: bytes, path: str, line: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise TaskDataError(path, line, "not_utf8",
                            f"bytes that are not UTF-8 at byte {err.start + 1} of the line "
                            f"({raw[err.start:err.start + 4]!r})", _NOT_UTF8_FIX) from None


def _no_examples(file: Path, kind: TaskKind, skips: Skips) -> str:
    unit = "sentence" if kind == "tagging" else "record"
    if skips.counts:
        return (f"{file}: no {kind} examples: every {unit} was left out "
                f"({skips.describe()}); fix those {unit}s")
    if kind != "tagging":
        layout = f"one JSON object per line, like {_SCHEMAS[kind]}"
    elif file.name.endswith(CONLLU_SUFFIX):
        layout = f"CoNLL-U sentences (10 tab-separated columns, {_CONLLU_COLUMNS})"
    else:
        layout = "sentences of one token and its tag per line"
    return f"{file}: the file holds no {kind} examples; a {kind} file holds {layout}"


# --- jsonl ----------------------------------------------------------------------------------

def _jsonl(file: Path, kind: TaskKind, lang: str | None) -> Iterator[Example | TaskDataError]:
    path = str(file)
    for number, raw in _lines(file):
        if not raw.strip():
            continue
        try:
            record = _Record(_json_object(_decode(raw, path, number), path, number, kind),
                             kind, path, number)
            if kind == "classification":
                yield ClassificationExample(record.text("text"), record.label(),
                                            record.text("text_pair", required=False),
                                            record.text("lang", required=False) or lang,
                                            record.where)
            else:
                yield Seq2SeqExample(record.text("source"), record.text("target"),
                                     record.text("lang", required=False) or lang, record.where)
        except TaskDataError as error:
            yield error


def _json_object(text: str, path: str, line: int, kind: TaskKind) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise TaskDataError(path, line, "invalid_json",
                            f"not valid JSON ({err.msg} at column {err.colno})",
                            "fix the line; classification and seq2seq data are jsonl, one "
                            "JSON object per line") from None
    if not isinstance(value, dict):
        raise TaskDataError(path, line, "bad_value",
                            f"a JSON {_JSON_TYPES[type(value)]} where an object was expected",
                            f"write one JSON object per line, like {_SCHEMAS[kind]}")
    return value


@dataclass(frozen=True)
class _Record:
    """One JSON object and where it is, with the checks its values must pass."""

    values: dict
    kind: TaskKind
    path: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def text(self, key: str, required: bool = True) -> str | None:
        """The string under ``key``; an optional key may be absent or null."""
        value = self._value(key, required)
        if value is None and not required:
            return None
        if not isinstance(value, str):
            raise self._wrong_type(key, value, "a string")
        return self._non_empty(key, value)

    def label(self) -> str:
        value = self._value("label", True)
        if isinstance(value, bool):
            return json.dumps(value)  # true/false, as the file spells them
        if isinstance(value, int):
            return str(value)
        if not isinstance(value, str):
            raise self._wrong_type("label", value, "a string, an integer or a boolean")
        return self._non_empty("label", value)

    def _value(self, key: str, required: bool) -> Any:
        if key not in self.values and required:
            raise TaskDataError(self.path, self.line, "missing_key",
                                f"record has no key '{key}' (it has: "
                                f"{', '.join(map(repr, self.values)) or 'no keys'})",
                                f"give every record the key '{key}'; a {self.kind} record "
                                f"looks like {_SCHEMAS[self.kind]}")
        return self.values.get(key)

    def _wrong_type(self, key: str, value: Any, wanted: str) -> TaskDataError:
        shown = json.dumps(value, ensure_ascii=False)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        return TaskDataError(self.path, self.line, "bad_value",
                             f"'{key}' holds a JSON {_JSON_TYPES[type(value)]} ({shown})",
                             f"make '{key}' {wanted}")

    def _non_empty(self, key: str, value: str) -> str:
        if not value.strip():
            raise TaskDataError(self.path, self.line, "empty_value", f"'{key}' is empty",
                                f"give '{key}' some text, or remove the record")
        return value


# --- two-column CoNLL -----------------------------------------------------------------------

def _blocks(file: Path) -> Iterator[list[tuple[int, bytes]]]:
    """The file's runs of non-blank lines (sentences, with their comments)."""
    block: list[tuple[int, bytes]] = []
    for number, raw in _lines(file):
        if raw.strip():
            block.append((number, raw))
        elif block:
            yield block
            block = []
    if block:
        yield block


def _two_column(file: Path, lang: str | None) -> Iterator[Example | TaskDataError]:
    path = str(file)
    for block in _blocks(file):
        words: list[str] = []
        tags: list[str] = []
        sentence_lang = lang
        try:
            for number, raw in block:
                text = _decode(raw, path, number).strip(" \t\r\n")
                if text.startswith("# "):
                    found = _LANG_COMMENT.match(text)
                    # Names the language of this and the following sentences.
                    lang = found.group(1) if found else lang
                    continue
                fields = _FIELD_SEPARATOR.split(text)
                if fields[0] == DOCSTART:
                    continue
                if not words:
                    sentence_lang = lang
                words.append(fields[0])
                tags.append(_two_column_tag(fields, text, path, number))
        except TaskDataError as error:
            yield error
            continue
        if words:  # else only comments or -DOCSTART-
            yield TaggingExample(tuple(words), tuple(tags), _script_spaces(words),
                                 sentence_lang, f"{path}:{block[0][0]}")


def _two_column_tag(fields: list[str], text: str, path: str, line: int) -> str:
    if len(fields) == 2:
        return fields[1]
    if len(fields) == 4 and _IOB_TAG.match(fields[2]) and _IOB_TAG.match(fields[3]):
        return fields[3]  # CoNLL-2003: token POS chunk NER
    shown = text if len(text) <= 40 else text[:37] + "..."
    raise TaskDataError(path, line, "bad_fields",
                        f"{len(fields)} field{'s' * (len(fields) > 1)} ({shown!r}) where a "
                        "token and its tag were expected", _TWO_COLUMN_FIX)


def _script_spaces(words: list[str]) -> tuple[bool, ...]:
    """Two-column files do not say where spaces go: between words of scripts written
    without spaces there are none, elsewhere one."""
    between = tuple(not (is_no_space_char(word[-1]) and is_no_space_char(following[0]))
                    for word, following in zip(words, words[1:]))
    return between + (True,)


# --- CoNLL-U --------------------------------------------------------------------------------

def _conllu(file: Path, tag_column: TagColumn,
            lang: str | None) -> Iterator[Example | TaskDataError]:
    path = str(file)
    for block in _blocks(file):
        try:
            yield _conllu_sentence(block, path, tag_column, lang)
        except TaskDataError as error:
            yield error


def _conllu_sentence(block: list[tuple[int, bytes]], path: str, tag_column: TagColumn,
                     lang: str | None) -> TaggingExample:
    words: list[str] = []
    tags: list[str] = []
    space_after: list[bool] = []
    range_end, range_space = 0, True
    column = _TAG_COLUMNS[tag_column]
    for number, raw in block:
        text = _decode(raw, path, number).rstrip("\r\n")
        if text.startswith("#"):
            found = _LANG_COMMENT.match(text)
            lang = found.group(1) if found else lang
            continue
        fields = text.split("\t")
        if len(fields) != 10:
            raise TaskDataError(path, number, "bad_fields",
                                f"{len(fields)} tab-separated fields where CoNLL-U has 10 "
                                f"({_CONLLU_COLUMNS})",
                                "separate the columns with tabs and give all 10 (_ for an "
                                "empty one)")
        word_id, form, misc = fields[0], fields[1], fields[9]
        spaced = "SpaceAfter=No" not in misc.split("|")
        multiword = _RANGE_ID.match(word_id)
        if multiword:  # the surface token of the words that follow
            range_end, range_space = int(multiword.group(1)), spaced
            continue
        if _EMPTY_NODE_ID.match(word_id):
            continue
        if not _WORD_ID.match(word_id):
            raise TaskDataError(path, number, "bad_id", f"word id {word_id!r} is not an integer",
                                _CONLLU_ID_FIX)
        if int(word_id) != len(words) + 1:
            raise TaskDataError(path, number, "bad_id",
                                f"word id {word_id} where {len(words) + 1} was expected",
                                _CONLLU_ID_FIX)
        if not form:
            raise TaskDataError(path, number, "empty_value", f"word {word_id} has no FORM",
                                "give every word its form in column 2")
        tag = fields[column - 1]
        if tag in ("", "_"):
            other = "xpos" if tag_column == "upos" else "upos"
            raise TaskDataError(path, number, "missing_tag",
                                f"word {word_id} ({form!r}) has no {tag_column.upper()} tag "
                                f"(column {column} is {'_' if tag else 'empty'})",
                                f"if {other.upper()} (column {_TAG_COLUMNS[other]}) holds the "
                                f"tags, read them with task.tag_column={other}; else tag every "
                                "word")
        words.append(form)
        tags.append(tag)
        space_after.append(spaced and (range_space or int(word_id) != range_end))
    if not words:
        raise TaskDataError(path, block[0][0], "empty_sentence",
                            "a sentence without words (only comments, multiword-token ranges "
                            "or empty nodes)", "give the sentence its word lines, or remove it")
    return TaggingExample(tuple(words), tuple(tags), tuple(space_after), lang,
                          f"{path}:{block[0][0]}")

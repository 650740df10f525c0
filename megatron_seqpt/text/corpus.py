"""Streaming readers for raw corpora: jsonl records and plain text, one document at a time.

Formats (chosen by the file name):
- ``*.txt`` / ``*.text``: one document per non-empty line (blank lines are ignored), the same
  one-document-per-line layout as Megatron's jsonl, so line numbers name documents exactly.
- anything else: jsonl, one JSON object per line holding the text under ``json_keys`` (default
  ``text``) and its language under ``lang_key`` (default ``lang``). Inside a text, ``\\n``
  separates paragraphs.

A document's language is its record's ``lang_key`` value; records without one (and every line of
a text file) take the ``lang`` option, else the file's stem (``de.txt`` -> ``de``).

Bad input (not JSON, not UTF-8, a missing key, an empty document) raises ``CorpusError`` naming
the file and line; with ``on_error="skip"`` the record is left out and counted in ``Skips``.
Files are read line by line, so memory does not depend on their size.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Literal, Mapping, Sequence

from tqdm import tqdm

from megatron_seqpt.errors import UserError

TEXT_SUFFIXES = (".txt", ".text")
OnError = Literal["fail", "skip"]
# A language names output files (PREFIX_<lang>_text_sentence): no separators, spaces or line
# breaks (\Z: '$' would let one through at the end).
_LANG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\Z")

# Why a record was left out -> what the user can do about it.
SKIP_REASONS = {
    "invalid_json": "fix the line, or check the file really is jsonl (only *.txt/*.text files "
                    "are read as plain text)",
    "not_utf8": "convert the file to UTF-8 (e.g. iconv -f LATIN1 -t UTF-8 IN > OUT)",
    "missing_key": "name the key that holds the text with --json-keys",
    "bad_value": "make the record a JSON object whose text is a string and whose language is "
                 "a plain code such as 'en' (letters, digits, '.', '_', '-')",
    "empty_document": "remove the record; a document needs some text",
}


class CorpusError(UserError):
    """A bad record: says which file and line, what is wrong, and what to do."""

    def __init__(self, path: str, line: int, reason: str, detail: str):
        self.path, self.line, self.reason, self.detail = path, line, reason, detail
        super().__init__(f"{path}:{line}: {detail}; {SKIP_REASONS[reason]}, or pass "
                         "--on-error skip to leave such records out")

    def __reduce__(self):
        # Workers parse records too: the error crosses processes with its fields.
        return CorpusError, (self.path, self.line, self.reason, self.detail)


@dataclass
class Skips:
    """Records left out with ``on_error="skip"``: a count per reason and where each was first.
    Given the input files in order, "first" is the earliest in the input, whatever order the
    errors come in (preprocessing finds some late: ``punkt_on_the_way``); else the first
    added."""

    counts: Counter = field(default_factory=Counter)
    first: dict[str, str] = field(default_factory=dict)
    inputs: Sequence[str] = ()
    _first_at: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self._input_index = {path: index for index, path in enumerate(self.inputs)}

    def add(self, error: CorpusError) -> None:
        self.counts[error.reason] += 1
        at = ((self._input_index.get(error.path, len(self.inputs)), error.line) if self.inputs
              else (0, 0))
        if error.reason not in self.first or at < self._first_at[error.reason]:
            self.first[error.reason] = f"{error.path}:{error.line}"
            self._first_at[error.reason] = at

    def describe(self) -> str:
        return ", ".join(f"{reason} {count} (first at {self.first[reason]})"
                         for reason, count in sorted(self.counts.items())) or "none"


@dataclass(frozen=True)
class ReadOptions:
    """How to read records; the same options serve tokenizer training and preprocessing."""

    json_keys: tuple[str, ...] = ("text",)
    lang_key: str = "lang"
    # Language of text files and of records without ``lang_key``; None: the file's stem.
    lang: str | None = None
    on_error: OnError = "fail"

    def __post_init__(self):
        if not self.json_keys:
            raise UserError("give at least one JSON key holding text (--json-keys)")
        if self.on_error not in ("fail", "skip"):
            raise UserError(f"on_error must be 'fail' or 'skip', got {self.on_error!r}")
        if self.lang is not None and not _LANG_RE.match(self.lang):
            raise UserError(f"language {self.lang!r} cannot name output files; use a plain "
                            "code such as 'en' (letters, digits, '.', '_', '-')")


@dataclass(frozen=True)
class Record:
    """One document: its language and one text per JSON key, and where it came from."""

    path: str
    line: int
    lang: str
    texts: tuple[str, ...]
    # Size of the raw line, for throughput figures.
    nbytes: int


def default_corpus_path() -> Path:
    """The multilingual corpus shipped with the package (UDHR, 12 languages)."""
    return Path(str(importlib.resources.files("megatron_seqpt")
                    / "resources" / "corpus" / "udhr.jsonl"))


# Compressed formats corpora come in: a pattern of their first bytes (none valid UTF-8 text
# but bzip2's, matched up to its first block's magic), and the commands that decompress.
_COMPRESSED = ((re.compile(rb"\x1f\x8b"), "gzip", "gunzip -k", "zcat"),
               (re.compile(rb"\x28\xb5\x2f\xfd"), "zstd", "unzstd", "zstdcat"),
               (re.compile(rb"BZh[1-9](?:\x31\x41\x59\x26\x53\x59|\x17\x72\x45\x38\x50\x90)"),
                "bzip2", "bunzip2 -k", "bzcat"),
               (re.compile(rb"\xfd7zXZ\x00"), "xz", "unxz -k", "xzcat"))


def check_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """The input files as paths, or an error naming the first that cannot be read (a
    compressed file is read as text otherwise, and refused as 'not UTF-8')."""
    checked = [Path(p).expanduser() for p in paths]
    if not checked:
        raise UserError("no input files given (--input FILE [FILE ...])")
    for path in checked:
        # Not is_file(): a named pipe is a fine input where one pass is enough.
        if not path.exists() or path.is_dir():
            raise UserError(f"input file {path} does not exist or is a directory")
        if path.is_file():
            check_not_compressed(path, streamed=True)
    return checked


def check_not_compressed(path: Path, streamed: bool = False) -> None:
    """Refuse a compressed file naming the command that decompresses it (``streamed``: and
    how to pipe it into the corpus tools)."""
    with open(path, "rb") as file:
        start = file.read(10)
    for magic, name, decompress, to_stdout in _COMPRESSED:
        if magic.match(start):
            stream = (f", or stream it into the tools: {to_stdout} {path} | seqpt preprocess "
                      "--input /dev/stdin ... (also train-tokenizer)") if streamed else ""
            raise UserError(f"{path} is {name}-compressed; decompress it first ({decompress} "
                            f"{path}){stream}")


# A language code (ISO 639 and BCP 47-like: de, deu, zh_Hans, pt-BR); a file named otherwise
# whose records name no language was most likely read with the wrong --lang-key.
_LANGUAGE_CODE = re.compile(r"[a-z]{2,3}(?:[_-][A-Za-z0-9]{2,8})*\Z")


def file_language_notes(langs: Iterable[str], paths: Sequence[str | Path],
                        options: ReadOptions) -> list[str]:
    """Notes for jsonl files whose records took the file's name as their language (none named
    one under the language key) where that name is not a language code (``corpus.jsonl``):
    the language was most likely under another key."""
    if options.lang is not None:
        return []
    langs = set(langs)
    return [f"{path}: no record names its language under '{options.lang_key}' (--lang-key), "
            f"so they took the file's name '{path.stem}' as their language; name the key that "
            "holds it with --lang-key, or give --lang CODE"
            for path in dict.fromkeys(check_inputs(paths))
            if not path.name.endswith(TEXT_SUFFIXES) and path.stem in langs
            and not _LANGUAGE_CODE.match(path.stem)]


def read_records(paths: Sequence[str | Path], options: ReadOptions,
                 skips: Skips | None = None, copies: Mapping[Path, Path] = {}
                 ) -> Iterator[Record]:
    """Every good record of every file in order; bad ones raise or are counted in ``skips``.
    A path in ``copies`` (a pipe read before, ``kept_pipes``) is read from its copy."""
    for path in check_inputs(paths):
        source = RecordSource.of(path, options)
        with open(copies.get(path, path), "rb") as lines:
            yield from source.records(enumerate(lines, 1), options,
                                      skips.add if skips is not None else lambda error: None)


@dataclass(frozen=True)
class RecordSource:
    """How the lines of one input file become records; small and picklable, so that worker
    processes can parse lines that one process read."""

    path: Path
    is_text: bool
    # The language of records that do not name one (--lang, else the file's stem).
    default_lang: str

    @classmethod
    def of(cls, path: Path, options: ReadOptions) -> RecordSource:
        is_text = path.name.endswith(TEXT_SUFFIXES)
        if is_text and len(options.json_keys) > 1:
            raise UserError(f"{path}: a text file holds one text per line; several "
                            "--json-keys apply to jsonl files only")
        return cls(path, is_text, options.lang or path.stem)

    def parse(self, number: int, raw: bytes, options: ReadOptions) -> Record | None:
        """Line ``number`` (raw bytes) as a record; None for a blank line; CorpusError for a
        bad one."""
        if not raw.strip():
            return None
        text = _decode(raw, str(self.path), number)
        if self.is_text:
            return Record(str(self.path), number, _file_language(self.default_lang, self.path),
                          (text.strip(),), len(raw))
        return _parse_json(text, self.path, number, self.default_lang, options, len(raw))

    def records(self, lines: Iterable[tuple[int, bytes]], options: ReadOptions,
                skip: Callable[[CorpusError], None]) -> Iterator[Record]:
        """The good records of these (line number, raw line) pairs; a bad one raises
        (``on_error="fail"``) or goes to ``skip``."""
        quick = None if self.is_text else _CleanJsonParser(str(self.path), options)
        for number, raw in lines:
            record = quick(number, raw) if quick else None
            if record is None:
                try:
                    record = self.parse(number, raw, options)
                except CorpusError as error:
                    if options.on_error == "fail":
                        raise
                    skip(error)
                    continue
            if record is not None:
                yield record


# JSON's whitespace, which may end a line after its value (``json.loads``).
_JSON_SPACE = " \t\n\r"


class _CleanJsonParser:
    """A jsonl line as its record where the line is clean: an object at its first character,
    then only JSON whitespace, holding every key as a string with some non-space text and its
    language as a string that names files. It calls json's own scanner once and checks a
    language's name once; every other line (None here) is ``RecordSource.parse``'s, which says
    what is wrong. On short real documents this takes a third of the time of ``parse``, whose
    json.loads wrappers and checks (copies, patterns) cost more than the scanning; the records
    are the same (tested)."""

    _scan = json.JSONDecoder().scan_once

    def __init__(self, path: str, options: ReadOptions):
        self.path = path
        self.json_keys = options.json_keys
        self.lang_key = options.lang_key
        self.langs: set[str] = set()

    def __call__(self, number: int, raw: bytes) -> Record | None:
        try:
            line = raw.decode("utf-8")
            record, end = self._scan(line, 0)
        except (UnicodeDecodeError, StopIteration, ValueError, RecursionError):
            return None
        if type(record) is not dict or (end < len(line) and line[end:].strip(_JSON_SPACE)):
            return None
        texts = []
        for key in self.json_keys:
            text = record.get(key)
            if type(text) is not str or not text or text.isspace():
                return None
            texts.append(text)
        lang = record.get(self.lang_key)
        if type(lang) is not str:
            return None
        if lang not in self.langs:
            if not _LANG_RE.match(lang):
                return None
            self.langs.add(lang)
        return Record(self.path, number, lang, tuple(texts), len(raw))


def _decode(raw: bytes, path: str, line: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise CorpusError(path, line, "not_utf8",
                          f"bytes that are not UTF-8 at byte {err.start + 1} of the line "
                          f"({raw[err.start:err.start + 4]!r})") from None


def _file_language(stem: str, path: Path) -> str:
    """The language of records that do not name one: --lang, else the file's stem."""
    if not _LANG_RE.match(stem):
        raise UserError(f"{path}: records without a language take it from --lang or from the "
                        f"file name, but '{stem}' cannot name output files; pass --lang CODE "
                        "(or name the file after its language, e.g. de.txt)")
    return stem


def _parse_json(line_text: str, file: Path, line: int, default_lang: str,
                options: ReadOptions, nbytes: int) -> Record:
    path = str(file)
    try:
        record = json.loads(line_text)
    except json.JSONDecodeError as err:
        raise CorpusError(path, line, "invalid_json",
                          f"not valid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(record, dict):
        raise CorpusError(path, line, "bad_value",
                          f"a JSON {type(record).__name__} where an object was expected")
    texts = []
    for key in options.json_keys:
        if key not in record:
            raise CorpusError(path, line, "missing_key",
                              f"record has no key '{key}' (it has: "
                              f"{', '.join(map(repr, record)) or 'no keys'})")
        text = record[key]
        if not isinstance(text, str):
            raise CorpusError(path, line, "bad_value",
                              f"key '{key}' holds a {type(text).__name__}, not a string")
        if not text.strip():
            raise CorpusError(path, line, "empty_document",
                              f"key '{key}' holds an empty document")
        texts.append(text)
    if options.lang_key not in record:
        return Record(path, line, _file_language(default_lang, file), tuple(texts), nbytes)
    lang = record[options.lang_key]
    if not isinstance(lang, str) or not _LANG_RE.match(lang):
        raise CorpusError(path, line, "bad_value",
                          f"language {lang!r} (key '{options.lang_key}') cannot name output "
                          "files")
    return Record(path, line, lang, tuple(texts), nbytes)


class ByteProgress:
    """A tqdm bar on stderr over the input files' bytes, advanced as records are read."""

    def __init__(self, paths: Sequence[str | Path], desc: str, enabled: bool = True,
                 copies: Mapping[Path, Path] = {}):
        total = sum(os.path.getsize(copies.get(p, p)) for p in check_inputs(paths))
        self.bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, disable=not enabled,
                        dynamic_ncols=True, leave=False)

    def records(self, records: Iterable[Record]) -> Iterator[Record]:
        for record in records:
            self.bar.update(record.nbytes)
            yield record

    def __enter__(self) -> "ByteProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()

"""Arguments for reading a raw corpus, shared by ``train-tokenizer`` and ``preprocess``."""

import argparse
import os
from typing import Callable

from megatron_seqpt.text.corpus import SKIP_REASONS


def add_corpus_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", nargs="+", action="extend", required=True, metavar="FILE",
                        help="jsonl files (one JSON object per line) or .txt/.text files (one "
                             "document per non-empty line); repeat or list several")
    parser.add_argument("--json-keys", nargs="+", default=["text"], metavar="KEY",
                        help="jsonl keys holding text; each key gets its own datasets "
                             "(default: text)")
    parser.add_argument("--lang-key", default="lang", metavar="KEY",
                        help="jsonl key holding the language code (default: lang)")
    parser.add_argument("--lang", metavar="CODE",
                        help="language of .txt files and of records without --lang-key "
                             "(default: the file's stem, e.g. de for de.txt)")
    parser.add_argument("--on-error", choices=("fail", "skip"), default="fail",
                        help="bad records (" + ", ".join(SKIP_REASONS) + "): stop with the "
                             "file and line (fail, default) or leave them out and count them "
                             "(skip)")
    parser.add_argument("--punkt-dir", metavar="DIR",
                        help="Punkt parameters in nltk's punkt_tab format, DIR/<lang>/ or "
                             "DIR/<english name>/ (nltk_data/tokenizers/punkt_tab works); "
                             "languages without are learned from the input")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or summary")


def corpus_keywords(args: argparse.Namespace) -> dict:
    """The reading options as keyword arguments of train_tokenizer() and preprocess()."""
    return dict(json_keys=args.json_keys, lang_key=args.lang_key, lang=args.lang,
                on_error=args.on_error, punkt_dir=args.punkt_dir, progress=not args.quiet)


def output_prefix(example: str) -> Callable[[str], str]:
    """The type of an ``--output-prefix``: a path and the start of file names, not a directory
    ('out/' wrote out.model beside it, or out/_en_text_document.*); ``example``: a file name
    to suggest."""
    def checked(value: str) -> str:
        if value.endswith((os.sep, "/")):
            raise argparse.ArgumentTypeError(
                f"{value!r} names a directory; give a file prefix, e.g. "
                f"{value.rstrip(os.sep + '/') or '.'}/{example}")
        return value

    return checked

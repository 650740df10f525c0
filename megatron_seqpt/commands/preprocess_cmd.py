"""``seqpt preprocess`` (tools/preprocess_data.py): raw corpus -> megatron-core indexed datasets
PREFIX_<lang>_<key>_sentence (or _document) .bin/.idx, one per language."""

import argparse

from megatron_seqpt.commands.corpus_args import (
    add_corpus_arguments,
    corpus_keywords,
    output_prefix,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_corpus_arguments(parser)
    parser.add_argument("--output-prefix", required=True, metavar="PREFIX",
                        type=output_prefix("corpus"),
                        help="writes PREFIX_<lang>_<key>_{sentence,document}.bin/.idx")
    parser.add_argument("--tokenizer-model", required=True, metavar="M.model",
                        help="sentencepiece model (from train-tokenizer)")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="tokenizing processes (default 1); output is the same for any N")
    parser.add_argument("--split-sentences", action="store_true",
                        help="one item per sentence (what MLM and T5 datasets expect); "
                             "sentence splitting is learned per language in the same pass "
                             "(or taken from --punkt-dir), so a pipe works as input")
    parser.add_argument("--append-eod", action="store_true",
                        help="end each document with </s>")


def run(args: argparse.Namespace) -> int:
    from megatron_seqpt.data.preprocess import preprocess

    preprocess(args.input, args.output_prefix, args.tokenizer_model, workers=args.workers,
               split_sentences=args.split_sentences, append_eod=args.append_eod,
               **corpus_keywords(args))
    return 0

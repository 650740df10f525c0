"""``seqpt train-tokenizer`` (tools/train_tokenizer.py): one sentencepiece model shared by all
languages, trained on a temperature-balanced sample, with the project's special tokens."""

import argparse

from megatron_seqpt.commands.corpus_args import (
    add_corpus_arguments,
    corpus_keywords,
    output_prefix,
)
from megatron_seqpt.tokenizer.special_tokens import DEFAULT_NUM_SENTINELS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_corpus_arguments(parser)
    parser.add_argument("--vocab-size", type=int, required=True, metavar="N",
                        help="pieces in the vocabulary, special tokens included")
    parser.add_argument("--output-prefix", required=True, metavar="PREFIX",
                        type=output_prefix("tokenizer"),
                        help="writes PREFIX.model and PREFIX.vocab")
    parser.add_argument("--sampling-alpha", type=float, default=0.3, metavar="A",
                        help="language temperature: a language with share p of the corpus gets "
                             "a share proportional to p**A of the training sample (default 0.3; "
                             "1 keeps the natural mixture)")
    parser.add_argument("--num-sentinels", type=int, default=DEFAULT_NUM_SENTINELS, metavar="N",
                        help=f"T5 sentinels <extra_id_0..N-1> (default {DEFAULT_NUM_SENTINELS})")
    parser.add_argument("--model-type", choices=("unigram", "bpe"), default="unigram")
    parser.add_argument("--character-coverage", type=float, default=0.9999, metavar="C",
                        help="share of characters the vocabulary covers (default 0.9999)")
    parser.add_argument("--no-byte-fallback", dest="byte_fallback", action="store_false",
                        help="unknown characters become <unk> instead of their UTF-8 bytes")
    parser.add_argument("--max-sentences", type=int, default=10_000_000, metavar="N",
                        help="size of the training sample in sentences (default 10M)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--num-threads", type=int, default=16, metavar="N",
                        help="sentencepiece threads; the model bytes depend on it (default 16)")


def run(args: argparse.Namespace) -> int:
    from megatron_seqpt.tokenizer.training import train_tokenizer

    model = train_tokenizer(
        args.input, args.vocab_size, args.output_prefix, sampling_alpha=args.sampling_alpha,
        num_sentinels=args.num_sentinels, model_type=args.model_type,
        character_coverage=args.character_coverage, byte_fallback=args.byte_fallback,
        max_sentences=args.max_sentences, seed=args.seed, num_threads=args.num_threads,
        **corpus_keywords(args))
    print(f"wrote {model} and {model.with_suffix('.vocab')}")
    return 0

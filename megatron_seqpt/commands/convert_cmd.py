"""``seqpt convert`` (tools/convert_checkpoint.py): the checkpoint conversions of the recipes.

    seqpt convert warm-start --encoder ENCODER_RUN --config t5.yaml --output DIR
    seqpt convert extract-encoder --seq2seq T5_RUN --output DIR [--head new|from-t5]

Both write a weights-only checkpoint plus its config.yaml; continue with
``seqpt pretrain --config DIR/config.yaml --run-dir RUN checkpoint.load=DIR``. Conversions do
not depend on the parallel layout (checkpoints reshard on load): run them as one process.
"""

import argparse
from pathlib import Path

from megatron_seqpt.commands.common import add_config_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="conversion", required=True, metavar="CONVERSION")
    warm = sub.add_parser("warm-start", help="a T5 checkpoint whose embeddings and encoder come "
                                             "from an MLM encoder, with a new decoder")
    warm.add_argument("--encoder", required=True, metavar="ENCODER_CKPT",
                      help="run or checkpoint directory of a model.kind=encoder run")
    add_config_arguments(warm)
    warm.add_argument("--output", required=True, metavar="DIR")
    warm.add_argument("--force", action="store_true",
                      help="replace what a non-empty --output holds (refused otherwise)")
    extract = sub.add_parser("extract-encoder", help="an MLM encoder checkpoint made of a T5 "
                                                     "model's embeddings and encoder")
    extract.add_argument("--seq2seq", required=True, metavar="T5_CKPT",
                         help="run or checkpoint directory of a model.kind=t5 run")
    extract.add_argument("--output", required=True, metavar="DIR")
    extract.add_argument("--force", action="store_true",
                         help="replace what a non-empty --output holds (refused otherwise)")
    extract.add_argument("--head", choices=("new", "from-t5"), default="new",
                         help="MLM head: newly initialised (default), or T5's output bias with "
                              "an identity dense layer")


def run(args: argparse.Namespace) -> int:
    from megatron_seqpt.recipes import convert

    if args.conversion == "warm-start":
        if not args.config:
            from megatron_seqpt.errors import UserError

            raise UserError("warm-start needs --config: the T5 run config to build")
        path = convert.warm_start(Path(args.encoder), args.config, args.overrides,
                                  Path(args.output), args.force)
    else:
        path = convert.extract_encoder(Path(args.seq2seq), Path(args.output), args.head,
                                       args.force)
    print(f"wrote {path}; continue with: seqpt pretrain --config {args.output}/config.yaml "
          f"--run-dir RUN_DIR checkpoint.load={args.output}")
    return 0

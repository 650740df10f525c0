"""``seqpt import hf``: a Hugging Face model (as ``seqpt export hf`` writes them) as a
weights-only checkpoint to train further here.

    seqpt import hf --model HF_DIR [--config RUN.yaml] [key=value ...] --output DIR

The model shape comes from the Hugging Face config, training settings from --config. Continue
with ``seqpt pretrain --config DIR/config.yaml --run-dir RUN checkpoint.load=DIR`` or
``seqpt finetune --config TASK.yaml --run-dir RUN --init DIR``.
"""

import argparse
from pathlib import Path

from megatron_seqpt.commands.common import add_config_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="format", required=True, metavar="FORMAT")
    hf = sub.add_parser("hf", help="MegatronBertForMaskedLM or BlenderbotForConditional"
                                   "Generation with its sentencepiece.model")
    hf.add_argument("--model", required=True, metavar="HF_DIR")
    add_config_arguments(hf)
    hf.add_argument("--output", required=True, metavar="DIR")
    hf.add_argument("--force", action="store_true",
                    help="replace what a non-empty --output holds (refused otherwise)")


def run(args: argparse.Namespace) -> int:
    from megatron_seqpt.export.hf_import import import_hf

    path = import_hf(Path(args.model), args.config, args.overrides, Path(args.output),
                     args.force)
    print(f"wrote {path}; continue with: seqpt pretrain --config {path}/config.yaml "
          f"--run-dir RUN_DIR checkpoint.load={path}")
    return 0

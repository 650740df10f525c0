"""``seqpt export hf``: a run's model as a Hugging Face directory.

    seqpt export hf --run-dir RUN_DIR [--step N] --output DIR
        [--as encoder|classifier|tagger|seq2seq]

MLM encoders (also extracted and continued ones) become MegatronBertForMaskedLM, fine-tuned
classifiers and taggers MegatronBertFor{Sequence,Token}Classification, T5 runs (pre-trained or
fine-tuned) BlenderbotForConditionalGeneration; with a fast tokenizer, safetensors weights and
a model card. Any training layout; one process (under a launch of several ranks the first
writes it).
"""

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="format", required=True, metavar="FORMAT")
    hf = sub.add_parser("hf", help="a Hugging Face transformers directory (from_pretrained)")
    hf.add_argument("--run-dir", dest="run", required=True, metavar="RUN_DIR",
                    help="a run directory (or its checkpoints/ or a step_* directory)")
    hf.add_argument("--step", type=int, help="the checkpoint at this step (default: latest)")
    hf.add_argument("--output", required=True, metavar="DIR", help="a new directory")
    hf.add_argument("--as", dest="expect", choices=("encoder", "classifier", "tagger",
                                                    "seq2seq"),
                    help="refuse unless the run holds this kind of model")
    hf.add_argument("--force", action="store_true",
                    help="replace what a non-empty --output holds (refused otherwise)")


def run(args: argparse.Namespace) -> int:
    from megatron_seqpt.export.hf_export import export_hf
    from megatron_seqpt.runtime import launch_env

    path = export_hf(Path(args.run), Path(args.output), args.step, args.expect, args.force)
    if launch_env.detect().rank == 0:  # the rank that wrote it
        print(f"wrote {path}; load it with transformers' AutoTokenizer / AutoModel* "
              f".from_pretrained('{path}') (see {path}/README.md)")
    return 0

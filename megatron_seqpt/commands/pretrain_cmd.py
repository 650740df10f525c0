"""``seqpt pretrain``: train the MLM encoder or the T5 model described by a config."""

import argparse

from megatron_seqpt.commands.common import add_config_arguments
from megatron_seqpt.config import load_run_config
from megatron_seqpt.runtime import distributed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--run-dir", required=True,
                        help="where metrics, TensorBoard logs, the resolved config and "
                             "checkpoints go; a directory with a checkpoint is resumed")
    parser.add_argument("--resume", action="store_true",
                        help="require a checkpoint in RUN_DIR and continue from it (without "
                             "this flag a checkpoint there is still resumed when present)")


def run(args: argparse.Namespace) -> int:
    config = load_run_config(args.config, args.overrides)
    ctx = distributed.initialize(config.parallel, config.model, config.train.seed)
    try:
        from megatron_seqpt.training.loop import Trainer

        result = Trainer(config, args.run_dir, ctx, resume=True if args.resume else None).run()
    finally:
        distributed.shutdown()
    # Pre-emption is a clean stop: the job scheduler requeues and the run resumes.
    return 1 if result.status == "diverged" else 0

"""``seqpt finetune``: train a task model (classification, tagging or seq2seq) from a
pre-trained run, on the Trainer pre-training uses (layouts, freeze groups, checkpoints,
resume); then score it (``seqpt evaluate``), the ranks of a launch sharing the batches."""

import argparse

from megatron_seqpt.commands.common import add_config_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--run-dir", required=True,
                        help="where metrics, checkpoints, config.yaml and eval.json go; a "
                             "directory with a checkpoint is resumed")
    parser.add_argument("--init", metavar="RUN_DIR",
                        help="the pre-trained run (or checkpoint directory) the task model "
                             "starts from (init.from_run); its latest checkpoint unless "
                             "init.from_step=N")
    parser.add_argument("--task-kind", choices=("classification", "tagging", "seq2seq"),
                        help="the task kind when no task config gives it (task.kind)")
    parser.add_argument("--train-file", help="training examples (task.train_file)")
    parser.add_argument("--validation-file",
                        help="validation examples (task.validation_file); without it "
                             "task.split holds some training examples back")
    parser.add_argument("--test-file", help="test examples (task.test_file)")
    parser.add_argument("--resume", action="store_true",
                        help="require a checkpoint in RUN_DIR and continue from it")
    parser.add_argument("--no-evaluate", action="store_true",
                        help="do not score the model after training")


def run(args: argparse.Namespace) -> int:
    from megatron_seqpt.runtime import distributed
    from megatron_seqpt.tasks.resolve import option_overrides, resolve_config
    from megatron_seqpt.tasks.workload import FinetuneWorkload
    from megatron_seqpt.training.loop import Trainer

    overrides = option_overrides(**{
        "init.from_run": args.init, "task.kind": args.task_kind,
        "task.train_file": args.train_file, "task.validation_file": args.validation_file,
        "task.test_file": args.test_file}) + list(args.overrides)
    config, pretrained = resolve_config(args.config, overrides)
    ctx = distributed.initialize(config.parallel, config.model, config.train.seed)
    try:
        trainer = Trainer(config, args.run_dir, ctx, resume=True if args.resume else None,
                          workload=FinetuneWorkload(config, pretrained))
        result = trainer.run()
        first = ctx.rank == 0
    finally:
        distributed.shutdown()
    if result.status == "diverged":
        return 1
    if result.status == "completed" and not args.no_evaluate:
        from megatron_seqpt.tasks.evaluate import (
            EVAL_FILE,
            NothingToScore,
            evaluate_run,
            format_table,
        )

        # Every rank scores (they share the batches); the first writes and prints.
        try:
            scores = evaluate_run(args.run_dir)
        except NothingToScore as nothing:
            if first:
                print(f"[seqpt] trained; {nothing}")
            return 0
        if first:
            print(format_table(scores))
            print(f"written to {args.run_dir}/{EVAL_FILE}")
    return 0

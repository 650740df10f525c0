"""``seqpt evaluate``: score a fine-tuned run on its test split (or a given file) next to the
majority-class / copy-the-source baseline; writes RUN/eval.json and prints a table."""

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, metavar="RUN_DIR",
                        help="a run directory written by seqpt finetune")
    parser.add_argument("--test-file",
                        help="score these examples (the task's format) instead of the run's "
                             "test split (its validation split when it has none)")
    parser.add_argument("--step", type=int,
                        help="the checkpoint at this step (default: the latest)")


def run(args: argparse.Namespace) -> int:
    from megatron_seqpt.tasks.evaluate import EVAL_FILE, evaluate_run, format_table

    result = evaluate_run(args.run, test_file=args.test_file, step=args.step)
    print(format_table(result))
    print(f"written to {args.run}/{EVAL_FILE}")
    return 0

"""``seqpt evaluate``: score a fine-tuned run on its test split (or a given file) next to the
majority-class / copy-the-source baseline; writes RUN/eval.json (or, for another file or
step, a file of its own) and prints a table."""

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-dir", dest="run", required=True, metavar="RUN_DIR",
                        help="a run directory written by seqpt finetune")
    parser.add_argument("--test-file",
                        help="score these examples (the task's format) instead of the run's "
                             "test split (its validation split when it has none)")
    parser.add_argument("--step", type=int,
                        help="the checkpoint at this step (default: the latest)")
    parser.add_argument("--output", metavar="FILE",
                        help="where the scores go (default: RUN/eval.json for the run's own "
                             "test split and latest checkpoint, the run's score; "
                             "RUN/eval_<test file>[_step_N].json for another file or step)")


def run(args: argparse.Namespace) -> int:
    from megatron_seqpt.runtime import launch_env
    from megatron_seqpt.tasks.evaluate import default_output, evaluate_run, format_table

    output = (Path(args.output) if args.output
              else default_output(Path(args.run), args.test_file, args.step))
    result = evaluate_run(args.run, test_file=args.test_file, step=args.step, output=output)
    if launch_env.detect().rank == 0:
        print(format_table(result))
        print(f"written to {output}")
    return 0

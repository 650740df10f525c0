"""``seqpt reproduce``: the paper's grid of runs (MLM encoder; T5 from scratch and its
variants; warm-started T5s; extracted encoders), every encoder fine-tuned and probed on a
classification and a tagging task and every T5 fine-tuned on a seq2seq task over N seeds, then
report.md / report.json with one verdict per claim. Interrupted, it continues where it stopped.

    seqpt reproduce --output-dir runs/repro [--scale small] [--seeds 3] [key=value ...]
    seqpt reproduce --output-dir /data/repro --scale base --only pretrain/mlm   # one stage
"""

import argparse

from megatron_seqpt.errors import UserError

SCALE_NAMES = ("micro", "tiny", "small", "base")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", required=True,
                        help="where the stages' run directories and the report go")
    parser.add_argument("--scale", choices=SCALE_NAMES, default="small",
                        help="model and training sizes: micro (seconds per stage, a smoke "
                             "test), tiny (minutes), small (about an hour on 2 CPU cores, the "
                             "default), base (BERT-base / T5-base sizes for a GPU cluster)")
    parser.add_argument("--seeds", type=int, default=3,
                        help="fine-tuning seeds per task and row (mean and sd in the report)")
    for kind, default in (("classification", "topic"), ("tagging", "pos_tr"),
                          ("seq2seq", "restore")):
        parser.add_argument(f"--{kind}-task", default=default, metavar="NAME|TASK.yaml",
                            help=f"the {kind} task: a built-in task or a task config file "
                                 f"(default {default})")
    parser.add_argument("--only", nargs="+", action="extend", metavar="STAGE",
                        help="run only these stages (what they need must be complete; "
                             "the flag may repeat); --list names them")
    parser.add_argument("--list", action="store_true",
                        help="print the stages in the order they run, and exit")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="applied to every pre-training stage, e.g. data.corpus=[a.jsonl]")


def run(args: argparse.Namespace) -> int:
    from megatron_seqpt.recipes.reproduce import run_reproduction
    from megatron_seqpt.recipes.reproduce_grid import stage_names

    if args.seeds < 1:
        raise UserError("--seeds must be at least 1")
    if args.list:
        print("\n".join(stage_names(args.scale, args.seeds)))
        return 0
    tasks = {"classification": args.classification_task, "tagging": args.tagging_task,
             "seq2seq": args.seq2seq_task}
    report = run_reproduction(args.output_dir, args.scale, args.seeds, args.overrides,
                              args.only or (), tasks)
    if report:
        print()
        for verdict in report["verdicts"].values():
            print(f"- {verdict['line']}")
        print(f"report: {args.output_dir}/report.md")
    return 0

"""``seqpt demo``: the encoder-first recipe end to end on the built-in corpus, against training
T5 from scratch, with a report (the README's first command)."""

import argparse
from pathlib import Path

from megatron_seqpt.recipes.demo import DemoSettings

DEFAULTS = DemoSettings()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", required=True, type=Path,
                        help="where the stages' run directories and the report go")
    parser.add_argument("--encoder-steps", type=int, default=DEFAULTS.encoder_steps)
    parser.add_argument("--seq2seq-steps", type=int, default=DEFAULTS.seq2seq_steps,
                        help="steps of each T5 run (warm-started and from scratch)")
    parser.add_argument("--hidden-size", type=int, default=DEFAULTS.hidden_size)
    parser.add_argument("--layers", type=int, default=DEFAULTS.layers,
                        help="layers of the encoder and of the decoder")
    parser.add_argument("--unfreeze-fraction", type=float, default=DEFAULTS.unfreeze_fraction,
                        help="share of the warm-started run with embeddings and encoder frozen")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="applied to every stage, e.g. train.global_batch_size=32")


def run(args: argparse.Namespace) -> int:
    from megatron_seqpt.recipes.demo import run_demo

    report = run_demo(args.output_dir, DemoSettings(
        args.encoder_steps, args.seq2seq_steps, args.hidden_size, args.layers,
        args.unfreeze_fraction, args.overrides))
    if report:
        from megatron_seqpt.recipes.report import less_or_more

        loss = report["seq2seq_valid_loss"]
        target = report["compute_to_target"]["pair_saving_to_target"]
        print(f"\ncompute for both models: {less_or_more(report['compute_saving'])} with the "
              f"warm start after equal steps; to the from-scratch T5's final loss: "
              + (f"{less_or_more(target)}" if target is not None else "not reached")
              + f"; T5 validation loss {loss['warm_start']:.3f} (warm start) vs "
              f"{loss['scratch']:.3f} (scratch); report: {args.output_dir / 'report.md'}")
    return 0

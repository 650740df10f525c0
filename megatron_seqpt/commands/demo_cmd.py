"""``seqpt demo``: the encoder-first recipe end to end on the built-in corpus, against training
T5 from scratch, with a report (the README's first command)."""

import argparse
from pathlib import Path

from megatron_seqpt.errors import UserError
from megatron_seqpt.recipes.demo import DEMO_ATTENTION_HEADS, DemoSettings

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


def _check_flags(args: argparse.Namespace) -> None:
    """The flags' own ranges, named as the user gave them (the config keys they set would be
    named otherwise, e.g. ``model.encoder.ffn_hidden_size=0`` for ``--hidden-size 0``)."""
    for flag, value in (("--encoder-steps", args.encoder_steps),
                        ("--seq2seq-steps", args.seq2seq_steps), ("--layers", args.layers)):
        if value < 1:
            raise UserError(f"{flag} {value}: give at least 1")
    if args.hidden_size < 1 or args.hidden_size % DEMO_ATTENTION_HEADS:
        raise UserError(f"--hidden-size {args.hidden_size}: give a positive multiple of "
                        f"{DEMO_ATTENTION_HEADS} (the demo's attention heads)")
    if not 0 < args.unfreeze_fraction < 1:
        raise UserError(f"--unfreeze-fraction {args.unfreeze_fraction}: give a share of the "
                        "warm-started run strictly between 0 and 1")


def run(args: argparse.Namespace) -> int:
    from megatron_seqpt.recipes.demo import run_demo

    _check_flags(args)
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

"""``seqpt flops``: compute accounting from configs (no model is built, nothing runs).

    seqpt flops --config t5.yaml [section.key=value ...]
    seqpt flops --recipe encoder.yaml t5_scratch.yaml t5_warm.yaml
"""

import argparse

from megatron_seqpt.commands.common import add_config_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--recipe", nargs=3, metavar=("ENCODER", "SCRATCH", "WARM"),
                        help="compare 'MLM encoder + seq2seq from scratch' with 'MLM encoder + "
                             "warm-started seq2seq' from these three run configs")


def _fmt(flops: float) -> str:
    return f"{flops:.3e}"


def _run_report(path: str, overrides) -> None:
    from megatron_seqpt.config import load_run_config
    from megatron_seqpt.recipes import accounting
    from megatron_seqpt.training.flops import COMPONENTS
    from megatron_seqpt.training.freeze import FreezeSchedule

    config = load_run_config(path, overrides)
    vocab = accounting.padded_vocab(config)
    flops = accounting.flop_model(config, vocab)
    train, data = config.train, config.data
    tokens = train.global_batch_size * (data.seq_length + (data.decoder_seq_length
                                                            if config.model.kind == "t5" else 0))
    schedule = FreezeSchedule(config.freeze, train.steps)
    full = flops.step(dict.fromkeys(COMPONENTS, True))
    run = accounting.run_cost(config).per_component
    print(f"{path or 'defaults'}: model {config.model.kind}, vocabulary {vocab} (padded), "
          f"{train.steps} steps of {train.global_batch_size} samples ({tokens} tokens)")
    print(f"{'component':<12}{'fwd/token':>14}{'fwd/step':>14}{'fwd+bwd/step':>14}"
          f"{'run total':>14}")
    for name in COMPONENTS:
        print(f"{name:<12}{_fmt(flops.forward[name] / tokens):>14}"
              f"{_fmt(flops.forward[name]):>14}{_fmt(full[name]):>14}{_fmt(run[name]):>14}")
    total = sum(run.values())
    everything = sum(full.values()) * train.steps
    print(f"{'total':<12}{_fmt(sum(flops.forward.values()) / tokens):>14}"
          f"{_fmt(sum(flops.forward.values())):>14}{_fmt(sum(full.values())):>14}"
          f"{_fmt(total):>14}")
    print(f"freeze schedule: {schedule.describe()}")
    print(f"run total {_fmt(total)} FLOPs = {total / everything:.1%} of the same steps with "
          "every group trainable")


def _recipe_report(paths) -> None:
    from megatron_seqpt.config import load_run_config
    from megatron_seqpt.recipes import accounting

    configs = [load_run_config(p) for p in paths]
    result = accounting.compare(*configs)
    for label, path, cost in zip(("MLM encoder", "seq2seq from scratch",
                                  "warm-started seq2seq"), paths,
                                 (result.encoder, result.scratch, result.warm)):
        print(f"{label:<22} {cost.steps:>8} steps  {_fmt(cost.total)} FLOPs  ({path})")
    print(f"{'encoder + scratch':<22} {_fmt(result.baseline)} FLOPs")
    print(f"{'encoder + warm start':<22} {_fmt(result.recipe)} FLOPs")
    print(f"saving: {result.saving:.1%} of the compute for both models "
          "(1 - (C_encoder + C_warm) / (C_encoder + C_scratch))")


def run(args: argparse.Namespace) -> int:
    if args.recipe:
        _recipe_report(args.recipe)
    else:
        _run_report(args.config, args.overrides)
    return 0

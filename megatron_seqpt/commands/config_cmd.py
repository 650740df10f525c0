"""``seqpt config``: resolve a config the way a run would and print it, or its first mistake.

Beyond the values themselves it checks what a run would refuse before any work: the parallel
layout against a world size (the launcher's here, or ``--world-size`` for the job it is meant
for) and, for T5, a decoder long enough for span corruption.
"""

import argparse
import sys

import yaml

from megatron_seqpt.commands.common import add_config_arguments
from megatron_seqpt.config import load_run_config
from megatron_seqpt.config.loader import to_dict
from megatron_seqpt.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--world-size", type=int, metavar="N",
                        help="check the layout for a job of N processes (default: this "
                             "launch's, 1 outside torchrun or SLURM)")


def run(args: argparse.Namespace) -> int:
    from megatron_seqpt.data.samples import check_t5_decoder_length
    from megatron_seqpt.runtime.distributed import LayoutError, check_layout
    from megatron_seqpt.runtime.launch_env import detect

    if args.world_size is not None and args.world_size < 1:
        raise UserError(f"--world-size must be at least 1, got {args.world_size}")
    config = load_run_config(args.config, args.overrides)
    world = args.world_size or detect().world_size
    try:
        check_layout(world, config.parallel, config.model)
    except LayoutError as err:
        raise LayoutError(f"{err} (checked for {world} process{'es' if world > 1 else ''}; "
                          "--world-size N checks for another job size)") from None
    if config.model.kind == "t5":
        check_t5_decoder_length(config.data)
    yaml.safe_dump(to_dict(config), sys.stdout, sort_keys=False)
    return 0

"""``seqpt config``: resolve a config the way a run would and print it, or its first mistake."""

import argparse
import sys

import yaml

from megatron_seqpt.commands.common import add_config_arguments
from megatron_seqpt.config import load_run_config
from megatron_seqpt.config.loader import to_dict


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    config = load_run_config(args.config, args.overrides)
    yaml.safe_dump(to_dict(config), sys.stdout, sort_keys=False)
    return 0

"""Arguments several subcommands share."""

import argparse


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="CONFIG.yaml",
                        help="YAML run config (see examples/configs/); defaults apply without it")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="override one config value, e.g. train.steps=500 model.kind=t5")

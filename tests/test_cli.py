"""The command line as launchers pass it on: every option of every command gets through
torchrun's own argument parser to the command."""

from __future__ import annotations

import argparse
import importlib

import pytest
from torch.distributed.run import get_args_parser

from megatron_seqpt.cli import COMMANDS


def _parser(module_name: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    importlib.import_module(module_name).add_arguments(parser)
    return parser


def _long_options(parser: argparse.ArgumentParser, words: list[str]):
    """(the words naming the (sub)command, a long option of it), for every option."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _long_options(sub, [*words, name])
        for option in action.option_strings:
            if option.startswith("--") and option != "--help":
                yield words, option


OPTIONS = [(words, option) for name, (module, _) in COMMANDS.items()
           for words, option in _long_options(_parser(module), [name])]


@pytest.mark.parametrize("words,option", OPTIONS, ids=[" ".join([*w, o]) for w, o in OPTIONS])
def test_every_option_gets_through_torchrun(words, option):
    # argparse takes an option after the script for one of torchrun's own when it is an
    # ambiguous prefix of them ('--run' of '--run-path' and '--run_path') and stops the launch.
    launch = get_args_parser().parse_args(
        ["--nproc-per-node", "2", "-m", "megatron_seqpt.cli", *words, option, "x"])
    assert launch.training_script_args == [*words, option, "x"]


@pytest.mark.parametrize("command", [["evaluate"], ["generate", "--input", "in.txt"],
                                     ["export", "hf", "--output", "out"]])
def test_the_run_to_read_is_named_with_run_dir_and_older_scripts_still_work(command):
    parser = _parser(COMMANDS[command[0]][0])
    for spelling in ("--run-dir", "--run"):  # '--run' is argparse's abbreviation of it
        assert parser.parse_args([*command[1:], spelling, "runs/x"]).run == "runs/x"

"""The ``seqpt`` command. Each subcommand lives in its own module, imported only when it runs,
so ``seqpt --help`` answers at once instead of after loading torch and megatron-core."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

# name -> (module with add_arguments(parser) and run(args) -> int, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("megatron_seqpt.commands.demo_cmd",
             "the main job: MLM encoder, warm-started T5 and T5 from scratch on the built-in "
             "corpus, with a compute/loss report"),
    "config": ("megatron_seqpt.commands.config_cmd",
               "print a config fully resolved (YAML + overrides), or say what is wrong with it"),
    "env": ("megatron_seqpt.commands.env_cmd",
            "show what this machine and launcher provide (CUDA, transformer-engine, apex, ranks)"),
    "train-tokenizer": ("megatron_seqpt.commands.train_tokenizer_cmd",
                        "train the shared sentencepiece model on a language-balanced sample"),
    "preprocess": ("megatron_seqpt.commands.preprocess_cmd",
                   "tokenize a corpus into megatron-core indexed datasets, one per language"),
    "convert": ("megatron_seqpt.commands.convert_cmd",
                "warm-start T5 from an MLM encoder, or extract an encoder from T5"),
    "export": ("megatron_seqpt.commands.export_cmd",
               "a run's model as a Hugging Face transformers directory (MegatronBert, "
               "Blenderbot-layout T5, fast tokenizer), checked against the project's logits"),
    "import": ("megatron_seqpt.commands.import_cmd",
               "a Hugging Face model written by export as a checkpoint to train further"),
    "flops": ("megatron_seqpt.commands.flops_cmd",
              "compute accounting: FLOPs per component, per run, and the recipe's saving"),
    "pretrain": ("megatron_seqpt.commands.pretrain_cmd",
                 "train the MLM encoder or the T5 model of a config (model.kind), resumable"),
    "finetune": ("megatron_seqpt.commands.finetune_cmd",
                 "fine-tune a pre-trained run on a classification, tagging or seq2seq task "
                 "(or probe it with the encoder frozen), resumable"),
    "evaluate": ("megatron_seqpt.commands.evaluate_cmd",
                 "score a fine-tuned run against the majority / copy-the-source baseline "
                 "(eval.json)"),
    "generate": ("megatron_seqpt.commands.generate_cmd",
                 "generate text with a T5 run: greedy or beam search, with a key/value cache"),
    "reproduce": ("megatron_seqpt.commands.reproduce_cmd",
                  "the paper's grid: every recipe row pre-trained, fine-tuned and probed over "
                  "seeds, with a report of the measured findings"),
}


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seqpt",
        description="Sequential pre-training of multilingual MLM encoders and T5 models on "
                    "megatron-core.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {name:<16} {help_}"
                                         for name, (_, help_) in COMMANDS.items())
               + "\n\nRun 'seqpt COMMAND --help' for a command's options.")
    parser.add_argument("command", choices=sorted(COMMANDS), metavar="COMMAND")
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {importlib.import_module('megatron_seqpt').__version__}")
    return parser


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Run ``seqpt COMMAND ...``; ``prog`` names a script that stands for one command. Started
    as a process (``argv`` None), it first re-executes itself on tcmalloc where the machine has
    it (runtime/allocator.py)."""
    if argv is None:
        from megatron_seqpt.runtime.allocator import reexec_with_tcmalloc

        reexec_with_tcmalloc()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        _top_parser().parse_args(argv[:1] or ["--help"])
        return 2
    name = argv[0]
    module_name, help_ = COMMANDS[name]
    prog = prog or f"seqpt {name}"
    parser = argparse.ArgumentParser(prog=prog, description=help_)
    module = importlib.import_module(module_name)
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    from megatron_seqpt.errors import UserError

    try:
        return int(module.run(args) or 0)
    except UserError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        from megatron_seqpt.runtime.child_processes import stop_spawned_children

        stop_spawned_children()
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except OSError as err:
        # A full or read-only disk, a vanished directory: one line naming the path.
        if err.filename is None:
            raise
        from megatron_seqpt.files import write_error

        print(f"{prog}: error: {write_error(err, err.filename, 'use')}", file=sys.stderr)
        return 1
    finally:
        _close_process_group()


def _close_process_group() -> None:
    """A command's process group ends with it: its stages keep the one of a multi-rank launch
    (``runtime.distributed.shutdown``). Commands that never started one import no torch here."""
    distributed = sys.modules.get("megatron_seqpt.runtime.distributed")
    if distributed is not None:
        distributed.close()


if __name__ == "__main__":
    sys.exit(main())

"""From a task config file, command-line options and the pre-trained run to the resolved
fine-tuning config.

Settings come, lowest first, from the defaults, the pre-trained run (model shape, tokenizer,
sequence lengths), the task config file, the command-line options (``--train-file``, ...) and
the ``key=value`` overrides; so ``seqpt finetune --task-kind tagging --train-file a.conll
--init RUN --run-dir DIR`` works with nothing else given.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Optional, Sequence

from megatron_seqpt.config import load
from megatron_seqpt.config.loader import ConfigError, read_tree
from megatron_seqpt.tasks.builtin import builtin_task
from megatron_seqpt.tasks.config import FinetuneConfig
from megatron_seqpt.tasks.pretrained import PretrainedRun, find_pretrained

ENCODER_TASKS = ("classification", "tagging")


def option_overrides(**options: Optional[str]) -> list[str]:
    """``key=value`` overrides for the command-line options that were given (values quoted, so
    a file name is always read as a string)."""
    return [f"{key}={json.dumps(value)}" for key, value in options.items() if value is not None]


def _task_kind(tree: dict) -> Optional[str]:
    task = tree.get("task") or {}
    if task.get("kind"):
        return task["kind"]
    if task.get("builtin"):
        return builtin_task(task["builtin"]).kind
    return None


def _base(pretrained: PretrainedRun, kind: Optional[str]) -> dict:
    """What the task run takes from the pre-trained run: the body's shape and the tokenizer."""
    model = dataclasses.asdict(pretrained.config.model)
    if kind in ENCODER_TASKS:
        # A T5 run gives its encoder: the task model is an encoder with a task head.
        model.update(kind="encoder", encoder_mlm_weight=0.0)
    elif kind == "seq2seq":
        if pretrained.kind != "t5":
            raise ConfigError(
                f"a seq2seq task fine-tunes a T5 model, and {pretrained.checkpoint} holds a "
                f"model.kind={pretrained.kind} model; warm-start a T5 from it first (seqpt "
                "convert warm-start) or give a T5 run", key="init.from_run")
        model.update(encoder_mlm_weight=0.0)
    data = pretrained.config.data
    return {"model": model,
            "data": {"tokenizer_model": str(pretrained.tokenizer_model),
                     "seq_length": data.seq_length,
                     "decoder_seq_length": data.decoder_seq_length,
                     "cache_dir": data.cache_dir}}


def resolve_config(config_path: Optional[str], overrides: Sequence[str]
                   ) -> tuple[FinetuneConfig, Optional[PretrainedRun]]:
    """The fine-tuning config, and the pre-trained run it starts from (None without one)."""
    tree, _, _ = read_tree(FinetuneConfig, config_path, overrides)
    init = tree.get("init") or {}
    pretrained = None
    base: dict = {}
    if init.get("from_run"):
        pretrained = find_pretrained(init["from_run"], init.get("from_step"), "init.from_step")
        base = _base(pretrained, _task_kind(tree))
    return load(FinetuneConfig, config_path, overrides, base=base), pretrained

"""The main job: the encoder-first recipe end to end on the built-in corpus, next to its
baseline, scored downstream, small enough for a laptop CPU.

Stages (each a normal run directory under the output directory; complete ones are skipped
when the demo is run again):
  data        tokenizer and per-language indexed datasets of the default corpus
  encoder     MLM encoder from scratch
  t5_warm     T5 warm-started from the encoder, embeddings and encoder frozen for the first
              part of the run, then unfrozen
  t5_scratch  T5 from scratch with the same step budget (the baseline)
  finetune/   the encoder fine-tuned on the built-in classification task, both T5 models on
              the built-in seq2seq task, each scored on the task's test split
then report.json, report.md and loss_curves.png.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from megatron_seqpt.config import RunConfig, load_run_config
from megatron_seqpt.data.prepare import prepare
from megatron_seqpt.recipes import accounting
from megatron_seqpt.recipes.curves import valid_curve
from megatron_seqpt.recipes.kept_settings import keep_or_check
from megatron_seqpt.recipes.report import StageResult, write_report
from megatron_seqpt.recipes.stages import FinetuneStage, PretrainStage, run_stages
from megatron_seqpt.runtime import launch_env
from megatron_seqpt.runtime.log import log

PRETRAINING = ("encoder", "t5_warm", "t5_scratch")
# The built-in task each pre-trained model is scored on.
DOWNSTREAM = {"encoder": "topic", "t5_warm": "restore", "t5_scratch": "restore"}


DEMO_ATTENTION_HEADS = 4
# The settings seqpt demo takes as flags (``--encoder-steps``, ...).
DEMO_FLAGS = ("encoder_steps", "seq2seq_steps", "hidden_size", "layers", "unfreeze_fraction")


@dataclass
class DemoSettings:
    """What the command line can raise or lower."""

    encoder_steps: int = 300
    seq2seq_steps: int = 300
    hidden_size: int = 256
    layers: int = 3
    unfreeze_fraction: float = 0.5
    # Applied to every pre-training stage's config, e.g. "train.global_batch_size=32".
    overrides: Sequence[str] = field(default_factory=list)
    # Fine-tuning length: epochs over the task's training data, or steps when given (one epoch
    # keeps the whole demo under 15 minutes on 2 CPU cores).
    finetune_epochs: float = 1.0
    finetune_steps: Optional[int] = None


def _config(settings: DemoSettings, output: Path, stage: str) -> RunConfig:
    shape = [f"model.hidden_size={settings.hidden_size}", "model.max_position_embeddings=128",
             *(f"model.{stack}.{key}={value}" for stack in ("encoder", "decoder")
               for key, value in (("num_layers", settings.layers),
                                  ("ffn_hidden_size", 4 * settings.hidden_size),
                                  ("num_attention_heads", DEMO_ATTENTION_HEADS))),
             "data.seq_length=128", "data.decoder_seq_length=40", "data.vocab_size=4000",
             f"data.cache_dir={output / 'data'}", "train.global_batch_size=16",
             "train.micro_batch_size=8", "train.eval_steps=4", "optim.lr=1e-3",
             "logging.log_interval=25", "checkpoint.keep_last=1"]
    steps = settings.encoder_steps if stage == "encoder" else settings.seq2seq_steps
    per_stage = [f"model.kind={'encoder' if stage == 'encoder' else 't5'}",
                 f"train.steps={steps}", f"train.eval_interval={max(steps // 6, 1)}",
                 f"optim.warmup_steps={max(steps // 10, 1)}",
                 f"checkpoint.save_interval={steps}"]
    if stage == "t5_warm":
        fraction = settings.unfreeze_fraction
        per_stage += [f"init.from_encoder={output / 'encoder'}"]
        for group in ("embeddings", "encoder"):
            per_stage += [f"freeze.{group}.frozen=true",
                          f"freeze.{group}.unfreeze_at_fraction={fraction}",
                          f"freeze.{group}.warmup_steps={max(steps // 10, 1)}"]
    return load_run_config(None, [*shape, *per_stage, *settings.overrides])


def _named(settings: DemoSettings) -> dict[str, object]:
    """The settings as the user gives them: the flags, and the fine-tuning length by field."""
    return {(f"--{name.replace('_', '-')}" if name in DEMO_FLAGS else name): value
            for name, value in dataclasses.asdict(settings).items()}


def _finetune(settings: DemoSettings, stage: str) -> FinetuneStage:
    length = [f"task.epochs={settings.finetune_epochs}"] if settings.finetune_steps is None \
        else ["task.epochs=null", f"train.steps={settings.finetune_steps}"]
    return FinetuneStage(f"finetune/{stage}_{DOWNSTREAM[stage]}", stage, DOWNSTREAM[stage],
                         seed=1, overrides=(*length, "optim.lr=5e-4", "optim.warmup_steps=10",
                                            "logging.log_interval=50",
                                            "task.generation.max_new_tokens=40"))


def run_demo(output: Path, settings: DemoSettings) -> dict:
    output = Path(output)
    keep_or_check(output, _named(settings))
    started = time.perf_counter()
    configs = {stage: _config(settings, output, stage) for stage in PRETRAINING}
    log("demo: tokenizer and indexed datasets of the built-in corpus")
    data_started = time.perf_counter()
    prepare(configs["encoder"].data)
    data_seconds = time.perf_counter() - data_started
    stages = [PretrainStage(stage, configs[stage]) for stage in PRETRAINING]
    stages += [_finetune(settings, stage) for stage in PRETRAINING]
    weights = {stage: accounting.run_cost(configs[stage]).total for stage in PRETRAINING}
    weights.update({s.name: 0.2 * weights["encoder"] for s in stages[len(PRETRAINING):]})
    walls: dict[str, float] = {}
    finished = run_stages(output, stages, weights, lambda stage, _, seconds: walls.update(
        {stage.name: seconds}))
    if not finished or launch_env.detect().rank != 0:
        return {}
    results = [StageResult.from_run(stage, output / stage, walls.get(stage))
               for stage in PRETRAINING]
    downstream = {}
    for stage in stages[len(PRETRAINING):]:
        scored = json.loads((output / stage.name / "eval.json").read_text())
        downstream[stage.init] = {"task": stage.task, "metrics": scored["metrics"],
                                  "baseline": scored["baseline"],
                                  # Teacher-forced, on the validation split: it separates
                                  # models that do not yet generate the task.
                                  "valid_loss": valid_curve(output / stage.name)[-1][2]}
    return write_report(output, results, downstream, data_seconds,
                        time.perf_counter() - started, configs)

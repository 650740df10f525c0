"""The main job: the encoder-first recipe end to end on the built-in corpus, next to its
baseline, small enough for a laptop CPU.

Stages (each a normal run directory under the output directory):
  data        tokenizer and per-language indexed datasets of the default corpus
  encoder     MLM encoder from scratch
  t5_warm     T5 warm-started from the encoder, embeddings and encoder frozen for the first
              part of the run, then unfrozen
  t5_scratch  T5 from scratch with the same step budget (the baseline)
then report.json, report.md and loss_curves.png.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from megatron_seqpt.config import RunConfig, load_run_config
from megatron_seqpt.data.prepare import prepare
from megatron_seqpt.recipes.report import StageResult, write_report
from megatron_seqpt.runtime import distributed
from megatron_seqpt.runtime.log import log
from megatron_seqpt.training.loop import Trainer


@dataclass
class DemoSettings:
    """What the command line can raise or lower."""

    encoder_steps: int = 300
    seq2seq_steps: int = 300
    hidden_size: int = 256
    layers: int = 3
    unfreeze_fraction: float = 0.5
    # Applied to every stage's config, e.g. "train.global_batch_size=32".
    overrides: Sequence[str] = field(default_factory=list)


def _config(settings: DemoSettings, output: Path, stage: str) -> RunConfig:
    shape = [f"model.hidden_size={settings.hidden_size}", "model.max_position_embeddings=128",
             f"model.encoder.num_layers={settings.layers}", "model.encoder.ffn_hidden_size="
             f"{4 * settings.hidden_size}", "model.encoder.num_attention_heads=4",
             f"model.decoder.num_layers={settings.layers}", "model.decoder.ffn_hidden_size="
             f"{4 * settings.hidden_size}", "model.decoder.num_attention_heads=4",
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


def run_demo(output: Path, settings: DemoSettings) -> dict:
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    stages = ("encoder", "t5_warm", "t5_scratch")
    configs = {stage: _config(settings, output, stage) for stage in stages}
    first = configs["encoder"]
    ctx = distributed.initialize(first.parallel, first.model, first.train.seed)
    try:
        log("demo stage 1/4: tokenizer and indexed datasets of the built-in corpus")
        data_started = time.perf_counter()
        if ctx.is_main:
            prepare(first.data)
        data_seconds = time.perf_counter() - data_started
        results = []
        for number, stage in enumerate(stages, start=2):
            log(f"demo stage {number}/4: {stage} ({configs[stage].train.steps} steps)")
            stage_started = time.perf_counter()
            trainer = Trainer(configs[stage], output / stage, ctx)
            outcome = trainer.run()
            if outcome.status != "completed":
                raise RuntimeError(f"stage {stage} ended {outcome.status}")
            results.append(StageResult.from_run(stage, output / stage, trainer,
                                                time.perf_counter() - stage_started))
        if ctx.is_main:
            return write_report(output, results, data_seconds,
                                time.perf_counter() - started, configs)
        return {}
    finally:
        distributed.shutdown()

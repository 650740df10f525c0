"""The fine-tuning config: a run config (model, data, parallel, optim, freeze, train, logging,
checkpoint, init) plus a ``task`` section. The model shape and the tokenizer come from the
pre-trained run the task model starts from, so a task config names only what is the task's."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Optional

from megatron_seqpt.config.loader import ConfigError
from megatron_seqpt.config.schema import (
    InitConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    require_at_least,
    require_in,
)
from megatron_seqpt.tasks.examples import TaskKind


@dataclass
class GenerationSettings:
    """How a seq2seq task model generates when it is scored (``seqpt evaluate``)."""

    beam_size: int = 1
    # Beam scores are summed log-probabilities over (generated length ** length_penalty).
    length_penalty: float = 1.0
    # null: data.decoder_seq_length - 1 (the longest target fine-tuning trains on).
    max_new_tokens: Optional[int] = None
    batch_size: int = 32

    def validate(self) -> None:
        for name in ("beam_size", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"must be at least 1, got {getattr(self, name)}", key=name)
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ConfigError(f"must be at least 1 (or null), got {self.max_new_tokens}",
                              key="max_new_tokens")
        if not math.isfinite(self.length_penalty):
            raise ConfigError(f"must be a finite number, got {self.length_penalty}",
                              key="length_penalty")


@dataclass
class TaskConfig:
    """The task: its kind, its data and its head."""

    # null: that of task.builtin.
    kind: Optional[TaskKind] = None
    # A task shipped with the package (topic, punct, restore, pos_tr): its kind and files.
    builtin: Optional[str] = None
    train_file: Optional[str] = None
    validation_file: Optional[str] = None
    test_file: Optional[str] = None
    # Without validation/test files, these shares of the training file are held back
    # (train,valid,test; a fixed seed decides which examples).
    split: str = "80,10,10"
    split_seed: int = 1234
    on_error: Literal["fail", "skip"] = "fail"
    # CoNLL-U files: the column holding the tags.
    tag_column: Literal["upos", "xpos"] = "upos"
    # Language of examples whose data does not name one.
    lang: Optional[str] = None
    # Label (tag) names in head order; null: those of the training data, sorted.
    labels: Optional[list[str]] = None
    # Classification: the sequence representation the head reads.
    pooling: Literal["mean", "cls"] = "mean"
    head_dropout: float = 0.1
    # Training length in passes over the training data; null: train.steps.
    epochs: Optional[float] = 3.0
    # Training batches cut from examples of similar length (windows of 16 global batches
    # sorted by length, their batches shuffled): far less padding, a seeded order all the same.
    # false: plain shuffling.
    group_by_length: bool = True
    # Examples longer than data.seq_length (or targets longer than data.decoder_seq_length):
    # cut and counted, or refused.
    truncation: Literal["truncate", "refuse"] = "truncate"
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    # Examples (input, gold, prediction) written into eval.json.
    eval_examples: int = 20

    def validate(self) -> None:
        if self.builtin is None and self.train_file is None:
            raise ConfigError("give task.train_file (with --train-file) or a built-in task "
                              "(task.builtin: topic, punct, restore or pos_tr)",
                              key="train_file")
        if self.builtin is None and self.kind is None:
            raise ConfigError("give the task kind (--task-kind or task.kind: classification, "
                              "tagging or seq2seq)", key="kind")
        if self.epochs is not None and not (math.isfinite(self.epochs) and self.epochs > 0):
            raise ConfigError(f"must be positive (or null for train.steps), got {self.epochs}",
                              key="epochs")
        require_in(self, 0, 1, "head_dropout")
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ConfigError("labels must be distinct", key="labels")
        require_at_least(self, 0, "eval_examples")


@dataclass
class FinetuneInitConfig(InitConfig):
    """Where a task model's body comes from (a resumed run ignores this)."""

    # A pre-training run (or a checkpoint directory): an encoder run (MLM-trained, extracted,
    # continued) or a T5 run for classification and tagging (its encoder is taken), a T5 run
    # for seq2seq. The task head is new.
    from_run: Optional[str] = None
    # That run's checkpoint at this step; null: its latest.
    from_step: Optional[int] = None


def _finetune_optim() -> OptimConfig:
    return OptimConfig(lr=1e-4, min_lr=0.0, warmup_steps=0)


def _finetune_train() -> TrainConfig:
    return TrainConfig(global_batch_size=32, micro_batch_size=16, eval_interval=100)


@dataclass
class FinetuneConfig(RunConfig):
    task: TaskConfig = field(default_factory=TaskConfig)
    init: FinetuneInitConfig = field(default_factory=FinetuneInitConfig)
    optim: OptimConfig = field(default_factory=_finetune_optim)
    train: TrainConfig = field(default_factory=_finetune_train)

    def validate(self) -> None:
        super().validate()
        if self.init.from_encoder:
            raise ConfigError("fine-tuning starts from init.from_run, not init.from_encoder",
                              key="init.from_encoder")
        if self.init.from_run and self.checkpoint.load:
            raise ConfigError("give init.from_run or checkpoint.load, not both",
                              key="init.from_run")
        new_tokens = self.task.generation.max_new_tokens
        if new_tokens is not None and new_tokens > self.model.max_position_embeddings:
            # Scoring would refuse it after the whole training.
            raise ConfigError(f"task.generation.max_new_tokens {new_tokens} does not fit the "
                              f"model's model.max_position_embeddings "
                              f"{self.model.max_position_embeddings}",
                              key="task.generation.max_new_tokens")
        if self.parallel.pipeline_model_parallel_size > 1:
            raise ConfigError("fine-tuning runs with tensor and data parallelism only; set "
                              "parallel.pipeline_model_parallel_size=1",
                              key="parallel.pipeline_model_parallel_size")

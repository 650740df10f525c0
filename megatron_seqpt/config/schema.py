"""The run configuration: one typed dataclass per concern.

Every field has a default that runs on a laptop CPU; examples/configs/ holds real sizes.
Each section checks itself in ``validate()``; the loader adds the file and the dotted key.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Literal, Optional

from megatron_seqpt.config.loader import ConfigError


def require_at_least(section, minimum: float, *names: str) -> None:
    """Each named field of ``section`` must be a finite number >= ``minimum`` (NaN compares
    false with everything, so ``value < minimum`` let it through)."""
    for name in names:
        value = getattr(section, name)
        if not (math.isfinite(value) and value >= minimum):
            raise ConfigError(f"must be a finite number, at least {minimum}, got {value}",
                              key=name)


def require_positive(section, *names: str) -> None:
    """Each named field of ``section`` must be a finite number > 0."""
    for name in names:
        value = getattr(section, name)
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"must be a positive number, got {value}", key=name)


def require_in(section, low: float, high: float, *names: str) -> None:
    """Each named field of ``section`` must lie in [low, high)."""
    for name in names:
        value = getattr(section, name)
        if not low <= value < high:
            raise ConfigError(f"must be in [{low}, {high}), got {value}", key=name)


@dataclass
class StackConfig:
    """One transformer stack (the encoder, or the T5 decoder)."""

    num_layers: int = 2
    ffn_hidden_size: int = 512
    num_attention_heads: int = 4

    def validate(self) -> None:
        require_at_least(self, 1, "num_layers", "ffn_hidden_size", "num_attention_heads")


@dataclass
class ModelConfig:
    """Model shape. The T5 decoder shares ``hidden_size`` with the encoder (cross-attention)."""

    kind: Literal["encoder", "t5"] = "encoder"
    hidden_size: int = 128
    encoder: StackConfig = field(default_factory=StackConfig)
    decoder: StackConfig = field(default_factory=StackConfig)
    # None: take the tokenizer's vocabulary size.
    vocab_size: Optional[int] = None
    max_position_embeddings: int = 512
    normalization: Literal["LayerNorm", "RMSNorm"] = "LayerNorm"
    activation: Literal["gelu", "relu", "swiglu"] = "gelu"
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    init_method_std: float = 0.02
    # auto: transformer-engine when it imports and a GPU is present, else megatron-core local.
    transformer_impl: Literal["auto", "local", "transformer_engine"] = "auto"
    # Core attention of the local layers: torch's fused SDPA, or megatron-core's unfused one.
    local_attention: Literal["sdpa", "megatron"] = "sdpa"
    # T5 only: weight of an MLM loss on the encoder output (masked encoder input, a BERT-style
    # head on the encoder), added to the seq2seq loss; 0 = off.
    encoder_mlm_weight: float = 0.0

    def validate(self) -> None:
        require_at_least(self, 1, "hidden_size")
        stacks = [("encoder", self.encoder)] + ([("decoder", self.decoder)]
                                                if self.kind == "t5" else [])
        for name, stack in stacks:
            if self.hidden_size % stack.num_attention_heads:
                raise ConfigError(
                    f"hidden_size {self.hidden_size} is not divisible by "
                    f"{name}.num_attention_heads {stack.num_attention_heads}; change one so that "
                    "each head gets hidden_size / heads channels",
                    key=f"{name}.num_attention_heads")
        require_in(self, 0, 1, "hidden_dropout", "attention_dropout")
        require_at_least(self, 0, "encoder_mlm_weight")
        require_positive(self, "init_method_std")
        if self.vocab_size is not None and self.vocab_size < 1:
            raise ConfigError(f"must be at least 1 (or null for the tokenizer's), got "
                              f"{self.vocab_size}", key="vocab_size")


@dataclass
class DataConfig:
    """Where the text comes from and how training samples are made of it."""

    # Raw jsonl/txt files; empty: the default corpus shipped with the package.
    corpus: list[str] = field(default_factory=list)
    # Prepared data lives here (tokenizer, indexed datasets, sample index cache).
    cache_dir: str = "~/.cache/megatron_seqpt"
    # An existing sentencepiece model; null: train one on the corpus.
    tokenizer_model: Optional[str] = None
    # Pieces of a tokenizer trained here. The default corpus yields at most about 6100.
    vocab_size: int = 4000
    # Indexed dataset prefixes (language -> prefix); empty: build them from the corpus.
    prefixes: dict[str, str] = field(default_factory=dict)
    seq_length: int = 128
    decoder_seq_length: int = 64
    # Processes that build training samples ahead of the step; null: 2 with a GPU, 0 on CPU
    # (where they would compete with the step for the same cores).
    loader_workers: Optional[int] = None
    # Regroup each step's micro-batches by length and cut each to its longest sample (rounded
    # up to 8): padded positions cost no compute, the step's loss and gradients are the same
    # (data/trimming.py). Not with pipeline parallelism, whose stages exchange fixed shapes.
    trim_padding: bool = True
    sampling_alpha: float = 0.3
    split: str = "90,5,5"
    # MLM.
    masking_probability: float = 0.15
    whole_word_masking: bool = True
    max_ngram: int = 3
    # Span corruption (T5).
    noise_density: float = 0.15
    mean_span_length: float = 3.0

    def validate(self) -> None:
        if self.loader_workers is not None and self.loader_workers < 0:
            raise ConfigError(f"must be >= 0 (or null for the default), got "
                              f"{self.loader_workers}", key="loader_workers")
        require_at_least(self, 8, "seq_length")
        if not 0.0 < self.sampling_alpha <= 1.0:
            raise ConfigError(f"must be in (0, 1], got {self.sampling_alpha}",
                              key="sampling_alpha")
        for name in ("masking_probability", "noise_density"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ConfigError(f"must be in (0, 1), got {getattr(self, name)}", key=name)
        require_at_least(self, 1, "max_ngram", "mean_span_length")
        parts = self.split.split(",")
        try:
            weights = [float(p) for p in parts]
        except ValueError:
            weights = []
        if len(weights) != 3 or any(w < 0 for w in weights) or weights[0] <= 0:
            raise ConfigError(f"got '{self.split}', expected three non-negative weights "
                              "'train,valid,test' with train > 0, e.g. '98,1,1'", key="split")


@dataclass
class ParallelConfig:
    """How the model is split over processes; data parallel size is what remains."""

    tensor_model_parallel_size: int = 1
    pipeline_model_parallel_size: int = 1
    sequence_parallel: bool = False
    # T5 with pipeline parallelism: layers per stage, encoder layers first, then decoder
    # layers (a stage may hold both); null: balanced by FLOPs.
    pipeline_layers: Optional[list[int]] = None
    use_distributed_optimizer: bool = False
    # torch.distributed backend: auto = nccl with CUDA, gloo without.
    backend: Literal["auto", "nccl", "gloo"] = "auto"
    timeout_minutes: int = 30

    def validate(self) -> None:
        require_at_least(self, 1, "tensor_model_parallel_size", "pipeline_model_parallel_size")
        if self.sequence_parallel and self.tensor_model_parallel_size == 1:
            raise ConfigError("sequence parallel splits activations over the tensor-parallel "
                              "group; it needs parallel.tensor_model_parallel_size > 1",
                              key="sequence_parallel")


@dataclass
class OptimConfig:
    """AdamW with warm-up and decay (megatron-core's OptimizerParamScheduler)."""

    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.98
    adam_eps: float = 1e-8
    clip_grad: float = 1.0
    warmup_steps: int = 20
    decay_style: Literal["constant", "linear", "cosine", "inverse-square-root"] = "linear"

    def validate(self) -> None:
        require_positive(self, "lr")
        if not 0 <= self.min_lr <= self.lr:
            raise ConfigError(f"must be between 0 and optim.lr ({self.lr}), got {self.min_lr}",
                              key="min_lr")
        # torch's AdamW refuses these at start (a traceback), or NaN makes every step NaN;
        # clip_grad 0 turns clipping off.
        require_at_least(self, 0, "warmup_steps", "weight_decay", "adam_eps", "clip_grad")
        require_in(self, 0, 1, "adam_beta1", "adam_beta2")


@dataclass
class GroupSchedule:
    """When one parameter group trains. Frozen groups cost no backward and no optimizer state."""

    frozen: bool = False
    # Unfreeze at this step, or at this fraction of train.steps (give at most one).
    unfreeze_at_step: Optional[int] = None
    unfreeze_at_fraction: Optional[float] = None
    lr_mult: float = 1.0
    warmup_steps: int = 0

    def validate(self) -> None:
        if self.unfreeze_at_step is not None and self.unfreeze_at_fraction is not None:
            raise ConfigError("give unfreeze_at_step or unfreeze_at_fraction, not both",
                              key="unfreeze_at_step")
        if (self.unfreeze_at_step is not None or self.unfreeze_at_fraction is not None) \
                and not self.frozen:
            raise ConfigError("an unfreeze point needs frozen: true (the group starts frozen)",
                              key="frozen")
        if self.unfreeze_at_fraction is not None and not 0 < self.unfreeze_at_fraction < 1:
            raise ConfigError(f"must be in (0, 1), got {self.unfreeze_at_fraction}",
                              key="unfreeze_at_fraction")
        require_at_least(self, 0, "lr_mult", "warmup_steps")


@dataclass
class FreezeConfig:
    """The freeze schedule, one entry per named parameter group."""

    embeddings: GroupSchedule = field(default_factory=GroupSchedule)
    encoder: GroupSchedule = field(default_factory=GroupSchedule)
    decoder: GroupSchedule = field(default_factory=GroupSchedule)
    heads: GroupSchedule = field(default_factory=GroupSchedule)


@dataclass
class TrainConfig:
    steps: int = 200
    global_batch_size: int = 16
    micro_batch_size: int = 8
    seed: int = 1234
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    eval_interval: int = 50
    eval_steps: int = 4
    # Stop (with a checkpoint) after this many non-finite losses in a row.
    max_skipped_steps: int = 5

    def validate(self) -> None:
        require_at_least(self, 1, "steps", "global_batch_size", "micro_batch_size", "eval_steps",
                         "eval_interval", "max_skipped_steps")
        if self.global_batch_size % self.micro_batch_size:
            raise ConfigError(f"global_batch_size {self.global_batch_size} is not a multiple of "
                              f"micro_batch_size {self.micro_batch_size}",
                              key="global_batch_size")


@dataclass
class LoggingConfig:
    log_interval: int = 10
    tensorboard: bool = True

    def validate(self) -> None:
        require_at_least(self, 1, "log_interval")


@dataclass
class CheckpointConfig:
    save_interval: int = 100
    # Keep this many newest checkpoints (0: keep all).
    keep_last: int = 2
    # Start from this checkpoint (a run directory or a checkpoint directory) instead of scratch.
    load: Optional[str] = None

    def validate(self) -> None:
        require_at_least(self, 1, "save_interval")
        require_at_least(self, 0, "keep_last")


@dataclass
class InitConfig:
    """Where a run's weights start (a resumed run ignores this)."""

    # A T5 run: embeddings and encoder from this MLM encoder checkpoint (run directory or
    # checkpoint directory), decoder freshly initialised (the encoder-first recipe).
    from_encoder: Optional[str] = None


@dataclass
class RunConfig:
    """Everything one training run needs; written resolved into the run directory."""

    # Top-level sections of the configs other commands take (the loader's error names them).
    SECTIONS_OF_OTHER_CONFIGS: typing.ClassVar[dict[str, str]] = {
        "task": "a fine-tuning config (it has a task section); run it with seqpt finetune"}

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    init: InitConfig = field(default_factory=InitConfig)

    def validate(self) -> None:
        if self.init.from_encoder and self.model.kind != "t5":
            raise ConfigError("warm-starting from an encoder needs model.kind t5",
                              key="init.from_encoder")
        if self.init.from_encoder and self.checkpoint.load:
            raise ConfigError("give init.from_encoder or checkpoint.load, not both",
                              key="init.from_encoder")
        if self.data.seq_length > self.model.max_position_embeddings:
            raise ConfigError(
                f"data.seq_length {self.data.seq_length} exceeds model.max_position_embeddings "
                f"{self.model.max_position_embeddings}; raise the latter or shorten the former",
                key="data.seq_length")
        if self.model.kind == "t5" and \
                self.data.decoder_seq_length > self.model.max_position_embeddings:
            raise ConfigError(
                f"data.decoder_seq_length {self.data.decoder_seq_length} exceeds "
                f"model.max_position_embeddings {self.model.max_position_embeddings}; raise the "
                "latter or shorten the former", key="data.decoder_seq_length")
        tp = self.parallel.tensor_model_parallel_size
        if self.model.kind == "t5" and self.parallel.sequence_parallel and \
                self.data.decoder_seq_length % tp:
            raise ConfigError(
                f"with sequence parallel, data.decoder_seq_length {self.data.decoder_seq_length} "
                f"must divide by parallel.tensor_model_parallel_size {tp}",
                key="data.decoder_seq_length")
        for group in dataclasses.fields(self.freeze):
            at_step = getattr(self.freeze, group.name).unfreeze_at_step
            if at_step is not None and at_step >= self.train.steps:
                raise ConfigError(
                    f"freeze.{group.name}.unfreeze_at_step {at_step} is not before train.steps "
                    f"{self.train.steps}, so the group would never unfreeze; lower it, or drop "
                    "it to keep the group frozen throughout",
                    key=f"freeze.{group.name}.unfreeze_at_step")
        if self.model.encoder_mlm_weight and self.model.kind == "t5" \
                and self.parallel.sequence_parallel:
            raise ConfigError("the encoder MLM loss is not available with sequence parallel; "
                              "set model.encoder_mlm_weight=0 or parallel.sequence_parallel=false",
                              key="model.encoder_mlm_weight")
        if self.parallel.sequence_parallel and \
                self.data.seq_length % self.parallel.tensor_model_parallel_size:
            raise ConfigError(
                f"with sequence parallel, data.seq_length {self.data.seq_length} must divide by "
                f"parallel.tensor_model_parallel_size {self.parallel.tensor_model_parallel_size}",
                key="data.seq_length")

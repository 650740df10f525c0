"""What a run trains: the part of a run that differs between pre-training and fine-tuning.

The Trainer brings the machinery (megatron-core's schedules, DDP and optimizer, the freeze
scheduler, checkpoints, resume, pre-emption, logging); a Workload brings the data, the model,
the per-micro-batch loss and the compute count. Pre-training is one workload
(``pretraining.py``); the fine-tuning tasks are others (``megatron_seqpt.tasks``), passed down
to the Trainer by the commands that run them.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from megatron_seqpt.config import RunConfig
from megatron_seqpt.data.stream import MicroBatches
from megatron_seqpt.models.specs import LayerImpl
from megatron_seqpt.runtime.distributed import DistributedContext
from megatron_seqpt.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer


@dataclass
class RunData:
    tokenizer: SentencePieceTokenizer
    train: MicroBatches
    # A fresh stream over the validation samples (the same samples at every evaluation).
    valid_stream: Optional[Callable[[], MicroBatches]]
    # Global batches one evaluation reads from it.
    eval_batches: int

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size


class Workload(abc.ABC):
    """Data, model and loss of one run; ``config`` is the run's (resolved) config."""

    # Losses the forward step reports; the first is the one the run optimises and evaluates.
    loss_keys: tuple[str, ...] = ("lm loss",)

    def __init__(self, config: RunConfig):
        self.config = config

    @abc.abstractmethod
    def build_data(self, ctx: DistributedContext, resumed: Optional[dict] = None) -> RunData:
        """This rank's streams. May settle config values that depend on the data (e.g. the
        step count of an epoch-based fine-tuning run) by replacing ``self.config``.
        ``resumed``: the metadata of the checkpoint the run continues from, whose recorded
        data position must point into the same order."""

    @abc.abstractmethod
    def build_modules(self, ctx: DistributedContext, vocab_size: int, precision: str,
                      impl: LayerImpl) -> list[torch.nn.Module]:
        """This pipeline stage's model chunks, not yet wrapped in DDP."""

    @abc.abstractmethod
    def forward_step(self, impl: LayerImpl, device: torch.device,
                     encoder_frozen: Callable[[], bool]) -> Callable:
        """``forward_step(data_iterator, model)`` for megatron-core's schedules."""

    @abc.abstractmethod
    def model_metadata(self, vocab_size: int) -> dict:
        """The ``model`` entry of checkpoint metadata: what decides parameter shapes."""

    @abc.abstractmethod
    def step_flops(self, trainable: dict[str, bool]) -> float:
        """Model FLOPs the step just taken executed (called once after every step)."""

    @abc.abstractmethod
    def tokens_per_sample(self) -> int:
        """Tokens a sample counts for in throughput figures."""

    def schedule_seq_length(self, ctx: DistributedContext) -> int:
        """Sequence length of the tensors pipeline stages exchange."""
        return self.config.data.seq_length

    def check_checkpoint(self, path: Path, meta: dict, vocab_size: int) -> None:
        """Refuse a checkpoint this workload cannot load (raise a UserError naming why)."""

    def metadata(self) -> dict:
        """Extra entries for checkpoint metadata (beside model, layout, step, ...)."""
        return {}

    def weight_sources(self) -> list[Path]:
        """The checkpoints ``initialize`` takes weights from (their tokenizer is checked)."""
        return []

    def initialize(self, modules: list[torch.nn.Module], vocab_size: int) -> Optional[str]:
        """Weights of a fresh run that come from elsewhere (not checkpoint.load); returns what
        was done for the log, or None when the model keeps its random initialisation."""
        return None

    def describe(self) -> Optional[str]:
        """A line for the run log, or None."""
        return None

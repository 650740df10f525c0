"""What the recipes cost, from the configs: FLOPs per run under its freeze schedule, and the
saving of "MLM encoder + warm-started seq2seq" over "MLM encoder + seq2seq from scratch".

    saving = 1 - (C_encoder + C_warm) / (C_encoder + C_scratch)

where each C is the sum over the run's steps of the FLOPs the step executes (training/flops.py):
3x the forward for components that train, 1x for a frozen component nothing upstream of which
trains, 2x for a frozen one that gradients must cross.
"""

from __future__ import annotations

from dataclasses import dataclass

from megatron_seqpt.config import RunConfig
from megatron_seqpt.models.vocab import padded_vocab_size
from megatron_seqpt.training.flops import FlopModel
from megatron_seqpt.training.freeze import FreezeSchedule


def padded_vocab(config: RunConfig) -> int:
    """The model's vocabulary as training pads it (the tokenizer's target size when the config
    does not fix it)."""
    return padded_vocab_size(config.model.vocab_size or config.data.vocab_size,
                             config.parallel.tensor_model_parallel_size)


def flop_model(config: RunConfig, vocab_size: int | None = None) -> FlopModel:
    return FlopModel.build(config.model, vocab_size or padded_vocab(config),
                           config.data.seq_length, config.data.decoder_seq_length,
                           config.train.global_batch_size, config.data.masking_probability)


@dataclass(frozen=True)
class RunCost:
    steps: int
    per_component: dict[str, float]

    @property
    def total(self) -> float:
        return sum(self.per_component.values())


def run_cost(config: RunConfig) -> RunCost:
    schedule = FreezeSchedule(config.freeze, config.train.steps)
    return RunCost(config.train.steps, flop_model(config).run(schedule, config.train.steps))


@dataclass(frozen=True)
class RecipeComparison:
    encoder: RunCost
    scratch: RunCost
    warm: RunCost

    @property
    def baseline(self) -> float:
        return self.encoder.total + self.scratch.total

    @property
    def recipe(self) -> float:
        return self.encoder.total + self.warm.total

    @property
    def saving(self) -> float:
        return 1.0 - self.recipe / self.baseline


def compare(encoder: RunConfig, scratch: RunConfig, warm: RunConfig) -> RecipeComparison:
    return RecipeComparison(run_cost(encoder), run_cost(scratch), run_cost(warm))

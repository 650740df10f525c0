"""Compute accounting: the matmul FLOPs a step really executes, per component.

Forward FLOPs per global batch are counted from the model shape and sequence lengths (a matmul
of [m, k] x [k, n] is 2mkn; elementwise work, norms and softmax are left out, as is usual):

- encoder layer, per encoder token: QKV and output projections 8h^2, attention scores and
  weighted sum 4 s_enc h, MLP 4 h f (6 h f for swiglu);
- decoder layer, per decoder token: the same with s_dec, plus cross-attention 4h^2 (query and
  output projections) + 4 s_enc h, and per encoder token the key/value projections 4h^2;
- heads: the vocabulary projection 2 h V per predicted token (the MLM encoder projects only the
  masked positions: ``mlm_prediction_fraction`` of its tokens; T5 every decoder position, plus
  the masked encoder positions in the encoder-MLM variant), and for an MLM head its dense
  layer 2 h^2 per predicted token;
- embeddings: lookups, no matmul FLOPs.

Backward: a component whose weights train costs a weight-gradient pass (as large as its
forward) and an activation-gradient pass (as large again) to reach its lower layers; a frozen
component costs the activation-gradient pass only when a trainable component lies upstream
(gradients must cross it), and nothing otherwise: a frozen encoder under frozen embeddings
costs its forward only. The vocabulary projection multiplies by the (tied) word embeddings,
so its weight gradient is spent when the embeddings train. A step with everything trainable
costs 3x the forward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from megatron_seqpt.config.schema import ModelConfig, StackConfig
from megatron_seqpt.models.pipeline_split import StageLayers, split_layers
from megatron_seqpt.training.freeze import FreezeSchedule

COMPONENTS = ("embeddings", "encoder", "decoder", "heads")
# What each component's input depends on (gradients flow back along these).
UPSTREAM = {
    "embeddings": (),
    "encoder": ("embeddings",),
    "decoder": ("embeddings", "encoder"),
    "heads": ("embeddings", "encoder", "decoder"),
}


def _mlp(h: int, stack: StackConfig, activation: str) -> float:
    return (6.0 if activation == "swiglu" else 4.0) * h * stack.ffn_hidden_size


@dataclass(frozen=True)
class FlopModel:
    """Forward FLOPs per global batch, by component; ``step()`` adds the backward."""

    forward: dict[str, float]
    # The part of ``forward["heads"]`` that multiplies by the tied word embeddings.
    projection: float

    @classmethod
    def build(cls, model: ModelConfig, vocab_size: int, seq_length: int,
              decoder_seq_length: int, global_batch_size: int,
              mlm_prediction_fraction: float) -> "FlopModel":
        h, b = model.hidden_size, global_batch_size
        enc_tokens = b * seq_length
        encoder = model.encoder.num_layers * enc_tokens * (
            8.0 * h * h + 4.0 * seq_length * h + _mlp(h, model.encoder, model.activation))
        forward = {"embeddings": 0.0, "encoder": encoder, "decoder": 0.0}
        if model.kind == "encoder":
            predicted = enc_tokens * mlm_prediction_fraction
            projection = predicted * 2.0 * h * vocab_size
            forward["heads"] = predicted * 2.0 * h * h + projection
        else:
            dec_tokens = b * decoder_seq_length
            per_dec_token = (8.0 * h * h + 4.0 * decoder_seq_length * h
                             + 4.0 * h * h + 4.0 * seq_length * h
                             + _mlp(h, model.decoder, model.activation))
            forward["decoder"] = model.decoder.num_layers * (
                dec_tokens * per_dec_token + enc_tokens * 4.0 * h * h)
            projection = dec_tokens * 2.0 * h * vocab_size
            forward["heads"] = projection
            if model.encoder_mlm_weight:  # an MLM head on the encoder, as the MLM encoder's
                predicted = enc_tokens * mlm_prediction_fraction
                projection += predicted * 2.0 * h * vocab_size
                forward["heads"] += predicted * 2.0 * h * h + predicted * 2.0 * h * vocab_size
        return cls(forward, projection)

    def step(self, trainable: Mapping[str, bool]) -> dict[str, float]:
        """Executed FLOPs per component for one step with these groups trainable."""
        executed = {}
        for name, fwd in self.forward.items():
            own_weights = fwd - (self.projection if name == "heads" else 0.0)
            weight_grad = own_weights if trainable.get(name, False) else 0.0
            if name == "heads" and trainable.get("embeddings", False):
                weight_grad += self.projection
            crossed = trainable.get(name, False) or any(
                trainable.get(up, False) for up in UPSTREAM[name])
            executed[name] = fwd + weight_grad + (fwd if crossed else 0.0)
        return executed

    def full_step(self) -> float:
        """FLOPs of a step with every group trainable (3x the forward)."""
        return sum(self.step({name: True for name in COMPONENTS}).values())

    def t5_pipeline_stages(self, model: ModelConfig, stages: int,
                           given: Optional[Sequence[int]] = None) -> list[StageLayers]:
        """T5's layers over pipeline stages, balanced by these forward FLOPs."""
        per_layer = (self.forward["encoder"] / model.encoder.num_layers,
                     self.forward["decoder"] / model.decoder.num_layers)
        return split_layers(model.encoder.num_layers, model.decoder.num_layers, stages,
                            per_layer, self.projection, given)

    def run(self, schedule: FreezeSchedule, steps: int) -> dict[str, float]:
        """Executed FLOPs per component over ``steps`` steps of a freeze schedule."""
        changes = {0, steps} | {int(plan.trainable_from) for plan in schedule.plans.values()
                                if not math.isinf(plan.trainable_from)
                                and plan.trainable_from < steps}
        bounds = sorted(changes)
        totals = dict.fromkeys(self.forward, 0.0)
        for start, end in zip(bounds, bounds[1:]):
            for name, flops in self.step(schedule.trainable(start)).items():
                totals[name] += flops * (end - start)
        return totals

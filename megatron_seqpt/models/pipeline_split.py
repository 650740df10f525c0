"""Which of T5's layers each pipeline stage holds.

The stages take contiguous runs of the encoder layers followed by the decoder layers (a stage
may hold the end of the encoder and the start of the decoder). By default the cut balances the
stages' forward FLOPs (training/flops.py per layer, the vocabulary projection on the last
stage); ``parallel.pipeline_layers`` gives the layers per stage instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from megatron_seqpt.errors import UserError


@dataclass(frozen=True)
class StageLayers:
    """Global (0-based) layer indices of one stage, per stack."""

    encoder: range
    decoder: range


def _stages_from_counts(counts: Sequence[int], encoder_layers: int) -> list[StageLayers]:
    stages, start = [], 0
    for count in counts:
        end = start + count
        stages.append(StageLayers(range(min(start, encoder_layers), min(end, encoder_layers)),
                                  range(max(start, encoder_layers) - encoder_layers,
                                        max(end, encoder_layers) - encoder_layers)))
        start = end
    return stages


def balanced_counts(costs: Sequence[float], stages: int, last_stage_extra: float) -> list[int]:
    """Layers per stage (each at least one) minimising the most expensive stage."""
    n = len(costs)
    prefix = [0.0]
    for cost in costs:
        prefix.append(prefix[-1] + cost)
    # best[k][i]: the smallest possible maximum over k stages holding the first i layers.
    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(stages + 1)]
    cut = [[0] * (n + 1) for _ in range(stages + 1)]
    best[0][0] = 0.0
    for k in range(1, stages + 1):
        for i in range(k, n + 1):
            extra = last_stage_extra if (k == stages and i == n) else 0.0
            for j in range(k - 1, i):
                value = max(best[k - 1][j], prefix[i] - prefix[j] + extra)
                if value < best[k][i]:
                    best[k][i], cut[k][i] = value, j
    counts, i = [], n
    for k in range(stages, 0, -1):
        counts.append(i - cut[k][i])
        i = cut[k][i]
    return counts[::-1]


def split_layers(encoder_layers: int, decoder_layers: int, stages: int,
                 layer_costs: tuple[float, float], projection_cost: float,
                 given: Optional[Sequence[int]] = None) -> list[StageLayers]:
    """The layers of every stage; ``layer_costs`` are the forward FLOPs of one encoder and one
    decoder layer, ``projection_cost`` those of the vocabulary projection (last stage)."""
    total = encoder_layers + decoder_layers
    if given is not None:
        if len(given) != stages or sum(given) != total or min(given) < 1:
            raise UserError(
                f"parallel.pipeline_layers {list(given)} must give each of the {stages} "
                f"pipeline stages at least one layer and {total} layers in all "
                f"(model.encoder.num_layers {encoder_layers} + model.decoder.num_layers "
                f"{decoder_layers}, encoder layers first)")
        counts = list(given)
    else:
        if total < stages:
            raise UserError(f"{total} layers (encoder {encoder_layers} + decoder "
                            f"{decoder_layers}) cannot fill parallel.pipeline_model_parallel_size "
                            f"{stages} stages")
        costs = [layer_costs[0]] * encoder_layers + [layer_costs[1]] * decoder_layers
        counts = balanced_counts(costs, stages, projection_cost)
    return _stages_from_counts(counts, encoder_layers)

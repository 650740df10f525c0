"""Compute accounting against a hand count for a small config."""

import pytest

from megatron_seqpt.config.schema import ModelConfig, StackConfig
from megatron_seqpt.training.flops import FlopModel

STACK = StackConfig(num_layers=1, ffn_hidden_size=8, num_attention_heads=2)


def test_encoder_counts_match_hand_count():
    # h=4, one layer, ffn 8, seq 2, batch 1, vocab 10, half the tokens predicted.
    # Per token: projections 8*16=128, attention 4*2*4=32, MLP 4*4*8=128 -> 288; 2 tokens.
    # Head, 1 predicted token: dense 2*16=32 + projection 2*4*10=80.
    flops = FlopModel.build(ModelConfig(kind="encoder", hidden_size=4, encoder=STACK), 10, 2, 3,
                            1, 0.5)
    assert flops.forward == {"embeddings": 0, "encoder": 576, "decoder": 0, "heads": 112}
    assert flops.full_step() == 3 * (576 + 112)


def test_t5_counts_and_frozen_encoder_costs_forward_only():
    # Decoder per token (s_dec=3): self 128 + 4*3*4=48, cross q/out 4*16=64 + 4*2*4=32,
    # MLP 128 -> 400, x3 tokens = 1200; cross k/v on 2 encoder tokens 2*4*16=128 -> 1328.
    # Heads: 3 decoder tokens x 2*4*10 = 240, all of it the tied projection.
    model = ModelConfig(kind="t5", hidden_size=4, encoder=STACK, decoder=STACK)
    flops = FlopModel.build(model, 10, 2, 3, 1, 0.15)
    assert flops.forward == {"embeddings": 0, "encoder": 576, "decoder": 1328, "heads": 240}
    everything = flops.step(dict.fromkeys(("embeddings", "encoder", "decoder", "heads"), True))
    assert everything == {"embeddings": 0, "encoder": 3 * 576, "decoder": 3 * 1328,
                          "heads": 3 * 240}
    frozen = flops.step({"embeddings": False, "encoder": False, "decoder": True,
                         "heads": True})
    # Encoder: forward only. Decoder: trains (3x). Heads: activation gradient, but the tied
    # projection's weight gradient is not spent while the embeddings are frozen.
    assert frozen == {"embeddings": 0, "encoder": 576, "decoder": 3 * 1328, "heads": 2 * 240}
    saving = 1 - sum(frozen.values()) / sum(everything.values())
    assert saving == pytest.approx((2 * 576 + 240) / (3 * (576 + 1328 + 240)))


def test_t5_encoder_mlm_variant_counts_an_mlm_head_on_the_encoder():
    """The variant adds the MLM encoder's head work to T5: the difference in heads equals the
    MLM encoder's heads of the same shape (its tied projection spent like the encoder's)."""
    t5 = ModelConfig(kind="t5", hidden_size=4, encoder=STACK, decoder=STACK)
    plain = FlopModel.build(t5, 10, 2, 3, 1, 0.5)
    variant = FlopModel.build(ModelConfig(**{**t5.__dict__, "encoder_mlm_weight": 0.5}),
                              10, 2, 3, 1, 0.5)
    encoder = FlopModel.build(ModelConfig(kind="encoder", hidden_size=4, encoder=STACK), 10, 2,
                              3, 1, 0.5)
    assert variant.forward["heads"] - plain.forward["heads"] == encoder.forward["heads"]
    assert variant.projection - plain.projection == encoder.projection
    assert {k: v for k, v in variant.forward.items() if k != "heads"} == \
        {k: v for k, v in plain.forward.items() if k != "heads"}


def test_t5_pipeline_split_balances_forward_flops():
    from itertools import combinations

    from megatron_seqpt.models.pipeline_split import split_layers

    # 4 encoder layers of cost 1, 4 decoder layers of cost 2, projection 2 on the last stage.
    costs = [1.0] * 4 + [2.0] * 4

    def worst(bounds):
        loads = [sum(costs[a:b]) for a, b in zip((0, *bounds), (*bounds, 8))]
        loads[-1] += 2.0
        return max(loads)

    optimum = min(worst(cuts) for cuts in combinations(range(1, 8), 2))
    stages = split_layers(4, 4, 3, (1.0, 2.0), 2.0)
    counts = [len(s.encoder) + len(s.decoder) for s in stages]
    assert worst((counts[0], counts[0] + counts[1])) == optimum == 6.0
    # Stages are contiguous: encoder layers first, then decoder layers, nothing left out.
    assert [list(s.encoder) for s in stages][0][0] == 0
    assert sum(len(s.encoder) for s in stages) == 4 and sum(len(s.decoder) for s in stages) == 4
    # A stage may hold the end of the encoder and the start of the decoder.
    mixed = split_layers(3, 3, 2, (1.0, 1.0), 0.0)
    assert (mixed[0].encoder, mixed[0].decoder) == (range(0, 3), range(0, 0))
    given = split_layers(3, 3, 2, (1.0, 1.0), 0.0, given=[4, 2])
    assert (given[0].encoder, given[0].decoder) == (range(0, 3), range(0, 1))
    assert (given[1].encoder, given[1].decoder) == (range(3, 3), range(1, 3))


def test_t5_pipeline_split_refuses_impossible_layouts():
    from megatron_seqpt.errors import UserError
    from megatron_seqpt.models.pipeline_split import split_layers

    with pytest.raises(UserError, match="at least one layer and 4 layers in all"):
        split_layers(2, 2, 2, (1.0, 1.0), 0.0, given=[4, 0])
    with pytest.raises(UserError, match="cannot fill"):
        split_layers(1, 1, 3, (1.0, 1.0), 0.0)

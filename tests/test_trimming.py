"""Padding trimmed from pre-training micro-batches (data/trimming.py), on the test corpus'
real samples: every real token kept, fewer positions computed, and the step's loss and
gradients those of the padded micro-batches (fp32, no dropout)."""

import dataclasses

import pytest
import torch

from megatron_seqpt.data.trimming import TrimmedSteps, real_lengths
from megatron_seqpt.training.loop import Trainer
from tests.run_configs import tiny_config

# At 128 positions the test corpus' samples vary in length (at 64 most fill the encoder).
SETTINGS = ["model.hidden_dropout=0", "model.attention_dropout=0", "train.steps=2",
            "data.seq_length=128", "model.max_position_embeddings=128",
            "data.decoder_seq_length=40"]
MASKS = {"encoder": ("padding_mask",), "t5": ("enc_mask", "dec_mask")}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def trainer(kind, trim, ctx_module, cache_dir, run_dir):
    config = tiny_config(kind, cache_dir, [f"data.trim_padding={str(trim).lower()}",
                                           *SETTINGS])
    ctx = ctx_module.initialize(config.parallel, config.model, config.train.seed)
    return Trainer(config, run_dir, ctx)


def samples(batches, kind):
    """Each sample's real positions of every key, as comparable tuples."""
    out = []
    for batch in batches:
        lengths = {mask: real_lengths(batch[mask]) for mask in MASKS[kind]}
        for i in range(len(batch[MASKS[kind][0]])):
            row = []
            for key, value in sorted(batch.items()):
                mask = MASKS[kind][0] if kind == "encoder" or key in ("text_enc", "enc_mask") \
                    else "dec_mask"
                row.append((key, tuple(value[i, :lengths[mask][i]].tolist())))
            out.append(tuple(row))
    return sorted(out)


@pytest.mark.parametrize("kind", ["encoder", "t5"])
def test_a_steps_samples_are_regrouped_with_every_real_token(kind, single_process, cache_dir,
                                                            tmp_path):
    run = trainer(kind, True, single_process, cache_dir, tmp_path)
    stream = run.data.train
    assert isinstance(stream, TrimmedSteps) and stream.per_step == run.num_microbatches == 4
    position = stream.state_dict()
    padded = [next(stream.stream) for _ in range(2 * stream.per_step)]
    stream.load_state_dict(position)
    trimmed = [next(stream) for _ in range(2 * stream.per_step)]
    assert stream.state_dict() == {"consumed_samples": 2 * 8}
    for step in (slice(0, 4), slice(4, 8)):  # a step's samples stay in that step
        assert samples(trimmed[step], kind) == samples(padded[step], kind)
    for batch in trimmed:
        for mask in MASKS[kind]:
            assert batch[mask].shape[1] % 8 == 0 and batch[mask].shape[0] == 2
    computed = sum(b[mask].numel() for b in trimmed for mask in MASKS[kind])
    full = sum(b[mask].numel() for b in padded for mask in MASKS[kind])
    assert computed < 0.9 * full, (computed, full)


@pytest.mark.parametrize("kind", ["encoder", "t5"])
def test_trimmed_step_has_the_padded_steps_loss_and_gradients(kind, single_process, cache_dir,
                                                              tmp_path):
    padded = trainer(kind, False, single_process, cache_dir, tmp_path / "padded")
    trimmed = trainer(kind, True, single_process, cache_dir, tmp_path / "trimmed")
    trimmed.modules[0].load_state_dict(padded.modules[0].state_dict())
    for _ in range(2):
        results = [(run.forward_backward(),
                    {name: p.main_grad.clone() for name, p in
                     run.modules[0].named_parameters() if p.requires_grad})
                   for run in (padded, trimmed)]
        (loss, grads), (trimmed_loss, trimmed_grads) = results
        assert trimmed_loss["lm loss"] == pytest.approx(loss["lm loss"], rel=1e-5)
        for name, grad in grads.items():
            torch.testing.assert_close(trimmed_grads[name], grad, rtol=1e-4, atol=1e-6,
                                       msg=name)
        assert any(g.abs().sum() > 0 for g in grads.values())


def test_pipeline_parallel_reads_full_length_batches(single_process, cache_dir, tmp_path):
    """Stages exchange fixed shapes, so pipelined runs keep the padded stream."""
    from megatron_seqpt.training.data import _step_batches
    config = tiny_config("t5", cache_dir)
    ctx = single_process.initialize(config.parallel, config.model, config.train.seed)
    run = Trainer(config, tmp_path, ctx)
    pipelined = dataclasses.replace(ctx, pipeline_parallel=2)
    assert _step_batches(config, pipelined, run.data.train.stream) is run.data.train.stream

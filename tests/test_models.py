"""The models' own shortcuts give megatron-core's results: SDPA core attention equals its
DotProductAttention, the MLM head at masked positions only equals BertModel's full path, and
the T5 decoder's vocabulary projection at target positions only equals T5Model's."""

import pytest
import torch

from megatron_seqpt.models.builder import build_model
from megatron_seqpt.models.forward import encoder_output, t5_attention_masks, t5_output
from megatron_seqpt.models.specs import choose_impl
from megatron_seqpt.runtime import distributed
from megatron_seqpt.training.data import build_training_data
from tests.run_configs import tiny_config
from tests.tolerance import assert_close_to_scale


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def model_and_batch(kind, cache_dir, local_attention="sdpa"):
    config = tiny_config(kind, cache_dir, ["model.hidden_dropout=0", "model.attention_dropout=0",
                                           f"model.local_attention={local_attention}"])
    ctx = distributed.initialize(config.parallel, config.model, config.train.seed)
    data, _ = build_training_data(config, ctx)
    impl = choose_impl("local", local_attention, ctx.backend)
    model = build_model(config.model, config.parallel, 2048, "fp32", impl, ctx.backend)
    return model, impl, next(data.train)


@pytest.mark.parametrize("kind", ["encoder", "t5"])
def test_sdpa_attention_equals_megatron_attention(kind, single_process, cache_dir):
    outputs = []
    for attention in ("sdpa", "megatron"):
        model, impl, batch = model_and_batch(kind, cache_dir, attention)
        output = encoder_output(model, batch) if kind == "encoder" else t5_output(model, batch,
                                                                                    impl)
        # Padded positions may differ (they see other keys); they never reach the loss.
        (output * batch["loss_mask"]).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        outputs.append((output.detach(), grads))
        single_process.shutdown()
    (sdpa_loss, sdpa_grads), (ref_loss, ref_grads) = outputs
    mask = batch["loss_mask"].bool()
    torch.testing.assert_close(sdpa_loss[mask], ref_loss[mask], rtol=1e-5, atol=1e-5)
    assert sdpa_grads.keys() == ref_grads.keys()
    for name, grad in sdpa_grads.items():
        assert_close_to_scale(grad, ref_grads[name], name)


def losses_and_grads(model, per_token_loss, mask):
    model.zero_grad()
    per_token = per_token_loss()
    loss = (per_token * mask).sum() / mask.sum()
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()
                         if p.grad is not None}


def test_mlm_head_at_masked_positions_equals_full_sequence_head(single_process, cache_dir):
    model, _, batch = model_and_batch("encoder", cache_dir)
    mask = batch["loss_mask"]
    results = [losses_and_grads(model, lambda loss_mask=loss_mask: model(
        batch["text"], batch["padding_mask"], lm_labels=batch["labels"], loss_mask=loss_mask),
        mask) for loss_mask in (mask, None)]  # None: BertModel's own full-sequence path
    (masked_loss, masked_grads), (full_loss, full_grads) = results
    assert masked_loss == pytest.approx(full_loss, rel=1e-6)
    for name, grad in masked_grads.items():
        assert_close_to_scale(grad, full_grads[name], name)


@pytest.mark.parametrize("path", ["whole", "encoder_given"])
def test_t5_projection_at_target_positions_equals_full_sequence_projection(path, single_process,
                                                                           cache_dir):
    """``whole``: one forward; ``encoder_given``: the decoder on a separately computed encoder
    output (the frozen-encoder and encoder-MLM path of t5_output)."""
    model, impl, batch = model_and_batch("t5", cache_dir)
    mask = batch["loss_mask"]
    assert 0 < mask.sum() < 0.9 * mask.numel()  # the decoder has padded positions to skip
    inputs = (batch["text_enc"], batch["text_dec"], *t5_attention_masks(batch, impl))
    results = []
    for loss_mask in (mask, None):  # None: T5Model's own full-sequence path
        def per_token(loss_mask=loss_mask):
            extra = {}
            if path == "encoder_given":
                extra["encoder_hidden_states"] = model(*inputs, output_encoder_hidden_only=True)
            return model(*inputs, lm_labels=batch["labels"], loss_mask=loss_mask, **extra)
        results.append(losses_and_grads(model, per_token, mask))
    (target_loss, target_grads), (full_loss, full_grads) = results
    assert target_loss == pytest.approx(full_loss, rel=1e-6)
    assert target_grads.keys() == full_grads.keys()
    for name, grad in target_grads.items():
        assert_close_to_scale(grad, full_grads[name], name)


@pytest.mark.parametrize("cuda", [False, True])
def test_mlp_uses_the_exact_gelu_of_the_mlm_head_on_every_device(cuda, single_process,
                                                                 cache_dir):
    """The MLP's GELU is the exact one the MLM head (and a Hugging Face export) uses, also
    where the GPU fusions are on: megatron-core's fused bias-GELU is the tanh approximation,
    1e-3 away, which would make GPU-trained weights a different model on CPU and in HF."""
    import dataclasses

    import torch.nn.functional as F
    from megatron.core.transformer.spec_utils import build_module

    from megatron_seqpt.models.builder import transformer_config
    from megatron_seqpt.models.specs import encoder_layer_spec
    from megatron_seqpt.runtime.backend import Backend

    config = tiny_config("encoder", cache_dir)
    ctx = distributed.initialize(config.parallel, config.model, config.train.seed)
    impl = choose_impl("local", "sdpa", ctx.backend)
    backend = Backend(cuda=cuda, transformer_engine=False, apex=False)
    mcore = transformer_config(config.model, config.model.encoder, config.parallel, "fp32",
                               impl, backend)
    mcore = dataclasses.replace(mcore, use_cpu_initialization=True)  # built here, on the CPU
    mlp = build_module(encoder_layer_spec(impl).submodules.mlp, config=mcore)
    x = torch.randn(5, 2, config.model.hidden_size) * 20  # pre-activations of order 1
    out, bias = mlp(x)
    fc1, fc2 = mlp.linear_fc1, mlp.linear_fc2
    expected = F.gelu(x @ fc1.weight.T + fc1.bias) @ fc2.weight.T
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)

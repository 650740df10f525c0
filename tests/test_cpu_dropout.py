"""The CPU dropout drops each element independently with the (rounded) probability, keeps the
expectation, backpropagates through its own mask, and is what CPU models use."""

import pytest
import torch
from megatron.core.transformer.transformer_layer import TransformerLayer

from megatron_seqpt.models import cpu_dropout
from megatron_seqpt.models.builder import build_model
from megatron_seqpt.models.cpu_dropout import dropout, rounded_drop_probability
from megatron_seqpt.models.forward import encoder_output, t5_output
from megatron_seqpt.models.specs import choose_impl
from megatron_seqpt.runtime import distributed
from megatron_seqpt.training.data import build_training_data
from tests.run_configs import tiny_config

N = 1 << 20


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_drops_independently_with_the_rounded_probability_and_keeps_the_mean(p):
    torch.manual_seed(0)
    x = torch.rand(N) + 0.5
    out = dropout(x, p)
    dropped = out == 0
    q = rounded_drop_probability(p)
    assert abs(q - p) <= 2 ** -17
    sigma = (q * (1 - q) / N) ** 0.5
    assert abs(dropped.float().mean().item() - q) < 6 * sigma
    # Neighbours come from the same 64-bit draw: they must still be independent.
    for shift in (1, 2, 3, 4):
        both = (dropped[:-shift] & dropped[shift:]).float().mean().item()
        assert abs(both - q * q) < 6 * (q * q * (1 - q * q) / N) ** 0.5, shift
    torch.testing.assert_close(out[~dropped], x[~dropped] / (1 - q))
    spread = (x.var().item() / N) ** 0.5 + x.mean().item() * sigma / (1 - q)
    assert abs(out.mean().item() - x.mean().item()) < 6 * spread


def test_gradient_flows_through_the_forward_mask_only():
    torch.manual_seed(1)
    x = torch.randn(3, 5, 7, requires_grad=True)
    out = dropout(x, 0.3)
    upstream = torch.randn_like(out)
    out.backward(upstream)
    kept = out != 0
    scale = 1 / (1 - rounded_drop_probability(0.3))
    torch.testing.assert_close(x.grad, torch.where(kept, upstream * scale, 0.0))
    assert out.shape == x.shape and 0 < kept.float().mean().item() < 1


def test_keeps_the_dtype():
    x = torch.ones(1000, dtype=torch.bfloat16)
    out = dropout(x, 0.5)
    assert out.dtype == torch.bfloat16 and (out == 0).any() and (out == 2).any()


def test_masks_follow_the_cpu_generator():
    x = torch.ones(4096)
    torch.manual_seed(7)
    first, second = dropout(x, 0.2), dropout(x, 0.2)
    torch.manual_seed(7)
    torch.testing.assert_close(dropout(x, 0.2), first)
    assert not torch.equal(first, second)


def test_identity_outside_training():
    x = torch.randn(100)
    assert dropout(x, 0.5, training=False) is x
    assert dropout(x, 0.0) is x
    module = cpu_dropout.Dropout(0.5).eval()
    assert module(x) is x


def _model(kind, cache_dir, overrides=()):
    config = tiny_config(kind, cache_dir, ["model.local_attention=sdpa", *overrides])
    ctx = distributed.initialize(config.parallel, config.model, config.train.seed)
    data, _ = build_training_data(config, ctx)
    impl = choose_impl("local", "sdpa", ctx.backend)
    model = build_model(config.model, config.parallel, 2048, "fp32", impl, ctx.backend)
    return model, impl, next(data.train)


@pytest.mark.parametrize("kind", ["encoder", "t5"])
def test_cpu_models_draw_every_mask_with_it(kind, single_process, cache_dir):
    model, _, _ = _model(kind, cache_dir)
    modules = list(model.modules())
    assert not [m for m in modules if type(m) is torch.nn.Dropout]
    assert any(isinstance(m, cpu_dropout.Dropout) for m in modules)
    layers = [m for m in modules if isinstance(m, TransformerLayer)]
    assert layers and all(layer.mlp_bda is cpu_dropout.bias_dropout_add for layer in layers)
    # In training, a layer's bias-dropout-add drops (x + bias) with the rounded probability,
    # scales what it keeps, and adds the residual.
    layer = layers[0]
    torch.manual_seed(0)
    x, bias, residual = torch.rand(N) + 0.5, torch.rand(N), torch.rand(N)
    added = layer.mlp_bda(True, layer.config.bias_dropout_fusion)((x, bias), residual, 0.5)
    dropped = (added - residual).abs() < 1e-6
    assert abs(dropped.float().mean().item() - rounded_drop_probability(0.5)) < 6 * 0.5 / N ** 0.5
    torch.testing.assert_close(added[~dropped], (residual + 2 * (x + bias))[~dropped])


@pytest.mark.parametrize("kind", ["encoder", "t5"])
def test_training_attention_path_computes_what_sdpa_computes(kind, single_process, cache_dir):
    # A probability that rounds to zero: training takes megatron-core's attention with this
    # dropout (a no-op), evaluation torch's SDPA; real positions must agree.
    model, impl, batch = _model(kind, cache_dir, ["model.hidden_dropout=1e-7",
                                                 "model.attention_dropout=1e-7"])
    outputs = []
    for training in (True, False):
        model.train(training)
        with torch.no_grad():
            outputs.append(encoder_output(model, batch) if kind == "encoder"
                           else t5_output(model, batch, impl))
    mask = batch["loss_mask"].bool()
    torch.testing.assert_close(outputs[0][mask], outputs[1][mask], rtol=1e-5, atol=1e-5)

"""Generation with the T5 model: the decoder cache gives exactly the uncached tokens, greedy
search equals a plain argmax loop over T5Model.forward, beam search finds sequences at least as
good as greedy's, stopping rules hold, and the cached cross-attention leaves training as it was.

A tiny randomly initialised T5 (dropout 0; a large init scale, so that the next token depends
on the prefix and the source) on real sources: corpus text through the test tokenizer.
"""

import math

import pytest
import torch
from megatron.core.transformer.attention import CrossAttention

from megatron_seqpt.models import specs
from megatron_seqpt.models.builder import build_model
from megatron_seqpt.models.forward import t5_attention_masks, t5_output
from megatron_seqpt.models.specs import CachedCrossAttention, choose_impl
from megatron_seqpt.runtime import distributed
from megatron_seqpt.tasks.generation import GenerationConfig, generate
from megatron_seqpt.training.data import build_training_data
from tests.prepared_data import prepared_corpus, tokenizer
from tests.run_configs import tiny_config

LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
                    "SLURM_PROCID", "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID")
MODEL_VOCAB = 2048
MAX_NEW = 10


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One process with megatron-core's parallel state for the whole module."""
    cache_dir = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        for var in LAUNCH_VARIABLES:
            patch.delenv(var, raising=False)
        config = tiny_config("t5", cache_dir)
        ctx = distributed.initialize(config.parallel, config.model, config.train.seed)
        yield cache_dir, ctx
        distributed.shutdown()


def tiny_t5(world, local_attention="sdpa", extra=()):
    cache_dir, ctx = world
    config = tiny_config("t5", cache_dir, ["model.hidden_dropout=0", "model.attention_dropout=0",
                                           "model.init_method_std=0.3",
                                           f"model.local_attention={local_attention}", *extra])
    impl = choose_impl("local", local_attention, ctx.backend)
    torch.manual_seed(7)
    return build_model(config.model, config.parallel, MODEL_VOCAB, "fp32", impl,
                       ctx.backend), impl, config


@pytest.fixture(scope="module", params=["sdpa", "megatron"])
def t5(request, world):
    model, impl, _ = tiny_t5(world, request.param)
    return model.eval(), impl


@pytest.fixture(scope="module")
def sources():
    """Very different lengths, one of a single token, in no particular order."""
    tok, paragraphs = tokenizer(), prepared_corpus().paragraphs
    pieces = [tok.tokenize(" ".join(paragraphs[lang][3:13]))
              for lang in ("en", "de", "es", "ja", "fr", "hi")]
    cut = [60, 25, 1, 40, 6, 63]
    result = [p[:n] for p, n in zip(pieces, cut)]
    assert sorted(map(len, result)) == [1, 6, 25, 40, 60, 63]
    return result


def run(model, sources, eos=None, **config):
    tok = tokenizer()
    config = {"max_new_tokens": MAX_NEW, "batch_size": 4, **config}
    return generate(model, sources, bos=tok.bos, eos=tok.eos if eos is None else eos,
                    pad=tok.pad, vocab_size=tok.vocab_size, config=GenerationConfig(**config))


def allowed_logits(logits):
    """What generation may choose from: no pad, no decoder start, nothing past the tokenizer."""
    tok = tokenizer()
    logits = logits.float().clone()
    logits[..., [tok.pad, tok.bos]] = -math.inf
    logits[..., tok.vocab_size:] = -math.inf
    return logits


def decoder_logits(model, impl, source, decoder_input):
    """T5Model.forward's logits [len(decoder_input), V], masks built as in training."""
    enc, dec = torch.tensor([source]), torch.tensor([decoder_input])
    batch = {"text_enc": enc, "text_dec": dec, "enc_mask": torch.ones_like(enc),
             "dec_mask": torch.ones_like(dec)}
    with torch.no_grad():
        return model(enc, dec, *t5_attention_masks(batch, impl))[0]


def argmax_loop(model, impl, source):
    tok, output = tokenizer(), []
    for _ in range(MAX_NEW):
        token = int(allowed_logits(decoder_logits(model, impl, source,
                                                  [tok.bos, *output])[-1]).argmax())
        if token == tok.eos:
            break
        output.append(token)
    return output


def score(model, impl, source, output, length_penalty):
    """Sum of log-probabilities (eos included when it ended the sequence) / length ** penalty."""
    tok = tokenizer()
    target = output if len(output) == MAX_NEW else [*output, tok.eos]
    log_probs = torch.log_softmax(allowed_logits(
        decoder_logits(model, impl, source, [tok.bos, *target[:-1]])), dim=-1)
    total = log_probs.gather(1, torch.tensor(target)[:, None]).sum().item()
    return total / len(target) ** length_penalty


def assert_clean(outputs):
    tok = tokenizer()
    for output in outputs:
        assert len(output) <= MAX_NEW
        assert not {tok.bos, tok.eos, tok.pad} & set(output)
        assert all(0 <= token < tok.vocab_size for token in output)


@pytest.mark.parametrize("beam_size", [1, 4])
def test_cached_generation_equals_uncached(t5, sources, beam_size):
    model, _ = t5
    cached = run(model, sources, beam_size=beam_size)
    assert cached == run(model, sources, beam_size=beam_size, use_cache=False)
    assert_clean(cached)
    assert len({tuple(output) for output in cached}) > 1  # the source matters


def test_greedy_equals_an_argmax_loop_and_beam_size_one_is_greedy(t5, sources):
    model, impl = t5
    expected = [argmax_loop(model, impl, source) for source in sources]
    assert run(model, sources) == expected
    assert run(model, sources, beam_size=1, length_penalty=0.5) == expected
    assert any(len(set(output)) > 2 for output in expected)  # the prefix matters


@pytest.mark.parametrize("length_penalty", [1.0, 0.0])
def test_beam_search_scores_at_least_greedy(t5, sources, length_penalty):
    # Not a theorem (a beam can drop greedy's prefix), but what beam search is for.
    model, impl = t5
    greedy = run(model, sources, length_penalty=length_penalty)
    beams = run(model, sources, beam_size=4, length_penalty=length_penalty)
    assert_clean(beams)
    for source, ours, reference in zip(sources, beams, greedy):
        assert score(model, impl, source, ours, length_penalty) >= \
            score(model, impl, source, reference, length_penalty) - 1e-5
    assert beams != greedy


def test_stops_at_eos_and_at_max_new_tokens(t5, sources):
    model, _ = t5
    full = run(model, sources, min_new_tokens=MAX_NEW)  # eos forbidden: never stops early
    assert [len(output) for output in full] == [MAX_NEW] * len(sources)
    assert_clean(full)
    assert run(model, sources, max_new_tokens=3, min_new_tokens=3) == [f[:3] for f in full]
    # With eos allowed: the same tokens up to where the model chooses eos, if it does.
    unstopped = run(model, sources)
    assert all(f[:len(u)] == u for u, f in zip(unstopped, full))
    # A token the model produces, taken as the end token: outputs stop right before it.
    rows = [i for i, output in enumerate(unstopped) if len(output) == MAX_NEW]
    end = full[rows[0]][MAX_NEW // 2]
    stopped = run(model, sources, eos=end)
    for i in rows:
        assert stopped[i] == (full[i][:full[i].index(end)] if end in full[i] else full[i])
    assert len({len(output) for output in stopped}) > 1  # rows left the batch early
    for beam_size in (1, 3):  # the cache follows rows and sources that leave the batch
        cached = run(model, sources, eos=end, beam_size=beam_size)
        assert cached == run(model, sources, eos=end, beam_size=beam_size, use_cache=False)
        assert all(end not in output for output in cached)


def test_cross_attention_keys_and_values_are_computed_once_per_batch(world, sources):
    model, _, _ = tiny_t5(world)
    calls = []
    hooks = [layer.cross_attention.linear_kv.register_forward_hook(
        lambda module, args, output: calls.append(tuple(args[0].shape[:2])))
        for layer in model.decoder.layers]
    try:
        run(model, sources, beam_size=2)  # two batches (batch_size 4)
    finally:
        for hook in hooks:
            hook.remove()
    # Sorted by length: sources 63, 60, 40, 25 tokens long, then 6 and 1; two rows each.
    assert sorted(calls) == [(6, 4)] * len(model.decoder.layers) + \
        [(63, 8)] * len(model.decoder.layers)


def test_cached_cross_attention_leaves_training_as_it_was(world, monkeypatch):
    ours, impl, config = tiny_t5(world, extra=["model.init_method_std=0.02"])
    monkeypatch.setattr(specs, "CachedCrossAttention", CrossAttention)
    before, _, _ = tiny_t5(world, extra=["model.init_method_std=0.02"])
    assert type(ours.decoder.layers[0].cross_attention) is CachedCrossAttention
    assert type(before.decoder.layers[0].cross_attention) is CrossAttention
    shapes = [{name: getattr(value, "shape", None) for name, value in model.state_dict().items()}
              for model in (ours, before)]
    assert shapes[0] == shapes[1]
    assert ours.sharded_state_dict().keys() == before.sharded_state_dict().keys()
    before.load_state_dict(ours.state_dict())
    batch = next(build_training_data(config, world[1])[0].train)
    results = []
    for model in (ours, before):
        model.train()
        losses = t5_output(model, batch, impl)
        (losses * batch["loss_mask"]).sum().backward()
        results.append((losses.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (our_losses, our_grads), (losses, grads) = results
    assert torch.equal(our_losses, losses)
    assert our_grads.keys() == grads.keys()
    assert all(torch.equal(our_grads[name], grads[name]) for name in grads)

"""Generation throughput of the project's T5 against Hugging Face transformers.

Greedy and beam-4 search, with and without the decoder cache, on one batch of sources cut from
the built-in corpus (tokenized with a tokenizer trained on it). The project's T5 (build_model,
random weights) against ``T5ForConditionalGeneration`` and ``BlenderbotForConditionalGeneration``
of the same shape (layers, hidden, heads, FFN, vocabulary; random weights), built from configs
(no download); Blenderbot has the project's layout (pre-norm layers, learned absolute positions,
tied embeddings), T5 adds relative position biases. Every run generates exactly
``--new-tokens`` tokens per source (eos is held back with min_new_tokens on both sides), so all
do the same decoding steps; tokens/s counts the tokens returned (sources x new tokens, also for
beams).

The peers run in a process of their own that imports neither this project nor its CPU layer
(the layer keeps a function mode around every torch call of its process) and gets the same
token ids; rounds alternate between the two processes and the medians are printed. Generation
suspends that function mode on CPU; the project's cached runs are also timed with it in force:
its cost. For the cached runs each side's machine-limit fraction is printed too: the model
FLOPs of the generation (``model_work``) over its time, against torch.matmul's rate at those
GEMMs' shapes measured just before and after each timing (``machine_limit.py``; the machine's
speed drifts), the median and range of the rounds; decoding multiplies a few rows at a time,
so that rate is far below a training step's.

    pip install -e ".[bench]"   # transformers, only for this benchmark
    python benchmarks/generation_throughput.py [--hidden 256 --layers 4 --new-tokens 32 ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from machine_limit import around, median_range
from peer_process import PeerProcess, add_peer_arguments

MODES = [(1, True), (1, False), (4, True), (4, False)]  # (beams, cache)
PEERS = ("t5", "blenderbot")
GOAL_CACHE = 3.0
WITH_MODE = "megatron_seqpt, CPU layer's mode on"


def project_side(args, tmp: Path):
    """The project's T5, its tokenizer's special ids and the sources (token id lists)."""
    from megatron_seqpt.config import load_run_config
    from megatron_seqpt.models.builder import build_model
    from megatron_seqpt.models.specs import choose_impl
    from megatron_seqpt.models.vocab import padded_vocab_size
    from megatron_seqpt.runtime import distributed
    from megatron_seqpt.text.corpus import default_corpus_path
    from megatron_seqpt.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer
    from megatron_seqpt.tokenizer.training import train_tokenizer

    tokenizer = SentencePieceTokenizer(train_tokenizer(
        [default_corpus_path()], args.vocab, tmp / "tok", progress=False))
    config = load_run_config(None, [
        "model.kind=t5", f"model.hidden_size={args.hidden}",
        f"model.encoder.num_layers={args.layers}", f"model.decoder.num_layers={args.layers}",
        f"model.encoder.num_attention_heads={args.heads}",
        f"model.decoder.num_attention_heads={args.heads}",
        f"model.encoder.ffn_hidden_size={args.ffn}", f"model.decoder.ffn_hidden_size={args.ffn}",
        "model.hidden_dropout=0", "model.attention_dropout=0",
        f"model.local_attention={args.local_attention}", f"data.vocab_size={args.vocab}"])
    ctx = distributed.initialize(config.parallel, config.model, config.train.seed)
    impl = choose_impl(config.model.transformer_impl, config.model.local_attention, ctx.backend)
    torch.manual_seed(0)
    model = build_model(config.model, config.parallel, padded_vocab_size(tokenizer.vocab_size, 1),
                        "fp32", impl, ctx.backend)
    return model, tokenizer, impl, ctx, corpus_sources(tokenizer, default_corpus_path(), args)


def corpus_sources(tokenizer, corpus: Path, args) -> list[list[int]]:
    """``--sources`` paragraphs of at least ``--source-len`` + 4 pieces, from every language in
    turn, cut to ``--source-len`` -4 .. +4 pieces (a little padding, as in real batches)."""
    by_lang: dict[str, list[list[int]]] = {}
    for line in corpus.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        for paragraph in record["text"].split("\n"):
            pieces = tokenizer.tokenize(paragraph)
            if len(pieces) >= args.source_len + 4:
                by_lang.setdefault(record["lang"], []).append(pieces)
    pools = list(by_lang.values())
    picked = [pools[i % len(pools)][i // len(pools)] for i in range(args.sources)]
    return [p[:args.source_len + (i % 9) - 4] for i, p in enumerate(picked)]


def time_project(model, tokenizer, sources, args, beams: int, cache: bool) -> float:
    from megatron_seqpt.tasks.generation import GenerationConfig, generate

    config = GenerationConfig(beam_size=beams, max_new_tokens=args.new_tokens,
                              min_new_tokens=args.new_tokens, use_cache=cache,
                              batch_size=len(sources))
    started = time.perf_counter()
    outputs = generate(model, sources, bos=tokenizer.bos, eos=tokenizer.eos, pad=tokenizer.pad,
                       vocab_size=tokenizer.vocab_size, config=config)
    elapsed = time.perf_counter() - started
    assert all(len(output) == args.new_tokens for output in outputs)
    return elapsed


def time_with_cpu_layer_mode(model, tokenizer, sources, args, beams: int) -> float:
    """Generation suspends the CPU layer's function mode when it is the innermost mode; with a
    second one pushed above it, the first stays in force."""
    from megatron_seqpt.runtime.cpu_compat import CudaToCpuMode

    with CudaToCpuMode():
        return time_project(model, tokenizer, sources, args, beams, True)


# ---- the Hugging Face side: its own process, no project imports ----

def hf_models(shape: dict) -> dict:
    import transformers

    common = dict(vocab_size=shape["vocab"], pad_token_id=0, eos_token_id=shape["eos"],
                  decoder_start_token_id=shape["bos"])
    t5 = transformers.T5ForConditionalGeneration(transformers.T5Config(
        d_model=shape["hidden"], d_kv=shape["hidden"] // shape["heads"], d_ff=shape["ffn"],
        num_layers=shape["layers"], num_decoder_layers=shape["layers"],
        num_heads=shape["heads"], feed_forward_proj="gelu", dropout_rate=0.0, **common))
    blenderbot = transformers.BlenderbotForConditionalGeneration(transformers.BlenderbotConfig(
        d_model=shape["hidden"], encoder_layers=shape["layers"], decoder_layers=shape["layers"],
        encoder_attention_heads=shape["heads"], decoder_attention_heads=shape["heads"],
        encoder_ffn_dim=shape["ffn"], decoder_ffn_dim=shape["ffn"],
        max_position_embeddings=shape["positions"], activation_function="gelu", dropout=0.0,
        attention_dropout=0.0, activation_dropout=0.0, bos_token_id=shape["bos"], **common))
    return {"t5": t5.eval(), "blenderbot": blenderbot.eval()}


def hf_peer() -> None:
    """Reads a set-up line (shape, sources), then one request per line; answers seconds."""
    import transformers

    assert not [name for name in sys.modules if name.startswith(("megatron", "megatron_seqpt"))]
    setup = json.loads(sys.stdin.readline())
    torch.set_num_threads(setup["threads"])
    torch.manual_seed(0)
    models = hf_models(setup["shape"])
    sources, new_tokens = setup["sources"], setup["new_tokens"]
    width = max(map(len, sources))
    ids = torch.tensor([s + [0] * (width - len(s)) for s in sources])
    mask = (ids != 0).long()
    print(json.dumps({"transformers": transformers.__version__}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        started = time.perf_counter()
        with torch.inference_mode():
            out = models[request["model"]].generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens,
                min_new_tokens=new_tokens, num_beams=request["beams"], do_sample=False,
                use_cache=request["cache"], length_penalty=1.0)
        elapsed = time.perf_counter() - started
        assert out.shape == (len(sources), new_tokens + 1), out.shape
        print(json.dumps({"seconds": elapsed}), flush=True)


class Peer(PeerProcess):
    def __init__(self, shape: dict, sources: list[list[int]], new_tokens: int):
        super().__init__(__file__, {"shape": shape, "sources": sources,
                                    "new_tokens": new_tokens,
                                    "threads": torch.get_num_threads()})
        self.version = self.info["transformers"]

    def time(self, model: str, beams: int, cache: bool) -> float:
        return self.ask({"model": model, "beams": beams, "cache": cache})["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--ffn", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=4000, help="tokenizer vocabulary to train")
    parser.add_argument("--sources", type=int, default=16)
    parser.add_argument("--source-len", type=int, default=40)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--local-attention", default="sdpa", choices=["sdpa", "megatron"])
    add_peer_arguments(parser, rounds=5)
    args = parser.parse_args()
    if args.peer:
        return hf_peer()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="seqpt-bench-") as tmp:
        model, tokenizer, impl, ctx, sources = project_side(args, Path(tmp))
        shape = {"hidden": args.hidden, "layers": args.layers, "heads": args.heads,
                 "ffn": args.ffn, "vocab": model.vocab_size,
                 "positions": model.max_sequence_length, "bos": tokenizer.bos,
                 "eos": tokenizer.eos}
        peer = Peer(shape, sources, args.new_tokens)
        names = ["megatron_seqpt", *([WITH_MODE] if not ctx.backend.cuda else []),
                 *(f"HF {name}" for name in PEERS)]

        def time_one(name: str, beams: int, cache: bool) -> float:
            if name == WITH_MODE:
                return time_with_cpu_layer_mode(model, tokenizer, sources, args, beams)
            if name.startswith("HF "):
                return peer.time(name[3:], beams, cache)
            return time_project(model, tokenizer, sources, args, beams, cache)

        work = {beams: model_work(args, model.vocab_size, sources, beams) for beams in (1, 4)}
        times: dict[tuple, list[float]] = {}
        rates: dict[tuple, list[float]] = {}
        for round_ in range(args.rounds + 1):  # round 0 warms up
            for beams, cache in MODES:
                for name in names:
                    if name == WITH_MODE and not cache:
                        continue
                    key = (name, beams, cache)
                    # The machine-limit fraction: of the timed rounds of cached decoding, for
                    # the sides the report compares.
                    if round_ and cache and name != WITH_MODE:
                        seconds, rate = around(lambda: time_one(name, beams, cache),
                                               work[beams][1])
                        rates.setdefault(key, []).append(rate)
                    else:
                        seconds = time_one(name, beams, cache)
                    if round_:
                        times.setdefault(key, []).append(seconds)
        peer.close()
    report(args, times, rates, work, impl, model, peer.version, sources)


def model_work(args, vocab: int, sources: list[list[int]], beams: int
               ) -> tuple[float, list[tuple[int, int, int]]]:
    """The model FLOPs of generating --new-tokens for every source, and their GEMMs (m, k, n):
    the encoder and the cross-attention keys and values once per source, then per new token
    and beam the decoder layers (self- and cross-attention over what is there, MLP) and the
    vocabulary projection. The useful work: cached decoding, without the encoder's outputs
    copied per beam."""
    h, ffn, layers = args.hidden, args.ffn, args.layers
    source_tokens, rows = sum(map(len, sources)), len(sources) * beams
    gemms = [(source_tokens, k, n) for _ in range(layers)
             for k, n in ((h, 3 * h), (h, h), (h, ffn), (ffn, h), (h, 2 * h))]
    attention = sum(len(s) ** 2 for s in sources) * 4.0 * h * layers
    for step in range(1, args.new_tokens + 1):
        gemms += [(rows, k, n) for _ in range(layers)
                  for k, n in ((h, 3 * h), (h, h), (h, h), (h, h), (h, ffn), (ffn, h))]
        gemms.append((rows, h, vocab))
        attention += beams * sum(4.0 * h * (step + len(s)) for s in sources) * layers
    return sum(2.0 * m * k * n for m, k, n in gemms) + attention, gemms


def report(args, times: dict, rates: dict, work: dict, impl, model, version: str,
           sources) -> None:
    tokens = len(sources) * args.new_tokens
    rate = {key: tokens / statistics.median(seconds) for key, seconds in times.items()}
    names = list(dict.fromkeys(name for name, _, _ in times))
    print(f"\nT5 h{args.hidden} {args.layers}+{args.layers} layers, heads {args.heads}, "
          f"ffn {args.ffn}, vocab {model.vocab_size}; {len(sources)} sources of "
          f"{min(map(len, sources))}-{max(map(len, sources))} pieces, {args.new_tokens} new "
          f"tokens each, fp32, {torch.get_num_threads()} threads, median of {args.rounds} "
          f"rounds; {impl.describe()}; transformers {version}")
    print("generated tokens/s (sources x new tokens / s)")
    header = f"{'':40s}" + "".join(f"{f'beam {b}, ' + ('cached' if c else 'uncached'):>18s}"
                                    for b, c in MODES)
    print(header)
    for name in names:
        print(f"{name:40s}" + "".join(
            f"{rate[(name, b, c)]:18,.0f}" if (name, b, c) in rate else f"{'-':>18s}"
            for b, c in MODES))
    ours = "megatron_seqpt"
    for beams in (1, 4):
        speedup = rate[(ours, beams, True)] / rate[(ours, beams, False)]
        line = [f"beam {beams}: cached / uncached {speedup:.2f}x (goal {GOAL_CACHE}x)"]
        for peer in PEERS:
            for cache in (True, False):
                ratio = rate[(ours, beams, cache)] / rate[(f"HF {peer}", beams, cache)]
                line.append(f"vs HF {peer} {'cached' if cache else 'uncached'} {ratio:.2f}x")
        if (WITH_MODE, beams, True) in rate:
            line.append(f"the CPU layer's mode would cost the cached path "
                        f"{1 - rate[(WITH_MODE, beams, True)] / rate[(ours, beams, True)]:.1%}")
        print("  " + "; ".join(line))
        flops = work[beams][0]
        fractions = "; ".join(
            f"{name} {median_range(per_round, 3)}" for name in names
            if (key := (name, beams, True)) in times and name != WITH_MODE
            for per_round in [[flops / t / r for t, r in zip(times[key], rates[key])]])
        matmul = [r / 1e9 for name in names if name != WITH_MODE
                  for r in rates[(name, beams, True)]]
        print(f"  beam {beams}, cached: machine-limit fraction, median (range) of the rounds "
              f"(model FLOPs {flops:.3e} over torch.matmul at their GEMM shapes around each "
              f"round, {median_range(matmul, 1)} GFLOP/s): {fractions}")

if __name__ == "__main__":
    main()

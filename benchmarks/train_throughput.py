"""Pre-training step time of the project against Hugging Face transformers, each side in a
process of its own, with where the project's step goes and how near both come to the machine.

Peers of the same shape (layers, hidden, heads, FFN, vocabulary, sequence lengths, batch,
dropouts), built from configs (no download): the MLM encoder against ``BertForMaskedLM``; T5
against ``T5ForConditionalGeneration`` and ``BlenderbotForConditionalGeneration`` (pre-LN
layers, learned positions, GELU MLP, tied embeddings: this T5's own layout). The project side
is its real training step: the Trainer's data stream, megatron-core schedule, DDP buffers,
optimizer, scheduler and a metrics line per step. Both sides train on the same micro-batches:
read from the project's stream ahead of time (the stream is put back, so the project consumes
exactly them), saved, and given to the peers (labels at positions without loss as -100) padded
to the configured lengths, as megatron-core's datasets make them; the project regroups each
step's samples by length and trims the padding (``data.trim_padding``; ``--no-trim`` turns
it off), so its machine-limit fraction counts the FLOPs it executes at the shapes it runs. The
peers run in a process that imports neither this project nor its CPU layer, with the same
number of torch threads; rounds alternate between the processes, each on the next steps'
batches. Printed: medians of the rounds (range in brackets), the ratio peer step time /
project step time (goal: at least GOAL), the project's phases (data; forward, and within it the
encoder, decoder and vocabulary projection; backward; optimizer; the rest: scheduler, FLOP
count, metrics line), and per side the machine-limit fraction: the step's model FLOPs over its
time, against torch.matmul's rate at the step's own GEMM shapes (``machine_limit.py``),
measured just before and after each round of that side's steps (the machine's speed drifts),
with the median and range of the rounds' fractions.

    pip install -e ".[bench]"   # transformers, only for this benchmark
    python benchmarks/train_throughput.py [--kind encoder t5] [--hidden 256 --layers 4 ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import torch
from machine_limit import Round, around, median_range, transformer_gemms
from peer_process import (PEER_PHASES, PeerProcess, add_peer_arguments, hf_optimizer,
                          peer_environment, serve)
from project_steps import clocked, record_batches, timed_steps

GOAL = 1.25
PEERS = {"encoder": ("BertForMaskedLM",),
         "t5": ("T5ForConditionalGeneration", "BlenderbotForConditionalGeneration")}
PROJECT = "megatron_seqpt"
PROJECT_PHASES = ("data", "forward", "encoder fwd", "decoder fwd", "vocab projection fwd",
                  "backward", "optimizer", "rest")


# ---- the project side ----

def project_trainer(args, kind: str, run_dir: Path):
    from megatron_seqpt.config import load_run_config
    from megatron_seqpt.runtime import distributed
    from megatron_seqpt.training.loop import Trainer

    config = load_run_config(None, [
        f"model.kind={kind}", f"model.hidden_size={args.hidden}",
        f"model.encoder.num_layers={args.layers}", f"model.decoder.num_layers={args.layers}",
        f"model.encoder.num_attention_heads={args.heads}",
        f"model.decoder.num_attention_heads={args.heads}",
        f"model.encoder.ffn_hidden_size={args.ffn}", f"model.decoder.ffn_hidden_size={args.ffn}",
        f"model.max_position_embeddings={args.seq}",
        f"data.vocab_size={args.vocab}", f"data.seq_length={args.seq}",
        f"data.decoder_seq_length={args.dec_seq}", f"data.cache_dir={run_dir / 'cache'}",
        f"data.trim_padding={str(args.trim).lower()}",
        f"train.global_batch_size={args.global_batch}",
        f"train.micro_batch_size={args.micro_batch}", "train.steps=100000",
        "logging.log_interval=1", "logging.tensorboard=true"])
    ctx = distributed.initialize(config.parallel, config.model, config.train.seed)
    return Trainer(config, run_dir / kind, ctx)


def peer_batches(kind: str, batches: list[dict]) -> list[dict[str, torch.Tensor]]:
    """The micro-batches in Hugging Face's argument names, -100 where no loss is taken."""
    out = []
    for b in batches:
        labels = torch.where(b["loss_mask"].bool(), b["labels"], -100)
        if kind == "encoder":
            out.append({"input_ids": b["text"], "attention_mask": b["padding_mask"],
                        "labels": labels})
        else:
            out.append({"input_ids": b["text_enc"], "attention_mask": b["enc_mask"],
                        "decoder_input_ids": b["text_dec"],
                        "decoder_attention_mask": b["dec_mask"], "labels": labels})
    return out


def time_project(trainer, clock, steps: int) -> dict[str, float]:
    seconds = {"total": timed_steps(trainer, steps), **clock.take()}
    seconds["forward"] = seconds.get("forward", 0.0) - seconds.get("data", 0.0)
    seconds["backward"] = seconds["fwd+bwd"] - seconds["forward"] - seconds.get("data", 0.0)
    seconds["rest"] = seconds["total"] - seconds["fwd+bwd"] - seconds["optimizer"]
    return seconds


# ---- the Hugging Face side: its own process, no project imports ----

def hf_models(kind: str, shape: dict) -> dict[str, torch.nn.Module]:
    import transformers

    s = shape
    if kind == "encoder":
        return {"BertForMaskedLM": transformers.BertForMaskedLM(transformers.BertConfig(
            vocab_size=s["vocab"], hidden_size=s["hidden"], num_hidden_layers=s["layers"],
            num_attention_heads=s["heads"], intermediate_size=s["ffn"],
            max_position_embeddings=s["seq"], type_vocab_size=1, hidden_act="gelu",
            hidden_dropout_prob=s["hidden_dropout"],
            attention_probs_dropout_prob=s["attention_dropout"], pad_token_id=0))}
    t5 = transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=s["vocab"], d_model=s["hidden"], d_kv=s["hidden"] // s["heads"],
        d_ff=s["ffn"], num_layers=s["layers"], num_decoder_layers=s["layers"],
        num_heads=s["heads"], feed_forward_proj="gelu", dropout_rate=s["hidden_dropout"],
        decoder_start_token_id=0, pad_token_id=0))
    blenderbot = transformers.BlenderbotForConditionalGeneration(transformers.BlenderbotConfig(
        vocab_size=s["vocab"], d_model=s["hidden"], encoder_layers=s["layers"],
        decoder_layers=s["layers"], encoder_attention_heads=s["heads"],
        decoder_attention_heads=s["heads"], encoder_ffn_dim=s["ffn"], decoder_ffn_dim=s["ffn"],
        max_position_embeddings=max(s["seq"], s["dec_seq"]), activation_function="gelu",
        dropout=s["hidden_dropout"], attention_dropout=s["attention_dropout"],
        activation_dropout=0.0, scale_embedding=False, pad_token_id=0, bos_token_id=1,
        eos_token_id=2, decoder_start_token_id=1, forced_eos_token_id=None))
    return {"T5ForConditionalGeneration": t5, "BlenderbotForConditionalGeneration": blenderbot}


def hf_peer() -> None:
    """Reads a set-up line (kind, shape, optimizer, batch file), then one request per line;
    answers seconds."""
    setup = json.loads(sys.stdin.readline())
    torch.set_num_threads(setup["threads"])
    torch.manual_seed(0)
    models = hf_models(setup["kind"], setup["shape"])
    optim = setup["optim"]
    optimizers = {name: hf_optimizer(model, optim) for name, model in models.items()}
    serve(models, optimizers, torch.load(setup["batches"]), setup["micro"], optim["clip"])


# ---- the benchmark ----

def peer_setup(trainer, args, kind: str, batch_file: Path) -> dict:
    config = trainer.config
    optim = config.optim
    return {"kind": kind, "threads": args.threads, "micro": trainer.num_microbatches,
            "batches": str(batch_file),
            "shape": {"vocab": trainer.vocab_size, "hidden": args.hidden, "layers": args.layers,
                      "heads": args.heads, "ffn": args.ffn, "seq": args.seq,
                      "dec_seq": args.dec_seq, "hidden_dropout": config.model.hidden_dropout,
                      "attention_dropout": config.model.attention_dropout},
            "optim": {"lr": optim.lr, "betas": [optim.adam_beta1, optim.adam_beta2],
                      "eps": optim.adam_eps, "weight_decay": optim.weight_decay,
                      "clip": optim.clip_grad}}


def bench_kind(args, kind: str, tmp: Path) -> None:
    from megatron_seqpt.runtime import distributed

    trainer = project_trainer(args, kind, tmp)
    micro = trainer.num_microbatches
    stream = trainer.data.train
    padded = getattr(stream, "stream", stream)  # before the project's trimming
    batches = record_batches(padded, (args.warmup + args.rounds * args.steps) * micro)
    batch_file = tmp / f"{kind}-batches.pt"
    torch.save(peer_batches(kind, batches), batch_file)
    peer = PeerProcess(__file__, peer_setup(trainer, args, kind, batch_file),
                       peer_environment(args.peer_allocator))
    clock = clocked(trainer, components=True)
    time_project(trainer, clock, args.warmup)
    for name in PEERS[kind]:
        peer.ask({"model": name, "first_step": 0, "steps": args.warmup})
    padded_gemms = transformer_gemms(kind, args.micro_batch, args.seq, args.dec_seq, args.hidden,
                                     args.ffn, args.layers, trainer.vocab_size)
    padded_flops = trainer.workload.step_flops(trainer.trainable)
    rounds: dict[str, list[Round]] = defaultdict(list)
    for round_ in range(args.rounds):
        first = args.warmup + round_ * args.steps
        if stream is padded:
            flops, gemms = padded_flops, padded_gemms
        else:
            round_batches = batches[first * micro:(first + args.steps) * micro]
            flops, gemms = executed_work(trainer, args, kind, round_batches)
        seconds, rate = around(lambda: time_project(trainer, clock, args.steps), gemms)
        rounds[PROJECT].append(Round(seconds, flops, rate))
        for name in PEERS[kind]:
            seconds, rate = around(lambda: peer.ask(
                {"model": name, "first_step": first, "steps": args.steps}), padded_gemms)
            rounds[name].append(Round(seconds, padded_flops, rate))
    peer.close()
    report(args, kind, trainer, rounds, peer.info, stream is not padded)
    trainer.metrics.close()
    distributed.shutdown()


def executed_work(trainer, args, kind: str,
                  batches: list[dict]) -> tuple[float, list[tuple[int, int, int]]]:
    """What the project computes per step on these padded micro-batches after regrouping and
    trimming them as its stream does: the FLOP model at each micro-batch's trimmed lengths,
    and the GEMMs at those lengths."""
    from megatron_seqpt.data.trimming import regrouped
    from megatron_seqpt.training.flops import FlopModel

    per_step = trainer.num_microbatches
    flops, gemms = 0.0, []
    for start in range(0, len(batches), per_step):
        for batch in regrouped(batches[start:start + per_step]):
            seq = batch["text_enc" if kind == "t5" else "text"].shape[1]
            dec = batch["text_dec"].shape[1] if kind == "t5" else 0
            model = FlopModel.build(trainer.config.model, trainer.vocab_size, seq, dec,
                                    args.micro_batch, trainer.config.data.masking_probability)
            flops += sum(model.step(trainer.trainable).values())
            gemms += transformer_gemms(kind, args.micro_batch, seq, dec, args.hidden, args.ffn,
                                       args.layers, trainer.vocab_size)
    return flops / (len(batches) / per_step), gemms


def report(args, kind: str, trainer, rounds: dict[str, list[Round]], info: dict,
           trimmed: bool) -> None:
    from megatron_seqpt.runtime import allocator

    tokens = args.global_batch * (args.seq + (args.dec_seq if kind == "t5" else 0))
    print(f"\n{kind}: h{args.hidden} L{args.layers} heads {args.heads} ffn {args.ffn} "
          f"vocab {trainer.vocab_size} seq {args.seq}"
          f"{f'/{args.dec_seq}' if kind == 't5' else ''} batch {args.global_batch} "
          f"({trainer.num_microbatches} x {args.micro_batch}), fp32, {args.threads} threads, "
          f"{args.rounds} rounds of {args.steps} steps after {args.warmup}")
    print(f"{PROJECT}: {trainer.impl.describe()}, malloc {allocator.loaded()}; transformers "
          f"{info['transformers']}, attention {info['attention']}, malloc {info['allocator']}")
    padded = rounds[PEERS[kind][0]][0].flops
    print(f"model FLOPs per step {padded:.3e} at the padded lengths")
    if trimmed:
        executed = statistics.mean(r.flops for r in rounds[PROJECT])
        print(f"{PROJECT} trims padding: it executes {executed:.3e} FLOPs per step "
              f"({executed / padded:.0%})")
    print(f"{'':36s}{'ms/step (range)':>20s}{'tokens/s':>10s}{'matmul GFLOP/s':>18s}"
          f"{'machine (range)':>18s}")
    times = {name: [r.seconds for r in side] for name, side in rounds.items()}
    median_ms = {}
    for name, side in rounds.items():
        ms = [r.seconds["total"] / args.steps * 1e3 for r in side]
        median_ms[name] = statistics.median(ms)
        rates = [r.rate / 1e9 for r in side]
        fractions = [r.fraction(args.steps) for r in side]
        print(f"{name:36s}{median_range(ms, 0):>20s}{tokens / median_ms[name] * 1e3:10,.0f}"
              f"{median_range(rates, 0):>18s}{median_range(fractions, 2):>18s}")
    for name, phases in ((PROJECT, PROJECT_PHASES), *((n, (*PEER_PHASES, "rest"))
                                                      for n in PEERS[kind])):
        seconds = [{**r, "rest": r.get("rest", r["total"] - sum(r[p] for p in PEER_PHASES))}
                   for r in times[name]]
        parts = ", ".join(
            f"{phase} {statistics.median(r[phase] for r in seconds) / args.steps * 1e3:.1f}"
            for phase in phases if phase in seconds[0])
        print(f"  {name} ms/step: {parts}")
    for name in PEERS[kind]:
        ratio = median_ms[name] / median_ms[PROJECT]
        per_round = [p["total"] / o["total"] for o, p in zip(times[PROJECT], times[name])]
        print(f"  ratio vs {name} (its ms/step / the project's): {ratio:.2f}x; per round "
              f"{', '.join(f'{r:.2f}' for r in per_round)}; goal >= {GOAL}x: "
              f"{'met' if ratio >= GOAL else 'not met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", nargs="+", default=["encoder", "t5"], choices=["encoder", "t5"])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--ffn", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=6000,
                        help="tokenizer vocabulary to train (the default corpus allows ~6100)")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--dec-seq", type=int, default=40)
    parser.add_argument("--global-batch", type=int, default=16)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2, help="warm-up steps per side")
    parser.add_argument("--steps", type=int, default=5, help="steps per round and side")
    parser.add_argument("--no-trim", dest="trim", action="store_false",
                        help="the project computes the padded positions too")
    add_peer_arguments(parser, rounds=4)
    args = parser.parse_args()
    if args.peer:
        return hf_peer()
    from megatron_seqpt.runtime.allocator import reexec_with_tcmalloc

    reexec_with_tcmalloc()  # the project's side on the allocator seqpt runs on
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="seqpt-bench-") as tmp:
        for kind in args.kind:
            bench_kind(args, kind, Path(tmp))


if __name__ == "__main__":
    main()

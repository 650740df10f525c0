"""Fine-tuning step time of the project against Hugging Face transformers.

The built-in tasks ``topic`` (classification) and ``punct`` (tagging), fine-tuned from random
weights (no pre-trained run; the built-in corpus's tokenizer). The project side is its real
training step: the Trainer with the FinetuneWorkload (data stream, megatron-core schedule, DDP
buffers, optimizer, scheduler and a metrics line per step). The peers are
``BertFor{Sequence,Token}Classification`` and ``MegatronBertFor{Sequence,Token}Classification``
(pre-LayerNorm layers, the project encoder's layout) of the same shape (hidden, layers, heads,
FFN, vocabulary, positions, labels, dropouts), built from configs (no download): forward,
backward, clipping and AdamW (no weight decay on biases and norms) per global batch, with the
same micro-batch accumulation. Classification heads differ a little: the project pools the mean
of the tokens (its default), BertForSequenceClassification the first token.

Both sides train on the same micro-batches: they are read from the project's stream ahead of
time (the stream is then put back, so the project consumes exactly them, collating them again
as it trains), saved, and the peers get those tensors (labels at ignored positions as -100).
The peers run in a process of their own that imports neither this project nor its CPU layer
(the layer keeps a function mode around every torch call of its process) with the same number
of torch threads; rounds alternate between the processes, each round on the next steps'
batches for every side; medians of the rounds are printed, the range in brackets, and the
ratio peer step time / project step time (goal: at least 1, the project at least as fast), of
the medians and per round (a round's sides run back to back: steadier on a busy machine), and
per side the machine-limit fraction: the step's model FLOPs (the project's count, at each
micro-batch's length) over its time, against torch.matmul's rate at the step's own GEMM
shapes measured just before and after each round of that side (``machine_limit.py``; the
machine's speed drifts), the median and range of the rounds' fractions.
The phases: fwd+bwd (the project's schedule over the micro-batches, gradient buffers zeroed),
optimizer (clipping and AdamW) and the rest (the project's scheduler, FLOP count and metrics
line).

    pip install -e ".[bench]"   # transformers, only for this benchmark
    python benchmarks/finetune_throughput.py [--task topic punct] [--hidden 256 --layers 4 ...]
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
from machine_limit import Round, around, encoder_gemms, linear_gemms, median_range
from peer_process import (PEER_PHASES, PeerProcess, add_peer_arguments, hf_optimizer,
                          peer_environment, serve)
from project_steps import PhaseClock, clocked, record_batches, timed_steps

GOAL = 1.0
PEERS = {"classification": ("BertForSequenceClassification",
                            "MegatronBertForSequenceClassification"),
         "tagging": ("BertForTokenClassification", "MegatronBertForTokenClassification")}
PROJECT = "megatron_seqpt"


# ---- the project side ----

def built_in_tokenizer(cache_dir: Path) -> str:
    """The built-in corpus's sentencepiece model (trained on the first call)."""
    from megatron_seqpt.config.schema import DataConfig
    from megatron_seqpt.data.prepare import prepare

    return str(prepare(DataConfig(cache_dir=str(cache_dir)), progress=False).tokenizer_model)


def project_trainer(args, task: str, tokenizer_model: str, tmp: Path):
    from megatron_seqpt.runtime import distributed
    from megatron_seqpt.tasks.resolve import resolve_config
    from megatron_seqpt.tasks.workload import FinetuneWorkload
    from megatron_seqpt.training.loop import Trainer

    config, pretrained = resolve_config(None, [
        f"task.builtin={task}", "task.epochs=null",
        f"train.steps={args.warmup + args.rounds * args.steps}",
        f"train.global_batch_size={args.global_batch}",
        f"train.micro_batch_size={args.micro_batch}", "logging.log_interval=1",
        "model.kind=encoder", f"model.hidden_size={args.hidden}",
        f"model.encoder.num_layers={args.layers}",
        f"model.encoder.num_attention_heads={args.heads}",
        f"model.encoder.ffn_hidden_size={args.ffn}", f"data.seq_length={args.seq}",
        f"data.tokenizer_model={tokenizer_model}", f"data.cache_dir={tmp / 'cache'}"])
    ctx = distributed.initialize(config.parallel, config.model, config.train.seed)
    return Trainer(config, tmp / task, ctx, workload=FinetuneWorkload(config, pretrained))


def peer_batches(batches: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    """The micro-batches in Hugging Face's argument names, -100 where no loss is taken."""
    return [{"input_ids": b["text"], "attention_mask": b["padding_mask"],
             "labels": torch.where(b["loss_mask"].bool(), b["labels"], -100)} for b in batches]


def time_project(trainer, clock: PhaseClock, steps: int) -> dict[str, float]:
    """Seconds of ``steps`` training steps, each logged, and of its phases."""
    return {"total": timed_steps(trainer, steps), **clock.take()}


# ---- the Hugging Face side: its own process, no project imports ----

def hf_models(shape: dict) -> dict[str, torch.nn.Module]:
    import transformers

    common = {"vocab_size": shape["vocab"], "hidden_size": shape["hidden"],
              "num_hidden_layers": shape["layers"], "num_attention_heads": shape["heads"],
              "intermediate_size": shape["ffn"], "max_position_embeddings": shape["positions"],
              "num_labels": shape["labels"], "hidden_dropout_prob": shape["hidden_dropout"],
              "attention_probs_dropout_prob": shape["attention_dropout"],
              "classifier_dropout": shape["head_dropout"], "hidden_act": "gelu",
              "type_vocab_size": 1, "pad_token_id": 0}
    bert, megatron_bert = PEERS[shape["kind"]]
    return {bert: getattr(transformers, bert)(transformers.BertConfig(**common)),
            megatron_bert: getattr(transformers, megatron_bert)(
                transformers.MegatronBertConfig(**common))}


def hf_peer() -> None:
    """Reads a set-up line (shape, optimizer, batch file), then one request per line; answers
    seconds."""
    setup = json.loads(sys.stdin.readline())
    torch.set_num_threads(setup["threads"])
    torch.manual_seed(0)
    models = hf_models(setup["shape"])
    optimizers = {name: hf_optimizer(model, setup["optim"]) for name, model in models.items()}
    serve(models, optimizers, torch.load(setup["batches"]), setup["micro"],
          setup["optim"]["clip"])


class Peer(PeerProcess):
    def __init__(self, setup: dict, allocator: str):
        super().__init__(__file__, setup, peer_environment(allocator))

    def time(self, model: str, first_step: int, steps: int) -> dict[str, float]:
        return self.ask({"model": model, "first_step": first_step, "steps": steps})


# ---- the benchmark ----

def peer_setup(trainer, args, batch_file: Path) -> dict:
    config, workload = trainer.config, trainer.workload
    optim = config.optim
    return {"shape": {"kind": workload.kind, "vocab": trainer.vocab_size, "hidden": args.hidden,
                      "layers": args.layers, "heads": args.heads, "ffn": args.ffn,
                      "positions": config.model.max_position_embeddings,
                      "labels": len(workload.labels),
                      "hidden_dropout": config.model.hidden_dropout,
                      "attention_dropout": config.model.attention_dropout,
                      "head_dropout": config.task.head_dropout},
            "optim": {"lr": optim.lr, "betas": [optim.adam_beta1, optim.adam_beta2],
                      "eps": optim.adam_eps, "weight_decay": optim.weight_decay,
                      "clip": optim.clip_grad},
            "micro": trainer.num_microbatches, "batches": str(batch_file),
            "threads": torch.get_num_threads()}


def bench_task(args, task: str, tokenizer_model: str, tmp: Path) -> None:
    from megatron_seqpt.runtime import distributed

    trainer = project_trainer(args, task, tokenizer_model, tmp)
    micro = trainer.num_microbatches
    batches = record_batches(trainer.data.train,
                             (args.warmup + args.rounds * args.steps) * micro)
    batch_file = tmp / f"{task}-batches.pt"
    torch.save(peer_batches(batches), batch_file)
    peer = Peer(peer_setup(trainer, args, batch_file), args.peer_allocator)
    peers = PEERS[trainer.workload.kind]
    clock = clocked(trainer)
    time_project(trainer, clock, args.warmup)
    for name in peers:
        peer.time(name, 0, args.warmup)
    rounds: dict[str, list[Round]] = defaultdict(list)
    step_flops = counted_flops(trainer)
    for round_ in range(args.rounds):
        first = args.warmup + round_ * args.steps
        gemms = step_gemms(trainer, args, batches[first * micro:(first + args.steps) * micro])
        seconds, rate = around(lambda: time_project(trainer, clock, args.steps), gemms)
        flops = statistics.mean(step_flops[-args.steps:])  # both sides run the same batches
        rounds[PROJECT].append(Round(seconds, flops, rate))
        for name in peers:
            seconds, rate = around(lambda: peer.time(name, first, args.steps), gemms)
            rounds[name].append(Round(seconds, flops, rate))
    peer.close()
    report(args, task, trainer, batches, rounds, peer.info)
    trainer.metrics.close()
    distributed.shutdown()


def counted_flops(trainer) -> list[float]:
    """The model FLOPs of each step the trainer takes from now on, as its workload counts them
    (at each micro-batch's own length); both sides run the same micro-batches."""
    steps: list[float] = []
    count = trainer.workload.step_flops

    def counted(trainable: dict[str, bool]) -> float:
        steps.append(count(trainable))
        return steps[-1]

    trainer.workload.step_flops = counted
    return steps


def step_gemms(trainer, args, batches: list[dict]) -> list[tuple[int, int, int]]:
    """The GEMMs of these micro-batches' forward and backward: the encoder layers and the task
    head (classification: the pooler and the classifier per example; tagging: the classifier
    per token)."""
    labels, gemms = len(trainer.workload.labels), []
    for batch in batches:
        rows, length = batch["text"].shape
        gemms += encoder_gemms(rows * length, args.hidden, args.ffn, args.layers)
        if trainer.workload.kind == "classification":
            gemms += linear_gemms(rows, args.hidden, args.hidden)
            gemms += linear_gemms(rows, args.hidden, labels)
        else:
            gemms += linear_gemms(rows * length, args.hidden, labels)
    return gemms


def report(args, task: str, trainer, batches: list[dict], rounds: dict[str, list[Round]],
           info: dict) -> None:
    from megatron_seqpt.runtime import allocator

    lengths = [b["text"].shape[1] for b in batches]
    tokens = sum(int(b["padding_mask"].sum()) for b in batches) / sum(b["text"].numel()
                                                                      for b in batches)
    print(f"\n{task} ({trainer.workload.kind}, {len(trainer.workload.labels)} labels): "
          f"h{args.hidden} L{args.layers} heads {args.heads} ffn {args.ffn} vocab "
          f"{trainer.vocab_size} positions {trainer.config.model.max_position_embeddings}; "
          f"batch {args.global_batch} ({trainer.num_microbatches} x {args.micro_batch}) padded "
          f"to {min(lengths)}-{max(lengths)} tokens (mean {statistics.mean(lengths):.0f}, "
          f"{tokens:.0%} real); fp32, {torch.get_num_threads()} threads; {args.rounds} rounds "
          f"of {args.steps} steps after {args.warmup} warm-up")
    print(f"{PROJECT}: {trainer.impl.describe()}, malloc {allocator.loaded()}; transformers "
          f"{info['transformers']}, attention: "
          f"{', '.join(f'{k} {v}' for k, v in info['attention'].items())}, "
          f"malloc {info['allocator']}")
    flops = statistics.mean(r.flops for r in rounds[PROJECT])
    print(f"model FLOPs per step {flops:.3e} (the workload's count at each micro-batch's "
          f"length); matmul: torch.matmul's rate at the step's GEMM shapes around each round; "
          f"machine: the fraction of that rate a side's step achieves")
    print(f"{'':40s}{'ms/step (range)':>22s}{'examples/s':>11s}{'matmul GFLOP/s':>16s}"
          f"{'machine (range)':>18s}" + "".join(f"{phase + ' ms':>14s}"
                                                for phase in (*PEER_PHASES, "rest")))
    times = {name: [r.seconds for r in side] for name, side in rounds.items()}
    median_ms = {}
    for name, side in rounds.items():
        ms = [r.seconds["total"] / args.steps * 1e3 for r in side]
        median_ms[name] = statistics.median(ms)
        with_rest = [{**r, "rest": r["total"] - sum(r[phase] for phase in PEER_PHASES)}
                     for r in times[name]]
        phases = {phase: statistics.median(r[phase] for r in with_rest) / args.steps * 1e3
                  for phase in (*PEER_PHASES, "rest")}
        label = name if name == PROJECT else f"HF {name}"
        print(f"{label:40s}{median_range(ms, 1):>22s}"
              f"{args.global_batch / median_ms[name] * 1e3:11.1f}"
              f"{median_range([r.rate / 1e9 for r in side], 0):>16s}"
              f"{median_range([r.fraction(args.steps) for r in side], 2):>18s}"
              + "".join(f"{phases[phase]:14.1f}" for phase in phases))
    ratios = {name: ms / median_ms[PROJECT] for name, ms in median_ms.items() if name != PROJECT}
    bert = PEERS[trainer.workload.kind][0]
    for name, ratio in ratios.items():
        paired = sorted(peer["total"] / ours["total"]
                        for peer, ours in zip(times[name], times[PROJECT]))
        print(f"  ratio vs {name} (its ms/step / the project's): {ratio:.2f}x; per round "
              f"{statistics.median(paired):.2f}x ({paired[0]:.2f}-{paired[-1]:.2f})")
    print(f"  goal >= {GOAL}x vs {bert}: {'met' if ratios[bert] >= GOAL else 'not met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", nargs="+", default=["topic", "punct"],
                        choices=["topic", "punct"])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--ffn", type=int, default=1024)
    parser.add_argument("--seq", type=int, default=128, help="data.seq_length")
    parser.add_argument("--global-batch", type=int, default=32)
    parser.add_argument("--micro-batch", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=10, help="warm-up steps per side")
    parser.add_argument("--steps", type=int, default=20, help="steps per round and side")
    add_peer_arguments(parser, rounds=5)
    args = parser.parse_args()
    if args.peer:
        return hf_peer()
    from megatron_seqpt.runtime.allocator import reexec_with_tcmalloc

    reexec_with_tcmalloc()  # the project's side on the allocator seqpt runs on
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="seqpt-bench-") as tmp:
        tokenizer_model = built_in_tokenizer(Path(tmp) / "cache")
        for task in args.task:
            bench_task(args, task, tokenizer_model, Path(tmp))


if __name__ == "__main__":
    main()

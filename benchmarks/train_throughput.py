"""Training throughput of the project's whole step against Hugging Face transformers.

Peers of the same shape (layers, hidden, heads, FFN, vocabulary, sequence lengths, batch):
the MLM encoder against ``BertForMaskedLM`` and T5 against ``T5ForConditionalGeneration``,
built from configs (no download). The project side is its real training step: the Trainer's
data streams, megatron-core schedule, DDP buffers, optimizer, scheduler and a metrics line per
step. The Hugging Face side gets the same batches ready-made (its data costs nothing here),
then forward, backward, clipping and AdamW per global batch. Rounds alternate A/B so that
machine noise hits both; the medians are printed with their ratio.

    pip install -e ".[bench]"   # transformers, only for this benchmark
    python benchmarks/train_throughput.py [--kind encoder t5] [--hidden 256 --layers 4 ...]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from project_steps import timed_steps

from megatron_seqpt.config import load_run_config
from megatron_seqpt.runtime import distributed
from megatron_seqpt.training.loop import Trainer

GOAL = 1.25


def project_trainer(args, kind: str, run_dir: Path) -> Trainer:
    config = load_run_config(None, [
        f"model.kind={kind}", f"model.hidden_size={args.hidden}",
        f"model.encoder.num_layers={args.layers}", f"model.decoder.num_layers={args.layers}",
        f"model.encoder.num_attention_heads={args.heads}",
        f"model.decoder.num_attention_heads={args.heads}",
        f"model.encoder.ffn_hidden_size={args.ffn}", f"model.decoder.ffn_hidden_size={args.ffn}",
        f"data.vocab_size={args.vocab}", f"data.seq_length={args.seq}",
        f"data.decoder_seq_length={args.dec_seq}", f"data.cache_dir={run_dir / 'cache'}",
        f"train.global_batch_size={args.global_batch}",
        f"train.micro_batch_size={args.micro_batch}", "train.steps=100000",
        "logging.log_interval=1", "logging.tensorboard=true"])
    ctx = distributed.initialize(config.parallel, config.model, config.train.seed)
    return Trainer(config, run_dir / kind, ctx)


def hf_model(args, kind: str, vocab: int) -> torch.nn.Module:
    import transformers

    if kind == "encoder":
        return transformers.BertForMaskedLM(transformers.BertConfig(
            vocab_size=vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
            num_attention_heads=args.heads, intermediate_size=args.ffn,
            max_position_embeddings=512, type_vocab_size=1))
    return transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=vocab, d_model=args.hidden, d_kv=args.hidden // args.heads, d_ff=args.ffn,
        num_layers=args.layers, num_decoder_layers=args.layers, num_heads=args.heads,
        feed_forward_proj="gelu", decoder_start_token_id=0))


def hf_batches(trainer: Trainer, kind: str, count: int) -> list[dict]:
    """Micro-batches from the project's own data stream, in Hugging Face's argument names."""
    batches = []
    stream = trainer.data.valid_stream()
    for _ in range(count):
        b = next(stream)
        labels = torch.where(b["loss_mask"].bool(), b["labels"], torch.full_like(b["labels"],
                                                                               -100))
        if kind == "encoder":
            batches.append(dict(input_ids=b["text"], attention_mask=b["padding_mask"],
                                labels=labels))
        else:
            batches.append(dict(input_ids=b["text_enc"], attention_mask=b["enc_mask"],
                                decoder_input_ids=b["text_dec"],
                                decoder_attention_mask=b["dec_mask"], labels=labels))
    return batches


def time_hf(model, optimizer, batches: list[dict], micro_per_step: int, steps: int) -> float:
    model.train()
    started = time.perf_counter()
    for step in range(steps):
        for i in range(micro_per_step):
            batch = batches[(step * micro_per_step + i) % len(batches)]
            (model(**batch).loss / micro_per_step).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - started


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
    parser.add_argument("--steps", type=int, default=5, help="steps per round and side")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="seqpt-bench-") as tmp:
        for kind in args.kind:
            trainer = project_trainer(args, kind, Path(tmp))
            model = hf_model(args, kind, trainer.vocab_size)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
            micro = args.global_batch // args.micro_batch
            batches = hf_batches(trainer, kind, 4 * micro)
            tokens = args.global_batch * args.steps * (args.seq + (args.dec_seq
                                                                   if kind == "t5" else 0))
            timed_steps(trainer, 2)  # warm-up
            time_hf(model, optimizer, batches, micro, 2)
            ours, theirs = [], []
            for _ in range(args.rounds):
                ours.append(tokens / timed_steps(trainer, args.steps))
                theirs.append(tokens / time_hf(model, optimizer, batches, micro, args.steps))
            a, b = statistics.median(ours), statistics.median(theirs)
            print(f"\n{kind}: h{args.hidden} L{args.layers} heads {args.heads} ffn {args.ffn} "
                  f"vocab {trainer.vocab_size} seq {args.seq}"
                  f"{f'/{args.dec_seq}' if kind == 't5' else ''} batch {args.global_batch} "
                  f"({micro} x {args.micro_batch}), {args.rounds} rounds of {args.steps} steps")
            print(f"  megatron_seqpt step : {a:10,.0f} tokens/s  (rounds: "
                  f"{', '.join(f'{x:,.0f}' for x in ours)})")
            print(f"  Hugging Face        : {b:10,.0f} tokens/s  (rounds: "
                  f"{', '.join(f'{x:,.0f}' for x in theirs)})")
            print(f"  ratio {a / b:.2f}x (goal {GOAL}x)")
            trainer.metrics.close()
            distributed.shutdown()


if __name__ == "__main__":
    main()

"""The machine's dense matmul rate at a training step's own GEMM shapes, measured in the
running process, and the fraction of it that a step achieves: model FLOPs of the step over
its time, against the time those GEMMs alone would take at the measured rate.

Every linear layer of the step counts three GEMMs (forward, input gradient, weight gradient)
at its shapes; the rate is their FLOPs over the sum of their measured times, so large and small
GEMMs weigh as they do in the step."""

from __future__ import annotations

import time

import torch


def linear_gemms(tokens: int, fan_in: int, fan_out: int) -> list[tuple[int, int, int]]:
    """(m, k, n) of the forward, input-gradient and weight-gradient GEMMs of a linear layer."""
    return [(tokens, fan_in, fan_out), (tokens, fan_out, fan_in), (fan_in, tokens, fan_out)]


def transformer_gemms(kind: str, micro_batch: int, seq: int, dec_seq: int, hidden: int,
                      ffn: int, layers: int, vocab: int) -> list[tuple[int, int, int]]:
    """The GEMMs of one micro-batch's forward and backward: encoder layers (QKV, output
    projection, two MLP layers), for T5 decoder layers (self-attention, cross-attention with
    keys and values from the encoder, MLP), and the vocabulary projection."""
    enc, dec = micro_batch * seq, micro_batch * dec_seq
    layer = [(hidden, 3 * hidden), (hidden, hidden), (hidden, ffn), (ffn, hidden)]
    gemms = [g for _ in range(layers) for i, o in layer for g in linear_gemms(enc, i, o)]
    if kind == "t5":
        for _ in range(layers):
            for i, o in (*layer, (hidden, hidden), (hidden, hidden)):  # + cross q and out
                gemms += linear_gemms(dec, i, o)
            gemms += linear_gemms(enc, hidden, 2 * hidden)  # cross-attention keys, values
        gemms += linear_gemms(dec, hidden, vocab)
    else:
        gemms += linear_gemms(enc, hidden, hidden) + linear_gemms(enc, hidden, vocab)
    return gemms


def matmul_rate(gemms: list[tuple[int, int, int]], repeats: int = 5) -> float:
    """FLOP/s of torch.matmul (fp32) over these GEMMs: each distinct shape timed (best of
    ``repeats``), weighted by how often it occurs."""
    counts: dict[tuple[int, int, int], int] = {}
    for shape in gemms:
        counts[shape] = counts.get(shape, 0) + 1
    flops = seconds = 0.0
    for (m, k, n), count in counts.items():
        a, b = torch.randn(m, k), torch.randn(k, n)
        torch.matmul(a, b)
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            torch.matmul(a, b)
            best = min(best, time.perf_counter() - started)
        flops += count * 2.0 * m * k * n
        seconds += count * best
    return flops / seconds

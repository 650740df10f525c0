"""The machine's dense matmul rate at a training step's own GEMM shapes, measured in the
running process, and the fraction of it that a step achieves: model FLOPs of the step over
its time, against the time those GEMMs alone would take at the measured rate.

Every linear layer of the step counts three GEMMs (forward, input gradient, weight gradient)
at its shapes; the rate is their FLOPs over the sum of their measured times, so large and small
GEMMs weigh as they do in the step. On a shared machine that rate drifts (by up to 2x within
a minute on the 2-core development machine), so the throughput benchmarks measure it around
each round of steps (``around``) rather than once per run."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

import torch

Result = TypeVar("Result")


def linear_gemms(tokens: int, fan_in: int, fan_out: int) -> list[tuple[int, int, int]]:
    """(m, k, n) of the forward, input-gradient and weight-gradient GEMMs of a linear layer."""
    return [(tokens, fan_in, fan_out), (tokens, fan_out, fan_in), (fan_in, tokens, fan_out)]


def encoder_gemms(tokens: int, hidden: int, ffn: int, layers: int) -> list[tuple[int, int, int]]:
    """The GEMMs of encoder layers (QKV, output projection, two MLP layers) over ``tokens``."""
    layer = [(hidden, 3 * hidden), (hidden, hidden), (hidden, ffn), (ffn, hidden)]
    return [g for _ in range(layers) for i, o in layer for g in linear_gemms(tokens, i, o)]


def transformer_gemms(kind: str, micro_batch: int, seq: int, dec_seq: int, hidden: int,
                      ffn: int, layers: int, vocab: int, dec_ffn: int | None = None,
                      dec_layers: int | None = None) -> list[tuple[int, int, int]]:
    """The GEMMs of one micro-batch's forward and backward: encoder layers (QKV, output
    projection, two MLP layers), for T5 decoder layers (self-attention, cross-attention with
    keys and values from the encoder, MLP; the encoder's sizes unless given), and the
    vocabulary projection."""
    enc, dec = micro_batch * seq, micro_batch * dec_seq
    gemms = encoder_gemms(enc, hidden, ffn, layers)
    if kind == "t5":
        dec_ffn = dec_ffn or ffn
        dec_layer = [(hidden, 3 * hidden), (hidden, hidden), (hidden, dec_ffn), (dec_ffn, hidden),
                     (hidden, hidden), (hidden, hidden)]  # + cross-attention query and output
        for _ in range(dec_layers or layers):
            for i, o in dec_layer:
                gemms += linear_gemms(dec, i, o)
            gemms += linear_gemms(enc, hidden, 2 * hidden)  # cross-attention keys, values
        gemms += linear_gemms(dec, hidden, vocab)
    else:
        gemms += linear_gemms(enc, hidden, hidden) + linear_gemms(enc, hidden, vocab)
    return gemms


def matmul_rate(gemms: list[tuple[int, int, int]], repeats: int = 5,
                device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of torch.matmul over these GEMMs on ``device`` in ``dtype``: each distinct shape
    timed (best of ``repeats``; on a GPU each timing is the mean of ``repeats`` back-to-back
    calls between synchronisations, which a single kernel's launch would distort), weighted
    by how often it occurs."""
    counts: dict[tuple[int, int, int], int] = {}
    for shape in gemms:
        counts[shape] = counts.get(shape, 0) + 1
    cuda = torch.device(device).type == "cuda"
    flops = seconds = 0.0
    for (m, k, n), count in counts.items():
        a = torch.randn(m, k, device=device, dtype=dtype)
        b = torch.randn(k, n, device=device, dtype=dtype)
        torch.matmul(a, b)
        best = min(_matmul_seconds(a, b, repeats if cuda else 1, cuda) for _ in range(repeats))
        flops += count * 2.0 * m * k * n
        seconds += count * best
    return flops / seconds


def _matmul_seconds(a: torch.Tensor, b: torch.Tensor, calls: int, cuda: bool) -> float:
    if cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(calls):
        torch.matmul(a, b)
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / calls


def around(run: Callable[[], Result], gemms: list[tuple[int, int, int]],
           repeats: int = 3) -> tuple[Result, float]:
    """``run()``'s result and the mean of torch.matmul's rate at ``gemms`` measured just
    before and just after it, so that a fraction against it sees the machine as the run did."""
    before = matmul_rate(gemms, repeats)
    result = run()
    return result, (before + matmul_rate(gemms, repeats)) / 2


@dataclass
class Round:
    """One side's round of a throughput benchmark: seconds of its steps (``total`` and
    phases), its model FLOPs per step and torch.matmul's rate at its GEMM shapes around the
    round (``around``)."""

    seconds: dict[str, float]
    flops: float
    rate: float

    def fraction(self, steps: int) -> float:
        """The round's model FLOPs per second over the matmul rate."""
        return self.flops * steps / self.seconds["total"] / self.rate


def median_range(values: list[float], digits: int) -> str:
    """The median and, in brackets, the range."""
    return (f"{statistics.median(values):.{digits}f} "
            f"({min(values):.{digits}f}-{max(values):.{digits}f})")

"""Scores over seeds and the comparisons the paper's claims rest on: a difference counts only
when it is larger than the seeds' spread says chance could make it."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Literal, Sequence

Verdict = Literal["holds", "does not hold", "within noise", "not measurable"]
# A difference of means counts when it exceeds this many standard errors of the difference.
NOISE_SIGMAS = 2.0


@dataclass(frozen=True)
class Scores:
    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def sd(self) -> float:
        return statistics.stdev(self.values) if self.n > 1 else 0.0

    def describe(self, digits: int = 3) -> str:
        if self.n > 1:
            return f"{self.mean:.{digits}f} ± {self.sd:.{digits}f}"
        return f"{self.mean:.{digits}f}"


def noise(a: Scores, b: Scores) -> float:
    """The difference of means chance could make: NOISE_SIGMAS standard errors of it (0 when
    a side has one seed and no spread to go by)."""
    if a.n < 2 or b.n < 2:
        return 0.0
    return NOISE_SIGMAS * math.sqrt(a.sd ** 2 / a.n + b.sd ** 2 / b.n)


@dataclass(frozen=True)
class Difference:
    """``a - b`` and whether it stands out of the noise."""

    delta: float
    noise: float

    @property
    def significant(self) -> bool:
        return abs(self.delta) > self.noise

    @property
    def sign(self) -> int:
        return 0 if not self.significant else (1 if self.delta > 0 else -1)


def difference(a: Scores, b: Scores) -> Difference:
    return Difference(a.mean - b.mean, noise(a, b))


def claim_better(differences: Sequence[Difference]) -> Verdict:
    """"a is better than b" over several comparisons: holds when every one is significantly
    positive, does not hold when any is significantly negative, else within noise."""
    if any(d.sign < 0 for d in differences):
        return "does not hold"
    if differences and all(d.sign > 0 for d in differences):
        return "holds"
    return "within noise"


def claim_matches(d: Difference) -> Verdict:
    """"a matches b": holds unless a is significantly worse."""
    return "does not hold" if d.sign < 0 else "holds"


def measurable(verdict: Verdict, scores: Sequence[Scores], baseline: float) -> Verdict:
    """A comparison among models none of which beats the task's baseline (the majority class,
    copying the source) measures nothing: the verdict becomes "not measurable"."""
    return verdict if any(s.mean > baseline for s in scores) else "not measurable"

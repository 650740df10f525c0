"""Train/validation/test splits of a task that comes as one file.

The split is a seeded shuffle (``random.Random(seed)``, which does not depend on Python's hash
seed), so the same examples and seed give the same parts on every machine and run.
"""

from __future__ import annotations

import math
import random
from typing import Sequence, TypeVar

from megatron_seqpt.errors import UserError

T = TypeVar("T")
PARTS = ("train", "validation", "test")


def parse_split(text: str) -> tuple[float, float, float]:
    """``"80,10,10"`` -> ``(0.8, 0.1, 0.1)``: three non-negative weights, scaled to sum to 1."""
    fields = text.split(",")
    example = "e.g. 80,10,10 or 0.9,0.1,0"
    if len(fields) != 3:
        raise UserError(f"split {text!r} needs three comma-separated weights for "
                        f"{', '.join(PARTS)}, {example}")
    try:
        weights = [float(f) for f in fields]
    except ValueError:
        raise UserError(f"split {text!r} holds something that is not a number; give three "
                        f"comma-separated weights, {example}") from None
    return _normalised(weights, f"split {text!r}")


def split_examples(examples: Sequence[T], fractions: tuple[float, float, float], seed: int
                   ) -> tuple[list[T], list[T], list[T]]:
    """The examples shuffled with ``seed`` and cut into parts of the given fractions (scaled to
    sum to 1, like the weights of ``parse_split``).

    Sizes are the fractions of the total rounded to whole examples (largest remainders, so they
    add up); a part whose fraction is above 0 gets at least one example, taken from the largest.
    """
    shares = _normalised(list(fractions), f"split fractions {tuple(fractions)}")
    wanted = sum(share > 0 for share in shares)
    if len(examples) < wanted:
        raise UserError(f"{len(examples)} examples cannot fill the {wanted} non-empty parts of "
                        f"the split {_percent(shares)}; give at least {wanted} examples, or "
                        "set the fraction of a part you do not need to 0")
    sizes = _sizes(len(examples), shares)
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    shuffled = [examples[i] for i in order]
    train_end, valid_end = sizes[0], sizes[0] + sizes[1]
    return shuffled[:train_end], shuffled[train_end:valid_end], shuffled[valid_end:]


def _normalised(weights: list[float], what: str) -> tuple[float, float, float]:
    if len(weights) != 3:
        raise UserError(f"{what}: give three fractions, for {', '.join(PARTS)}")
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise UserError(f"{what}: the weights must be finite, not negative, and not all 0")
    total = sum(weights)
    return tuple(w / total for w in weights)  # type: ignore[return-value]


def _sizes(count: int, shares: tuple[float, ...]) -> list[int]:
    exact = [share * count for share in shares]
    sizes = [math.floor(x) for x in exact]
    by_remainder = sorted((i for i, share in enumerate(shares) if share > 0),
                          key=lambda i: exact[i] - sizes[i], reverse=True)
    for i in by_remainder[:count - sum(sizes)]:
        sizes[i] += 1
    for i, share in enumerate(shares):
        if share > 0 and sizes[i] == 0:
            sizes[max(range(len(sizes)), key=sizes.__getitem__)] -= 1
            sizes[i] = 1
    return sizes


def _percent(shares: tuple[float, ...]) -> str:
    return "/".join(f"{100 * share:g}%" for share in shares)

"""Temperature sampling over languages (as in XLM-R and mT5).

A language with a share p of the corpus is drawn with probability proportional to p**alpha:
alpha = 1 keeps the natural mixture, smaller alpha gives small languages more than their share.
"""

from __future__ import annotations

from typing import Mapping


def temperature_weights(sizes: Mapping[str, float], alpha: float) -> dict[str, float]:
    """Sampling probability per language from its size (tokens, sentences or bytes)."""
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"sampling alpha must be in (0, 1], got {alpha}")
    sizes = {lang: float(size) for lang, size in sizes.items() if size > 0}
    if not sizes:
        raise ValueError("no language has any data to sample from")
    total = sum(sizes.values())
    scaled = {lang: (size / total) ** alpha for lang, size in sizes.items()}
    norm = sum(scaled.values())
    return {lang: value / norm for lang, value in sorted(scaled.items())}

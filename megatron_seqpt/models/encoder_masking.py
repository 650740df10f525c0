"""BERT-style masking of the T5 encoder input, for the variant that adds an MLM loss on the
encoder output to the seq2seq loss. Applied to each micro-batch on its device, drawing from
the checkpointed torch RNG, so a resumed run masks as an uninterrupted one would."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class EncoderMasking:
    mask_id: int
    # Text pieces: the tokens that may be masked, and the random replacements.
    ordinary_ids: torch.Tensor
    probability: float

    def apply(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(masked tokens, predicted positions): of the text pieces (never padding, special
        tokens or T5 sentinels) ``probability`` are predicted; 80% of those become <mask>,
        10% a random piece, 10% stay."""
        ordinary = self.ordinary_ids.to(tokens.device)
        predicted = torch.isin(tokens, ordinary) & (
            torch.rand(tokens.shape, device=tokens.device) < self.probability)
        choice = torch.rand(tokens.shape, device=tokens.device)
        masked = tokens.clone()
        masked[predicted & (choice < 0.8)] = self.mask_id
        replaced = predicted & (choice >= 0.8) & (choice < 0.9)
        draws = torch.randint(len(ordinary), (int(replaced.sum()),), device=tokens.device)
        masked[replaced] = ordinary[draws]
        return masked, predicted

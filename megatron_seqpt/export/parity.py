"""The project's model and its Hugging Face export on the same inputs: real text of the
built-in corpus (a paragraph per language), right-padded into one batch, compared at the real
(not padding) positions."""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from megatron_seqpt.config import RunConfig
from megatron_seqpt.export import hf_config
from megatron_seqpt.models.forward import t5_attention_masks
from megatron_seqpt.models.specs import LayerImpl, TorchNorm
from megatron_seqpt.text.corpus import default_corpus_path
from megatron_seqpt.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer

LOCAL = LayerImpl("local", TorchNorm)  # the mask layout of the local layers export builds


def sample_texts(per_language: int = 1) -> list[str]:
    """The first paragraphs of each language of the built-in corpus."""
    seen: dict[str, int] = {}
    texts = []
    for line in default_corpus_path().read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if seen.get(record["lang"], 0) < per_language:
            seen[record["lang"]] = seen.get(record["lang"], 0) + 1
            texts.append(record["text"].split("\n")[0])
    return texts


@dataclass
class Batch:
    """Token ids [b, s] and 1/0 masks of real tokens; decoder side for seq2seq."""

    ids: torch.Tensor
    mask: torch.Tensor
    decoder_ids: torch.Tensor | None = None
    decoder_mask: torch.Tensor | None = None


def _pad(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row)] = 1
    return ids, mask


def make_batch(texts: list[str], tokenizer: SentencePieceTokenizer, architecture: str,
               config: RunConfig) -> Batch:
    """Encoder inputs ``<cls> text <sep>``; seq2seq: the text, and ``<s>`` + its first
    pieces on the decoder side (the shapes training uses)."""
    length = min(config.data.seq_length, config.model.max_position_embeddings)
    pieces = [tokenizer.tokenize(t) for t in texts]
    if architecture != hf_config.SEQ2SEQ_CLASS:
        return Batch(*_pad([[tokenizer.cls, *p[:length - 2], tokenizer.sep] for p in pieces]))
    dec_length = min(config.data.decoder_seq_length, config.model.max_position_embeddings)
    ids, mask = _pad([p[:length] for p in pieces])
    dec_ids, dec_mask = _pad([[tokenizer.bos, *p[:dec_length - 1]] for p in pieces])
    return Batch(ids, mask, dec_ids, dec_mask)


@torch.no_grad()
def project_logits(model: torch.nn.Module, batch: Batch, architecture: str) -> torch.Tensor:
    if architecture == hf_config.SEQ2SEQ_CLASS:
        masks = t5_attention_masks({"text_enc": batch.ids, "text_dec": batch.decoder_ids,
                                    "enc_mask": batch.mask, "dec_mask": batch.decoder_mask},
                                   LOCAL)
        return model(batch.ids, batch.decoder_ids, *masks).float()
    return model(batch.ids, batch.mask).float()


@torch.no_grad()
def hf_logits(model, batch: Batch) -> torch.Tensor:
    if batch.decoder_ids is not None:
        return model(input_ids=batch.ids, attention_mask=batch.mask,
                     decoder_input_ids=batch.decoder_ids,
                     decoder_attention_mask=batch.decoder_mask).logits.float()
    return model(input_ids=batch.ids, attention_mask=batch.mask).logits.float()


def real_positions(batch: Batch, logits: torch.Tensor) -> torch.Tensor:
    """The mask of logits rows that belong to real tokens (all rows for one-per-text)."""
    if logits.dim() == 2:
        return torch.ones(logits.shape[0], dtype=torch.bool)
    mask = batch.decoder_mask if batch.decoder_ids is not None else batch.mask
    return mask.bool()


def max_logit_difference(project_model: torch.nn.Module, hf_model, tokenizer,
                         architecture: str, config: RunConfig) -> dict:
    """Largest absolute difference of the logits, their scale and how many tokens were
    compared."""
    batch = make_batch(sample_texts(), tokenizer, architecture, config)
    ours = project_logits(project_model, batch, architecture)
    theirs = hf_logits(hf_model, batch)
    real = real_positions(batch, ours)
    return {"max_abs": float((ours[real] - theirs[real]).abs().max()),
            "scale": float(ours[real].abs().max()),
            "tokens": int(batch.mask.sum())}

"""Seq2seq first, then encoder: an MLM encoder made of a trained T5 model's embeddings and
encoder. Its MLM head is new, or starts from T5's output layer (the vocabulary projection is
tied to the embeddings either way; "from-t5" also takes T5's output bias and starts the head's
dense layer as the identity)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import torch

from megatron_seqpt.config import RunConfig
from megatron_seqpt.errors import UserError
from megatron_seqpt.training import checkpoint as ckpt
from megatron_seqpt.training.initialization import load_parts

FROM_T5 = ("embedding.", "encoder.")
Head = Literal["new", "from-t5"]


def encoder_config(t5: RunConfig) -> RunConfig:
    """The MLM encoder run that continues from the extraction: T5's encoder shape, data,
    parallelism and logging; from a pre-training run its optimizer and length too, else
    (a seq2seq fine-tuning run, whose task section has no place here) pre-training's
    defaults."""
    model = dataclasses.replace(t5.model, kind="encoder", encoder_mlm_weight=0.0)
    kept = ("data", "parallel", "logging") + (("optim", "train") if type(t5) is RunConfig
                                              else ())
    return RunConfig(model=model, **{name: getattr(t5, name) for name in kept})


def check_seq2seq(path: Path) -> dict:
    meta = ckpt.content_metadata(path)
    if meta["model"]["kind"] != "t5":
        raise UserError(f"{path} holds a model.kind={meta['model']['kind']} model, not a T5 "
                        "model; give the run or checkpoint directory of a model.kind=t5 run")
    return meta


def load_from_seq2seq(modules: list[torch.nn.Module], path: Path, head: Head) -> None:
    """Embeddings and encoder (and with ``from-t5`` the output bias) from the T5 checkpoint."""
    load_parts(modules, path, FROM_T5 + (("output_layer.bias",) if head == "from-t5" else ()))
    if head == "from-t5":
        for module in modules:
            dense = getattr(_unwrapped(module), "lm_head", None)
            if dense is not None:
                with torch.no_grad():
                    dense.dense.weight.copy_(torch.eye(dense.dense.weight.shape[0]))
                    dense.dense.bias.zero_()


def _unwrapped(module: torch.nn.Module) -> torch.nn.Module:
    return getattr(module, "module", module)

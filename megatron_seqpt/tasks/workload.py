"""Fine-tuning as a workload for the Trainer: task examples instead of pre-training samples,
a task model (the pre-trained body with a task head, or the whole T5), and its loss; the
schedules, parallel layouts, freeze groups, checkpoints and resume are the Trainer's.

A probe is the same run with the embeddings and encoder frozen for the whole run
(``freeze.embeddings.frozen=true freeze.encoder.frozen=true``): only the head trains, and the
body runs without autograd.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from megatron.core import parallel_state

from megatron_seqpt.data.stream import BatchStream
from megatron_seqpt.errors import UserError
from megatron_seqpt.models.builder import build_model, place, transformer_config
from megatron_seqpt.models.forward import masked_token_loss, t5_output
from megatron_seqpt.models.specs import LayerImpl, block_spec, encoder_layer_spec
from megatron_seqpt.runtime.distributed import DistributedContext
from megatron_seqpt.runtime.log import log
from megatron_seqpt.tasks.config import FinetuneConfig
from megatron_seqpt.tasks.datasets import (
    PAD_MULTIPLE,
    EpochShuffled,
    Padded,
    encoder_collate,
    example_tokens,
    seq2seq_collate,
)
from megatron_seqpt.tasks.features import FeatureEncoder
from megatron_seqpt.tasks.heads import TaskEncoder, TaskHead
from megatron_seqpt.tasks.pretrained import PretrainedRun
from megatron_seqpt.tasks.task_data import TaskSplits, example_labels, load_splits, task_kind
from megatron_seqpt.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer
from megatron_seqpt.training import checkpoint as ckpt
from megatron_seqpt.training.flops import FlopModel
from megatron_seqpt.training.initialization import load_parts
from megatron_seqpt.training.workload import RunData, Workload

# What a task model takes from the pre-trained run.
BODY = {"classification": ("embedding.", "encoder."), "tagging": ("embedding.", "encoder."),
        "seq2seq": ("embedding.", "encoder.", "decoder.", "lm_head.")}
# Shape settings the body must share with the pre-trained run.
BODY_FIELDS = ("hidden_size", "encoder", "max_position_embeddings", "normalization",
               "activation", "vocab_size")


def tokenizer_for(config: FinetuneConfig) -> SentencePieceTokenizer:
    """The pre-trained run's tokenizer (data.tokenizer_model), else the built-in corpus's."""
    if config.data.tokenizer_model:
        return SentencePieceTokenizer(config.data.tokenizer_model)
    from megatron_seqpt.data.prepare import prepare

    return SentencePieceTokenizer(prepare(config.data).tokenizer_model)


class FinetuneWorkload(Workload):
    def __init__(self, config: FinetuneConfig, pretrained: Optional[PretrainedRun] = None):
        super().__init__(config)
        self.kind = task_kind(config.task)
        self.pretrained = pretrained
        self.labels: list[str] = list(config.task.labels or [])
        # (encoder length, decoder length, batch) of the training micro-batches since the
        # last step: the step's executed FLOPs follow from them.
        self._shapes: list[tuple[int, int, int]] = []
        self._mean_tokens = float(config.data.seq_length)
        self._vocab = 0

    # ----------------------------------------------------------------- data

    def feature_encoder(self, tokenizer: SentencePieceTokenizer) -> FeatureEncoder:
        data = self.config.data
        return FeatureEncoder(self.kind, tokenizer, self.labels, data.seq_length,
                              data.decoder_seq_length,
                              refuse_truncation=self.config.task.truncation == "refuse")

    def settle_labels(self, splits: TaskSplits) -> None:
        """Label names in head order: the config's, else the training data's (written into
        the resolved config so that the head's meaning travels with the run)."""
        if self.kind == "seq2seq" or self.labels:
            return
        self.labels = example_labels(splits.train)
        if len(self.labels) < 2:
            raise UserError(f"the training data ({splits.sources['train']}) has "
                            f"{len(self.labels)} label(s); a {self.kind} task needs at least 2")
        task = dataclasses.replace(self.config.task, labels=self.labels)
        self.config = dataclasses.replace(self.config, task=task)

    def collate(self, ctx_tp: int) -> Callable:
        data = self.config.data
        multiple = PAD_MULTIPLE * (ctx_tp if self.config.parallel.sequence_parallel else 1)
        if self.kind == "seq2seq":
            return seq2seq_collate(multiple, data.seq_length, data.decoder_seq_length)
        return encoder_collate(multiple, data.seq_length)

    def build_data(self, ctx: DistributedContext, resumed: Optional[dict] = None) -> RunData:
        # Each epoch has an order of its own (EpochShuffled): a longer run keeps the first ones.
        config = self.config
        tokenizer = tokenizer_for(config)
        splits = load_splits(config.task)
        self.settle_labels(splits)
        encoder = self.feature_encoder(tokenizer)
        train, report = encoder.encode_all(splits.train, "train")
        log(report.describe("train"))
        valid, report = encoder.encode_all(splits.valid, "valid")
        log(report.describe("valid"))
        lengths = [example_tokens(f) for f in train]
        self._mean_tokens = float(np.mean(lengths))
        train_cfg = config.train
        if config.task.epochs is not None:
            steps = max(1, math.ceil(config.task.epochs * len(train)
                                     / train_cfg.global_batch_size))
            self.config = dataclasses.replace(self.config,
                                              train=dataclasses.replace(train_cfg, steps=steps))
        steps = self.config.train.steps
        epochs = math.ceil(steps * train_cfg.global_batch_size / len(train))
        rank = parallel_state.get_data_parallel_rank()
        size = parallel_state.get_data_parallel_world_size()
        collate = self.collate(ctx.tensor_parallel)
        grouping = lengths if config.task.group_by_length else None
        stream = BatchStream(EpochShuffled(train, epochs, train_cfg.seed, grouping,
                                           train_cfg.global_batch_size),
                             train_cfg.micro_batch_size, rank, size, collate_fn=collate)
        log(f"task {self.kind}: {len(train)} training examples ({len(splits.valid)} valid), "
            f"{steps} steps = {steps * train_cfg.global_batch_size / len(train):.2f} epochs"
            + (f", {len(self.labels)} labels" if self.labels else ""))
        if not valid:
            log("no validation examples: evaluation during training is skipped")
            return RunData(tokenizer, stream, None, 0)
        # Validation losses are sums over examples: in length order, batches pad least.
        padded = Padded(sorted(valid, key=example_tokens), train_cfg.global_batch_size)
        return RunData(tokenizer, stream,
                       lambda: BatchStream(padded, train_cfg.micro_batch_size, rank, size,
                                           collate_fn=collate),
                       len(padded) // train_cfg.global_batch_size)

    # ----------------------------------------------------------------- model

    def build_modules(self, ctx: DistributedContext, vocab_size: int, precision: str,
                      impl: LayerImpl) -> list[torch.nn.Module]:
        model, parallel = self.config.model, self.config.parallel
        self._vocab = vocab_size
        if self.kind == "seq2seq":
            return [build_model(model, parallel, vocab_size, precision, impl, ctx.backend)]
        config = transformer_config(model, model.encoder, parallel, precision, impl, ctx.backend)
        head = TaskHead(config, self.kind, len(self.labels), self.config.task.pooling,
                        self.config.task.head_dropout, seed=self.config.train.seed)
        built = TaskEncoder(
            config=config, num_tokentypes=0,
            transformer_layer_spec=block_spec(encoder_layer_spec(impl), model.encoder.num_layers,
                                              impl),
            vocab_size=vocab_size, max_sequence_length=model.max_position_embeddings,
            pre_process=True, post_process=True, parallel_output=True,
            position_embedding_type="learned_absolute", impl=impl, head=head)
        return [place(built, config, precision, ctx.backend)]

    def forward_step(self, impl: LayerImpl, device: torch.device,
                     encoder_frozen: Callable[[], bool]) -> Callable:
        def forward_step(data_iterator, model: torch.nn.Module):
            batch = {k: v.to(device, non_blocking=True) for k, v in next(data_iterator).items()}
            if self.kind == "seq2seq":
                shape = (batch["text_enc"].shape[1], batch["text_dec"].shape[1])
                output = t5_output(model, batch, impl, encoder_frozen())
            else:
                shape = (batch["text"].shape[1], 0)
                logits = model(batch["text"], batch["padding_mask"],
                               encoder_frozen=encoder_frozen())
                output = F.cross_entropy(logits.float().flatten(0, -2),
                                         batch["labels"].flatten(),
                                         reduction="none").view(batch["labels"].shape)
            if model.training:
                self._shapes.append((*shape, batch["loss_mask"].shape[0]))
            return output, partial(masked_token_loss, batch["loss_mask"])

        return forward_step

    # ----------------------------------------------------------------- checkpoints

    def model_metadata(self, vocab_size: int) -> dict:
        shape = ckpt.model_shape(self.config.model, vocab_size)
        return {**shape, "task": self.kind, "num_labels": len(self.labels)}

    def metadata(self) -> dict:
        return {"task": {"kind": self.kind, "labels": self.labels}}

    def check_checkpoint(self, path: Path, meta: dict, vocab_size: int) -> None:
        if "task" not in meta:
            raise ckpt.CheckpointError(
                f"{path} holds a pre-training checkpoint: this --run-dir is a pre-training "
                "run's; fine-tune into a new --run-dir (--init takes the pre-trained run)")
        ckpt.check_same_shape(path, meta["model"], self.model_metadata(vocab_size))
        saved = meta["task"].get("labels")
        if saved is not None and list(saved) != list(self.labels):
            raise ckpt.CheckpointError(
                f"{path} was fine-tuned with the labels {', '.join(map(str, saved))}; this "
                f"run has {', '.join(map(str, self.labels))} (from its training data or "
                "task.labels): each row of the head would stand for another label; resume "
                "with the data or task.labels it was trained with, or fine-tune into a new "
                "--run-dir")

    def initialize(self, modules: list[torch.nn.Module], vocab_size: int) -> Optional[str]:
        if self.pretrained is None:
            return None
        source = self.pretrained
        saved = dict(source.meta["model"])
        mine = self.model_metadata(vocab_size)
        fields = BODY_FIELDS + (("decoder",) if self.kind == "seq2seq" else ())
        diffs = [f"model.{key}: pre-trained {saved.get(key)!r}, task config {mine.get(key)!r}"
                 for key in fields if saved.get(key) != mine.get(key)]
        if diffs:
            raise UserError(f"the task model does not fit the pre-trained run "
                            f"{source.checkpoint}:\n  " + "\n  ".join(diffs)
                            + "\nleave the model section out of the task config: it comes "
                            "from the pre-trained run")
        loaded = load_parts(modules, source.checkpoint, BODY[self.kind])
        part = "the whole T5 model" if self.kind == "seq2seq" else \
            f"the embeddings and encoder of a model.kind={source.kind} run"
        return (f"took {part} from {source.checkpoint} (step {source.meta['step']}, "
                f"{loaded} tensors); " + ("the task head is new" if self.kind != "seq2seq"
                                          else "nothing is new"))

    # ----------------------------------------------------------------- accounting

    def step_flops(self, trainable: dict[str, bool]) -> float:
        total = sum(sum(self._flop_model(*shape).step(trainable).values())
                    for shape in self._shapes)
        self._shapes.clear()
        return total

    def _flop_model(self, enc_length: int, dec_length: int, batch: int) -> FlopModel:
        model = self.config.model
        if self.kind == "seq2seq":
            return FlopModel.build(model, self._vocab, enc_length, dec_length, batch, 0.0)
        body = FlopModel.build(model, self._vocab, enc_length, 0, batch, 0.0)
        h, labels = model.hidden_size, len(self.labels)
        head = batch * (2.0 * h * h + 2.0 * h * labels) if self.kind == "classification" \
            else batch * enc_length * 2.0 * h * labels
        return FlopModel({**body.forward, "heads": head}, projection=0.0)

    def tokens_per_sample(self) -> int:
        """The training examples' mean length in real (not padding) tokens."""
        return max(1, round(self._mean_tokens))

    def describe(self) -> Optional[str]:
        task = self.config.task
        what = f"built-in task {task.builtin}" if task.builtin else f"task file {task.train_file}"
        return f"fine-tuning: {self.kind}, {what}"
